"""Faults on purpose: runs killed mid-epoch resume to the uninterrupted result, runs stopped by
SIGTERM or SIGINT finish their epoch and keep it, a diverging loss stops the run (and only its job
in a sweep), collapsed scores are reported as such, checkpoints that do not belong are refused
(every method's divergence and determinism: tests/test_method_contract.py)."""

import json
import re
import signal

import numpy as np
import pytest
import torch

from anomaly import AnomalyError, RunInterrupted
from anomaly.checkpoints import epochs_done, load_checkpoint
from anomaly.pipeline import train
from anomaly.report import report
from tests.conftest import TINY, compose_config
from tests.helpers.faults import EpochProbe
from tests.test_cli import error_line, run

# the default run (ae on digits), 4 epochs of 4 batches; noise so that the resumed run must also
# draw the uninterrupted run's random numbers; checkpoints at most every hour (none of these runs
# lasts that long, so a checkpoint at an epoch's end is a stop's own)
RUN = ["trainer.max_epochs=4", "method.noise_std=0.2", "logger=none", "callbacks.model_checkpoint.every_seconds=3600"]
EVERY_EPOCH = "callbacks.model_checkpoint.every_seconds=0"  # a checkpoint at every epoch's end
PROBE = "+callbacks.probe._target_=tests.helpers.faults.EpochProbe"  # the epochs a run trains


