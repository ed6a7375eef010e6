"""`scripts/bench.py --quick`: it runs and writes a results file of the documented structure.
Timings are never asserted (DESIGN: tests never assert timings)."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_entry

ROOT = Path(__file__).resolve().parent.parent


def torch_cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def run_bench(*args: str) -> subprocess.CompletedProcess:
    return run_entry(["scripts/bench.py", *args])


def check_heads_section(tmp_path, heads: list[str] | None) -> None:
    out = tmp_path / "bench.json"
    proc = run_bench("--quick", "--only", "heads", *(["--heads", *heads] if heads else []), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "InfoNCE" in proc.stdout and str(out) in proc.stdout
    results = json.loads(out.read_text())
    assert results["quick"] is True and set(results["sections"]) == {"heads"}
    machine = results["machine"]
    assert machine["cpu_count"] >= 1 and machine["torch_threads"] >= 1 and len(machine["loadavg_start"]) == 3
    section = results["sections"]["heads"]
    assert section["settings"]["dim"] == 128 and section["settings"]["views"] == 2
    assert section["settings"]["queue"] == 4096
    batches = section["settings"]["batches"]
    names = set(heads or {p.stem for p in (ROOT / "configs" / "loss").glob("*.yaml")}) | {"infonce"}
    rows = section["rows"]
    # every head asked for (all of configs/loss by default) at every batch size, measured without
    # error, relative to InfoNCE
    assert {(r["head"], r["batch"]) for r in rows} >= {(n, b) for n in names for b in batches}
    if heads:
        assert {r["head"] for r in rows} == names
    for row in rows:
        assert "error" not in row, row
        assert row["repeats"] >= 1 and len(row["seconds"]) == row["repeats"]
        assert row["seconds_min"] <= row["seconds_median"]
        assert math.isfinite(row["time_ratio_to_infonce"]) and row["time_ratio_to_infonce"] > 0
        assert row["ratio_to"] == "infonce"
        ctx = row["context"]
        assert {"torch_threads", "cpu_count", "loadavg", "loadavg_1m_at_repeats"} <= set(ctx)
        if row["head"] == "infonce":
            assert row["time_ratio_to_infonce"] == 1.0
        if row["head"] in ("moco", "cacr_moco"):
            assert "queue 4096" in row["extras"]
        if row["head"] == "dunif+rbf_prior":
            assert "prior" in row["extras"]


def test_quick_heads_bench_of_chosen_heads(tmp_path):
    # one head per kind of extra input (queue and keys, prior, none): the fast twin of the next test
    check_heads_section(tmp_path, ["moco", "dunif+rbf_prior", "cacr"])


@pytest.mark.slow
def test_quick_heads_bench_writes_results_of_every_head(tmp_path):
    check_heads_section(tmp_path, None)


def test_unknown_head_is_refused(tmp_path):
    proc = run_bench("--quick", "--only", "heads", "--heads", "nope", "--out", str(tmp_path / "b.json"))
    assert proc.returncode != 0 and "unknown head(s) nope" in proc.stderr and "infonce" in proc.stderr


def test_unknown_section_is_refused(tmp_path):
    proc = run_bench("--only", "nope", "--out", str(tmp_path / "b.json"))
    assert proc.returncode != 0 and "unknown section" in proc.stderr
    assert not (tmp_path / "b.json").exists()


@pytest.mark.slow  # fast twin: tests/test_moco_parts.py::test_module_computes_only_the_views_its_head_reads...
def test_quick_views_bench_counts_the_encoder_rows(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_bench("--quick", "--only", "views", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["sections"]["views"]["rows"]
    before, after = rows
    assert before["name"].startswith("moco: every view") and after["name"].startswith("moco: query/key")
    # MoCo, V = 2, batch 512: one online and one key view instead of two of each
    assert before["encoder_rows_per_step"] == {"online": 1024, "key": 1024}
    assert after["encoder_rows_per_step"] == {"online": 512, "key": 512}
    assert after["encoder_rows_ratio"] == {"online": 0.5, "key": 0.5}
    assert math.isfinite(after["ratio_to_all_views"]) and after["ratio_to"] == before["name"]


def test_quick_attack_bench_compares_torchattacks_to_a_plain_loop(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_bench("--quick", "--only", "attack", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    section = json.loads(out.read_text())["sections"]["attack"]
    lib, plain = section["rows"]
    assert lib["name"] == "torchattacks.PGD" and plain["name"] == "plain PGD loop"
    assert "error" not in lib and "error" not in plain
    assert lib["ratio_to"] == "plain PGD loop" and math.isfinite(lib["ratio_to_plain"])
    assert section["settings"]["eps"] == 8 / 255 and section["settings"]["steps"] == 2


def test_chunked_child_measures_one_head_dense_and_chunked():
    # the fast twin of the next test: the child process each of its rows comes from
    from benchmarks.chunked import run_child

    dense = run_child("InfoNCE", 256, 512, None, "cpu", 1)
    chunked = run_child("InfoNCE", 256, 512, 64, "cpu", 1)
    for res in (dense, chunked):
        assert "error" not in res, res
        assert res["seconds"] > 0 and res["peak_bytes"] >= 0 and res["grad_norm"] > 0
    assert abs(dense["loss"] - chunked["loss"]) <= 1e-6 * max(1.0, abs(dense["loss"]))


@pytest.mark.slow
def test_quick_chunked_bench_reports_time_and_memory_against_dense(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_bench("--quick", "--only", "chunked", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    section = json.loads(out.read_text())["sections"]["chunked"]
    rows = section["rows"]
    assert [r["head"] for r in rows] == ["InfoNCE"] * 4 + ["MoCo"] * 2 + ["CACR"] * 2 + ["AU"] * 2
    assert [r["batch"] for r in rows] == [512, 512, 1024, 1024] + [512, 512] * 3
    for dense, chunked in zip(rows[::2], rows[1::2]):
        assert dense["chunk_size"] is None and chunked["chunk_size"] == section["settings"]["chunk_size"]
        assert dense["peak_mib"] > 0 and chunked["peak_mib"] > 0
        assert math.isfinite(chunked["time_ratio_to_dense"]) and math.isfinite(chunked["memory_ratio_to_dense"])
        assert chunked["loss_difference"] <= 1e-6 * max(1.0, abs(dense["loss"])), chunked["name"]


def test_quick_decode_bench_compares_decoders_per_core(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_bench("--quick", "--only", "decode", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no CUDA device" in proc.stdout or "cuda" in proc.stdout
    section = json.loads(out.read_text())["sections"]["decode"]
    names = [r["name"] for r in section["rows"]]
    assert names[0].startswith("pil: decode") and any("data.decoder=torchvision" in n for n in names)
    assert any("DataLoader, 1 worker" in n for n in names)
    for row in section["rows"]:
        assert "error" not in row, row
        assert row["throughput_median"] > 0 and row["images"] == section["settings"]["images"]
    assert all(math.isfinite(r["ratio_to_pil"]) for r in section["rows"][1:])


def run_bench_gpu(*args: str) -> subprocess.CompletedProcess:
    return run_entry(["scripts/bench_gpu.py", *args])


@pytest.mark.skipif(torch_cuda_available(), reason="a CUDA device is present")
def test_quick_baselines_bench_times_full_steps_against_infonce(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_bench("--quick", "--only", "baselines", "--heads", "byol", "--threads", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    section = json.loads(out.read_text())["sections"]["baselines"]
    rows = {r["name"]: r for r in section["rows"]}
    assert set(rows) == {"infonce", "byol", "encoder forward, 2 views, no gradient"}
    assert rows["infonce"]["time_ratio_to_infonce"] == 1.0 and not rows["infonce"]["momentum_encoder"]
    byol = rows["byol"]
    assert byol["momentum_encoder"] and "error" not in byol
    # the momentum goal: InfoNCE's step plus one no-gradient encoder forward, measured beside it
    forward = rows["encoder forward, 2 views, no gradient"]
    assert byol["goal_ratio"] == pytest.approx(1 + forward["seconds_median"] / rows["infonce"]["seconds_median"], abs=1e-3)
    assert byol["meets_goal"] == (byol["time_ratio_to_infonce"] <= byol["goal_ratio"])
    assert byol["memory_batch"] == 128 and byol["memory_peak_bytes"] >= 0 and math.isfinite(byol["memory_loss"])
    assert "x InfoNCE" in proc.stdout


def test_baselines_memory_child_measures_one_step_at_a_batch():
    """What each head's own process runs in the full benchmark (here in this process): the peak
    is reset before the step, so a bigger batch needs more."""
    from benchmarks.baselines import child

    small, big = child("supcon", 32, "cpu", 1), child("supcon", 512, "cpu", 1)
    assert math.isfinite(small["loss"]) and big["peak_bytes"] > small["peak_bytes"] >= 0


def test_bench_gpu_refuses_without_a_gpu(tmp_path):
    proc = run_bench_gpu("--out", str(tmp_path / "g.json"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("no CUDA device; this benchmark needs a GPU (--allow-cpu runs it on "
                                   "the CPU, for testing)")
    assert not (tmp_path / "g.json").exists()


@pytest.mark.slow  # fast twin: docs/benchmarks.md's bench_gpu command, one epoch (test_docs_commands.py)
def test_bench_gpu_runs_tiny_on_the_cpu_when_allowed(tmp_path):
    out = tmp_path / "g.json"
    proc = run_bench_gpu("--allow-cpu", "--batch", "8", "--steps", "1", "--epochs", "2", "--no-compile",
                         "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    lightning, plain = results["rows"]
    assert lightning["name"].startswith("sslkit module + Lightning Trainer") and plain["name"].startswith("plain")
    for row in (lightning, plain):
        assert "error" not in row, row
        assert len(row["epoch_seconds"]) == 1 and row["views_per_second"] > 0
    assert math.isfinite(lightning["ratio_to_plain"])
    assert results["settings"]["precision"] == "bf16-mixed" and results["settings"]["batch"] == 8
    assert "s/epoch" in proc.stdout and str(out) in proc.stdout


def test_quick_cache_bench_compares_the_cache_to_the_jpeg_path(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_bench("--quick", "--only", "cache", "--threads", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    section = json.loads(out.read_text())["sections"]["cache"]
    rows = section["rows"]
    assert [r["kind"] for r in rows] == ["per core"] * 2 + ["epoch"] * 3
    names = [r["name"] for r in rows]
    assert names[0].startswith("64 px: decode JPEG") and names[1] == "64 px: read the cache, one thread"
    assert [n.split(": ", 1)[1] for n in names[2:]] == [
        "JPEG path", "cache cold (build + epoch)", "cache warm (a later run)"]
    for row in rows:
        assert "error" not in row, row
        assert row["throughput_median"] > 0
    for row in (rows[1], rows[3], rows[4]):
        assert math.isfinite(row["ratio_to_jpeg"]) and row["ratio_to"] == rows[0 if row is rows[1] else 2]["name"]
    assert section["settings"]["images"] == 24 and section["settings"]["sizes"] == [64]


def test_quick_compile_bench_projects_the_default_job_with_its_compile_time(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_bench("--quick", "--only", "compile", "--threads", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "break-even" in proc.stdout
    section = json.loads(out.read_text())["sections"]["compile"]
    settings = section["settings"]
    # the default job's step count, from the config: epochs x full batches of the pretraining split
    from sslkit.training.config import compose_config

    cfg = compose_config("train", [])
    assert settings["steps_per_epoch"] == (60000 - cfg.data.val_size) // cfg.data.batch_size
    assert settings["default_job_steps"] == cfg.trainer.max_epochs * settings["steps_per_epoch"]
    assert settings["precision"] == ("bf16-mixed" if settings["native_bf16_flags"] else "32-true")
    assert settings["cpu"] and settings["backend"] == "eager"  # --quick: dynamo without inductor
    rows = section["rows"]
    assert [r["name"] for r in rows] == ["eager", "compile encoder (model.compile_encoder=true)",
                                         "compile encoder + projector + loss"]
    steps = settings["default_job_steps"]
    eager = rows[0]
    for row in rows:
        assert "error" not in row, row
        calls = row["first_calls"]
        assert len(calls["first_steps"]) == 2 and len(calls["eval_first"]) == len(calls["eval_sizes"]) == 2
    for row in rows[1:]:
        assert row["compile_seconds"] == pytest.approx(row["compile_seconds_train"] + row["compile_seconds_eval"])
        # wall seconds per step (median, best) and CPU seconds per step (median)
        for stat, key in (("median", "seconds_median"), ("best", "seconds_min"), ("cpu", "cpu_seconds_median")):
            assert row[f"eager_total_seconds_{stat}"] == pytest.approx(steps * eager[key])
            assert row[f"compiled_total_seconds_{stat}"] == pytest.approx(row["compile_seconds"] + steps * row[key])
            saved = eager[key] - row[key]
            even = row[f"break_even_steps_{stat}"]
            assert even is None if saved <= 0 else even == pytest.approx(row["compile_seconds"] / saved)
        assert row["faster_including_compile"] == (
            row["compiled_total_seconds_median"] < row["eager_total_seconds_median"])
