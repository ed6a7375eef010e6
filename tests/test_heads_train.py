"""Every head in configs/loss/ trains end to end: `python train.py loss=NAME experiment=smoke`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEADS = sorted(p.stem for p in (ROOT / "configs" / "loss").glob("*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("head", HEADS)
def test_head_trains_end_to_end(head, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # a queue shorter than the 512 smoke images (the default 4096 is refused there)
    queue = ["loss.queue_size=256"] if "queue_size:" in (ROOT / "configs" / "loss" / f"{head}.yaml").read_text() else []
    proc = subprocess.run(
        [sys.executable, "train.py", f"loss={head}", "experiment=smoke", "trainer.max_epochs=1",
         "eval.callbacks.knn.every_n_epochs=0", f"hydra.run.dir={tmp_path}", *queue],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["loss"] == head and summary["global_step"] == 8
    assert 0 <= summary["linear_probe_top1"] <= 1
