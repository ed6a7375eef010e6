"""scripts/probe_floors.py at smoke scale: the protocol's evaluators on the randomly initialised
model and the raw pixels for two seeds, written as runs a sweep report pools as rows; resumed,
not redone; refusals in one line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from sslkit.stats.sweep import build_report
from tests.conftest import run_entry

SMOKE = ["experiment=smoke", "threads=1", "eval=[linear,knn,metrics,semi]", "eval.semi.finetune=null",
         "eval.semi.full=false", "eval.metrics.num_samples=64"]
PROTOCOL = ["linear_probe_top1", "val/linear_probe_top1", "eval/knn/k20_top1", "knn_top1",
            "eval/semi/linear/1%/top1/mean", "eval/semi/linear/10%/top1/mean", "eval/metrics/encoder/rankme",
            "eval/metrics/projector/alignment", "eval/metrics/projector/uniformity"]


@pytest.fixture(scope="module")
def floors(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("floors") / "out"
    proc = run_entry(["scripts/probe_floors.py", "--seeds", "0-1", "--out", str(out), *SMOKE])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def test_runs_csv_has_every_floor_seed_and_protocol_metric(floors):
    columns, rows = read_csv(floors / "runs.csv")
    assert columns[:3] == ["floor", "seed", "run"] and columns[3:3 + len(PROTOCOL)] == PROTOCOL
    assert [(r["floor"], r["seed"]) for r in rows] == [("random_init", "0"), ("random_init", "1"),
                                                       ("raw_pixels", "0"), ("raw_pixels", "1")]
    for r in rows:
        assert all(0.0 <= float(r[m]) <= 1.0 for m in PROTOCOL[:6]), r
        assert float(r["eval/metrics/encoder/rankme"]) >= 1.0
        # a projector exists only on the model: the raw pixels leave its metrics empty
        assert (r["eval/metrics/projector/alignment"] == "") == (r["floor"] == "raw_pixels")
    # raw pixels: the 16 x 16 grey images flattened; the model: the smoke convnet's features
    features = {r["floor"]: int(float(r["features"])) for r in rows}
    assert features["raw_pixels"] == 256 and features["random_init"] == 16
    # each seed its own initial weights: the random encoders differ
    inits = [r for r in rows if r["floor"] == "random_init"]
    assert inits[0]["eval/metrics/encoder/rankme"] != inits[1]["eval/metrics/encoder/rankme"]
    run = floors / "random_init" / "0"
    assert sorted(p.name for p in (run / "eval").glob("*.json")) == [
        "knn.json", "linear.json", "metrics.json", "semi.json", "validation.json"]
    summary = json.loads((run / "summary.json").read_text())
    linear = json.loads((run / "eval" / "linear.json").read_text())
    assert summary["linear_probe_top1"] == linear["top1"] and summary["floor"] == "random_init"
    assert "projector" not in json.loads((floors / "raw_pixels" / "0" / "eval" / "metrics.json").read_text())


def test_floors_pool_as_rows_beside_a_sweeps_runs_csv(floors, tmp_path):
    heads = tmp_path / "heads.csv"
    with open(heads, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["loss", "seed", "run", "linear_probe_top1", "eval/knn/k20_top1"])
        for loss, acc in (("infonce", 0.97), ("cacr", 0.98)):
            writer.writerows([loss, s, f"runs/{loss}/{s}", acc + 0.001 * s, acc - 0.01] for s in (0, 1))
    report = build_report([heads, floors / "runs.csv"], ["linear_probe_top1", "eval/knn/k20_top1"])
    assert report["keys"] == ["loss", "floor"]
    rows = {(r["loss"], r["floor"]): r for r in report["rows"]}
    assert set(rows) == {("infonce", "-"), ("cacr", "-"), ("-", "random_init"), ("-", "raw_pixels")}
    assert all(r["n"] == 2 and r["seeds"] == "0 1" for r in rows.values())
    _, floor_rows = read_csv(floors / "runs.csv")
    raw = [float(r["linear_probe_top1"]) for r in floor_rows if r["floor"] == "raw_pixels"]
    assert rows[("-", "raw_pixels")]["linear_probe_top1_mean"] == pytest.approx(sum(raw) / 2)


def test_the_random_floor_is_the_model_a_run_of_that_seed_starts_from(floors, tmp_path):
    """train.py at seed 1 with no training step (limit_train_batches=0) probes its initial
    encoder: the same linear probe, to the bit, as the floor's random_init of seed 1."""
    run = tmp_path / "untrained"
    proc = run_entry(["train.py", "experiment=smoke", "seed=1", "threads=1", "trainer.max_epochs=1",
                      "+trainer.limit_train_batches=0", "eval=[linear]", "monitor.knn.every_n_epochs=0",
                      "monitor.metrics.every_n_epochs=0", f"hydra.run.dir={run}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run / "summary.json").read_text())["global_step"] == 0
    trained = json.loads((run / "eval" / "linear.json").read_text())
    floor = json.loads((floors / "random_init" / "1" / "eval" / "linear.json").read_text())
    for key in ("top1", "per_class_top1", "l2", "holdout_top1", "train_top1"):
        assert trained[key] == floor[key], key


def test_a_second_call_resumes_instead_of_measuring_again(floors):
    before = {p: p.stat().st_mtime_ns for p in floors.glob("*/*/summary.json")}
    proc = run_entry(["scripts/probe_floors.py", "--seeds", "0-1", "--out", str(floors), *SMOKE])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("done already") == 4 and "| random_init | 2 | 0 1 |" in proc.stdout
    assert {p: p.stat().st_mtime_ns for p in floors.glob("*/*/summary.json")} == before


@pytest.mark.parametrize("args, needle", [
    (["--seeds", "3-1"], "--seeds 3-1: the range 3-1 runs backwards"),
    (["--seeds", "0-x"], "--seeds 0-x: write seeds as 0-15"),
    (["--floors", "pixels"], "--floors pixels: choose from random_init, raw_pixels"),
    (["--floors", "raw_pixels", "experiment=smoke", "eval=[linear,robust]"], "eval.robust is not defined on raw pixels"),
    (["--floors", "raw_pixels", "experiment=smoke", "eval=[semi]"], "eval.semi.finetune fine-tunes an encoder"),
])
def test_refusals_are_one_line(args, needle, tmp_path):
    proc = run_entry(["scripts/probe_floors.py", "--out", str(tmp_path / "out"), *args])
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and needle in lines[0], proc.stderr
