"""What a training costs (anomaly.cost): FLOPs counted on a method's own training step, its
optimiser updates and share of its schedule in results.json; a compute budget (`compute.max_flops`,
the benchmarks' `budget=compute`) that stops every method at the same counted FLOPs or at the end
of its schedule, shortens its stages and lr milestones in proportion, gives the same numbers for
the same seed and carries its count through a resume."""

from __future__ import annotations

import signal

import pytest
import torch

from anomaly import RunInterrupted
from anomaly.cost import TotalFlops, plan_budget
from anomaly.pipeline import train
from tests.conftest import TINY, compose_config
from tests.test_reproduce import EXTRA, QUIET, run_app


def test_the_counter_counts_forward_backward_and_input_gradients():
    """Matrix products forward (2·B·in·out), backward (twice that), and a gradient with respect to
    the input taken inside the step (an attack's, a gradient penalty's) counted too."""
    layer = torch.nn.Linear(10, 20)
    x = torch.randn(4, 10, requires_grad=True)
    with TotalFlops() as counter:
        layer(x).sum().backward()
    assert counter.get_total_flops() == 3 * 2 * 4 * 10 * 20
    with TotalFlops() as counter:  # torch.autograd.grad on a leaf: FlopCounterMode's own tracker refuses it
        (grad,) = torch.autograd.grad(layer(x).sum(), x, create_graph=True)
        grad.sum().backward()
    assert counter.get_total_flops() == 3 * 2 * 4 * 10 * 20


def test_a_budget_plan_cuts_the_last_stage_mid_epoch_and_keeps_the_first_stages_share():
    # 10 images an epoch in batches of 4, 4, 2; 1 FLOP an image in stage a, 2 in stage b
    sizes, flops = [4, 4, 2], {"a": 1.0, "b": 2.0}
    whole = plan_budget(1e9, flops, {"a": 10, "b": 10}, sizes)  # the schedule costs 100 + 200
    assert whole.max_batches is None and whole.planned_flops == whole.schedule_flops == 300
    half = plan_budget(150.0, flops, {"a": 10, "b": 10}, sizes)
    assert half.given["a"] == 5  # its share of the schedule: 150 / 300 of 10 epochs
    # the rest, 100 FLOPs, buys stage b 5 epochs (100): 10 + 15 batches
    assert half.given["b"] == 5 and half.max_batches == 30 and half.planned_flops == 150
    odd = plan_budget(130.0, flops, {"a": 10, "b": 10}, sizes)
    # a: round(130/300 · 10) = 4 epochs (40); b: 90 → 4 epochs (80) and one batch of 4 images (8)
    assert odd.given["a"] == 4 and odd.given["b"] == pytest.approx(4 + 1 / 3)
    assert odd.max_batches == 4 * 3 + 4 * 3 + 1 and odd.planned_flops == 128 <= 130


def test_milestones_and_stages_move_with_the_epochs_a_method_gets():
    from anomaly.methods.deep_svdd import DeepSVDD

    model = DeepSVDD([1, 28, 28], pretrain_epochs=150, svdd_epochs=150, lr_milestones=[50], ae_lr_milestones=[50])
    model.rescale_schedule({"pretrain": (150, 15), "svdd": (150, 7.5)})
    assert (model.pretrain_epochs, model.svdd_epochs) == (15, 8)  # the last stage's partial epoch runs
    assert model.ae_lr_milestones == [5] and model.lr_milestones == [2]  # a third of each stage, as in 50/150


@pytest.fixture(scope="module")
def data_root(every_dataset_root):
    return every_dataset_root


