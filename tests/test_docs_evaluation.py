"""Every command of docs/evaluation.md runs, at smoke scale (synthetic data, paths in a temp dir)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def doc_commands() -> list[list[str]]:
    text = (ROOT / "docs" / "evaluation.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [shlex.split(line) for block in blocks for line in block.splitlines()
            if line.startswith("python ")]


def test_the_doc_has_commands():
    scripts = {cmd[1] for cmd in doc_commands()}
    assert {"train.py", "scripts/evaluate.py", "scripts/sweep_report.py"} <= scripts


@pytest.mark.slow
def test_doc_commands_run_at_smoke_scale(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    for cmd in doc_commands():
        args = [re.sub(r"(^|=|\[|,)(runs|multirun)/", lambda m: f"{m.group(1)}{tmp_path}/{m.group(2)}/", a)
                for a in cmd[1:]]
        if args[0] == "train.py":
            args.insert(1 + (args[1] == "-m"), "experiment=smoke")
        proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=600, env=env)
        assert proc.returncode == 0, f"{shlex.join(cmd)}\n{proc.stderr[-3000:]}"
    assert (tmp_path / "runs" / "eval_demo" / "eval" / "linear_sgd.json").exists()
    assert (tmp_path / "runs" / "eval_longtail" / "eval" / "longtail.json").exists()
    assert (tmp_path / "runs" / "eval_domain" / "eval" / "domain.json").exists()
