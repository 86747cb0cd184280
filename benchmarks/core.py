"""What every benchmark shares: a case (a baseline path and ours on the same inputs), timing
(warm-up excluded, median of repeats, the two paths interleaved), comparisons and the table."""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch


@dataclass
class Timed:
    """What a path returns when it times itself (a Trainer fit timed from the epoch's first
    batch to its last, a loop without its set-up): the value to compare and the seconds."""

    value: Any
    seconds: float


@dataclass
class Check:
    """Do the two paths give the same numbers? ok None: not applicable (different models)."""

    ok: bool | None
    text: str


@dataclass
class Goal:
    """speedup: baseline ÷ ours ≥ value; overhead: ours ÷ baseline ≤ value; None: reported only."""

    kind: str  # "speedup" | "overhead"
    value: float | None = None
    # the thread count the target was set at (None: any): at another the ratio is reported, not
    # judged (batching gains more where intra-op threads idle in the per-item loop)
    threads: int | None = None

    def judged_at(self, threads: int) -> bool:
        return self.threads is None or self.threads == threads

    def ratio(self, baseline: float, ours: float) -> float:
        return baseline / ours if self.kind == "speedup" else ours / baseline

    def met(self, ratio: float) -> bool | None:
        if self.value is None or not math.isfinite(ratio):
            return None
        return ratio >= self.value if self.kind == "speedup" else ratio <= self.value

    def describe(self) -> str:
        if self.value is None:
            return "reported"
        at = f" at {self.threads} thread{'s' if self.threads > 1 else ''}" if self.threads else ""
        return (f"≥ {self.value:g}× faster" if self.kind == "speedup" else f"≤ {self.value:g}× the time") + at


@dataclass
class Case:
    """One row: `baseline()` and `ours()` on the same inputs, `compare(b, o)` on their outputs.

    Each call must start from the same state (weights, seeds): the callables set it up
    themselves, and return a `Timed` where the set-up must not count. `items` (and `item`) turn
    times into a per-item figure (ms per image…). `warmup_*` replace the warm-up call where a
    full call is long (the 500-step search)."""

    bench: str
    what: str
    baseline_label: str
    ours_label: str
    baseline: Callable[[], Any] | None
    ours: Callable[[], Any] | None
    compare: Callable[[Any, Any], Check]
    goal: Goal
    items: int | None = None
    item: str = "image"
    repeats: int | None = None  # instead of the suite's repeats (both paths)
    repeats_ours: int | None = None  # ours only (a cheap path next to a long baseline)
    warmup_baseline: Callable[[], Any] | None = None
    warmup_ours: Callable[[], Any] | None = None
    # where the timed calls return nothing to compare: untimed calls whose outputs are compared
    check_baseline: Callable[[], Any] | None = None
    check_ours: Callable[[], Any] | None = None
    # a baseline time quoted from a measurement of code that is not here (baseline=None): only
    # ours runs; the row says where the time comes from, and when and at how many torch threads
    # it was measured: at another thread count the row is shown but its target is not judged
    quoted_baseline_s: float | None = None
    quoted_threads: int | None = None
    quoted_when: str = ""
    # run at the first thread count only: a row whose ratio does not depend on the thread count
    # (a 600× gap, a per-item loop against a batched one) or that has no target to judge
    once: bool = False
    # run only at the thread count where it compares like for like (where that count is in the
    # run): its target's, or a quoted row's, its time's; the calls saved elsewhere pay for the
    # extra repeats a short, noisy judged row needs
    only_where_judged: bool = False
    note: str = ""

    def thread_counts(self, counts: list[int]) -> list[int]:
        """The thread counts, of those asked for, this row runs at (adjacent rows in the table)."""
        if self.once:
            return counts[:1]
        judged = self.goal.threads or self.quoted_threads
        if self.only_where_judged and judged in counts:
            return [judged]
        return counts

    def like_for_like(self, threads: int) -> bool:
        """A quoted baseline is compared only at the thread count it was measured at."""
        return self.quoted_baseline_s is None or self.quoted_threads in (None, threads)

    def quoted_note(self) -> str:
        when = f" ({self.quoted_when})" if self.quoted_when else ""
        return f"quoted at {self.quoted_threads} threads{when}, not like for like"


@dataclass
class Verdict:
    """Did a row meet its target? met None: nothing to judge (no target, or a quoted time from
    another thread count). A row misses (met False) when its ratio misses the target, when the two
    paths gave different numbers, or when it failed with an error."""

    met: bool | None
    text: str


