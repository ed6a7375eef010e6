"""The test split decides nothing: what selects (the online monitors, best.ckpt, a sweep's
objective) reads the validation split carved from the training images, so permuting every test
label changes none of it while the reported test accuracy falls to chance; a sweep that would
optimise a test-split number is refused before any trial."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

from sslkit.data.synthetic import Synthetic
from sslkit.launch.train_cli import objective_error
from tests.conftest import ROOT, run_entry

SWEEPS = sorted((ROOT / "configs" / "sweep").glob("*.yaml"))


def poison_test_labels(monkeypatch) -> None:
    """Every Synthetic test label permuted (a fixed permutation): the images stay, the labels
    are those of other test images, so a classifier scores about chance (1/4) on them."""
    load_split = Synthetic.load_split

    def poisoned(self, split):
        data = load_split(self, split)
        if split == self.test_split:
            perm = torch.randperm(len(data.labels), generator=torch.Generator().manual_seed(1234))
            data.labels = data.labels[perm]
        return data

    monkeypatch.setattr(Synthetic, "load_split", poisoned)


def optuna_trial(sweep_dir: Path) -> Path:
    """One trial of the shipped Optuna sweep on the smoke job, in this process."""
    proc = run_entry(["train.py", "-m", "+sweep=optuna_infonce", "experiment=smoke", "threads=1",
                      "hydra.sweeper.n_trials=1", "eval=[linear,knn]", f"hydra.sweep.dir={sweep_dir}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep_dir


def val_columns(run: Path) -> dict[str, list[str]]:
    with open(run / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    columns = [k for k in rows[0] if k.startswith("val/")]
    return {k: [r[k] for r in rows] for k in columns}


def test_poisoned_test_labels_change_no_selection_and_collapse_the_test_score(tmp_path, monkeypatch):
    clean = optuna_trial(tmp_path / "clean")
    with monkeypatch.context() as patch:
        poison_test_labels(patch)
        poisoned = optuna_trial(tmp_path / "poisoned")
    clean_run, poisoned_run = clean / "0", poisoned / "0"
    c = json.loads((clean_run / "summary.json").read_text())
    p = json.loads((poisoned_run / "summary.json").read_text())

    # the reported test accuracy collapses toward chance (4 balanced classes): the poison worked
    assert c["linear_probe_top1"] > 0.8 and p["linear_probe_top1"] < 0.45
    assert c["knn_top1"] > 0.6 and p["knn_top1"] < 0.45

    # the Optuna objective (what the study recorded) and its trial: exactly the same
    results = [yaml.safe_load((d / "optimization_results.yaml").read_text()) for d in (clean, poisoned)]
    assert results[0]["best_value"] == results[1]["best_value"] == c["val/linear_probe_top1"]
    assert results[0]["best_params"] == results[1]["best_params"]

    # the online monitors: every validation number, every epoch, and the summary's
    columns = val_columns(clean_run)
    assert {"val/online_probe_top1", "val/knn_top1", "val/metrics/encoder_rankme"} <= set(columns)
    assert columns == val_columns(poisoned_run)
    val_keys = [k for k in c if k.startswith("val/")]
    assert {"val/linear_probe_top1", "val/online_probe_top1", "val/knn_top1"} <= set(val_keys)
    assert {k: c[k] for k in val_keys} == {k: p[k] for k in val_keys}

    # best.ckpt: the same epoch, score and weights
    best = [torch.load(r / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
            for r in (clean_run, poisoned_run)]
    assert best[0]["epoch"] == best[1]["epoch"] and best[0]["global_step"] == best[1]["global_step"]
    scores = [next(v["best_model_score"] for k, v in b["callbacks"].items()
                   if "ModelCheckpoint" in k and v.get("best_model_score") is not None) for b in best]
    assert float(scores[0]) == float(scores[1])
    assert best[0]["state_dict"].keys() == best[1]["state_dict"].keys()
    assert all(torch.equal(best[0]["state_dict"][k], best[1]["state_dict"][k]) for k in best[0]["state_dict"])


@pytest.mark.parametrize("objective,use", [
    ("linear_probe_top1", "val/linear_probe_top1"),
    ("knn_top1", "val/knn_top1"),
    ("test/linear_probe_top1", "val/linear_probe_top1"),
    ("eval/linear/top1", "val/linear_probe_top1"),
])
def test_a_sweep_on_a_test_key_is_refused_before_any_trial(objective, use, tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = run_entry(["train.py", "-m", "+sweep=optuna_infonce", "experiment=smoke", "threads=1",
                      "seed=0,1", f"objective={objective}", f"hydra.sweep.dir={sweep_dir}"])
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith(f"error: objective={objective} is a score on the test split")
    assert lines[0].endswith(f"objective={use}")
    assert not sweep_dir.exists() and "study" not in proc.stdout  # no trial, no study


def test_a_single_run_with_a_test_objective_is_refused_before_any_work(tmp_path):
    proc = run_entry(["train.py", "experiment=smoke", "threads=1", "objective=linear_probe_top1",
                      f"hydra.run.dir={tmp_path / 'run'}"])
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "objective=val/linear_probe_top1" in lines[0]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_which_keys_are_test_keys():
    for key in ("linear_probe_top1", "linear_probe_top5", "knn_top1", "test/knn_top1",
                "eval/knn/k20_top1", "eval/robust/slf/pgd20_linf_8", "eval/metrics/encoder/rankme",
                "eval/finetune/top1", "eval/semi/0.01/linear/top1", "eval/transfer/top1"):
        assert objective_error(key) is not None, key
    for key in (None, "val/linear_probe_top1", "val/knn_top1", "val/online_probe_top1",
                "online_probe_top1", "eval/linear/holdout_top1/0.001", "eval/linear/train_top1",
                "eval/finetune/val_top1", "eval/semi/0.01/linear/val_top1", "wall_seconds"):
        assert objective_error(key) is None, key


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_shipped_sweeps_optimise_a_validation_key(path):
    from sslkit.training.config import compose_config

    cfg = compose_config("train", [f"+sweep={path.stem}"], return_hydra_config=True)
    assert objective_error(cfg.objective) is None and str(cfg.objective).startswith("val/")
    if "Optuna" in str(cfg.hydra.sweeper.get("_target_", "")):
        assert "objective: val/" in path.read_text()  # the file says what it optimises
