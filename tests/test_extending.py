"""Contracts every encoder and dataset config meets; a new ``configs/encoder/NAME.yaml`` or
``configs/data/NAME.yaml`` is tested as soon as it exists (heads: tests/test_heads_train.py,
evaluators: tests/eval/test_evaluator_contract.py).
See docs/extending.md."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import open_dict

import sslkit
from sslkit.training.config import config_dir
from tests.conftest import STAND_INS

ENCODERS = sorted(p.stem for p in (config_dir() / "encoder").glob("*.yaml"))
DATASETS = sorted(p.stem for p in (config_dir() / "data").glob("*.yaml"))

SIZE = {"imagefolder": ["data.image_size=16", "data.load_size=16"],
        "imagenet": ["data.image_size=16", "data.load_size=16", "data.num_classes=100"],
        "imagenet100": ["data.image_size=16", "data.load_size=16"],
        "cub200": ["data.image_size=16", "data.load_size=16"],
        "utzappos": ["data.image_size=16", "data.load_size=16"],
        "domainfolder": ["data.image_size=16", "data.load_size=16", "data.num_classes=2"],
        # the stand-in holds the labelled folders the probes read inside the unlabelled one
        "unlabelled": ["data.image_size=16", "data.load_size=16", "data.probe_root=${data.root}/labelled/train",
                       "data.test_root=${data.root}/labelled/val"]}


@pytest.mark.parametrize("name", ENCODERS)
@pytest.mark.parametrize("data", ["fashion_mnist", "cifar10"])
def test_encoder_contract(name, data, tmp_path):
    """Built from its config for the data's channels and size: ``[B, C, H, W]`` images ->
    ``[B, num_features]`` features, with gradients."""
    cfg, _, _ = sslkit.compose([f"data={data}", f"encoder={name}"], run_dir=tmp_path)
    net = instantiate(cfg.encoder)
    assert isinstance(net.num_features, int) and net.num_features > 0
    x = torch.randn(2, cfg.data.in_chans, cfg.data.image_size, cfg.data.image_size)
    out = net(x)
    assert out.shape == (2, net.num_features)
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", DATASETS)
def test_dataset_contract(name, tmp_path):
    """From its config and tiny files in its format: uint8 images of the configured channels,
    labels in range, batches as dicts of image/label/index, config and module agreeing."""
    cfg, _, _ = sslkit.compose(["experiment=smoke", f"data={name}", "data.batch_size=4",
                                "data.num_workers=0", "data.val_size=2", *SIZE.get(name, [])],
                               run_dir=tmp_path / "run")
    kind = cfg.data._target_.rsplit(".", 1)[1]
    assert kind in STAND_INS, (f"add a writer of tiny {kind} files in its real format to STAND_INS "
                               "in tests/conftest.py")
    with open_dict(cfg):
        cfg.data.root = str(STAND_INS[kind](tmp_path))
    dm = instantiate(cfg.data)
    dm.setup("fit")
    assert dm.in_chans == cfg.data.in_chans
    assert cfg.data.num_classes in (None, dm.num_classes)
    for split in ("pretrain", dm.probe_split, dm.test_split):
        data = dm.split(split)
        labels = torch.as_tensor(data.labels)
        assert len(data) > 0 and ((labels >= -1) & (labels < dm.num_classes)).all()
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) >= {"image", "label", "index"} and batch["image"].dtype == torch.uint8
    assert batch["image"].shape[:2] == (4, dm.in_chans)
    assert batch["image"].shape[-1] >= dm.image_size  # crops to image_size come later, batched
    # the validation split every selection reads: data.val_size labelled images carved from the
    # training images the probes fit on (a seeded draw), never test images
    val = dm.split("validation")
    assert len(val) == 2 and set(val.origin.tolist()) <= set(range(len(dm.split(dm.probe_source))))
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape[:2] == (2, dm.in_chans) and torch.equal(batch["label"], val.labels)
