"""Every setting is checked when the config is composed, before any work: a bad value is one
`error:` line naming the key, the value and what is allowed (anomaly.config_schema), and what a
run shows goes to its log (anomaly.runlog)."""

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import pytest
from omegaconf import OmegaConf, open_dict

from anomaly import AnomalyError, sweep
from anomaly.config_schema import ConfigError, Int, check_evaluate, check_keys, check_train, method_rules
from anomaly.console import print_config_tree, print_results
from anomaly.pipeline import build_trainer, train
from anomaly.rescore import evaluate
from anomaly.runlog import DropLightningTips, RANK_ZERO_LOGGERS, error, quiet_lightning_tips
from anomaly.sweep import configure_job, job_errors
from tests.conftest import CONF_DIR, TINY, compose_config
from tests.helpers import cli

ROOT = Path(__file__).resolve().parents[1]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


BAD = [
    # values torch or Lightning crashed on
    ("data.batch_size=0", "data.batch_size=0: must be an integer ≥ 1"),
    ("data.batch_size=-8", "data.batch_size=-8: must be an integer ≥ 1"),
    ("data.eval_batch_size=0", "data.eval_batch_size=0: must be an integer ≥ 1, or null (data.batch_size)"),
    ("data.num_workers=-1", "data.num_workers=-1: must be an integer ≥ 0"),
    ("method.lr=-1", "method.lr=-1: must be a number > 0"),
    ("method.lr=0", "method.lr=0: must be a number > 0"),
    ("method.lr=nan", "method.lr=nan: must be a number > 0"),
    ("method.latent_dim=0", "method.latent_dim=0: must be an integer ≥ 1"),
    ("dataset.image_size=0", "dataset.image_size=0: must be an integer ≥ 1, or null (the images' own size)"),
    ("dataset.resize_mode=bogus",
     "dataset.resize_mode='bogus': must be one of bilinear, area, bicubic, nearest, nearest-exact"),
    ("seed=abc", "seed='abc': must be an integer in [0, 4294967295]"),
    ("seed=-1", "seed=-1: must be an integer in [0, 4294967295]"),
    ("trainer.max_epochs=abc", "trainer.max_epochs='abc': must be an integer ≥ 1"),
    # values accepted without a word
    ("trainer.max_epochs=0", "trainer.max_epochs=0: must be an integer ≥ 1"),
    ("trainer.max_epochs=-1", "trainer.max_epochs=-1: must be an integer ≥ 1"),
    ("method.noise_std=-1", "method.noise_std=-1: must be a number ≥ 0"),
    ("data.drop_last=maybe", "data.drop_last='maybe': must be true or false"),
    # (the AE's decoder takes the encoder's: conf/net/ae/conv.yaml)
    ("method.encoder.batch_norm=maybe", "method.encoder.batch_norm='maybe': must be true or false; "
     "method.decoder.batch_norm='maybe': must be true or false"),
    ("threads=0", "threads=0: must be an integer ≥ 1, or null (torch's default)"),
    ("+trainer.limit_train_batches=1.5",
     "trainer.limit_train_batches=1.5: must be an integer ≥ 0 (batches) or a number in [0, 1] (a share of them)"),
    ("method.encoder.widths=[32,0]",
     "method.encoder.widths=[32, 0]: must be a list of integers ≥ 1, or null (the default widths)"),
    # method-specific keys
    ("method=vae method.encoder.dropout=1.5", "method.encoder.dropout=1.5: must be a number in [0, 1); "
     "method.decoder.dropout=1.5: must be a number in [0, 1)"),
    ("method=arae method.steps=-1", "method.steps=-1: must be an integer ≥ 0"),
    ("method=arae method.encoder.hidden=[512,0]", "method.encoder.hidden=[512, 0]: must be a list of integers ≥ 1"),
    ("method=ocsvm method.nu=0", "method.nu=0: must be a number in (0, 1]"),
    ("method=gpnd method.betas=[0.5,1.5]", "method.betas=[0.5, 1.5]: must be a list of 2 numbers in [0, 1)"),
    ("method=anogan method.search_lr=0", "method.search_lr=0: must be a number > 0"),
    ("method=adae method.generator.negative_slope=-0.2",
     "method.generator.negative_slope=-0.2: must be a number in [0, 1); "
     "method.discriminator.negative_slope=-0.2: must be a number in [0, 1)"),
    ("method=fanogan method.critic_steps=0", "method.critic_steps=0: must be an integer ≥ 1"),
    # string choices, declared as Literal in the method's signature (or its base's)
    ("method.value_range=bogus", "method.value_range='bogus': must be one of unit, symmetric"),
    ("method=gpnd method.jacobian=hessian", "method.jacobian='hessian': must be one of generator, encoder"),
    ("method=gpnd method.generator.output=tanh",
     "method.generator.output='tanh': must be one of half_tanh, sigmoid"),
    # several bad values: one line naming them all
    ("data.batch_size=0 method.lr=-1",
     "data.batch_size=0: must be an integer ≥ 1; method.lr=-1: must be a number > 0"),
]


