"""`python train.py` with head inputs beyond z, end to end on tiny data: every prior source of
decoupled uniformity, domain-aware and supervised GCA, and the one-line refusals before work.
The runs go through the real entry points in this process (``run_entry``), one short epoch each."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_entry

ROOT = Path(__file__).resolve().parent.parent
# one epoch of 2 steps, no kNN monitor, a short probe: what the heads' inputs need to be seen
SHORT = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "monitor.knn.every_n_epochs=0",
         "eval.linear.max_iter=50"]
TRAIN_ROWS = 576  # the smoke data's stored training images (512 pretraining + 64 validation)
DUNIF = ["experiment=smoke", "threads=1", "loss=dunif", "loss.kernel=rbf", "loss.sigma=1", *SHORT]


def run(*args: str, script: str = "train.py") -> subprocess.CompletedProcess:
    """``python SCRIPT ARGS``, run in this process (tests/conftest.py ``run_entry``)."""
    return run_entry([script, *args])


def run_subprocess(*args: str, script: str = "train.py") -> subprocess.CompletedProcess:
    """``python SCRIPT ARGS`` in a fresh interpreter: for a run that spawns processes of its own
    (DDP), whose process group must not outlive it in the test process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=env)


def ok(proc: subprocess.CompletedProcess, run_dir: Path) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((run_dir / "summary.json").read_text())


def logged(run_dir: Path, key: str) -> list[float]:
    with open(run_dir / "metrics.csv") as fh:
        return [float(r[key]) for r in csv.DictReader(fh) if r.get(key)]


def refused(proc: subprocess.CompletedProcess, run_dir: Path) -> str:
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert not (run_dir / "checkpoints").exists()  # before any work
    return lines[0]


@pytest.fixture(scope="module")
def labels_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("labels")
    ok(run(*DUNIF, "prior=labels", "data.imbalance_ratio=4", f"hydra.run.dir={run_dir}"), run_dir)
    return run_dir


def test_prior_labels_on_a_long_tailed_set(labels_run):
    # the kernel mixed centroids of same-class samples: off-diagonal estimator mass
    assert min(logged(labels_run, "train/cme_offdiag")) > 0.5


def test_prior_features_from_file_and_from_checkpoint(labels_run, tmp_path):
    np.save(tmp_path / "prior.npy", np.random.default_rng(0).normal(size=(TRAIN_ROWS, 3)))
    ok(run(*DUNIF, "prior=features", f"prior.path={tmp_path / 'prior.npy'}",
           f"hydra.run.dir={tmp_path}/file"), tmp_path / "file")
    ckpt = labels_run / "checkpoints" / "last.ckpt"
    for name in ("a", "b"):  # the second run reads the cached features
        ok(run(*DUNIF, "prior=features", f"prior.checkpoint={ckpt}", "loss.sigma=3",
               f"prior.cache_dir={tmp_path}/cache", f"hydra.run.dir={tmp_path}/{name}"),
           tmp_path / name)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1


def test_prior_vae_trained_ahead_by_the_script_then_read(tmp_path):
    args = ["experiment=smoke", "threads=1", "prior=vae", "prior.epochs=2", "prior.hidden_dim=32",
            f"prior.cache_dir={tmp_path}/cache"]
    proc = run(*args, script="scripts/train_prior.py")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert report["rows"] == TRAIN_ROWS and report["dim"] == 16 and report["final_negative_elbo"] > 0
    (cached,) = (tmp_path / "cache").glob("*.pt")
    stamp = cached.stat().st_mtime_ns
    ok(run(*DUNIF, *args[2:], "loss.sigma=5", f"hydra.run.dir={tmp_path}/run"), tmp_path / "run")
    assert [p.stat().st_mtime_ns for p in (tmp_path / "cache").glob("*.pt")] == [stamp]


@pytest.mark.parametrize("args,needle", [
    (["loss=dunif", "loss.kernel=rbf", "loss.sigma=1"], "needs `prior` in every batch and data "
     "synthetic provides none; add prior=labels"),
    (["prior=labels"], "prior=labels is set but loss AlignUniform takes no prior"),
    (["loss=dunif", "prior=vae"], "prior=vae is set but loss DecoupledUniformity takes no prior"),
    (["loss=gca_ince", "loss.alpha=0.5"], "GCAINCE needs `domains` in every batch"),
    (["loss=dunif", "loss.kernel=rbf", "loss.sigma=1", "prior=features"], "exactly one of"),
    (["model.loss_scope=rank"], "valid choices are global, local"),
])
def test_refused_before_any_work(args, needle, tmp_path):
    msg = refused(run("experiment=smoke", "threads=1", *args, f"hydra.run.dir={tmp_path}"), tmp_path)
    assert needle in msg


def doc_commands() -> list[str]:
    """The commands about head inputs in the docs: all of docs/priors.md, and those of
    docs/losses.md and docs/distributed.md that use a prior, a GCA target plan or the scope."""
    out = []
    for page in ("priors.md", "losses.md", "distributed.md"):
        for line in (ROOT / "docs" / page).read_text().splitlines():
            line = line.split("#")[0].strip()
            if not line.startswith(("python train.py", "python scripts/train_prior.py")):
                continue
            if page == "priors.md" or any(k in line for k in ("prior=", "loss.alpha", "loss_scope")):
                out.append(line)
    return list(dict.fromkeys(out))


@pytest.mark.parametrize("command", doc_commands())
def test_doc_commands_run_at_smoke_scale(command, tmp_path):
    """Each documented command, with the smoke data and one short epoch appended."""
    script, *args = command.split()[1:]
    smoke = ["experiment=smoke", "threads=1"]
    if "prior=vae" in command:
        smoke += [f"prior.cache_dir={tmp_path}/cache", "prior.epochs=1"]
    if script == "train.py":
        smoke += [*SHORT, f"hydra.run.dir={tmp_path}/run"]
    # DDP starts a second process and a process group: in a process of its own
    proc = (run_subprocess if "trainer=ddp" in command else run)(*args, *smoke, script=script)
    assert proc.returncode == 0, f"{command}\n{proc.stderr[-3000:]}"
    if script == "train.py":
        assert 0 <= json.loads((tmp_path / "run" / "summary.json").read_text())["linear_probe_top1"] <= 1


def test_train_prior_help_and_unknown_flags_in_a_fresh_interpreter():
    """``--help`` prints the usage and exits 0; any other flag is refused in one line (Hydra's
    override parser would print a traceback), both before torch loads."""
    shown = run_subprocess("--help", script="scripts/train_prior.py")
    assert shown.returncode == 0 and "python scripts/train_prior.py prior=vae" in shown.stdout
    refused_flag = run_subprocess("--epochs", "3", script="scripts/train_prior.py")
    assert refused_flag.returncode == 2 and "Traceback" not in refused_flag.stderr
    assert refused_flag.stderr.strip().splitlines() == [
        "error: unknown option --epochs: train_prior.py takes key=value overrides as train.py "
        "does (prior=vae ...); --help shows examples"]
