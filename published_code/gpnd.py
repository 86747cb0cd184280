"""GPND beside its authors' 2018 code, at equal data and budget.

    python published_code/gpnd.py --digits 2 3 8 --seeds 0 1 --budget reduced \
        --data-dir ../shared/datasets --out reproduced/published_code/gpnd_mnist_reduced.json

Nothing of the authors' code enters this repository. The script, in a scratch folder outside it
(--work, default ../published_gpnd):

1. takes the authors' code (podgorskiy/GPND at the paper's commit, cloned, or --src DIR), copies
   it and patches dependency rot only (ROT), the schedule (--budget: the table's epochs and lr
   milestones) and a seed per run;
2. writes our MNIST folds in its own format (data_fold_<k>.pkl: (label, 32×32 uint8) pairs, the
   images as our loader resizes them), so that both codes train on the same images;
3. trains with its train_AAE.py, one process per digit × seed, loads its E and G into our GPND
   (the same layers; a conv bias before BatchNorm is folded into the running mean) and scores
   them with our scorer on our validation and test sets (the score formula was checked not to
   be what differs: issue "Faithful at equal data and budget");
4. trains ours with `anomaly.reproduce table=gpnd_mnist` for each setting in VARIANTS: each
   one training difference of the 2018 code, and all of them together;
5. writes one JSON with every run's inlier F1 and AUROC per outlier share, and the means.

Runs already finished in --work are read back, so a second call resumes. --jobs runs that many
trainings at once (on a GPU they share it).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `anomaly` from this checkout, installed or not

from harness import run_all, write_record  # noqa: E402 (published_code/harness.py)
URL = "https://github.com/podgorskiy/GPND"
COMMIT = "4439822e02b735dff086ce933f42de9e5b6a92ac"  # Aug 2018: the paper's version (latent 32)
RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5)
# the table's budgets (conf/table/gpnd_mnist.yaml): epochs and the epochs at which lr ÷ 4
BUDGETS = {"reduced": (6, (3, 5)), "paper": (80, (30, 60)), "smoke": (1, ())}

# ours, one training difference of the 2018 code at a time, then all of them
VARIANTS = {
    "ours_2020": ["method.reconstruction_weight=2.0", "method.latent_adversarial_weight=1.0",
                  "method.generator.output=sigmoid", "method.batchnorm_init=dcgan",
                  "method.reuse_forward_passes=true"],
    "loss_weights_2018": ["method.reconstruction_weight=1.0", "method.latent_adversarial_weight=2.0",
                          "method.generator.output=sigmoid", "method.batchnorm_init=dcgan",
                          "method.reuse_forward_passes=true"],
    "half_tanh_2018": ["method.reconstruction_weight=2.0", "method.latent_adversarial_weight=1.0",
                       "method.generator.output=half_tanh", "method.batchnorm_init=dcgan",
                       "method.reuse_forward_passes=true"],
    "batchnorm_init_2018": ["method.reconstruction_weight=2.0", "method.latent_adversarial_weight=1.0",
                            "method.generator.output=sigmoid", "method.batchnorm_init=pytorch",
                            "method.reuse_forward_passes=true"],
    "fresh_passes_2018": ["method.reconstruction_weight=2.0", "method.latent_adversarial_weight=1.0",
                          "method.generator.output=sigmoid", "method.batchnorm_init=dcgan",
                          "method.reuse_forward_passes=false"],
    "all_2018": ["method.reconstruction_weight=1.0", "method.latent_adversarial_weight=2.0",
                 "method.generator.output=half_tanh", "method.batchnorm_init=pytorch",
                 "method.reuse_forward_passes=false"],
}

# (file, old, new): dependency rot, then the harness's own settings (schedule, nothing else)
ROT = [
    ("train_AAE.py", "np.asarray([x[0] for x in l], np.int)", "np.asarray([x[0] for x in l], int)"),
    # `device` exists only when CUDA does; setup(ZD) on the next line moves it anyway
    ("train_AAE.py", "ZD = ZDiscriminator(zsize, batch_size).to(device)", "ZD = ZDiscriminator(zsize, batch_size)"),
]
SCHEDULE = [
    ("train_AAE.py", "train_epoch = 80", "train_epoch = int(os.environ['GPND_EPOCHS'])"),
    # lr ÷ 4 before the milestone epochs (the 2018 code: before epochs 30 and 60, 1-based)
    ("train_AAE.py", "if (epoch + 1) % 30 == 0:",
     "if epoch in [int(m) for m in os.environ['GPND_MILESTONES'].split()]:"),
]


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def published_source(work: Path, src: Path | None) -> Path:
    """The authors' code at COMMIT, patched, in work/src."""
    patched = work / "src"
    if (patched / ".patched").exists():
        return patched
    if src is None:
        src = work / "clone"
        if not src.exists():
            sh(["git", "clone", "-q", URL, str(src)])
    patched.mkdir(parents=True, exist_ok=True)
    if (Path(src) / "HEAD").exists() and not (Path(src) / ".git").exists():  # a bare git dir
        git = ["git", f"--git-dir={src}"]
    else:
        git = ["git", "-C", str(src)]
    for name in ("train_AAE.py", "net.py"):
        text = sh([*git, "show", f"{COMMIT}:{name}"]).stdout
        for file, old, new in ROT + SCHEDULE:
            if file == name:
                if old not in text:
                    raise SystemExit(f"error: the patch for {name} no longer matches: {old!r}")
                text = text.replace(old, new)
        (patched / name).write_text(text)
    (patched / ".patched").write_text(COMMIT)
    return patched