@pytest.mark.parametrize("overrides, message", BAD, ids=[b[0] for b in BAD])
def test_a_bad_setting_is_refused_before_any_work(tmp_path, overrides, message):
    cfg = compose_config(tmp_path, [*TINY, *overrides.split()])
    with pytest.raises(ConfigError) as refused:
        train(cfg)
    assert str(refused.value) == message
    assert isinstance(refused.value, AnomalyError)  # the entry points print it as one line, exit 2
    assert not list(tmp_path.iterdir())  # nothing written: no config tree, no split, no results


@pytest.mark.slow
@pytest.mark.parametrize("group", ["method", "dataset", "experiment", "trainer", "logger", "paper"])
def test_every_shipped_config_passes(tmp_path, group):
    for option in options(group):
        if group == "paper":  # a method × dataset pair
            method, dataset = next((m, option[len(m) + 1:]) for m in options("method") if option.startswith(m + "_"))
            overrides = [f"method={method}", f"dataset={dataset}"]
        else:
            overrides = [f"{group}={option}"]
        check_train(compose_config(tmp_path, overrides))


@pytest.mark.parametrize("method", options("method"))
def test_every_plain_setting_of_every_method_has_a_rule(tmp_path, method):
    """Numbers, booleans, lists and nulls of conf/method/<method>.yaml are all declared (in the
    method's signature), those of its network nodes too (method.encoder.widths; strings are
    declared where they are a choice: method.value_range, or left to the nets that take them)."""
    cfg = compose_config(tmp_path, [f"method={method}"])
    settings = OmegaConf.to_container(cfg.method, resolve=True)
    for slot, node in list(settings.items()):
        if isinstance(node, dict) and "_target_" in node:  # an injected network
            del settings[slot]
            settings.update({f"{slot}.{k}": v for k, v in node.items() if k not in ("_target_", "_partial_")})
    plain = {f"method.{k}" for k, v in settings.items() if k != "_target_" and not isinstance(v, str)}
    assert plain - set(method_rules(cfg)) == set()


class OwnMethod:
    """A method of your own, as `method._target_` names it: its rules are its `__init__` signature."""

    def __init__(self, image_shape, depth: Annotated[int, Int(low=1)] = 2, lr: float = 0.1) -> None:
        self.depth, self.lr = depth, lr


@pytest.mark.parametrize("target, lr, message", [
    # the shared settings first (refused before the method's module loads), then the class's own
    ("tests.test_validation.OwnMethod", 0, "method.lr=0: must be a number > 0"),
    ("tests.test_validation.OwnMethod", 0.1, "method.depth=0: must be an integer ≥ 1"),
    # a class that does not import: the shared rules only (building the method says why, later)
    ("no_such_package.Method", 0, "method.lr=0: must be a number > 0"),
])
def test_a_method_declares_its_own_rules_in_its_signature(tmp_path, target, lr, message):
    cfg = compose_config(tmp_path, ["method=ae", f"method.lr={lr}", "+method.depth=0"])
    with open_dict(cfg):
        cfg.method._target_ = target
    with pytest.raises(ConfigError) as refused:
        check_train(cfg)
    assert str(refused.value) == message


@pytest.mark.parametrize("override, message", [
    ("trainer.accelerator=bogus", r"trainer: You selected an invalid accelerator name: `accelerator='bogus'`"),
    ("trainer.devices=0", r"trainer: `Trainer\(devices=0\)` value is not a valid input"),
    ("+trainer.precision=bogus", r"trainer: Precision 'bogus' is invalid. Allowed precision values: "),
])
def test_lightning_refusing_a_trainer_setting_is_one_line(tmp_path, override, message):
    """Settings Lightning checks itself (its lists depend on its version): its sentence, no traceback."""
    cfg = compose_config(tmp_path, [*TINY, override, "logger=none"])
    check_train(cfg)
    with pytest.raises(ConfigError, match=f"^{message}"):
        build_trainer(cfg)


