"""Transfer: the linear probe of a pretrained encoder on another dataset, channels and size
adapted where the encoder allows (grey <-> RGB, resize), refused in one line where not; the L2
choice reads the target's training split only (poisoned target test labels change nothing of
it); scripts/evaluate.py writes eval/transfer.json."""

from __future__ import annotations

import json

import pytest
import torch

from sslkit.errors import ConfigError
from sslkit.eval.context import EvalContext
from sslkit.eval.transfer import Transfer, adapt_channels
from tests.conftest import copy_run, make_cifar, run_entry
from tests.eval.test_finetune import trained_context
from tests.test_test_split_decides_nothing import poison_test_labels

RGB = {"in_chans": 3, "mean": [0.5] * 3, "std": [0.25] * 3}


def rgb_target(**more) -> Transfer:
    """Synthetic RGB images of another size and class count than the smoke data's."""
    return Transfer(data="synthetic", overrides={**RGB, "image_size": 24, "num_classes": 5,
                                                 "num_train": 300, "num_test": 100, "val_size": 50}, **more)


def untrained(tmp_path, *overrides: str) -> EvalContext:
    """An untrained module (and its data) of the synthetic data with ``overrides``."""
    from sslkit.training.build import build_datamodule, build_module
    from sslkit.training.config import compose_config

    cfg = compose_config("train", ["data=synthetic", "logger=[]", *overrides])
    torch.manual_seed(0)
    module, dm = build_module(cfg).eval(), build_datamodule(cfg)
    dm.setup("validate")
    return EvalContext(module=module, datamodule=dm, run_dir=tmp_path, seed=0)


def test_a_grey_encoder_probes_rgb_images_of_another_size(smoke_session_run, tmp_path):
    ctx = trained_context(smoke_session_run, tmp_path)
    evaluator = rgb_target()
    evaluator.check(ctx.datamodule)
    out = evaluator(ctx)
    assert out["data"] == "synthetic" and out["adapted"] == {
        "channels": "3 -> 1 (luminance)", "size": "resized and centre-cropped to 16 px"}
    assert len(out["per_class_top1"]) == 5 and out["n_test"] == 100 and out["n_val"] == 50
    assert out["n_train"] == 250 and out["top1"] > 0.4  # 5 classes: chance is 0.2
    assert out["l2"] in evaluator.l2_grid and 0 <= out["val_top1"] <= 1


def test_poisoned_target_test_labels_change_no_choice(smoke_session_run, tmp_path, monkeypatch):
    clean = rgb_target()(trained_context(smoke_session_run, tmp_path))
    poison_test_labels(monkeypatch)
    poisoned = rgb_target()(trained_context(smoke_session_run, tmp_path))
    for key in ("l2", "holdout_top1", "val_top1", "n_train"):
        assert clean[key] == poisoned[key], key
    assert clean["top1"] > 0.4 and poisoned["top1"] < clean["top1"] - 0.15


def test_an_rgb_encoder_takes_grey_images_repeated(tmp_path):
    ctx = untrained(tmp_path, *(f"data.{k}={v}".replace(" ", "") for k, v in RGB.items()))
    out = Transfer(data="synthetic", overrides={"image_size": 20, "val_size": 32, "num_train": 200})(ctx)
    assert out["adapted"]["channels"] == "1 -> 3 (repeated)" and out["n_train"] == 168
    x = torch.rand(2, 1, 4, 4)
    assert torch.equal(adapt_channels(x, 3), x.expand(-1, 3, -1, -1))


def test_a_fixed_size_encoder_without_resize_is_refused_in_one_line(tmp_path):
    ctx = untrained(tmp_path, "encoder=small_alexnet")  # fc6 sized for 16 px crops
    with pytest.raises(ConfigError) as err:
        Transfer(data="synthetic", overrides={"image_size": 24}, resize=False)(ctx)
    message = str(err.value)
    assert "\n" not in message and message.startswith("eval.transfer: the encoder (SmallAlexNet, pretrained on 16 px)")
    assert "24x24 images of synthetic" in message and message.endswith("set eval.transfer.resize=true")
    out = Transfer(data="synthetic", overrides={"image_size": 16, "num_train": 48, "num_test": 16,
                                                          "val_size": 8}, resize=False)(ctx)
    assert out["adapted"]["size"] == "16x16 px (kept)"  # its own size runs


def test_what_cannot_be_adapted_or_found_is_refused_in_one_line(smoke_parts):
    _, _, dm = smoke_parts  # grey
    cases = [
        (lambda: Transfer(data="synthetic", overrides={"in_chans": 2, "mean": [0.5] * 2, "std": [0.2] * 2}).check(dm),
         "eval.transfer: the encoder takes 1-channel images and the target data has 2; only grey -> RGB"),
        (lambda: Transfer(data="mnist"), "eval.transfer.data='mnist': no configs/data/mnist.yaml; choose one of"),
        (lambda: Transfer(data="synthetic", overrides={"imgsize": 3}).check(dm),
         "eval.transfer.overrides: data config synthetic has no key 'imgsize'"),
        (lambda: Transfer(data="cifar10", root="/nowhere").check(dm), "cifar10 not found: /nowhere"),
    ]
    for call, message in cases:
        with pytest.raises(Exception) as err:
            call()
        assert str(err.value).startswith(message) and "\n" not in str(err.value), str(err.value)


def test_evaluate_py_writes_eval_transfer_json(smoke_session_run, tmp_path):
    run_dir = copy_run(smoke_session_run, tmp_path / "run")
    root = make_cifar(tmp_path / "data", 10, n=20)
    proc = run_entry(["scripts/evaluate.py", f"checkpoint={run_dir}/checkpoints/last.ckpt", "eval=[transfer]",
                      "eval.transfer.data=cifar10", f"eval.transfer.root={root}", "threads=1"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads((run_dir / "eval" / "transfer.json").read_text())
    assert out["data"] == "cifar10" and out["pretrained_on"] == "synthetic"
    assert out["n_test"] == 20 and out["n_val"] == 50 and out["n_train"] == 50  # 100 training images
