"""`scripts/bench_threads.py --quick`: 1 thread, every core and threads=auto, side by side."""

from __future__ import annotations

import json

from tests.conftest import run_entry


def test_quick_threads_bench_writes_every_variant(tmp_path):
    out = tmp_path / "threads.json"
    # in this process (``run_entry``): torch's thread count is put back after the variants
    proc = run_entry(["scripts/bench_threads.py", "--quick", "--busy", "1", "--out", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    cores = result["machine"]["cores"]
    assert set(result["variants"]) == {"1", str(cores), "auto"}
    for row in result["variants"].values():
        assert row["images_per_s_median"] > 0 and len(row["all"]) == 1
    assert result["variants"][str(cores)]["ratio_to_default"] == 1.0
    assert len(result["auto_choices"]) == 1 and 1 <= result["auto_choices"][0]["threads"] <= cores
    assert result["settings"]["busy"] == 1 and "auto chose:" in proc.stdout
