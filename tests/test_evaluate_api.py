"""``sslkit.evaluate`` from Python and the ``sslkit-eval`` command (``python -m sslkit.launch.eval_cli``)
on one smoke checkpoint: the same results as the evaluators at the end of training, the
checkpoint's config changed by ``key=value``, results to ``out=``, bad input refused by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import sslkit
from sslkit.errors import CheckpointError, ConfigError
from tests.conftest import copy_run, run_entry

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def run_dir(smoke_session_run) -> Path:
    """The session's smoke run (2 epochs; eval/knn.json among its results). Read-only: a test
    that evaluates into the run dir copies it."""
    return smoke_session_run


def test_evaluate_from_python_returns_the_results(run_dir, cacr_session_run, tmp_path):
    run_dir = copy_run(run_dir, tmp_path / "run")  # the evaluation writes eval/knn.json into it
    trained = json.loads((run_dir / "eval" / "knn.json").read_text())
    (run_dir / "eval" / "knn.json").unlink()
    results = sslkit.evaluate(run_dir / "checkpoints" / "last.ckpt", ["eval=[knn]", "threads=1"])
    assert list(results) == ["knn"] and results["knn"]["top1"] == trained["top1"]
    assert json.loads((run_dir / "eval" / "knn.json").read_text())["top1"] == trained["top1"]
    # a list of checkpoints: a list of results, in order (two runs: one checkpoint twice would be
    # one seed twice, which the seed summary refuses)
    other = copy_run(cacr_session_run, tmp_path / "other")
    other_trained = json.loads((other / "eval" / "knn.json").read_text())
    many = sslkit.evaluate([run_dir / "checkpoints" / "last.ckpt", other / "checkpoints" / "last.ckpt"],
                           ["eval=[knn]", "threads=1"])
    assert [r["knn"]["top1"] for r in many] == [trained["top1"], other_trained["top1"]]


def test_evaluate_changes_the_saved_config_and_writes_out(run_dir, tmp_path):
    out = tmp_path / "sub" / "r.json"
    # data.root is a key of the checkpoint's config: the smoke data has none, so the data module
    # must refuse the unknown key by name, proving the change reached it
    with pytest.raises(ConfigError, match="bogus"):
        sslkit.evaluate(run_dir / "checkpoints" / "last.ckpt", ["eval=[knn]", "+data.bogus=1"])
    results = sslkit.evaluate(run_dir / "checkpoints" / "last.ckpt",
                              ["eval=[knn]", "eval.knn.k=[5]", "eval.knn.summary_k=5",
                               "data.eval_batch_size=7", f"out={out}"])
    record = json.loads(out.read_text())
    assert record["checkpoint"] == str(run_dir / "checkpoints" / "last.ckpt") and record["epoch"] == 1
    assert record["results"]["knn"]["top1"] == results["knn"]["top1"] and "k5_top1" in results["knn"]


def test_evaluate_refuses_bad_input_by_name(run_dir, tmp_path):
    with pytest.raises(CheckpointError, match="nope.ckpt"):
        sslkit.evaluate(tmp_path / "nope.ckpt")
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, foreign)
    with pytest.raises(CheckpointError, match="foreign.ckpt.*not written by sslkit"):
        sslkit.evaluate(foreign)
    with pytest.raises(ConfigError, match="unknown eval 'nope'.*linear_sgd"):
        sslkit.evaluate(run_dir / "checkpoints" / "last.ckpt", ["eval=[nope]"])
    with pytest.raises(ConfigError, match="out=.*one checkpoint"):
        sslkit.evaluate([run_dir / "checkpoints" / "last.ckpt"] * 2, [f"out={tmp_path / 'o.json'}"])


def test_eval_command(run_dir, tmp_path):
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    out = tmp_path / "r.json"
    # ``python -m sslkit.launch.eval_cli`` runs that module as __main__: here in this process
    # (``run_entry``); tests/test_evaluate.py runs the same main() in a fresh interpreter and
    # tests/test_package.py the installed sslkit-eval
    cli = "sslkit/launch/eval_cli.py"
    proc = run_entry([cli, f"checkpoint={ckpt}", "eval=[knn]", "threads=1", "data.num_workers=0", f"out={out}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "k200_top1" in proc.stdout and json.loads(out.read_text())["results"]["knn"]["top1"] >= 0
    proc = run_entry([cli, f"checkpoint={tmp_path / 'nope.ckpt'}"])
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert proc.returncode != 0 and len(lines) == 1 and "nope.ckpt" in lines[0], proc.stderr