@dataclass
class Result:
    case: Case
    baseline_s: float = math.nan
    ours_s: float = math.nan
    baseline_all: list[float] = field(default_factory=list)
    ours_all: list[float] = field(default_factory=list)
    check: Check | None = None
    error: str | None = None
    threads: int = 0  # torch's CPU threads while it ran (run_case sets it)
    earlier: list[float] = field(default_factory=list)  # the ratios of earlier measurements that missed

    def missed_on_time(self) -> bool:
        """Missed its target by its ratio alone (no error, the same numbers): a miss that noise
        can make, worth measuring again; a wrong number or an error is not."""
        return (self.error is None and (self.check is None or self.check.ok is not False)
                and self.verdict().met is False)

    def remeasured(self) -> str:
        if not self.earlier:
            return ""
        shown = ", ".join(fmt_ratio(r, self.case.goal) for r in self.earlier)
        return f" (measurement {len(self.earlier) + 1}; missed before: {shown})"

    @property
    def ratio(self) -> float:
        if not (self.baseline_s > 0 and self.ours_s > 0):
            return math.nan
        return self.case.goal.ratio(self.baseline_s, self.ours_s)

    def verdict(self) -> Verdict:
        case = self.case
        if self.error is not None:
            return Verdict(False, f"error: {self.error}")
        if not case.like_for_like(self.threads):
            return Verdict(None, f"not judged: {case.quoted_note()}")
        if not case.goal.judged_at(self.threads):
            return Verdict(None, f"not judged: {case.goal.describe()}, here {fmt_ratio(self.ratio, case.goal)}")
        met = case.goal.met(self.ratio)
        text = f"{case.goal.describe()}: {fmt_ratio(self.ratio, case.goal)}{self.remeasured()}"
        if self.check is not None and self.check.ok is False:
            return Verdict(False, f"{text}; different numbers ({self.check.text})")
        return Verdict(met, text)


def synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


@contextmanager
def deterministic(device):
    """On a GPU: deterministic kernels (cuDNN's atomics-free algorithms, no autotuning) inside
    the block, for the untimed calls whose numbers are compared; Adam amplifies the last-bit
    differences of nondeterministic backward kernels into visibly different weights within an
    epoch. A no-op on the CPU, where the kernels are deterministic."""
    if torch.device(device).type != "cuda":
        yield
        return
    cudnn = torch.backends.cudnn
    saved = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(), cudnn.deterministic, cudnn.benchmark)
    torch.use_deterministic_algorithms(True, warn_only=True)
    cudnn.deterministic, cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        cudnn.deterministic, cudnn.benchmark = saved[2], saved[3]


def timed_call(fn: Callable[[], Any], device) -> tuple[Any, float]:
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    seconds = time.perf_counter() - start
    if isinstance(out, Timed):
        return out.value, out.seconds
    return out, seconds


def measure(case: Case, repeats: int, device, log: Callable[[str], None] = lambda s: None,
            retries: int = 0) -> Result:
    """`run_case`, and up to `retries` more times while the row misses its target by its ratio
    alone. On a shared machine a row's ratio moves by ±10 % between runs of unchanged code (other
    tenants, where the two vCPUs land): a regression misses every measurement, noise rarely
    twice. The result is the last measurement; the ratios that missed before it are kept and
    shown beside it."""
    result = run_case(case, repeats, device, log)
    earlier: list[float] = []
    while retries > 0 and result.missed_on_time():
        earlier.append(result.ratio)
        log(f"[{case.bench}] missed at {fmt_ratio(result.ratio, case.goal)}: measuring again")
        result = run_case(case, repeats, device, log)
        result.earlier = list(earlier)
        retries -= 1
    return result


def run_case(case: Case, repeats: int, device, log: Callable[[str], None] = lambda s: None) -> Result:
    """Warm-up (one call of each path, excluded), then `repeats` timed calls of each, the two
    paths alternating (and alternating which goes first) so that load from other work on the
    machine falls on both alike. Times are medians; the check compares the last outputs."""
    result = Result(case, threads=torch.get_num_threads())
    started = time.perf_counter()
    counts = {"baseline": case.repeats or repeats, "ours": case.repeats_ours or case.repeats or repeats}
    quoted = case.quoted_baseline_s is not None
    if quoted:
        counts["baseline"] = 0
    try:
        if not quoted:
            (case.warmup_baseline or case.baseline)()
        (case.warmup_ours or case.ours)()
        outputs: dict[str, Any] = {}
        for r in range(max(counts.values())):
            order = [("baseline", case.baseline), ("ours", case.ours)]
            for name, fn in (order if r % 2 == 0 else order[::-1]):
                if r >= counts[name]:
                    continue
                outputs[name], seconds = timed_call(fn, device)
                (result.baseline_all if name == "baseline" else result.ours_all).append(seconds)
        result.baseline_s = case.quoted_baseline_s if quoted else statistics.median(result.baseline_all)
        result.ours_s = statistics.median(result.ours_all)
        if case.check_baseline is not None and case.check_ours is not None:
            outputs = {"baseline": case.check_baseline(), "ours": case.check_ours()}
        result.check = case.compare(outputs.get("baseline"), outputs["ours"])
    except Exception as err:  # one broken row must not hide the others
        result.error = f"{type(err).__name__}: {err}"
    log(f"[{case.bench}] {case.what} ({result.threads} thread{'s' if result.threads > 1 else ''}): "
        f"baseline {fmt_time(result.baseline_s)}, ours {fmt_time(result.ours_s)}"
        + (f" — {result.error}" if result.error else "")
        + f" [{fmt_time(time.perf_counter() - started)} for the row]")
    return result


