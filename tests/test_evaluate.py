"""The evaluation entry points end to end on tiny synthetic runs: the evaluators at the end of
train.py, scripts/evaluate.py (one checkpoint, eval=all, several seeds), refusals. The entry
points run in this process (``run_entry``) but for one refusal, which checks the command's exit
code and its one line of stderr from a fresh interpreter."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import copy_run, run_entry, train_run

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    """``python SCRIPT ARGS``, run in this process (tests/conftest.py ``run_entry``)."""
    return run_entry([script, *args])


def run_subprocess(script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python SCRIPT ARGS`` in a fresh interpreter: the command line itself under test."""
    return subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=ENV)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return lines[0]


def test_every_eval_config_is_an_evaluator_at_its_own_key():
    from sslkit.training.config import choices, evaluators

    for name in choices("eval"):
        text = (ROOT / "configs" / "eval" / f"{name}.yaml").read_text()
        assert text.splitlines()[0] == f"# @package eval.{name}", name
    assert {"linear", "linear_sgd", "knn", "metrics", "longtail"} <= set(evaluators())


def test_eval_all_expands_to_every_evaluator():
    from sslkit.training.config import evaluators, expand_eval_all

    out = expand_eval_all(["experiment=smoke", "eval=all", "seed=1"])
    assert out == ["experiment=smoke", f"eval=[{','.join(evaluators(any_data=True))}]", "seed=1"]
    # all but those that need more of the data than images and labels (domains) or another
    # dataset (transfer)
    assert set(evaluators()) - set(evaluators(any_data=True)) == {"domain", "transfer"}


@pytest.fixture(scope="module")
def runs(smoke_session_run, tmp_path_factory) -> list[Path]:
    """Two smoke runs that differ only in their seed, both with the metrics evaluator besides the
    default ones (the first is the session's shared run). Read-only: a test that evaluates into a
    run dir copies it."""
    second = train_run(tmp_path_factory.mktemp("seed1"), "experiment=smoke", "threads=1", "seed=1",
                       "eval=[linear,knn,metrics]")
    return [smoke_session_run, second]


def test_train_ends_with_the_evaluators(runs, cacr_session_run):
    first, _ = runs
    summary = json.loads((first / "summary.json").read_text())
    linear = json.loads((first / "eval" / "linear.json").read_text())
    knn = json.loads((first / "eval" / "knn.json").read_text())
    assert summary["linear_probe_top1"] == linear["top1"] and summary["knn_top1"] == knn["top1"] == knn["k200_top1"]
    assert 0.5 < linear["top1"] <= 1 and len(linear["per_class_top1"]) == 4 and "k20_top1" in knn
    assert summary["wall_seconds"] > 0 and "eval/metrics/num_samples" in summary
    assert (first / "eval" / "metrics.json").exists()
    # the default list: linear and kNN only (and the linear probe's score on the validation split)
    assert sorted(p.name for p in (cacr_session_run / "eval").iterdir()) == [
        "knn.json", "linear.json", "validation.json"]
    # the online metrics monitor logged every metric
    header = (first / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val/metrics/encoder_rankme", "val/metrics/projector_uniformity",
            "val/metrics/encoder_std_ratio"} <= set(header)