@pytest.mark.slow
def test_two_methods_stop_within_5_percent_of_the_same_counted_flops(tmp_path, data_root):
    """benchmark_mnist at budget=compute on the tiny generated digits, its budget made small: the
    autoencoder (100 epochs) and the VAE (300) both stop at the budget, within 5 % of it, their
    milestone-free schedules cut; Deep SVDD's whole 150 + 150 epochs cost less: it stops at its
    schedule."""
    budget = 4.0e10
    common = ["table=benchmark_mnist", "budget=compute", "protocol.normal=[0]", f"++compute.max_flops={budget}",
              *QUIET, f"paths.data_dir={data_root}", "dataset.loader.download=false", *EXTRA["benchmark_mnist"]]
    cost = {}
    for variant in ("ae", "vae", "deep_svdd"):
        (results,) = run_app(tmp_path / variant, [*common, f"variant={variant}"])
        assert results["status"] == "ok" and results["budget"] == "compute", results.get("error")
        assert results["config"]["compute"] == {"max_flops": budget}  # part of what the run is
        cost[variant] = results["cost"]
    for variant in ("ae", "vae"):
        spent = cost[variant]
        assert spent["stopped_by"] == "budget" and spent["budget_flops"] == budget
        assert 0.95 * budget <= spent["training_flops"] <= budget, spent
        assert spent["optimizer_updates"] == spent["training_batches"] > 0  # one update a batch
        assert 0 < spent["schedule_share"] < 1 and spent["stages"]["train"]["epochs"] < spent["stages"]["train"]["published"]
    assert abs(cost["ae"]["training_flops"] - cost["vae"]["training_flops"]) <= 0.05 * budget
    svdd = cost["deep_svdd"]
    assert svdd["stopped_by"] == "schedule" and svdd["training_flops"] < budget and svdd["schedule_share"] == 1.0
    assert svdd["stages"] == {"pretrain": {"epochs": 150.0, "published": 150}, "svdd": {"epochs": 150.0, "published": 150}}
    assert svdd["share_of"] == "conf/paper/deep_svdd_mnist.yaml"
    assert set(svdd["flops_per_image"]) == {"pretrain", "svdd"}  # each stage's step counted
    assert svdd["flops_per_image"]["pretrain"] > svdd["flops_per_image"]["svdd"]  # the decoder too


# the default run (ae on digits, 4 batches an epoch) with noise, so that a resumed run must draw
# the uninterrupted one's random numbers too
RUN = [*TINY, "trainer.max_epochs=4", "method.noise_std=0.2", "logger=none", "threads=1"]


@pytest.mark.slow
def test_the_budget_stop_is_deterministic_and_a_resume_carries_its_count(tmp_path):
    free = train(compose_config(tmp_path / "free", RUN))["cost"]
    assert free["stopped_by"] == "schedule" and free["training_batches"] == 16 and free["schedule_share"] == 1.0
    per_image = free["flops_per_image"]["train"]
    images = free["training_images"] / 4  # an epoch's: batches of 32 and the rest
    # two epochs and two batches: it stops in epoch 3 (0-based 2), after batch 10 of 16
    budget = [f"+compute.max_flops={per_image * (2 * images + 64) * (1 + 1e-9)}"]
    once = train(compose_config(tmp_path / "once", [*RUN, *budget]))
    twice = train(compose_config(tmp_path / "twice", [*RUN, *budget]))
    assert once["metrics"] == twice["metrics"] and once["cost"]["training_flops"] == twice["cost"]["training_flops"]
    assert once["cost"]["stopped_by"] == "budget" and once["epochs"] == 3
    assert once["cost"]["training_batches"] == 10 and once["cost"]["schedule_share"] == pytest.approx(10 / 16, abs=0.05)
    # SIGTERM in its second epoch: the epoch finishes and is kept; the same command resumes it
    stop = ["+callbacks.fault._target_=tests.helpers.faults.SignalAt", f"+callbacks.fault.signum={int(signal.SIGTERM)}",
            "+callbacks.fault.epoch=1", "+callbacks.fault.batch=0"]
    with pytest.raises(RunInterrupted):
        train(compose_config(tmp_path / "log" / "stopped", [*RUN, *budget, *stop]))
    (ckpt,) = (tmp_path / "log").rglob("checkpoints/last.ckpt")
    kept = torch.load(ckpt, weights_only=False)["callbacks"]
    carried = next(v for k, v in kept.items() if k.startswith("TrainingCost"))["seconds"]
    cfg = compose_config(tmp_path / "resumed", [*RUN, *budget, "ckpt_path=last"])
    cfg.paths.log_dir = str(tmp_path / "log")  # where the stopped run's checkpoint is, and no other
    resumed = train(cfg)
    assert resumed["resumed_from"] is not None
    assert resumed["metrics"] == once["metrics"]
    for key in ("training_flops", "training_batches", "optimizer_updates", "schedule_share"):
        assert resumed["cost"][key] == once["cost"][key], key
    # the training seconds too: the stopped fit's, carried in the checkpoint, plus the resumed one's
    assert carried > 0 and resumed["cost"]["train_seconds"] > carried
    assert resumed["train_seconds"] == resumed["cost"]["train_seconds"]
