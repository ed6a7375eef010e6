"""`python train.py` end to end on tiny synthetic data: run-dir layout, resume, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import run_entry

ROOT = Path(__file__).resolve().parent.parent


def train(*args: str) -> subprocess.CompletedProcess:
    """``python train.py ARGS``, run in this process (tests/conftest.py ``run_entry``)."""
    return run_entry(["train.py", *args])


def train_subprocess(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python train.py ARGS`` in a fresh interpreter: the command line itself under test."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.run(
        [sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True,
        timeout=timeout, env=env,
    )


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("smoke")
    proc = train("experiment=smoke", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def test_smoke_run_dir_layout(smoke_run):
    assert (smoke_run / ".hydra" / "config.yaml").exists()
    assert (smoke_run / "checkpoints" / "last.ckpt").exists()
    assert (smoke_run / "checkpoints" / "best.ckpt").exists()
    assert (smoke_run / "metrics.csv").exists()
    summary = json.loads((smoke_run / "summary.json").read_text())
    for key in ("linear_probe_top1", "knn_top1", "wall_seconds"):
        assert key in summary
    assert 0 <= summary["linear_probe_top1"] <= 1 and 0 <= summary["knn_top1"] <= 1
    # 4 separable synthetic classes: a trained encoder is far above chance (0.25)
    assert summary["knn_top1"] > 0.5 and summary["linear_probe_top1"] > 0.5
    assert summary["epochs"] == 2 and summary["wall_seconds"] > 0


def test_checkpoint_holds_config_and_state(smoke_run):
    ckpt = torch.load(smoke_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["global_step"] == 16
    assert ckpt["sslkit"]["config"]["data"]["_target_"].endswith("Synthetic")
    assert any(k.startswith("online.encoder") for k in ckpt["state_dict"])
    assert ckpt["optimizer_states"] and ckpt["lr_schedulers"]


def test_auto_resume_and_resume_path(smoke_run, tmp_path):
    # a run dir that holds last.ckpt resumes by itself and continues to the new max_epochs
    import shutil

    run_dir = tmp_path / "again"
    shutil.copytree(smoke_run, run_dir)
    proc = train("experiment=smoke", f"hydra.run.dir={run_dir}", "trainer.max_epochs=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming from" in proc.stdout
    # train.log says where the resumed fit starts, not epoch 0
    assert "fit: from epoch 2 of 3, step 16," in (run_dir / "train.log").read_text()
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["global_step"] == 24
    # resume=PATH into a fresh dir
    fresh = tmp_path / "fresh"
    proc = train("experiment=smoke", f"hydra.run.dir={fresh}", "trainer.max_epochs=3",
                 f"resume={smoke_run / 'checkpoints' / 'last.ckpt'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((fresh / "summary.json").read_text())["global_step"] == 24


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_unknown_loss_lists_choices(tmp_path):
    # the real command line, in a fresh interpreter: exit code 2 and one line on stderr
    proc = train_subprocess("loss=nope", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2
    msg = one_line_error(proc)
    assert "unknown loss 'nope'" in msg and "infonce" in msg


def test_missing_dataset_says_where_and_how(tmp_path):
    msg = one_line_error(train("experiment=smoke", "data=cifar10", f"data.root={tmp_path}/none",
                               f"hydra.run.dir={tmp_path}/run"))
    assert "cifar10 not found" in msg and "data.download=true" in msg and str(tmp_path) in msg
    assert not (tmp_path / "none").exists()


def test_resume_missing_or_corrupt_checkpoint_refused(tmp_path):
    msg = one_line_error(train("experiment=smoke", f"resume={tmp_path}/nope.ckpt", f"hydra.run.dir={tmp_path}/a"))
    assert "nope.ckpt" in msg and "no such file" in msg
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"\x00garbage" * 100)
    msg = one_line_error(train("experiment=smoke", f"resume={bad}", f"hydra.run.dir={tmp_path}/b"))
    assert "bad.ckpt" in msg and "refused" in msg
    assert not (tmp_path / "b" / "checkpoints").exists()  # nothing half-written


def test_bad_value_in_a_group_is_one_line(tmp_path):
    msg = one_line_error(train("experiment=smoke", "loss=infonce", "loss.temperature=-1",
                               f"hydra.run.dir={tmp_path}"))
    assert "temperature" in msg


def test_resume_refuses_a_different_run(smoke_run, tmp_path):
    ckpt = smoke_run / "checkpoints" / "last.ckpt"
    msg = one_line_error(train("experiment=smoke", f"resume={ckpt}", "loss=dcl", f"hydra.run.dir={tmp_path}/a"))
    assert "last.ckpt" in msg and "loss._target_" in msg and "resume_allow_config_change=true" in msg
    proc = train("experiment=smoke", f"resume={ckpt}", "data.batch_size=32", "trainer.max_epochs=3",
                 "resume_allow_config_change=true", f"hydra.run.dir={tmp_path}/b")
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize("override,needle", [
    ("data.batch_size=100000", "exceeds"),
    ("augment.crop_size=64", "augment.crop_size=64"),
    ("augment.views=1", "at least 2 views"),
])
def test_config_checked_before_any_work(override, needle, tmp_path):
    msg = one_line_error(train("experiment=smoke", override, f"hydra.run.dir={tmp_path}"))
    assert needle in msg
    assert not (tmp_path / "checkpoints").exists()


def test_nonfinite_loss_stops_with_step_terms_and_checkpoint(tmp_path):
    msg = one_line_error(train("experiment=smoke", "optim.optimizer.lr=1e38", f"hydra.run.dir={tmp_path}/a"))
    assert "non-finite loss at epoch 0 step" in msg and "loss=nan" in msg and "last good checkpoint" in msg
    msg = one_line_error(train("experiment=smoke", "optim.optimizer.lr=1e38", "model.nonfinite=skip",
                               "model.max_nonfinite_skips=2", f"hydra.run.dir={tmp_path}/b"))
    assert "2 steps skipped already" in msg


def test_checkpoint_of_another_model_or_newer_format_refused(smoke_run, tmp_path):
    ckpt = smoke_run / "checkpoints" / "last.ckpt"
    msg = one_line_error(train("experiment=smoke", f"resume={ckpt}", "encoder.widths=[8,32]",
                               "resume_allow_config_change=true", f"hydra.run.dir={tmp_path}/a"))
    assert "last.ckpt refused" in msg and "another model" in msg and "shape differs" in msg
    state = torch.load(ckpt, weights_only=True)
    state["sslkit"]["format_version"] = 99
    newer = tmp_path / "newer.ckpt"
    torch.save(state, newer)
    msg = one_line_error(train("experiment=smoke", f"resume={newer}", f"hydra.run.dir={tmp_path}/b"))
    assert "newer.ckpt refused" in msg and "format version 99" in msg
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    msg = one_line_error(train("experiment=smoke", f"resume={tmp_path / 'foreign.ckpt'}", f"hydra.run.dir={tmp_path}/c"))
    assert "foreign.ckpt refused" in msg and "not written by sslkit" in msg


def test_wandb_offline_and_multicrop(tmp_path):
    proc = train("experiment=smoke", "logger=wandb", "augment=multicrop", "augment.local_crop_size=8",
                 "trainer.max_epochs=1", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list((tmp_path / "wandb").glob("offline-run-*")), "no offline wandb run written"
    assert (tmp_path / "metrics.csv").exists()


def test_compiled_encoder_is_compiled_in_place_with_the_plain_keys():
    # the fast twin of the next test: model.compile_encoder compiles the encoder in place, so the
    # parameter names (and checkpoints) are the plain module's
    from sslkit.launch.api import compose
    from sslkit.training.build import build_module

    plain = build_module(compose(["experiment=smoke"], run_dir="/nowhere")[0])
    compiled = build_module(compose(["experiment=smoke", "model.compile_encoder=true"], run_dir="/nowhere")[0])
    assert compiled.online.encoder._compiled_call_impl is not None
    assert plain.online.encoder._compiled_call_impl is None
    assert compiled.state_dict().keys() == plain.state_dict().keys()


@pytest.mark.slow  # torch.compile's first call; fast twin: the test above
def test_compiled_encoder_keeps_checkpoint_keys(smoke_run, tmp_path):
    proc = train("experiment=smoke", "model.compile_encoder=true", "trainer.max_epochs=1",
                 f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    compiled = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    plain = torch.load(smoke_run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert compiled.keys() == plain.keys()


def test_unknown_key_is_one_line(tmp_path):
    msg = one_line_error(train("experiment=smoke", "loss.temprature=0.1", f"hydra.run.dir={tmp_path}"))
    assert "unknown config key 'loss.temprature'" in msg and "--cfg job" in msg


def test_checkpoint_from_before_the_layout_move_still_resumes_and_evaluates(smoke_run, tmp_path):
    # checkpoints written when the module lived at sslkit/module.py name that dotted path in their
    # saved config: it is rewritten on load (sslkit.training.checkpoint.MOVED_TARGETS)
    state = torch.load(smoke_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["sslkit"]["config"]["model"]["_target_"] == "sslkit.training.module.ContrastiveModule"
    state["sslkit"]["config"]["model"]["_target_"] = "sslkit.module.ContrastiveModule"
    old = tmp_path / "old.ckpt"
    torch.save(state, old)
    from sslkit.training.checkpoint import load_checkpoint

    assert load_checkpoint(old)["sslkit"]["config"]["model"]["_target_"] == "sslkit.training.module.ContrastiveModule"
    proc = train("experiment=smoke", f"resume={old}", "trainer.max_epochs=3", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["global_step"] == 24
    proc = run_entry(["scripts/evaluate.py", f"checkpoint={old}", "eval=[knn]", f"out={tmp_path / 'knn.json'}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 0 <= json.loads((tmp_path / "knn.json").read_text())["results"]["knn"]["top1"] <= 1


def test_checkpoint_with_the_old_constant_momentum_default_resumes(smoke_run, tmp_path):
    # before heads declared their own schedule, configs said model.momentum_schedule: constant;
    # for a head that declares none, null (today's default) builds the same run
    state = torch.load(smoke_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["sslkit"]["config"]["model"]["momentum_schedule"] is None
    state["sslkit"]["config"]["model"]["momentum_schedule"] = "constant"
    old = tmp_path / "old.ckpt"
    torch.save(state, old)
    proc = train("experiment=smoke", f"resume={old}", "trainer.max_epochs=3", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    from sslkit.training.checkpoint import upgrade_config

    byol = {"loss": {"_target_": "sslkit.losses.byol.BYOL"}, "model": {"momentum_schedule": "constant"}}
    assert upgrade_config(byol)["model"]["momentum_schedule"] == "constant"  # cosine is its own: kept