def compose(overrides: list[str]):
    """Our run config for these overrides (files written under the working directory)."""
    from anomaly.config import compose as compose_run

    return compose_run(".", overrides)


def cell_overrides(args, digit: int, seed: int, ratio: float) -> list[str]:
    return ["experiment=gpnd_mnist", f"protocol.normal=[{digit}]", f"protocol.fold={args.fold}",
            f"protocol.outlier_ratio={ratio}", f"seed={seed}", f"paths.data_dir={args.data_dir}"]


def write_folds(args, folder: Path) -> None:
    """Our MNIST, as our loader resizes it, in our folds, as the 2018 code's data_fold_<k>.pkl."""
    from anomaly.data.protocols.gpnd_folds import gpnd_fold_of
    from anomaly.pipeline import build_datamodule

    if (folder / "data_fold_4.pkl").exists():
        return
    cfg = compose(cell_overrides(args, 0, 0, 0.5))
    dm = build_datamodule(cfg)
    dm.prepare_data()
    dm.setup()
    images = dm.data.images[:, 0].numpy()
    labels = dm.data.labels.numpy()
    fold_of = gpnd_fold_of(labels, cfg.protocol.n_folds, cfg.protocol.fold_seed)
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(cfg.protocol.n_folds):
        pairs = [(int(labels[i]), images[i]) for i in np.flatnonzero(fold_of == k)]
        with open(folder / f"data_fold_{k}.pkl", "wb") as f:
            pickle.dump(pairs, f)


# ---- the authors' networks in ours ------------------------------------------------------------
def load_published(model, encoder_state: dict, generator_state: dict) -> None:
    """Their Encoder and Generator weights into our GPND (generator.output=half_tanh, the same
    layers in the same order). Their convolutions before a BatchNorm have a bias, ours none: a
    bias b only shifts the BatchNorm's input, so their running mean − b is ours, exactly."""
    import torch
    from torch import nn

    def layers(state: dict, skip: str | None) -> list[tuple[str, dict]]:
        names = []
        for key in state:
            name = key.rsplit(".", 1)[0]
            if name not in names and not (skip and name.startswith(skip)):
                names.append(name)
        return [(n, {k.rsplit(".", 1)[1]: v for k, v in state.items() if k.rsplit(".", 1)[0] == n}) for n in names]

    for ours, state, skip in ((model.encoder, encoder_state, None),
                              # deconv1_2: the 2018 generator's unused label branch
                              (model.generator, generator_state, "deconv1_2")):
        modules = [m for m in ours.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d))]
        theirs = layers(state, skip)
        if len(modules) != len(theirs):
            raise SystemExit(f"error: {len(theirs)} published layers for {len(modules)} of ours")
        pending_bias = None
        for module, (name, params) in zip(modules, theirs):
            with torch.no_grad():
                if isinstance(module, nn.BatchNorm2d):
                    module.weight.copy_(params["weight"])
                    module.bias.copy_(params["bias"])
                    module.running_var.copy_(params["running_var"])
                    mean = params["running_mean"] - (pending_bias if pending_bias is not None else 0)
                    module.running_mean.copy_(mean)
                    pending_bias = None
                else:
                    module.weight.copy_(params["weight"])
                    if module.bias is not None:
                        module.bias.copy_(params["bias"])
                    else:
                        pending_bias = params["bias"]


