"""Fine-tuning protocol on the session's trained smoke checkpoint: it learns, leaves the
pretrained module alone, selects on the validation split only (poisoned test labels change no
choice), and runs from scripts/evaluate.py into eval/finetune.json."""

from __future__ import annotations

import json

import pytest
import torch

from sslkit.errors import ConfigError
from sslkit.eval.context import EvalContext
from sslkit.eval.finetune import FineTune, selection_split
from sslkit.eval.loading import load_trained
from tests.conftest import copy_run, run_entry
from tests.test_test_split_decides_nothing import poison_test_labels

TINY = {"epochs": 2, "batch_size": 32, "lr_grid": [0.1, 0.5]}


def trained_context(run_dir, tmp_path, seed: int = 0) -> EvalContext:
    _, module, dm = load_trained(run_dir / "checkpoints" / "last.ckpt", "cpu")
    return EvalContext(module=module, datamodule=dm, run_dir=tmp_path, seed=seed)


def test_finetune_learns_and_leaves_the_pretrained_module_alone(smoke_session_run, tmp_path):
    ctx = trained_context(smoke_session_run, tmp_path)
    before = {k: v.clone() for k, v in ctx.module.state_dict().items()}
    out = FineTune(**TINY)(ctx)
    assert out["top1"] > 0.6 and out["val_top1"] > 0.6  # 4 classes: chance is 0.25
    assert out["selected"]["lr"] in TINY["lr_grid"] and 1 <= out["selected"]["epoch"] <= 2
    curves = out["val_top1_per_epoch"]
    assert set(curves) == {"0.1", "0.5"} and all(len(c) == 2 for c in curves.values())
    assert out["val_top1"] == max(max(c) for c in curves.values())
    assert out["val_top1"] == curves[repr(out["selected"]["lr"])][out["selected"]["epoch"] - 1]
    assert out["n_val"] == 64 and out["n_train"] == 512 and out["n_test"] == 256
    after = ctx.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # a copy was fine-tuned


def test_poisoned_test_labels_change_no_choice_of_the_finetune(smoke_session_run, tmp_path, monkeypatch):
    clean = FineTune(**TINY)(trained_context(smoke_session_run, tmp_path))
    poison_test_labels(monkeypatch)
    poisoned = FineTune(**TINY)(trained_context(smoke_session_run, tmp_path))
    for key in ("selected", "val_top1", "val_top1_per_epoch", "train_loss_per_epoch"):
        assert clean[key] == poisoned[key], key
    assert clean["top1"] > 0.6 and poisoned["top1"] < 0.45  # the poison reached the test score


def test_without_a_validation_split_a_seeded_holdout_of_the_training_images_selects(smoke_parts):
    from sslkit.data.synthetic import Synthetic

    dm = Synthetic(num_train=100, num_test=20, val_size=None)
    sel = selection_split(dm, seed=3, holdout_fraction=0.1)
    assert sel.val_split == dm.probe_split and len(sel.val) == 10 and len(sel.train) == 90
    assert not set(sel.val.tolist()) & set(sel.train.tolist())
    assert torch.equal(selection_split(dm, 3, 0.1).val, sel.val)  # seeded
    _, _, smoke_dm = smoke_parts  # data.val_size=64: the validation split selects
    sel = selection_split(smoke_dm, seed=0, holdout_fraction=0.1)
    assert sel.val_split == "validation" and len(sel.val) == 64 and len(sel.train) == 512


@pytest.mark.parametrize("kwargs,message", [
    ({"optimizer": "lamb"}, "eval.finetune.optimizer='lamb'; choose one of sgd, adamw"),
    ({"lr_grid": []}, "eval.finetune.lr_grid=[]"),
    ({"epochs": 0}, "need epochs >= 1"),
])
def test_bad_settings_are_refused_in_one_line(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")) as err:
        FineTune(**kwargs)
    assert "\n" not in str(err.value)


def test_evaluate_py_writes_eval_finetune_json_with_adamw(smoke_session_run, tmp_path):
    run_dir = copy_run(smoke_session_run, tmp_path / "run")
    proc = run_entry(["scripts/evaluate.py", f"checkpoint={run_dir}/checkpoints/last.ckpt", "eval=[finetune]",
                      "eval.finetune.epochs=1", "eval.finetune.optimizer=adamw",
                      "eval.finetune.lr_grid=[1e-4,1e-3]", "threads=1", "eval_device=cpu"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads((run_dir / "eval" / "finetune.json").read_text())
    assert out["settings"]["optimizer"] == "adamw" and out["selected"]["lr"] in (1e-4, 1e-3)
    assert "validation split" in out["selection"] and 0 <= out["top1"] <= 1