# ---- f-AnoGAN: the stage lengths and trainer.max_epochs --------------------------------------------
def test_fanogan_refuses_a_trainer_max_epochs_that_contradicts_its_stages(tmp_path):
    cfg = compose_config(tmp_path, [*TINY, "method=fanogan", "trainer.max_epochs=10"])
    with pytest.raises(ConfigError, match=r"^trainer.max_epochs=10 contradicts method=fanogan's two stages, "
                                          r"method.gan_epochs \+ method.encoder_epochs = 100 \+ 50 = 150 epochs: "
                                          r"set method.gan_epochs and method.encoder_epochs instead \(e.g. "
                                          r"method.gan_epochs=7 method.encoder_epochs=3 for 10 epochs\)"):
        train(cfg)
    assert not list(tmp_path.iterdir())
    # the trainer default's own value, typed on the command line, is a setting too
    with pytest.raises(ConfigError, match=r"^trainer.max_epochs=50 contradicts"):
        check_train(compose_config(tmp_path, ["method=fanogan", "trainer.max_epochs=50"]))
    # so is a config's (debug=fast: one epoch cannot hold two stages)
    with pytest.raises(ConfigError, match=r"^trainer.max_epochs=1 contradicts .*\(at least 1 each: "
                                          r"method.gan_epochs=1 method.encoder_epochs=1 trainer.max_epochs=2\)"):
        check_train(compose_config(tmp_path, ["method=fanogan", "debug=fast"]))


@pytest.mark.parametrize("overrides, epochs", [
    (["method=fanogan"], 150),  # left at the trainer's default: the stages' sum, in the run config
    (["method=fanogan", "method.gan_epochs=3", "method.encoder_epochs=2"], 5),
    (["method=fanogan", "method.gan_epochs=3", "method.encoder_epochs=2", "trainer.max_epochs=5"], 5),
    (["method=fanogan", "dataset=mnist"], 150),  # the paper config sets all three
    (["method=ae", "trainer.max_epochs=7"], 7),  # other methods: untouched
])
def test_fanogan_trainer_max_epochs_follows_its_stages(tmp_path, overrides, epochs):
    cfg = compose_config(tmp_path, overrides)
    check_train(cfg)
    assert cfg.trainer.max_epochs == epochs


# ---- evaluate ------------------------------------------------------------------------------------------
def test_evaluate_takes_threads_and_refuses_a_non_boolean_refit(tmp_path):
    cfg = compose_config(tmp_path, ["ckpt_path=x.ckpt", "threads=1"], config_name="evaluate")
    check_evaluate(cfg)
    configure_job(cfg)  # the runtime keys of anomaly.train
    cfg = compose_config(tmp_path, ["ckpt_path=x.ckpt", "refit_threshold=maybe"], config_name="evaluate")
    with pytest.raises(ConfigError, match=r"^refit_threshold='maybe': must be true or false$"):
        evaluate(cfg)  # before the checkpoint is looked at
    cfg = compose_config(tmp_path, ["ckpt_path=x.ckpt", "threads=abc"], config_name="evaluate")
    with pytest.raises(ConfigError, match=r"^threads='abc': must be an integer ≥ 1, or null"):
        configure_job(cfg)
    with pytest.raises(ConfigError, match=r"^trainer.max_epochs=0: must be an integer ≥ 1$"):
        check_evaluate(compose_config(tmp_path, ["ckpt_path=x.ckpt", "trainer.max_epochs=0"],
                                      config_name="evaluate"))
    check_keys(compose_config(tmp_path, ["ckpt_path=x.ckpt"], config_name="evaluate"), ["threads"])


# ---- what a refused run leaves ---------------------------------------------------------------------------
@pytest.mark.slow
def test_a_refused_single_run_leaves_no_record_a_refused_sweep_job_does(tmp_path, monkeypatch, capsys):
    cfg = compose_config(tmp_path / "single", [*TINY, "data.batch_size=0"])
    with pytest.raises(SystemExit) as stopped:
        with job_errors(cfg):
            train(cfg)
    assert stopped.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert lines == ["error: data.batch_size=0: must be an integer ≥ 1"]
    assert not (tmp_path / "single").exists()  # nothing for the report to count as a run
    # a job of a sweep: recorded as failed, so the sweep's summary and the report show it
    job = {"multirun": True, "launcher": "", "n_jobs": 1, "job_num": 0, "cpus": None}
    monkeypatch.setattr(sweep, "hydra_job", lambda: job)
    cfg = compose_config(tmp_path / "job", [*TINY, "data.batch_size=0"])
    with job_errors(cfg):
        train(cfg)
    record = json.loads((tmp_path / "job" / "results.json").read_text())
    assert record["status"] == "failed" and "data.batch_size=0: must be an integer ≥ 1" in record["problem"]


