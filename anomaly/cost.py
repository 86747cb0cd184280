"""What a training costs, and training to a compute budget (`compute.max_flops`).

Every run counts its training FLOPs (`TrainingCost`, a callback the pipeline adds to every
fit): torch's `FlopCounterMode` counts the first `flop_cycle` batches of each stage of the
method's own training step inside the Lightning loop, forward and backward, every network it
updates and every attack or search it runs (ARAE's PGD, f-AnoGAN's gradient penalty); each
further batch costs its stage's FLOPs per image × its images. The counter counts matrix
products and convolutions (torch's formulas; element-wise operations count zero). Work outside
torch's operators (the OC-SVM's libsvm fit) is the method's estimate
(`AnomalyModule.untracked_training_flops`). results.json's `cost` holds the FLOPs, the batches,
the optimiser updates (Lightning's global step: every optimiser step of every optimiser), the
seconds, and the share of the published schedule the run got.

A compute budget: with `compute.max_flops=B` a run trains its configured schedule (a
benchmark's: its paper's, conf/paper/) until it has spent B training FLOPs, or to the schedule's
end when that costs less. Before fit, a probe (`probe_flops_per_image`: a copy of the model,
one cycle of batches per stage in a throwaway Trainer, the random generators restored after it)
counts each stage's FLOPs per image; `plan_budget` turns them into the epochs each stage gets and
the batch after which training stops; `apply_plan` shortens the method's stages and moves its lr
milestones as fractions of what each stage gets (budget-aware training, Li, Yumer & Ramanan,
ICLR 2020), all before the optimisers and their schedulers are built. The stop is a batch count:
the same seed gives the same numbers, and a resumed run carries its count in the checkpoint
(the callback's state).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Iterator

import lightning as L
from omegaconf import DictConfig, OmegaConf
from torch.utils.flop_counter import FlopCounterMode

from anomaly import AnomalyError
from anomaly.rng import kept_random_state

log = logging.getLogger("anomaly")

COUNTED_BY = ("torch.utils.flop_counter.FlopCounterMode: matrix-product and convolution FLOPs, forward and "
              "backward, of the first flop_cycle training batches of each stage, per image")


class _NoModules:
    """Stands in for FlopCounterMode's module tracker: totals need no per-module split, and the
    tracker's backward hooks refuse torch.autograd.grad on a leaf (ARAE's attacks, f-AnoGAN's
    gradient penalty take gradients with respect to their inputs)."""
    parents = ("Global",)

    def __enter__(self) -> "_NoModules":
        return self

    def __exit__(self, *args: Any) -> None:
        return None


class TotalFlops(FlopCounterMode):
    """torch's FlopCounterMode, counting the total only (see `_NoModules`)."""

    def __init__(self) -> None:
        super().__init__(display=False)
        self.mod_tracker = _NoModules()


def batch_images(batch: Any) -> int:
    """The images of a training batch (host metadata: no device read)."""
    images = batch["image"] if isinstance(batch, dict) else batch
    return int(images.shape[0])


