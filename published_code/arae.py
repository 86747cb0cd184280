"""ARAE's L∞ model beside its authors' Keras code, at equal data and budget (MNIST "p2").

    python published_code/arae.py --digits 2 8 --seeds 0 1 --budget reduced \
        --python ../tfvenv/bin/python --data-dir ../shared/datasets \
        --out reproduced/published_code/arae_mnist_p2_reduced.json

The authors' code needs TensorFlow with the Keras 2 API, which is no dependency of this project:
give --python a separate environment's interpreter, made once with
`python3 -m venv ../tfvenv && ../tfvenv/bin/pip install tensorflow-cpu==2.16.2 tf_keras==2.16.0`.

In a scratch folder outside the repository (--work, default ../published_arae) the script:

1. takes the authors' train.py (rohban-lab/Salehi_submitted_2020, cloned, or --src DIR) and
   patches dependency rot only (ROT: the Keras 2 API under today's TensorFlow, in graph mode as
   Keras 2.3 ran), the number of passes (--budget: the table's epochs) and a seed per run;
2. writes our one-class ("p2") training images of the digit in its format (data/*.npy: the
   images our protocol trains on, flattened, /255), trains with its own loop and scores our
   whole test split with its model (the reconstruction error Σ (x̂ − x)², the published score);
3. trains ours, `anomaly.reproduce table=arae_mnist_p2 variant=arae_linf` and `variant=dae`, at
   the same budget, on the same images;
4. writes one JSON: every run's test AUROC, and the means per model.

Runs already finished in --work are read back, so a second call resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `anomaly` from this checkout, installed or not

from harness import run_all, write_record  # noqa: E402 (published_code/harness.py)
URL = "https://github.com/rohban-lab/Salehi_submitted_2020"
COMMIT = "eacec61"  # the repository's last commit (2021)
# the table's budgets (conf/table/arae_mnist_p2.yaml): passes over the training set
BUDGETS = {"reduced": 200, "paper": 1600, "smoke": 2}
MODELS = ("published_linf", "arae_linf", "dae")

# (old, new) in train.py: dependency rot, then the harness's own setting (the passes)
ROT = [
    # Keras 2.3's API lives on as tf_keras; K.gradients / K.function need graph mode, as Keras
    # 2.3 on TensorFlow 1.15 ran
    ("import keras\nfrom keras import backend as K\n",
     "import tensorflow as tf\ntf.compat.v1.disable_eager_execution()\nimport tf_keras as keras\n"
     "from tf_keras import backend as K\n"),
]
SCHEDULE = [("        num_steps = 1600\n", "        num_steps = int(os.environ['ARAE_PASSES'])\n")]


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def published_source(work: Path, src: Path | None) -> Path:
    patched = work / "src" / "train.py"
    if patched.exists():
        return patched
    if src is None:
        src = work / "clone"
        if not src.exists():
            sh(["git", "clone", "-q", URL, str(src)])
    git = ["git", f"--git-dir={src}"] if (src / "HEAD").exists() and not (src / ".git").exists() else ["git", "-C", str(src)]
    text = sh([*git, "show", f"{COMMIT}:train.py"]).stdout
    for old, new in ROT + SCHEDULE:
        if old not in text:
            raise SystemExit(f"error: the patch for train.py no longer matches: {old!r}")
        text = text.replace(old, new)
    patched.parent.mkdir(parents=True, exist_ok=True)
    patched.write_text(text)
    return patched


_HYDRA = threading.Lock()  # Hydra's global state: one composition at a time across the job threads


def write_data(args, digit: int, seed: int, folder: Path) -> None:
    """Our p2 split of the digit: its training images and the whole test split, flattened /255."""
    with _HYDRA:
        _write_data(args, digit, seed, folder)


def _write_data(args, digit: int, seed: int, folder: Path) -> None:
    from anomaly.config import compose
    from anomaly.pipeline import build_datamodule

    cfg = compose(".", ["experiment=arae_mnist_p2_linf", f"protocol.normal=[{digit}]", f"seed={seed}",
                        f"paths.data_dir={args.data_dir}"])
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup()
    flat = dm.data.images.flatten(1).numpy().astype(np.float64) / 255.0
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "train_images.npy", flat[dm.split.train])
    np.save(folder / "test_images.npy", flat[dm.split.test])
    np.save(folder / "test_anomalous.npy", dm.split.test_anomalous)
    np.save(folder / "meta.npy", np.array(["mnist", "p2"]))


def auroc(scores: np.ndarray, anomalous: np.ndarray) -> float:
    import torch
    from torchmetrics.functional.classification import binary_auroc

    return float(binary_auroc(torch.from_numpy(scores).double(), torch.from_numpy(anomalous).long()))


def run_published(args, digit: int, seed: int) -> dict:
    run_dir = Path(args.work) / "published" / f"d{digit}_s{seed}"
    done = run_dir / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    train_py = published_source(Path(args.work), args.src)
    write_data(args, digit, seed, run_dir / "data")
    (run_dir / "model").mkdir(parents=True, exist_ok=True)
    shutil.copy(train_py, run_dir / "train.py")
    # their code seeds nothing: the harness seeds Python, NumPy and TensorFlow before it runs;
    # then their model scores the test images as their test.py does (Σ (x̂ − x)²)
    code = (f"import os, random, runpy, numpy as np, tensorflow as tf; random.seed({seed}); np.random.seed({seed}); "
            f"tf.compat.v1.set_random_seed({seed}); g = runpy.run_path('train.py', run_name='__main__'); "
            "x = np.load('data/test_images.npy'); y = g['model'].predict(np.concatenate((x, x), axis=-1), batch_size=1000); "
            "np.save('test_scores.npy', ((y - x) ** 2).sum(axis=1))")
    env = {**os.environ, "ARAE_PASSES": str(BUDGETS[args.budget]), "CUDA_VISIBLE_DEVICES": "",
           "OMP_NUM_THREADS": str(args.threads), "TF_NUM_INTRAOP_THREADS": str(args.threads),
           "TF_NUM_INTEROP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = time.perf_counter()
    proc = subprocess.run([args.python, "-c", code], cwd=run_dir, env=env, text=True, capture_output=True)
    (run_dir / "train.log").write_text(proc.stdout[-20000:] + proc.stderr[-20000:])
    if proc.returncode:
        raise RuntimeError(f"published ARAE d{digit} s{seed} failed:\n{proc.stderr[-2000:]}")
    scores = np.load(run_dir / "test_scores.npy")
    anomalous = np.load(run_dir / "data" / "test_anomalous.npy")
    result = {"model": "published_linf", "digit": digit, "seed": seed, "passes": BUDGETS[args.budget],
              "train_seconds": round(time.perf_counter() - start, 1), "auroc": auroc(scores, anomalous),
              "train_images": int(len(np.load(run_dir / "data" / "train_images.npy"))), "test_images": int(len(scores))}
    done.write_text(json.dumps(result, indent=1))
    return result


def run_ours(args, model: str, digit: int, seed: int) -> dict:
    run_dir = Path(args.work) / "ours" / model / f"d{digit}_s{seed}"
    done = run_dir / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    cmd = [sys.executable, "-m", "anomaly.reproduce", "table=arae_mnist_p2", f"budget={args.budget}",
           f"variant={model}", f"protocol.normal=[{digit}]", f"seed={seed}", "results_dir=null",
           f"paths.log_dir={run_dir / 'runs'}", f"paths.data_dir={args.data_dir}", f"threads={args.threads}",
           "trainer.enable_progress_bar=false", "logger=none"]
    shutil.rmtree(run_dir / "runs", ignore_errors=True)
    proc = subprocess.run(cmd, cwd=REPO, text=True, capture_output=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "reproduce.log").write_text(proc.stdout + proc.stderr)
    found = [json.loads(p.read_text()) for p in (run_dir / "runs").rglob("results.json")]
    if proc.returncode or len(found) != 1 or found[0].get("status") != "ok":
        raise RuntimeError(f"ours {model} d{digit} s{seed} failed:\n{(proc.stdout + proc.stderr)[-2000:]}")
    r = found[0]
    result = {"model": model, "digit": digit, "seed": seed, "passes": BUDGETS[args.budget],
              "train_seconds": r.get("train_seconds"), "auroc": r["metrics"]["auroc"],
              "train_images": r["split_sizes"]["train"], "test_images": r["split_sizes"]["test"],
              "command": shlex.join(["python", *cmd[1:]])}
    done.write_text(json.dumps(result, indent=1))
    return result


def summarise(runs: list[dict]) -> dict:
    out = {}
    for model in MODELS:
        rows = [r for r in runs if r["model"] == model]
        if rows:
            values = [r["auroc"] for r in rows]
            out[model] = {"n_runs": len(rows), "auroc": [round(float(np.mean(values)), 4), round(float(np.std(values)), 4)],
                          "auroc_by_digit": {str(d): round(float(np.mean([r["auroc"] for r in rows if r["digit"] == d])), 4)
                                             for d in sorted({r["digit"] for r in rows})}}
    return out


def main(argv: list[str]) -> None:
    args = parser().parse_args(argv)
    args.data_dir = str(Path(args.data_dir).resolve())
    jobs = [(m, d, s) for s in args.seeds for d in args.digits for m in args.models]
    start = time.perf_counter()

    def work(model: str, digit: int, seed: int) -> dict:
        return run_published(args, digit, seed) if model == "published_linf" else run_ours(args, model, digit, seed)

    runs, failures = run_all(jobs, work, args.jobs, lambda r: f"AUROC {r['auroc']:.4f}",
                             lambda r, f: write(args, argv, r, f, start))
    print(json.dumps(summarise(runs), indent=1))
    if failures:
        sys.exit(1)


def write(args, argv: list[str], runs: list[dict], failures: list[dict], start: float) -> None:
    if not args.out:
        return
    order = {m: i for i, m in enumerate(MODELS)}
    runs = sorted(runs, key=lambda r: (order[r["model"]], r["digit"], r["seed"]))
    record = {
        "command": shlex.join(["python", "published_code/arae.py", *argv]),
        "what": "ARAE MNIST p2 (one class, the whole official test split): the authors' Keras L∞ training "
                "(train.py, patched for rot only) and ours (L∞ and the DAE on the same MLP) on the same "
                "training images, at the same number of passes; test AUROC of Σ (x̂ − x)²",
        "published": {"repository": URL, "commit": COMMIT,
                      "patches": [{"file": "train.py", "old": o, "new": n} for o, n in ROT + SCHEDULE]},
        "budget": args.budget, "passes": BUDGETS[args.budget], "device": "cpu, one thread per training",
        "wall_seconds": round(time.perf_counter() - start, 1),
        "summary": summarise(runs), "runs": runs, "failures": failures,
    }
    write_record(args.out, record)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--digits", type=int, nargs="+", default=[2, 8])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--budget", default="reduced", choices=list(BUDGETS))
    p.add_argument("--python", default=str(REPO.parent / "tfvenv" / "bin" / "python"),
                   help="the interpreter of an environment with tensorflow and tf_keras (see above)")
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "datasets"))
    p.add_argument("--work", default=str(REPO.parent / "published_arae"),
                   help="scratch folder outside the repository (the authors' code, data, runs)")
    p.add_argument("--src", type=Path, default=None, help="a clone (or bare git dir) of the authors' repository")
    p.add_argument("--jobs", type=int, default=1, help="trainings at once")
    p.add_argument("--threads", type=int, default=1, help="threads per training")
    p.add_argument("--out", default=None, help="the JSON to write (reproduced/published_code/…)")
    return p


if __name__ == "__main__":
    main(sys.argv[1:])