@pytest.mark.slow
def test_the_entry_point_prints_one_line_and_exits_2(tmp_path):
    # a latent size of 0 used to fail only once training had started
    proc = cli.run("anomaly.train", ["method.latent_dim=0", f"paths.log_dir={tmp_path}"], cwd=tmp_path)
    assert proc.returncode == 2
    assert [line for line in proc.stderr.splitlines() if line.strip()] == \
        ["error: method.latent_dim=0: must be an integer ≥ 1"]
    assert proc.stdout == ""  # no config tree, no training
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # a refusal leaves nothing: no run dir, no log


# ---- loggers and the run's log -----------------------------------------------------------------------------
def test_tensorboard_logger_builds_and_writes(tmp_path):
    cfg = compose_config(tmp_path, [*TINY, "logger=tensorboard"])
    trainer = build_trainer(cfg)
    logger = trainer.logger
    logger.log_hyperparams({"method": "ae", "lr": 0.001})
    logger.log_metrics({"val/auroc": 0.5}, step=0)
    logger.finalize("success")
    assert list((tmp_path / "tensorboard").rglob("events.out.tfevents.*"))


def test_lightning_tips_are_dropped():
    tip = logging.LogRecord("lightning.pytorch.utilities.rank_zero", logging.INFO, __file__, 0,
                            "💡 Tip: For seamless cloud logging and experiment tracking, try installing "
                            "[litlogger](https://pypi.org/project/litlogger/) …", None, None)
    other = logging.LogRecord("lightning.pytorch.utilities.rank_zero", logging.INFO, __file__, 0,
                              "GPU available: False, used: False", None, None)
    assert not DropLightningTips().filter(tip) and DropLightningTips().filter(other)
    quiet_lightning_tips()
    quiet_lightning_tips()  # once per logger, however often the entry points call it
    for name in RANK_ZERO_LOGGERS:
        assert sum(isinstance(f, DropLightningTips) for f in logging.getLogger(name).filters) == 1


def test_the_run_log_gets_the_config_tree_the_results_and_the_error_line(tmp_path):
    long_dir = tmp_path / ("a_long_folder_name_" * 6) / "runs" / "ae" / "digits" / "2026-01-01_00-00-00"
    cfg = compose_config(long_dir, [*TINY])
    log_file = tmp_path / "train.log"
    handler = logging.FileHandler(log_file)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        print_config_tree(cfg, echo=False)
        print_results({"method": "ae", "dataset": "digits", "protocol": {"name": "one_class", "normal": ["0"]},
                       "seed": 0, "metrics": {"auroc": 0.93, "f1": None}, "run_dir": str(long_dir),
                       "problem": None})
        error("run interrupted by SIGTERM in epoch 3 (global step 30)")
    finally:
        root.removeHandler(handler)
        handler.close()
    text = log_file.read_text()
    assert "├── method" in text and f"output_dir: {long_dir}" in text  # paths whole, never folded
    assert "│ AUROC                   │ 0.9300 │" in text and f"run dir: {long_dir}" in text
    assert "│ F1 (anomalies positive) │      — │" in text  # which F1, never just "f1"
    assert "error: run interrupted by SIGTERM in epoch 3 (global step 30)" in text


def test_the_entry_points_load_without_torch_or_lightning():
    """`--help`, `--cfg job`, `--list` and a refused setting answer without the heavy imports."""
    code = ("import sys, tempfile, anomaly.train, anomaly.evaluate, anomaly.reproduce.__main__\n"
            "from anomaly.config import compose\n"
            "from anomaly.config_schema import ConfigError, check_train\n"
            "try:\n"
            "    check_train(compose(tempfile.gettempdir(), ['seed=-1', 'method.lr=0']))\n"
            "except ConfigError as err:\n"
            "    print(err)\n"
            "heavy = sorted(m for m in ('torch', 'lightning', 'torchvision', 'matplotlib') if m in sys.modules)\n"
            "print(heavy); sys.exit(1 if heavy else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # the refusal itself came without them too
    assert "seed=-1: must be an integer in [0, 4294967295]; method.lr=0: must be a number > 0" in proc.stdout