def test_evaluate_script_writes_eval_json_into_the_run_dir(runs, tmp_path):
    first = copy_run(runs[0], tmp_path / "first")
    before = json.loads((first / "eval" / "linear.json").read_text())
    (first / "eval" / "linear.json").unlink()
    ckpt = first / "checkpoints" / "last.ckpt"
    proc = run("scripts/evaluate.py", f"checkpoint={ckpt}", "eval=[linear,knn,metrics]", "threads=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = json.loads((first / "eval" / "linear.json").read_text())
    # the same checkpoint, seed and data: the same probe as at the end of training
    assert after["top1"] == before["top1"] and after["l2"] == before["l2"]
    assert "sslkit evaluation" in proc.stdout and "k200_top1" in proc.stdout
    assert json.loads((first / "eval" / "metrics.json").read_text())["encoder"]["rankme"] >= 1
    assert not (ROOT / ".hydra").exists() and not (ROOT / "outputs").exists()


def test_evaluate_all_runs_every_evaluator(runs, tmp_path):
    from sslkit.training.config import evaluators

    second = copy_run(runs[1], tmp_path / "second")
    shutil.rmtree(second / "eval")  # what training wrote: only the evaluation's files count
    # every evaluator at its smallest: what is checked is that each runs and writes its file
    proc = run("scripts/evaluate.py", f"checkpoint={second / 'checkpoints' / 'last.ckpt'}", "eval=all",
               "eval.linear_sgd.epochs=1", "eval.metrics.num_samples=64", "eval.plots.max_points=100",
               "eval.plots.n_jobs=1", "eval.robust.test_size=32", "eval.robust.slf.epochs=5",
               "eval.robust.alf.train_size=32", "eval.robust.aff.train_size=32", "eval.finetune.epochs=1",
               "eval.semi.draws=2", "eval.semi.finetune.epochs=1", "threads=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {p.stem for p in (second / "eval").glob("*.json")} == set(evaluators(any_data=True))
    sgd = json.loads((second / "eval" / "linear_sgd.json").read_text())
    assert 0 <= sgd["top1"] <= 1 and len(sgd["train_loss_per_epoch"]) == 1


def test_evaluate_several_seeds_gives_mean_and_interval(runs, tmp_path):
    runs = [copy_run(r, tmp_path / f"seed{i}") for i, r in enumerate(runs)]
    out = tmp_path / "aggregate.json"
    ckpts = ",".join(str(r / "checkpoints" / "last.ckpt") for r in runs)
    proc = run("scripts/evaluate.py", f"checkpoint=[{ckpts}]", "eval=[knn]", f"aggregate_out={out}", "threads=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(out.read_text())
    groups = record["groups"]
    assert len(groups) == 1 and groups[0]["seeds"] == [0, 1] and groups[0]["n"] == 2
    assert record["comparisons"] == []  # one setting: nothing to compare it with
    values = [json.loads((r / "eval" / "knn.json").read_text())["top1"] for r in runs]
    stats = groups[0]["metrics"]["knn.top1"]
    assert stats["mean"] == pytest.approx(sum(values) / 2)
    # t(0.975, 1) = 12.7062: the half-width of a 2-run interval is 12.7062 * |a - b| / 2
    assert stats["ci95"] == pytest.approx(12.7062 * abs(values[0] - values[1]) / 2, rel=1e-4)
    assert "95% interval" in proc.stdout


def test_evaluate_refuses_missing_and_foreign_checkpoints(tmp_path):
    msg = one_line_error(run("scripts/evaluate.py", f"checkpoint={tmp_path / 'nope.ckpt'}"))
    assert "no such file" in msg
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, foreign)
    assert "not written by sslkit" in one_line_error(run("scripts/evaluate.py", f"checkpoint={foreign}"))
    # checked before any import of torch: an unknown evaluator names the valid ones (in a fresh
    # interpreter, the command's own exit code and stderr, in about a second)
    msg = one_line_error(run_subprocess("scripts/evaluate.py", f"checkpoint={foreign}", "eval=[knn,nope]"))
    assert "unknown eval 'nope'" in msg and "linear_sgd" in msg


def test_bad_evaluator_config_fails_before_training(tmp_path):
    msg = one_line_error(run("train.py", "experiment=smoke", "eval.knn.summary_k=7", f"hydra.run.dir={tmp_path}"))
    assert "summary_k=7" in msg and not (tmp_path / "checkpoints").exists()


def test_checkpoint_patterns_expand_to_every_run_of_a_sweep(tmp_path):
    from omegaconf import OmegaConf

    from sslkit.errors import UserError
    from sslkit.launch.eval_cli import checkpoints

    for run in ("0", "2", "10"):
        (tmp_path / run / "checkpoints").mkdir(parents=True)
        (tmp_path / run / "checkpoints" / "last.ckpt").write_bytes(b"")
    plain = tmp_path / "plain.ckpt"
    cfg = OmegaConf.create({"checkpoint": [str(tmp_path / "*" / "checkpoints" / "last.ckpt"), str(plain)]})
    assert checkpoints(cfg) == [tmp_path / r / "checkpoints" / "last.ckpt" for r in ("0", "2", "10")] + [plain]
    with pytest.raises(UserError, match="no file matches"):
        checkpoints(OmegaConf.create({"checkpoint": str(tmp_path / "*" / "best.ckpt")}))