def kill_at(signum: int, epoch: int = 2) -> list[str]:
    """Overrides that make the run send itself `signum` at batch 1 of `epoch` (0-based)."""
    return ["+callbacks.fault._target_=tests.helpers.faults.SignalAt", f"+callbacks.fault.signum={int(signum)}",
            f"+callbacks.fault.epoch={epoch}"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    results = train(compose_config(out, [*TINY, *RUN]))
    return results, np.load(out / "scores.npz")["scores"]


def run_dirs(log_dir, method="ae"):
    return sorted(p for p in (log_dir / "runs" / method / "digits").iterdir() if p.is_dir())


@pytest.mark.slow
def test_sigkilled_run_resumes_to_the_same_result(tmp_path, uninterrupted):
    command = [*RUN[:-1], EVERY_EPOCH, "threads=1", "ckpt_path=last", f"paths.log_dir={tmp_path}"]
    proc = run("anomaly.train", *command, *kill_at(signal.SIGKILL), cwd=tmp_path)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    (killed,) = run_dirs(tmp_path)
    assert not (killed / "results.json").exists()
    assert load_checkpoint(killed / "checkpoints" / "last.ckpt")["epoch"] == 1  # epochs 0 and 1 done

    proc = run("anomaly.train", *command, cwd=tmp_path)  # the same command again
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "resuming from" in proc.stdout + proc.stderr
    resumed = run_dirs(tmp_path)[-1]
    results = json.loads((resumed / "results.json").read_text())
    assert results["resumed_from"] == str(killed / "checkpoints" / "last.ckpt")
    reference, scores = uninterrupted
    assert results["metrics"] == reference["metrics"]  # exactly
    assert np.array_equal(np.load(resumed / "scores.npz")["scores"], scores)


@pytest.mark.slow
def test_sigterm_finishes_the_epoch_keeps_it_and_resumes_to_the_same_result(tmp_path, uninterrupted):
    # SIGTERM at batch 1 of the 2nd epoch, before any timed checkpoint: the epoch finishes and the
    # stop writes its checkpoint there
    proc = run("anomaly.train", *RUN, "threads=1", f"paths.log_dir={tmp_path}", *kill_at(signal.SIGTERM, epoch=1),
               cwd=tmp_path)
    assert proc.returncode == 143, proc.stderr[-2000:]
    (stopped,) = run_dirs(tmp_path)
    ckpt = stopped / "checkpoints" / "last.ckpt"
    assert error_line(proc) == (f"error: run stopped by SIGTERM after epoch 2: 2 epochs kept in {ckpt}; the same "
                                "command with ckpt_path=last resumes at epoch 3")
    failed = json.loads((stopped / "results.json").read_text())
    assert failed["status"] == "interrupted" and "run stopped by SIGTERM after epoch 2" in failed["problem"]
    kept = load_checkpoint(ckpt)
    assert epochs_done(kept) == 2 and kept["global_step"] == 8  # both epochs whole, 4 batches each

    # a newer last.ckpt that is not one (a copy cut short, say) is passed over
    junk = tmp_path / "junk" / "checkpoints" / "last.ckpt"
    junk.parent.mkdir(parents=True)
    junk.write_bytes(ckpt.read_bytes()[:1000])
    cfg = compose_config(tmp_path / "again", [*TINY, *RUN, "ckpt_path=last", PROBE])
    cfg.paths.log_dir = str(tmp_path)
    EpochProbe.trained = []
    results = train(cfg)
    assert EpochProbe.trained == [2, 3]  # it goes on at epoch 3 (1-based): no epoch trained twice
    reference, scores = uninterrupted
    assert results["resumed_from"] == str(ckpt) and results["metrics"] == reference["metrics"]
    assert np.array_equal(np.load(tmp_path / "again" / "scores.npz")["scores"], scores)
    # the interrupted attempt now points at its continuation, and the report counts the run once
    old = json.loads((stopped / "results.json").read_text())
    assert old["status"] == "resumed" and old["resumed_in"] == str(tmp_path / "again")
    runs = report([tmp_path], plots=False, echo=False)["runs"]
    assert [r.status for r in runs] == ["ok"]


@pytest.mark.slow
def test_sigint_in_the_last_epoch_keeps_the_whole_training(tmp_path):
    # Ctrl-C in the last epoch: the whole training is kept, and the resume only validates and
    # tests, drawing what the uninterrupted run drew (the VAE's scores sample)
    vae = ["method=vae", "method.score_samples=2", "trainer.max_epochs=2", "logger=none"]
    reference = train(compose_config(tmp_path / "whole", [*TINY, *vae]))
    logs = tmp_path / "logs"
    proc = run("anomaly.train", *vae, "threads=1", f"paths.log_dir={logs}", *kill_at(signal.SIGINT, epoch=1),
               cwd=tmp_path)
    assert proc.returncode == 130, proc.stderr[-2000:]
    (stopped,) = run_dirs(logs, "vae")
    ckpt = stopped / "checkpoints" / "last.ckpt"
    assert error_line(proc) == (f"error: run stopped by SIGINT after epoch 2: 2 epochs kept in {ckpt}, the whole "
                                "training; the same command with ckpt_path=last validates and tests it without "
                                "training again")
    assert json.loads((stopped / "results.json").read_text())["status"] == "interrupted"
    cfg = compose_config(tmp_path / "again", [*TINY, *vae, "ckpt_path=last", PROBE])
    cfg.paths.log_dir = str(logs)
    EpochProbe.trained = []
    results = train(cfg)
    assert EpochProbe.trained == [] and results["resumed_from"] == str(ckpt)
    assert results["metrics"] == reference["metrics"]
    assert np.array_equal(np.load(tmp_path / "again" / "scores.npz")["scores"],
                          np.load(tmp_path / "whole" / "scores.npz")["scores"])


@pytest.mark.slow
def test_a_second_signal_stops_at_once_and_one_after_training_keeps_the_training(tmp_path):
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    # a second SIGTERM in the epoch the first waits for: at once, with what is on disk (nothing:
    # no timed checkpoint yet)
    cfg = compose_config(tmp_path / "twice", [*TINY, *RUN, *kill_at(signal.SIGTERM), "+callbacks.fault.repeat=2"])
    with pytest.raises(RunInterrupted) as stopped:
        train(cfg)
    assert str(stopped.value) == ("run stopped by SIGTERM in epoch 3; no epoch was kept, so the same command with "
                                  "ckpt_path=last starts over")
    assert stopped.value.exit_code == 143 and not (tmp_path / "twice" / "checkpoints").exists()
    # a SIGTERM in the test, after training: at once; the last epoch's checkpoint keeps the training
    cfg = compose_config(tmp_path / "test", [*TINY, *RUN,
                                             "+callbacks.fault._target_=tests.helpers.faults.SignalInTest"])
    with pytest.raises(RunInterrupted) as stopped:
        train(cfg)
    ckpt = tmp_path / "test" / "checkpoints" / "last.ckpt"
    assert str(stopped.value) == (f"run stopped by SIGTERM after training: 4 epochs kept in {ckpt}, the whole "
                                  "training; the same command with ckpt_path=last validates and tests it without "
                                  "training again")
    assert epochs_done(load_checkpoint(ckpt)) == 4
    # resumed from that whole training (no epoch left to train, so no checkpoint of its own), then
    # stopped in the test again: what it resumed from is what is kept, not "no epoch was kept"
    cfg = compose_config(tmp_path / "resumed", [*TINY, *RUN, f"ckpt_path={ckpt}",
                                                "+callbacks.fault._target_=tests.helpers.faults.SignalInTest"])
    with pytest.raises(RunInterrupted) as stopped:
        train(cfg)
    assert not (tmp_path / "resumed" / "checkpoints" / "last.ckpt").exists()
    assert str(stopped.value).startswith(f"run stopped by SIGTERM after training: 4 epochs kept in {ckpt}, the whole ")
    assert {s: signal.getsignal(s) for s in handlers} == handlers  # the handlers before, back


def test_ranks_stop_together_when_the_signal_reached_one():
    """Under DDP the ranks agree at each epoch end (the strategy's reduce of a flag): a rank the
    signal did not reach stops after the same epoch, with its checkpoint written there."""
    from types import SimpleNamespace

    from anomaly.callbacks.epoch_end import EpochEndCheckpoint, StopAtEpochEnd

    asked = []

    def reduce_boolean_decision(decision: bool, all: bool = True) -> bool:
        asked.append((decision, all))
        return True  # another rank got SIGTERM

    checkpoint = EpochEndCheckpoint(every_seconds=300)
    progress = SimpleNamespace(current=SimpleNamespace(processed=2))
    trainer = SimpleNamespace(checkpoint_callbacks=[checkpoint], current_epoch=1,
                              fit_loop=SimpleNamespace(epoch_progress=progress),
                              strategy=SimpleNamespace(reduce_boolean_decision=reduce_boolean_decision))
    stop = StopAtEpochEnd()
    stop.on_train_epoch_end(trainer, None)
    assert asked == [(False, False)] and checkpoint._save_now  # any rank's signal stops all
    with pytest.raises(RunInterrupted, match="^run stopped by SIGTERM after epoch 2$") as stopped:
        stop.on_train_epoch_start(trainer, None)
    assert stopped.value.exit_code == 143 and stopped.value.where == "after epoch 2"


@pytest.mark.slow
def test_ckpt_path_last_in_a_fixed_run_dir(tmp_path):
    # first time: nothing to resume, trains from the start; again: resumes in place (all epochs
    # done: only re-scores); a different config in that dir is refused instead of overwritten
    overrides = [*TINY, "trainer.max_epochs=1", "logger=none", "ckpt_path=last"]
    first = train(compose_config(tmp_path, overrides))
    assert first["resumed_from"] is None
    again = train(compose_config(tmp_path, overrides))
    assert again["resumed_from"] == str(tmp_path / "checkpoints" / "last.ckpt")
    assert again["metrics"] == first["metrics"]
    with pytest.raises(AnomalyError, match=r"ckpt_path=last: .*last.ckpt is of another run config \(hash "
                                           r"\w+, this run \w+\); remove it or choose another run dir"):
        train(compose_config(tmp_path, [*overrides, "seed=5"]))
    (tmp_path / "checkpoints" / "last.ckpt").write_text("not a checkpoint")
    with pytest.raises(AnomalyError, match=r"ckpt_path=last: .*last.ckpt is not a readable checkpoint of "
                                           r"anomaly.train; remove it \(the run then starts over\)"):
        train(compose_config(tmp_path, overrides))


@pytest.mark.slow
def test_ckpt_path_last_never_resumes_another_schedule(tmp_path):
    """A debug=fast checkpoint (1 epoch of 3 batches) is not the same run as a 2-epoch one: the
    schedule is part of the config hash, so ckpt_path=last starts that run over instead of
    finishing it with 2 optimiser steps fewer."""
    log_dir = tmp_path  # where ckpt_path=last looks: both runs' checkpoints lie below it
    smoke = compose_config(tmp_path / "smoke", [*TINY, "debug=fast", "logger=none"])
    smoke.paths.log_dir = str(log_dir)
    train(smoke)
    cfg = compose_config(tmp_path / "full", [*TINY, "trainer.max_epochs=2", "logger=none", "ckpt_path=last"])
    cfg.paths.log_dir = str(log_dir)
    results = train(cfg)
    assert results["resumed_from"] is None and results["epochs"] == 2
    assert results["config_hash"] != json.loads((tmp_path / "smoke" / "results.json").read_text())["config_hash"]
    # the same schedule again does resume
    again = compose_config(tmp_path / "again", [*TINY, "trainer.max_epochs=2", "logger=none", "ckpt_path=last"])
    again.paths.log_dir = str(tmp_path)
    assert train(again)["resumed_from"] == str(tmp_path / "full" / "checkpoints" / "last.ckpt")


# ---- diverging training --------------------------------------------------------------------------
# (every method stops on a non-finite loss: tests/test_method_contract.py)
@pytest.mark.slow
def test_update_that_fails_on_diverged_weights_is_reported_as_divergence(tmp_path):
    cfg = compose_config(tmp_path, [*TINY, "trainer.max_epochs=1", "logger=none",
                                    "method._target_=tests.helpers.faults.DivergesMidBatch"])
    with pytest.raises(AnomalyError, match=r"^method=ae: non-finite weights at epoch 0, batch 1 \(global step 1\): "
                                           r"in decoder; DivergesMidBatch.training_step then failed \(RuntimeError: "
                                           r"all elements of input should be between 0 and 1\); the training "
                                           r"diverged: lower the learning rate \(method.lr=0.001\)"):
        train(cfg)
    # weights that overflow behind a finite loss are caught at the end of that batch
    cfg = compose_config(tmp_path, [*TINY, "trainer.max_epochs=1", "logger=none",
                                    "method._target_=tests.helpers.faults.DivergesMidBatch", "+method.fail=false"])
    with pytest.raises(AnomalyError, match=r"^method=ae: non-finite weights at epoch 0, batch 1 \(global step 2\): "
                                           r"in decoder after this batch's update \(its losses: loss=0.\d+, "
                                           r"train/loss=0.\d+\); the training diverged"):
        train(cfg)


@pytest.mark.slow
def test_diverging_job_fails_alone_in_a_sweep(tmp_path):
    proc = run("anomaly.train", "-m", "method.lr=0.001,1e30", "trainer.max_epochs=1", "logger=none", "threads=1",
               f"paths.log_dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "2 jobs: 1 failed, 1 ok (failed: jobs 1)" in proc.stderr
    sweep = next((tmp_path / "multirun" / "ae" / "digits").iterdir())
    ok, failed = (json.loads((sweep / job / "results.json").read_text()) for job in ("0", "1"))
    assert ok["status"] == "ok" and ok["metrics"]["auroc"] > 0.5
    assert failed["status"] == "failed"
    assert "AnomalyError: method=ae: non-finite training loss at epoch 0" in failed["problem"]
    assert failed["protocol"]["normal"] == ["0"]  # resolved, as an ok run's: the report's class column
    out = report([sweep], plots=False, echo=False)
    table = out["tables"]["auroc"][0]
    assert table.header[1] == "0" and len(table.header) == 5  # one class column
    assert [row[0] for row in table.rows] == ["ae"]  # the diverged job: listed apart, not a row
    assert [r.path.name for r in out["left_out"].not_ok] == ["1"]
    assert "non-finite training loss" in (sweep / "report" / "report.md").read_text()


# ---- collapsed scores ----------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("constant, problem, flag", [
    ("0.25", r"all \d+ scores are equal \(0.25\): a collapsed model", "scores_constant"),
    ("nan", r"\d+ of \d+ scores are not finite", "scores_not_finite")])
