"""Every command of docs/pictures.md runs, at smoke scale (synthetic data, a temp run dir)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from tests.conftest import run_entry

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "pictures.md"


def doc_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(), flags=re.S)
    return [ln.strip() for block in blocks for ln in block.splitlines()
            if ln.strip().startswith("python ")]


def smoke_scale(command: str, tmp: Path, with_umap: bool = False) -> list[str]:
    args = shlex.split(command.replace("runs/pictures", str(tmp)))
    script = args[1]
    if script == "train.py":
        # no kNN or metrics monitor: fewer curves to draw, which the plots tests draw in full
        args += ["experiment=smoke", "monitor.knn.every_n_epochs=0", "monitor.metrics.every_n_epochs=0"]
    elif script == "scripts/evaluate.py":
        args.append("eval.plots.max_points=100")
    elif script == "scripts/bench_embedding.py":
        args += ["--n", "300", "--out", str(tmp / "bench.json")]
        if not with_umap:  # numba compiles umap-learn's kernels on first use: ~60 s of one core
            args += ["--libraries", "openTSNE"]
    return args[1:]


def test_doc_has_commands_and_pictures():
    commands = doc_commands()
    assert any(c.startswith("python train.py") for c in commands)
    assert any(c.startswith("python scripts/evaluate.py") and "eval=[plots]" in c for c in commands)
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", DOC.read_text()):
        assert (DOC.parent / link).exists(), link


def test_doc_commands_run_at_smoke_scale(tmp_path):
    """Each command through its entry point in this process (``run_entry``); the embedding
    benchmark times openTSNE only (its umap-learn half: the slow twin below)."""
    for command in doc_commands():
        proc = run_entry(smoke_scale(command, tmp_path))
        assert proc.returncode == 0, (command, proc.stderr[-2000:])
    assert list((tmp_path / "cacr" / "plots").glob("*.png"))
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["openTSNE"] and rows[0]["throughput_median"] > 0


@pytest.mark.slow  # fast twin: test_doc_commands_run_at_smoke_scale (the same command, openTSNE only)
def test_embedding_benchmark_times_both_libraries(tmp_path):
    command = next(c for c in doc_commands() if "bench_embedding" in c)
    proc = run_entry(smoke_scale(command, tmp_path, with_umap=True))
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert [r["name"] for r in rows] == ["umap-learn", "openTSNE"] and "ratio_to_umap" in rows[1]
