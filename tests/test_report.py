"""scripts/report.py: two smoke runs side by side in one Markdown file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import copy_run, run_entry

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}


def run(script: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """``python SCRIPT ARGS``, run in this process (tests/conftest.py ``run_entry``)."""
    return run_entry([str(ROOT / script), *args], cwd=cwd)


def run_subprocess(script: str, *args: str) -> subprocess.CompletedProcess:
    """``python SCRIPT ARGS`` in a fresh interpreter: the command line itself under test."""
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=ENV)


@pytest.fixture(scope="module")
def two_runs(smoke_session_run, cacr_session_run, tmp_path_factory) -> list[Path]:
    """The session's smoke run (AU head) and CACR run with records, copied: the plots evaluator
    and an extra result are written into them."""
    base = tmp_path_factory.mktemp("runs")
    runs = [copy_run(smoke_session_run, base / "a"), copy_run(cacr_session_run, base / "b")]
    proc = run("scripts/evaluate.py", f"checkpoint={runs[1] / 'checkpoints' / 'last.ckpt'}",
               "eval=[plots]", "eval.plots.max_points=100", "eval.plots.n_jobs=1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    # an evaluator result only the first run has
    (runs[0] / "eval").mkdir(exist_ok=True)  # train.py already wrote its evaluators there
    (runs[0] / "eval" / "extra.json").write_text(json.dumps({"custom": {"top1": 0.8125}, "steps": [20, 200]}))
    return runs


def test_report_of_two_smoke_runs(two_runs, tmp_path):
    out = tmp_path / "reports" / "compare.md"
    proc = run("scripts/report.py", *map(str, two_runs), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    lines = text.splitlines()

    def row(key: str) -> list[str]:
        match = [ln for ln in lines if ln.startswith(f"| `{key}` |")]
        assert len(match) == 1, (key, match)
        return [c.strip() for c in match[0].strip("|").split("|")][1:]

    # config differences: only the keys that differ, one column per run
    assert row("loss._target_") == ["sslkit.losses.au.AlignUniform", "sslkit.losses.cacr.CACR"]
    assert row("loss.tau_pos")[0] == "–"
    assert "`data.batch_size`" not in text.split("## Summary")[0]
    # summary.json and eval JSONs side by side
    a = json.loads((two_runs[0] / "summary.json").read_text())
    b = json.loads((two_runs[1] / "summary.json").read_text())
    assert row("knn_top1") == [f"{a['knn_top1']:.4g}", f"{b['knn_top1']:.4g}"]
    assert "## Evaluation `extra` (`eval/extra.json`)" in text
    assert row("custom.top1") == ["0.8125", "–"] and row("steps") == ["[20, 200]", "–"]
    assert "## Evaluation `plots` (`eval/plots.json`)" in text
    assert row("files.weights") == ["–", "plots/weights.png"]
    # pictures linked relative to the report, and the links resolve
    links = [ln.split("](")[1].split(")")[0] for ln in lines if "![" in ln]
    assert links and all(not Path(link).is_absolute() for link in links)
    assert all((out.parent / link).exists() for link in links)
    weights = row("weights")
    assert weights[0] == "–" and weights[1].startswith("![weights](../")
    assert weights[1].endswith("/b/plots/weights.png)")


def test_report_refuses_what_is_not_a_run_dir(tmp_path):
    for target, words in ((tmp_path / "none", "does not exist"), (tmp_path, "not a run dir")):
        # the first from a fresh interpreter: the command's own exit code and stderr
        proc = (run_subprocess if words == "does not exist" else run)(
            "scripts/report.py", str(target), "--out", str(tmp_path / "r.md"))
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode != 0 and len(lines) == 1 and words in lines[0], proc.stderr
