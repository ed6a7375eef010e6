"""Every paper recipe in configs/experiment/ composes, and its data module and Lightning module
build on tiny stand-in files in the real formats; the small-image ones take a training step.

Recipes are picked up from the folder: a new one is covered without editing this file (a new
dataset needs a stand-in writer in STAND_INS of tests/conftest.py)."""

from __future__ import annotations

import re
from pathlib import Path

import hydra.utils
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from sslkit.training.build import build_datamodule, build_module
from sslkit.training.preflight import check_sizes
from tests.conftest import STAND_INS

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "configs"
RECIPES = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))

# the papers' settings the recipes must carry (the official codes' values; see each header)
EXPECTED = {
    "cacr_cifar10": {"augment.views": 5, "data.batch_size": 128, "loss.tau_neg": 0.9,
                     "encoder._target_": "sslkit.encoders.alexnet.SmallAlexNet"},
    "cacr_cifar100": {"augment.views": 5, "data.batch_size": 128, "loss.tau_neg": 2.0},
    "cacr_stl10": {"augment.views": 5, "data.batch_size": 128, "loss.tau_neg": 2.0,
                   "augment.crop_size": 64, "data.train_split": "train+unlabeled"},
    "cacr_imagenet100": {"augment.views": 5, "data.batch_size": 256, "loss.tau_neg": 2.0,
                         "loss.queue_size": 65536, "data.num_classes": 100},
    "cacr_imagenet": {"data.batch_size": 4096, "loss.momentum": 0.996, "trainer.max_epochs": 1000},
    "cacr_imagenet_vit": {"encoder.name": "vit_base_patch16_224", "loss.temperature": 0.2,
                          "optim.weight_decay": 0.1},
    "cacr_fmnist": {"augment.views": 5, "data.batch_size": 128},
    "gca_cifar10": {"data.batch_size": 512, "loss.epsilon": 0.5, "loss.iterations": 10,
                    "trainer.max_epochs": 500, "augment.recrop_p": 0.0},
    "gca_cifar10_noisy": {"augment.recrop_p": 0.8, "augment.recrop_scale": [0.2, 0.2],
                          "augment.blur_p": 1.0, "data.batch_size": 512},
    "gca_cifar100_noisy": {"augment.recrop_p": 0.8, "loss.r2": 1.0},
    "gca_svhn": {"loss.q": 0.6, "encoder.name": "resnet50"},
    "gca_imagenet100": {"loss.rho1": 0.5, "trainer.max_epochs": 200},
    "dunif_cifar10": {"loss.t": 2.0, "loss.lam": 0.01, "data.batch_size": 256,
                      "model.projector.out_dim": 256, "trainer.max_epochs": 400},
}


def _missing_groups(name: str) -> list[str]:
    """Config groups a recipe overrides that this checkout does not have."""
    text = (CONFIG_DIR / "experiment" / f"{name}.yaml").read_text()
    groups = re.findall(r"^\s*- override /(\w+):", text, flags=re.M)
    return [g for g in groups if not (CONFIG_DIR / g).is_dir()]


def _compose(name: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={name}"])
    with open_dict(cfg):
        cfg.logger = None  # its save_dir is Hydra's runtime dir, unset here
    return cfg


def test_recipes_found_and_expectations_name_real_recipes():
    assert {"cacr_fmnist", "gca_fmnist", "dunif_fmnist"} <= set(RECIPES)
    assert set(EXPECTED) <= set(RECIPES)


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_header_cites_its_source(name):
    text = (CONFIG_DIR / "experiment" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_\n# ")
    if "_fmnist" not in name and name != "smoke":
        assert "Source: " in text, "a paper recipe names the official file it follows (or says none is public)"


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_builds_on_stand_in_files(name, tmp_path):
    missing = _missing_groups(name)
    if missing:
        pytest.skip(f"needs config group(s) {missing}")
    cfg = _compose(name)
    for key, value in EXPECTED.get(name, {}).items():
        got = OmegaConf.select(cfg, key)
        got = OmegaConf.to_container(got) if OmegaConf.is_config(got) else got
        assert got == value, key
    target = cfg.data._target_.rsplit(".", 1)[1]
    assert target in STAND_INS, f"add a stand-in writer for data {target} to STAND_INS in tests/conftest.py"
    with open_dict(cfg):
        cfg.data.root = str(STAND_INS[target](tmp_path))
        cfg.data.batch_size = 4
        cfg.data.eval_batch_size = 8
        cfg.data.num_workers = 0
        cfg.trainer.devices = 1
        if "load_size" in cfg.data:  # image folders: stand-ins hold fewer class folders
            cfg.data.num_classes = None
        if "queue_size" in cfg.loss:
            cfg.loss.queue_size = 4
    dm = build_datamodule(cfg)
    dm.setup("fit")
    check_sizes(cfg, dm)
    module = build_module(cfg)
    if cfg.get("prior"):
        from sslkit.prior.base import absolute_paths, setup_prior

        with open_dict(cfg):
            if "cache_dir" in cfg.prior:
                cfg.prior.cache_dir = str(tmp_path / "priors")
            if "path" in cfg.prior and cfg.prior.path is None and cfg.prior.get("checkpoint") is None:
                n = len(dm.split(dm.train_split))
                np.save(tmp_path / "prior.npy", np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32))
                cfg.prior.path = str(tmp_path / "prior.npy")
        setup_prior(hydra.utils.instantiate(absolute_paths(cfg.prior)), dm, module.head)
    assert type(module.head).__name__ == cfg.loss._target_.rsplit(".", 1)[1]
    batch = next(iter(dm.train_dataloader()))
    views = module.augment(batch["image"])
    crop = cfg.augment.crop_size
    assert len(views) == cfg.augment.views + cfg.augment.local_views
    assert views[0].shape == (4, cfg.data.in_chans, crop, crop)
    if crop <= 64:  # one training step (forward, loss, backward) where it is cheap
        out = module.training_step(batch, 0)
        out["loss"].backward()
        assert torch.isfinite(out["loss"])
        grads = [p.grad for p in module.online.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