# ---- comparisons -------------------------------------------------------------------------------
def fmt_tol(value: float) -> str:
    """1e-4, 0.5, 2e-07 → short scientific where it is shorter."""
    text = f"{value:.0e}".replace("e-0", "e-").replace("e+0", "e")
    return text if len(text) < len(f"{value:g}") else f"{value:g}"


def max_relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a − b| / |b| elementwise (float64)."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float(((a - b).abs() / b.abs().clamp_min(1e-30)).max()) if b.numel() else 0.0


def compare_values(rtol: float, what: str = "scores") -> Callable[[Any, Any], Check]:
    """Elementwise relative difference of two tensors ≤ rtol."""
    def compare(a: torch.Tensor, b: torch.Tensor) -> Check:
        if a.shape != b.shape:
            return Check(False, f"{what}: shapes {tuple(a.shape)} vs {tuple(b.shape)}")
        if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
            return Check(False, f"{what}: not finite")
        diff = max_relative_difference(a, b)
        return Check(diff <= rtol, f"{what} max rel diff {diff:.1e} (≤ {fmt_tol(rtol)})")
    return compare


def compare_states(rtol: float = 1e-4, what: str = "weights") -> Callable[[Any, Any], Check]:
    """Two dicts of tensors (weights after an epoch): max |a − b| / max |b| per tensor ≤ rtol."""
    def compare(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> Check:
        if a.keys() != b.keys():
            return Check(False, f"{what}: different tensors")
        worst = 0.0
        for key in a:
            x, y = a[key].detach().double().cpu(), b[key].detach().double().cpu()
            scale = float(y.abs().max()) or 1.0
            worst = max(worst, float((x - y).abs().max()) / scale)
        return Check(worst <= rtol, f"{what} after the epoch: max rel diff {worst:.1e} (≤ {fmt_tol(rtol)})")
    return compare


def not_comparable(text: str) -> Callable[[Any, Any], Check]:
    def compare(a: Any, b: Any) -> Check:
        return Check(None, text)
    return compare


# ---- the table ------------------------------------------------------------------------------------
def fmt_time(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "—"
    if seconds >= 100:
        return f"{seconds:.0f} s"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} µs"


def _time_cell(seconds: float, case: Case) -> str:
    text = fmt_time(seconds)
    if case.items and math.isfinite(seconds):
        text += f" ({fmt_time(seconds / case.items)}/{case.item})"
    return text


def _mark(ok: bool | None) -> str:
    return {True: "✓", False: "✗", None: ""}[ok]


def fmt_ratio(ratio: float, goal: Goal) -> str:
    if not math.isfinite(ratio):
        return "—"
    return f"{ratio:.2f}× faster" if goal.kind == "speedup" else f"{ratio:.2f}× the time"


def result_row(r: Result) -> list[str]:
    case = r.case
    what = f"**{case.what}**: {case.baseline_label} → {case.ours_label}"
    if case.note:
        what += f" ({case.note})"
    threads = str(r.threads or "—")
    if r.error is not None:
        return [case.bench, threads, what, _time_cell(r.baseline_s, case), _time_cell(r.ours_s, case), "—",
                case.goal.describe(), f"error: {r.error}"]
    if not case.like_for_like(r.threads):
        goal = f"{case.goal.describe()} — not judged: {case.quoted_note()}"
    elif not case.goal.judged_at(r.threads):
        goal = f"{case.goal.describe()} — not judged here"
    else:
        met = case.goal.met(r.ratio)
        goal = case.goal.describe() + (f" {_mark(met)}" if met is not None else "") + r.remeasured()
    check = r.check.text if r.check else "—"
    if r.check and r.check.ok is not None:
        check = f"{_mark(r.check.ok)} {check}"
    return [case.bench, threads, what, _time_cell(r.baseline_s, case), _time_cell(r.ours_s, case),
            fmt_ratio(r.ratio, case.goal), goal, check]


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    def clean(cell: str) -> str:
        return str(cell).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(clean(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


RESULT_HEADER = ["#", "threads", "what: baseline → ours", "baseline", "ours", "ratio", "target", "same numbers?"]


# ---- the machine ------------------------------------------------------------------------------------
def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    try:
        return " / ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def machine_line(device: torch.device, threads: Sequence[int] | None = None) -> str:
    cores = os.cpu_count()
    threads = list(threads or [torch.get_num_threads()])
    counts = " and ".join(str(t) for t in threads)
    text = (f"{cpu_name()}, {cores} cores, torch {torch.__version__}, {counts} CPU "
            f"thread{'s' if threads != [1] else ''} (the threads column), Python {sys.version.split()[0]}")
    if device.type == "cuda":
        text += f"; GPU {torch.cuda.get_device_name(device)}"
    return text