def score_published(args, digit: int, seed: int, run_dir: Path) -> dict:
    """Their trained E and G, scored by our GPND on our validation and test sets."""
    import torch

    from anomaly.pipeline import build_datamodule, build_method, build_trainer

    encoder = torch.load(run_dir / "Emodel.pkl", map_location="cpu", weights_only=True)
    generator = torch.load(run_dir / "Gmodel.pkl", map_location="cpu", weights_only=True)
    metrics, sizes = {}, {}
    for ratio in RATIOS:
        cfg = compose([*cell_overrides(args, digit, seed, ratio), "method.generator.output=half_tanh",
                       "logger=none", "callbacks=none", "trainer.enable_progress_bar=false",
                       f"trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}", "trainer.devices=1"])
        dm = build_datamodule(cfg)
        dm.prepare_data()
        dm.setup()
        model = build_method(cfg, dm)
        load_published(model, encoder, generator)
        trainer = build_trainer(cfg, with_callbacks=False, with_logger=False)
        trainer.validate(model, datamodule=dm, verbose=False)
        trainer.test(model, datamodule=dm, verbose=False)
        metrics[str(ratio)] = {k: model.evaluator.test_metrics[k] for k in ("f1_inlier", "auroc")}
        sizes[str(ratio)] = dm.split.sizes()
    return {"metrics": metrics, "split_sizes": sizes}