def test_collapsed_scores_are_reported_not_measured(tmp_path, constant, problem, flag):
    cfg = compose_config(tmp_path / "run", [*TINY, "debug=fast", "logger=none", "plots=true",
                                            "method._target_=tests.helpers.faults.ConstantScore",
                                            f"+method.constant={constant}"])
    results = train(cfg)
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    for r in (results, on_disk):
        assert r["status"] == "invalid_scores" and r["metrics"] == {}
        assert re.search(problem, r["problem"]), r["problem"]
        assert [f["id"] for f in r["suspect"]] == [flag]
    assert not (tmp_path / "run" / "roc.png").exists()  # no curve of meaningless scores
    # never averaged in: listed apart, here the only run (so no table)
    with pytest.raises(SystemExit, match=r"every one was left out. Left out: 1 run not ok \(1 invalid_scores\)"):
        report([tmp_path], plots=False, echo=False, include_debug=True)


# ---- checkpoints that do not belong ------------------------------------------------------------
@pytest.mark.slow
def test_checkpoint_of_another_image_size_or_not_a_checkpoint_is_refused(tmp_path):
    train(compose_config(tmp_path / "run", [*TINY, "debug=fast", "logger=none"]))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    cfg = compose_config(tmp_path / "big", [*TINY, "debug=fast", "dataset.image_size=32", f"ckpt_path={ckpt}"])
    with pytest.raises(AnomalyError, match=r"was trained on images of shape \(1, 16, 16\), not \(1, 32, 32\)"):
        train(cfg)
    assert not (tmp_path / "big" / "csv").exists()  # refused before any logger or training started

    # a pickle that would run code when unpickled: weights_only refuses it, nothing runs
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            import os
            return os.mkdir, (str(marker),)

    torch.save({"state_dict": {}, "payload": Payload()}, tmp_path / "evil.ckpt")
    text = tmp_path / "notes.ckpt"
    text.write_text("epoch 3 looked good\n")
    for bad in (tmp_path / "evil.ckpt", text):
        cfg = compose_config(tmp_path / "r", [*TINY, "debug=fast", f"ckpt_path={bad}"])
        with pytest.raises(AnomalyError, match=rf"ckpt_path={bad} is not a readable checkpoint \(.+\)$") as refused:
            train(cfg)
        # never torch's advice to load it with weights_only=False (that would run the payload)
        assert "weights_only" not in str(refused.value) and "\n" not in str(refused.value)
    assert not marker.exists()