class TrainingCost(L.Callback):
    """Counts a fit's training FLOPs, batches and images (see the module docstring) and, given a
    `BudgetPlan`, stops training after its batch (`trainer.should_stop`: the epoch's end hooks
    and its checkpoint still run)."""

    def __init__(self, plan: "BudgetPlan | None" = None) -> None:
        self.plan = plan
        self.flops_per_image: dict[str, float] = {}
        self._counting: dict[str, list[float]] = {}  # stage → [FLOPs, images, batches] counted so far
        self._counter: TotalFlops | None = None
        self.flops = 0.0
        self.batches = 0
        self.images = 0
        self.carried_seconds = 0.0  # training seconds of the fits before a resume (the checkpoint's)
        self._fit_start: float | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_start = time.perf_counter()  # after a resume's state is loaded

    def seconds_so_far(self) -> float:
        """Training seconds of this run, the fits before a resume included."""
        return self.carried_seconds + (time.perf_counter() - self._fit_start if self._fit_start is not None else 0.0)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if pl_module.training_stage not in self.flops_per_image:
            self._counter = TotalFlops()
            self._counter.__enter__()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        stage, images = pl_module.training_stage, batch_images(batch)
        if self._counter is not None:
            self._stop_counting()
            counted = float(self._last_count)
            done = self._counting.setdefault(stage, [0.0, 0, 0])
            done[0], done[1], done[2] = done[0] + counted, done[1] + images, done[2] + 1
            if done[2] >= max(1, int(pl_module.flop_cycle)):
                self.flops_per_image[stage] = done[0] / max(done[1], 1)
            self.flops += counted
        else:
            self.flops += self.flops_per_image[stage] * images
        self.batches += 1
        self.images += images
        if self.plan is not None and self.plan.max_batches is not None and self.batches >= self.plan.max_batches:
            trainer.should_stop = True

    def _stop_counting(self) -> None:
        counter, self._counter = self._counter, None
        if counter is not None:
            counter.__exit__(None, None, None)
            self._last_count = counter.get_total_flops()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._stop_counting()  # a failed step leaves no dispatch mode behind

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop_counting()
        for stage, (flops, images, _) in self._counting.items():  # a stage shorter than its cycle
            self.flops_per_image.setdefault(stage, flops / max(images, 1))

    # resumable: a checkpoint carries what was spent
    def state_dict(self) -> dict[str, Any]:
        return {"flops": self.flops, "batches": self.batches, "images": self.images,
                "seconds": self.seconds_so_far(), "flops_per_image": dict(self.flops_per_image),
                "counting": {k: list(v) for k, v in self._counting.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.flops, self.batches = float(state_dict["flops"]), int(state_dict["batches"])
        self.images = int(state_dict["images"])
        self.carried_seconds = float(state_dict.get("seconds", 0.0))  # older checkpoints: not recorded
        self.flops_per_image = {k: float(v) for k, v in state_dict["flops_per_image"].items()}
        self._counting = {k: list(v) for k, v in state_dict.get("counting", {}).items()}

    def record(self, trainer: L.Trainer, model: Any, cfg: DictConfig, dm: Any) -> dict[str, Any]:
        """results.json's `cost` (without the seconds, which the pipeline adds)."""
        world = max(1, int(trainer.world_size))  # every rank trains its share: the run's FLOPs are theirs together
        untracked = float(model.untracked_training_flops())
        scheduled = self.plan.scheduled if self.plan is not None else stage_epochs(model, cfg)
        sizes = limited(loader_batch_sizes(dm.train_dataloader()), OmegaConf.select(cfg, "trainer.limit_train_batches"))
        epochs = (self.plan.given if self.plan is not None and self.batches * world >= (self.plan.max_batches or 0)
                  else stages_done(scheduled, self.batches * world / max(len(sizes), 1)))
        published, share_of = published_epochs(cfg, model, scheduled)
        full = sum(published[s] * self.flops_per_image.get(s, 0.0) for s in published) * sum(sizes)
        counted = self.flops * world
        share = min(1.0, counted / full) if full > 0 else (1.0 if self.batches else None)
        return {"training_flops": counted + untracked, "untracked_flops": untracked,
                "flops_per_image": dict(self.flops_per_image), "counted_by": COUNTED_BY,
                "training_batches": self.batches * world, "training_images": self.images * world,
                "optimizer_updates": int(trainer.global_step),  # every rank applies the same updates
                "budget_flops": self.plan.max_flops if self.plan is not None else None,
                "stopped_by": ("budget" if self.plan is not None and self.plan.max_batches is not None
                               else "schedule"),
                "stages": {s: {"epochs": round(epochs.get(s, 0.0), 3), "published": published[s]} for s in published},
                "schedule_share": share, "share_of": share_of}


def carried_seconds(trainer: L.Trainer) -> float:
    """The training seconds a resumed fit's checkpoint carried (0 for a fit from the start)."""
    counter = next((c for c in trainer.callbacks if isinstance(c, TrainingCost)), None)
    return counter.carried_seconds if counter is not None else 0.0


def spent(trainer: L.Trainer, model: Any, cfg: DictConfig, dm: Any, **seconds: float) -> dict[str, Any] | None:
    """results.json's `cost` of a fit (None: no `TrainingCost` counted it), with its seconds
    (`train=…, validate=…, score=…`)."""
    counter = next((c for c in trainer.callbacks if isinstance(c, TrainingCost)), None)
    if counter is None:
        return None
    return {**counter.record(trainer, model, cfg, dm), **{f"{k}_seconds": round(v, 3) for k, v in seconds.items()}}


def stages_done(scheduled: dict[str, int], epochs: float) -> dict[str, float]:
    """`epochs` of training spread over the stages in order (each at most its scheduled epochs)."""
    out = {}
    for stage, length in scheduled.items():
        out[stage] = min(float(length), max(epochs, 0.0))
        epochs -= out[stage]
    return out


def loader_batch_sizes(loader: Any) -> list[int]:
    """The batch sizes of one pass over a training loader (the last may be smaller)."""
    sampler = getattr(loader, "batch_sampler", None)
    n = len(loader.dataset)
    size = int(getattr(sampler, "batch_size", None) or getattr(loader, "batch_size", None) or n)
    drop_last = bool(getattr(sampler, "drop_last", False))
    sizes = [size] * (n // size)
    if n % size and not drop_last:
        sizes.append(n % size)
    return sizes


# ---- the schedule in stages ------------------------------------------------------------------------------
def stage_epochs(model: Any, cfg: DictConfig) -> dict[str, int]:
    """Each stage's epochs as the model is set (a stage of 0 epochs left out), in training order."""
    out = {}
    for stage, key in model.stage_settings.items():
        epochs = (int(getattr(model, key.split(".", 1)[1])) if key.startswith("method.")
                  else int(OmegaConf.select(cfg, key)))
        if epochs > 0:
            out[stage] = epochs
    return out


def published_epochs(cfg: DictConfig, model: Any, scheduled: dict[str, int]) -> tuple[dict[str, int], str]:
    """Each stage's epochs in its published schedule (conf/paper/'s, where it sets the stage's
    key), else as the run config scheduled them; and which of the two it is."""
    from anomaly.provenance import paper_settings

    paper = paper_settings(cfg) or {}
    keys = paper.get("keys") or {}
    out = {s: int(keys.get(model.stage_settings[s], e)) for s, e in scheduled.items()}
    if any(model.stage_settings[s] in keys for s in scheduled):
        return out, f"conf/paper/{paper['name']}.yaml"
    return out, "the run config's schedule (no published one)"


@dataclass
class BudgetPlan:
    """How a run spends `max_flops`: the epochs each stage gets (the last may end mid-epoch) and
    the training batch after which it stops (None: its whole schedule fits)."""
    max_flops: float
    flops_per_image: dict[str, float]
    scheduled: dict[str, int]
    given: dict[str, float]
    batches_per_epoch: int
    max_batches: int | None
    planned_flops: float
    schedule_flops: float

    @property
    def share(self) -> float:
        return self.planned_flops / self.schedule_flops if self.schedule_flops else 1.0


def plan_budget(max_flops: float, flops_per_image: dict[str, float], scheduled: dict[str, int],
                batch_sizes: list[int]) -> BudgetPlan:
    """The stages' epochs and the stopping batch that spend at most `max_flops` (see the module
    docstring): where the schedule costs more, every stage but the last gets its scheduled share
    of its epochs (the budget over the schedule's cost, rounded, at least one epoch) and the last
    stage the batches the rest pays for (at least one). `batch_sizes`: one epoch's batches."""
    per_epoch = {s: flops_per_image.get(s, 0.0) * sum(batch_sizes) for s in scheduled}
    schedule_flops = sum(scheduled[s] * per_epoch[s] for s in scheduled)
    nb = len(batch_sizes)
    if schedule_flops <= max_flops or not scheduled or not nb:
        return BudgetPlan(max_flops, dict(flops_per_image), dict(scheduled), {s: float(e) for s, e in scheduled.items()},
                          nb, None, schedule_flops, schedule_flops)
    share = max_flops / schedule_flops
    *first, last = list(scheduled)
    given: dict[str, float] = {}
    spent, batches = 0.0, 0
    for stage in first:
        epochs = min(scheduled[stage], max(1, round(share * scheduled[stage])))
        given[stage], spent, batches = float(epochs), spent + epochs * per_epoch[stage], batches + epochs * nb
    left = max_flops - spent
    whole = min(int(left // per_epoch[last]) if per_epoch[last] > 0 else scheduled[last], scheduled[last])
    paid = whole * per_epoch[last]
    extra = 0
    if whole < scheduled[last]:
        for size in batch_sizes:  # the batches of the partial epoch the rest still pays for
            cost = flops_per_image.get(last, 0.0) * size
            if paid + cost > left:
                break
            paid, extra = paid + cost, extra + 1
    if whole == 0 and extra == 0:  # the first stages took it all: the last still trains one batch
        paid, extra = flops_per_image.get(last, 0.0) * batch_sizes[0], 1
    given[last] = whole + extra / nb
    return BudgetPlan(max_flops, dict(flops_per_image), dict(scheduled), given, nb, batches + whole * nb + extra,
                      spent + paid, schedule_flops)


def apply_plan(plan: BudgetPlan | None, model: Any, trainer: L.Trainer) -> None:
    """The model's stages and lr milestones shortened to the plan, the trainer's epochs set to
    the epochs it touches (before fit builds the optimisers and schedulers); None: no budget."""
    if plan is None:
        return
    model.rescale_schedule({s: (plan.scheduled[s], plan.given[s]) for s in plan.scheduled})
    trainer.fit_loop.max_epochs = sum(math.ceil(e) for e in plan.given.values())
    if plan.max_batches is not None:  # the budget decides: Lightning would train on to min_epochs
        trainer.fit_loop.min_epochs = 0
    describe_plan(plan, model)


def plan_for(cfg: DictConfig, model: Any, dm: Any) -> BudgetPlan | None:
    """The budget plan of a run with `compute.max_flops` set (None without): its stages' FLOPs per
    image probed on a copy of the model, its schedule as configured, one epoch's batches of `dm`."""
    if OmegaConf.select(cfg, "compute.max_flops") is None:
        return None
    budget = float(cfg.compute.max_flops)
    from anomaly.provenance import topology

    if topology(cfg)["world_size"] > 1:
        raise AnomalyError(f"compute.max_flops={budget:g}: a compute budget trains in one process (one device)")
    scheduled = stage_epochs(model, cfg)
    flops, _ = probe_flops_per_image(cfg, model, dm, scheduled)
    sizes = limited(loader_batch_sizes(dm.train_dataloader()), OmegaConf.select(cfg, "trainer.limit_train_batches"))
    return plan_budget(budget, flops, scheduled, sizes)


def limited(sizes: list[int], limit: Any) -> list[int]:
    """One epoch's batch sizes under Lightning's limit_train_batches (a count or a share)."""
    if limit is None or (isinstance(limit, float) and limit == 1.0):
        return sizes
    count = int(limit) if isinstance(limit, int) else int(len(sizes) * float(limit))
    return sizes[:count]


def describe_plan(plan: BudgetPlan, model: Any) -> None:
    """One log line: the budget, where the run stops, each stage's epochs and the moved milestones."""
    stages = ", ".join(f"{s} {plan.given[s]:.3g}/{plan.scheduled[s]} ep" for s in plan.scheduled)
    what = (f"stops after batch {plan.max_batches} ({100 * plan.share:.1f} % of its schedule's "
            f"{plan.schedule_flops:.3g} FLOPs)" if plan.max_batches is not None
            else f"its whole schedule fits ({plan.schedule_flops:.3g} FLOPs)")
    milestones = "; ".join(f"{a} {getattr(model, a)}" for a in model.milestone_settings)
    log.info("compute budget %.3g FLOPs: %s %s: %s%s", plan.max_flops, model.name, what, stages,
             f"; lr milestones moved with them: {milestones}" if milestones and plan.max_batches is not None else "")


# ---- the probe ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's info lines (GPU available…, `Trainer.fit` stopped) are the real fit's to say."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def probe_flops_per_image(cfg: DictConfig, model: Any, dm: Any, scheduled: dict[str, int],
                          timed_batches: int = 0) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Each stage's training FLOPs per image, counted by `TrainingCost` in one cycle of batches of
    each stage of a copy of the model, fitted by a throwaway Trainer (no validation, logger or
    checkpoint); the model and the random generators are left as they were. A model with no
    trainable parameter (the OC-SVM) costs no counted FLOPs. `timed_batches`: as many more
    batches a stage, timed (seconds by stage: what a step costs on this machine)."""
    if not any(p.requires_grad for p in model.parameters()):
        return {s: 0.0 for s in scheduled}, {}
    from anomaly.config import instantiate

    probe = copy.deepcopy(model)
    wanted = max(1, int(probe.flop_cycle)) + timed_batches  # batches a stage
    per_epoch = len(limited(loader_batch_sizes(dm.train_dataloader()), OmegaConf.select(cfg, "trainer.limit_train_batches")))
    epochs = max(1, math.ceil(wanted / max(per_epoch, 1)))  # short epochs: the cycle spans several
    probe.rescale_schedule({s: (e, epochs) for s, e in scheduled.items()})
    counter = TrainingCost()
    timer = StepTimes(counter)
    with kept_random_state(), quiet_lightning():
        trainer = instantiate(cfg.trainer, max_epochs=epochs * len(scheduled), max_steps=-1,
                              limit_train_batches=wanted if epochs == 1 else per_epoch,
                              limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                              enable_progress_bar=False, enable_model_summary=False, callbacks=[counter, timer])
        trainer.fit(probe, datamodule=dm)
    missing = [s for s in scheduled if s not in counter.flops_per_image]
    if missing:
        raise AnomalyError(f"method={model.name}: the FLOP probe trained no batch of stage {missing}")
    return counter.flops_per_image, timer.seconds


class StepTimes(L.Callback):
    """CPU seconds of each training batch after its stage's counted ones, by stage: the process's
    own time (one thread: what the batch takes on a core of its own, however busy the machine)."""

    def __init__(self, counter: TrainingCost) -> None:
        self.counter = counter
        self.seconds: dict[str, list[float]] = {}
        self._start: float | None = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        counted = pl_module.training_stage in self.counter.flops_per_image
        self._start = time.process_time() if counted else None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._start is not None:
            self.seconds.setdefault(pl_module.training_stage, []).append(time.process_time() - self._start)