def run_published(args, digit: int, seed: int) -> dict:
    work = Path(args.work)
    run_dir = work / "published" / f"d{digit}_s{seed}"
    done = run_dir / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    src = published_source(work, args.src)
    folds = work / f"folds{args.fold}"
    run_dir.mkdir(parents=True, exist_ok=True)
    for f in list(src.glob("*.py")) + list(folds.glob("*.pkl")):
        target = run_dir / f.name
        if not target.exists():
            target.symlink_to(f.resolve())
    epochs, milestones = BUDGETS[args.budget]
    env = {**os.environ, "GPND_EPOCHS": str(epochs), "GPND_MILESTONES": " ".join(map(str, milestones)),
           "OMP_NUM_THREADS": str(args.threads), "PYTHONWARNINGS": "ignore"}
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    # their code seeds nothing: the harness seeds Python, NumPy and torch before it runs
    code = (f"import random, numpy, torch; torch.set_num_threads({args.threads}); random.seed({seed}); "
            f"numpy.random.seed({seed}); torch.manual_seed({seed}); import train_AAE; "
            f"train_AAE.main({args.fold}, [{digit}], 10)")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], cwd=run_dir, env=env, text=True, capture_output=True)
    (run_dir / "train.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode:
        raise RuntimeError(f"published GPND d{digit} s{seed} failed:\n{proc.stderr[-2000:]}")
    train_seconds = time.perf_counter() - start
    proc = subprocess.run([sys.executable, __file__, "_score", str(digit), str(seed), str(run_dir), *args.argv],
                          text=True, capture_output=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if proc.returncode:
        raise RuntimeError(f"scoring published GPND d{digit} s{seed} failed:\n{proc.stderr[-2000:]}")
    result = {"code": "published", "variant": "published_2018", "digit": digit, "seed": seed,
              "fold": args.fold, "train_seconds": round(train_seconds, 1),
              **json.loads((run_dir / "scored.json").read_text())}
    done.write_text(json.dumps(result, indent=1))
    return result


def run_ours(args, variant: str, digit: int, seed: int) -> dict:
    run_dir = Path(args.work) / "ours" / variant / f"d{digit}_s{seed}"
    done = run_dir / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    cmd = [sys.executable, "-m", "anomaly.reproduce", "table=gpnd_mnist", f"budget={args.budget}",
           f"protocol.normal=[{digit}]", f"protocol.fold={args.fold}", f"seed={seed}", "results_dir=null",
           f"paths.log_dir={run_dir / 'runs'}", f"paths.data_dir={args.data_dir}", f"threads={args.threads}",
           "trainer.enable_progress_bar=false", "logger=none", *VARIANTS[variant]]
    if args.device == "cuda":
        cmd.append("trainer=gpu")
    shutil.rmtree(run_dir / "runs", ignore_errors=True)  # a failed earlier try's results
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, text=True, capture_output=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "reproduce.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode:
        raise RuntimeError(f"ours {variant} d{digit} s{seed} failed:\n{(proc.stdout + proc.stderr)[-2000:]}")
    metrics, sizes, train_seconds = {}, {}, None
    for path in (run_dir / "runs").rglob("results.json"):
        r = json.loads(path.read_text())
        if r.get("status") != "ok":
            raise RuntimeError(f"ours {variant} d{digit} s{seed}: {path} is {r.get('status')}: {r.get('error')}")
        ratio = str(r["protocol"]["outlier_ratio"])
        metrics[ratio] = {k: r["metrics"][k] for k in ("f1_inlier", "auroc")}
        sizes[ratio] = r["split_sizes"]
        train_seconds = r.get("train_seconds") or train_seconds
    result = {"code": "ours", "variant": variant, "overrides": VARIANTS[variant], "digit": digit,
              "seed": seed, "fold": args.fold, "train_seconds": train_seconds,
              "wall_seconds": round(time.perf_counter() - start, 1), "metrics": metrics, "split_sizes": sizes,
              "command": shlex.join(["python", *cmd[1:]])}
    done.write_text(json.dumps(result, indent=1))
    return result


def summarise(runs: list[dict]) -> dict:
    """Mean and std over digits × seeds per variant and ratio, and per digit over seeds."""
    out: dict = {}
    for variant in dict.fromkeys(r["variant"] for r in runs):
        rows = [r for r in runs if r["variant"] == variant]
        entry = {"n_runs": len(rows)}
        for metric in ("auroc", "f1_inlier"):
            entry[metric] = {}
            for ratio in map(str, RATIOS):
                values = [r["metrics"][ratio][metric] for r in rows if ratio in r["metrics"]]
                if values:
                    entry[metric][ratio] = [round(float(np.mean(values)), 4), round(float(np.std(values)), 4)]
            entry[f"{metric}_by_digit"] = {
                str(d): round(float(np.mean([r["metrics"][ratio][metric] for r in rows if r["digit"] == d
                                             for ratio in r["metrics"]])), 4)
                for d in sorted({r["digit"] for r in rows})}
        out[variant] = entry
    return out


def device_name(device: str) -> str:
    """The GPU (cuda) or the CPU model the runs used (anomaly.results.machine reads both)."""
    from anomaly.results import machine

    found = machine()
    return found["gpus"][0] if device == "cuda" and found.get("gpus") else found["cpu"]


def main(argv: list[str]) -> None:
    if argv and argv[0] == "_score":  # a subprocess: score one published run
        digit, seed, run_dir = int(argv[1]), int(argv[2]), Path(argv[3])
        args = parser().parse_args(argv[4:])
        args.data_dir = str(Path(args.data_dir).resolve())
        (run_dir / "scored.json").write_text(json.dumps(score_published(args, digit, seed, run_dir)))
        return
    args = parser().parse_args(argv)
    args.argv = argv
    args.data_dir = str(Path(args.data_dir).resolve())
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if "published_2018" in args.variants:
        published_source(work, args.src)
        write_folds(args, work / f"folds{args.fold}")
    jobs = [(v, d, s) for s in args.seeds for d in args.digits for v in args.variants]
    start = time.perf_counter()

    def work(variant: str, digit: int, seed: int) -> dict:
        return run_published(args, digit, seed) if variant == "published_2018" else run_ours(args, variant, digit, seed)

    def shown(result: dict) -> str:
        return "AUROC " + " ".join(f"{result['metrics'][str(r)]['auroc']:.3f}" for r in RATIOS
                                   if str(r) in result["metrics"])

    runs, failures = run_all(jobs, work, args.jobs, shown, lambda r, f: write(args, r, f, start))
    print(json.dumps(summarise(runs), indent=1))
    if failures:
        sys.exit(1)


def write(args, runs: list[dict], failures: list[dict], start: float) -> None:
    if not args.out:
        return
    epochs, milestones = BUDGETS[args.budget]
    order = {v: i for i, v in enumerate(args.variants)}
    runs = sorted(runs, key=lambda r: (order[r["variant"]], r["digit"], r["seed"]))
    record = {
        "command": shlex.join(["python", "published_code/gpnd.py", *args.argv]),
        "what": "GPND on MNIST gpnd_folds: the authors' 2018 training (their train_AAE.py, patched for "
                "rot only) and ours with each 2018 training difference, on the same training images; "
                "every model scored by our scorer on our validation (threshold) and test sets",
        "published": {"repository": URL, "commit": COMMIT,
                      "patches": [{"file": f, "old": o, "new": n} for f, o, n in ROT + SCHEDULE]},
        "budget": args.budget, "epochs": epochs, "lr_milestones": list(milestones),
        "device": device_name(args.device), "wall_seconds": round(time.perf_counter() - start, 1),
        "summary": summarise(runs), "runs": runs, "failures": failures,
    }
    write_record(args.out, record)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--digits", type=int, nargs="+", default=[2, 3, 8])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--variants", nargs="+", default=["published_2018", *VARIANTS],
                   choices=["published_2018", *VARIANTS])
    p.add_argument("--budget", default="reduced", choices=list(BUDGETS))
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "datasets"))
    p.add_argument("--work", default=str(REPO.parent / "published_gpnd"),
                   help="scratch folder outside the repository (the authors' code, folds, runs)")
    p.add_argument("--src", type=Path, default=None, help="a clone (or bare git dir) of podgorskiy/GPND")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--jobs", type=int, default=1, help="trainings at once")
    p.add_argument("--threads", type=int, default=1, help="torch threads per training")
    p.add_argument("--out", default=None, help="the JSON to write (reproduced/published_code/…)")
    return p


if __name__ == "__main__":
    main(sys.argv[1:])