# (the same seed, the same metrics, for every method: tests/test_method_contract.py)


# ---- images a method's networks cannot take ------------------------------------------------------
@pytest.mark.parametrize("method, size, message", [
    ("ae", 12, r"method=ae \(1×12×12 images of digits\): image size 12 does not fit the convolutional "
               r"networks: use a power of two ≥ 8 \(8, 16, 32, 64, 128\), e.g. dataset.image_size=32"),
    ("adae", 24, r"method=adae \(1×24×24 images of digits\): image size 24 does not fit the convolutional"),
    ("gpnd", 16, r"method=gpnd \(1×16×16 images of digits\): 3 stage widths \[64, 256, 512\] fit 32×32 images, "
                 r"not 16×16: set dataset.image_size=32 or give 2 widths"),
    ("vae", 4, r"method=vae needs images of side ≥ 8, not 4: set dataset.image_size"),
    ("anogan", 8, r"method=anogan \(1×8×8 images of digits\): image size 8×8 does not fit the DCGAN networks: "
                  r"use a square image of side 16, 32, 64 \(e.g. dataset.image_size=32\)"),
    ("fanogan", 128, r"method=fanogan \(1×128×128 images of digits\): image size 128×128 does not fit the DCGAN"),
])
def test_image_sizes_a_method_cannot_take_are_refused(tmp_path, method, size, message):
    from anomaly.pipeline import build_datamodule, build_method

    cfg = compose_config(tmp_path, [*TINY, f"method={method}", f"dataset.image_size={size}"])
    dm = build_datamodule(cfg)
    dm.setup()
    with pytest.raises(AnomalyError, match=f"^{message}"):
        build_method(cfg, dm)


def test_non_square_images_are_refused():
    from anomaly.methods.ae import Autoencoder

    with pytest.raises(AnomalyError, match=r"method=ae: images of 16×24 are not square; the networks take "
                                           r"square images: set dataset.image_size"):
        Autoencoder(image_shape=[1, 16, 24])


def test_epochs_done_counts_completed_epochs_not_the_next_one():
    from anomaly.checkpoints import epochs_done

    # saved after a 3-epoch fit, Lightning's `epoch` is already the 4th (index 3)
    after_fit = {"epoch": 3, "loops": {"fit_loop": {"epoch_progress": {"current": {"processed": 3, "completed": 3}}}}}
    assert epochs_done(after_fit) == 3
    # saved at the end of the first epoch: trained, not yet counted as completed by the loop
    first_epoch = {"epoch": 0, "loops": {"fit_loop": {"epoch_progress": {"current": {"processed": 1, "completed": 0}}}}}
    assert epochs_done(first_epoch) == 1
    assert epochs_done({"epoch": 1}) == 2  # an older checkpoint without loop state: epoch-end save
