"""Every paper recipe in configs/experiment/ composes, and its data module and Lightning module
build on tiny stand-in files in the real formats; the small-image ones take a training step.

Recipes are picked up from the folder: a new one is covered without editing this file (a new
dataset needs a stand-in writer in STAND_INS of tests/conftest.py). Each passes the schema check
train.py runs before any work; the baselines' recipes (BASELINES) also state in their header the
number they aim at and its source, and docs/recipes.md lists the same number."""

from __future__ import annotations

import copy
import functools
import itertools
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
from sslkit.training.schema import validate
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
                         "loss.queue_size": 65536, "data.num_classes": 100,
                         "model.loss_scope": "local", "trainer.devices": 8,
                         "model.views_forward": "separate"},
    "cacr_imagenet": {"data.batch_size": 4096, "loss.momentum": 0.996, "trainer.max_epochs": 1000},
    "cacr_imagenet_vit": {"encoder.name": "vit_base_patch16_224", "loss.temperature": 0.2,
                          "optim.weight_decay": 0.1},
    "cacr_fmnist": {"augment.views": 5, "data.batch_size": 128},
    # official: 2 GPUs x 512, the loss per GPU, sync BN, the lr constant 0.12 (recipe header)
    "gca_cifar10": {"data.batch_size": 1024, "loss.epsilon": 0.5, "loss.iterations": 10,
                    "trainer.max_epochs": 500, "augment.recrop_p": 0.0, "model.loss_scope": "local",
                    "trainer.devices": 2, "trainer.sync_batchnorm": True,
                    "optim.final_lr_ratio": 1.0},
    "gca_cifar10_noisy": {"augment.recrop_p": 0.8, "augment.recrop_scale": [0.2, 0.2],
                          "augment.blur_p": 1.0, "data.batch_size": 1024, "model.loss_scope": "local"},
    "gca_cifar100_noisy": {"augment.recrop_p": 0.8, "loss.r2": 1.0},
    "gca_svhn": {"loss.q": 0.6, "encoder.name": "resnet50"},
    "gca_imagenet100": {"loss.rho1": 0.5, "trainer.max_epochs": 200},
    "dunif_imagenet100": {"data.batch_size": 256, "model.loss_scope": "local", "trainer.devices": 4,
                          "trainer.sync_batchnorm": True},
    "dunif_cifar10": {"loss.t": 2.0, "loss.lam": 0.01, "data.batch_size": 256,
                      "model.projector.out_dim": 256, "trainer.max_epochs": 400},
    # solo-learn's scripts/pretrain/cifar/<method>.yaml (batch 256 on one GPU, 1000 epochs)
    "byol_cifar10": {"optim.optimizer._target_": "timm.optim.Lars", "optim.optimizer.lr": 1.0,
                     "optim.optimizer.trust_coeff": 0.02, "optim.optimizer.trust_clip": True,
                     "optim.weight_decay": 1e-5, "loss.momentum": 0.99,
                     "model.projector.hidden_dim": 4096, "model.predictor.hidden_dim": 4096},
    "mocov3_cifar10": {"optim.optimizer.lr": 0.3, "optim.weight_decay": 1e-6, "loss.temperature": 0.2,
                       "loss.momentum": 0.99, "model.projector.last_batch_norm": True},
    "simsiam_cifar10": {"optim.optimizer._target_": "torch.optim.SGD", "optim.optimizer.lr": 0.5,
                        "loss.momentum": None, "model.projector.layers": 3,
                        "model.predictor.hidden_dim": 512, "augment.blur_p": 0.5},
    "barlow_twins_cifar10": {"optim.optimizer.lr": 0.3, "optim.weight_decay": 1e-4,
                             "loss.scale_loss": 0.1, "loss.lambd": 0.0051, "model.projector.out_dim": 2048},
    "vicreg_cifar10": {"optim.optimizer.lr": 0.3, "augment.scale": [0.2, 1.0], "augment.solarize_p": 0.1,
                       "loss.sim_coeff": 25.0, "model.projector.layers": 3},
    "swav_cifar10": {"optim.optimizer.lr": 0.6, "loss.num_prototypes": 3000, "loss.temperature": 0.1,
                     "loss.freeze_prototypes_iters": 390, "augment.brightness": 0.8,
                     "loss.queue_length": 3840, "loss.epoch_queue_starts": 50},
    "dino_cifar10": {"optim.optimizer.lr": 0.3, "loss.out_dim": 4096, "loss.momentum": 0.9995,
                     "loss.warmup_teacher_temp_epochs": 0, "model.projector.batch_norm": False},
    "nnclr_cifar10": {"optim.optimizer.lr": 0.4, "loss.temperature": 0.2, "loss.queue_size": 32768,
                      "model.predictor.hidden_dim": 4096},
    "supcon_cifar10": {"optim.optimizer._target_": "torch.optim.SGD", "optim.optimizer.lr": 0.4,
                       "loss.temperature": 0.2, "loss.base_temperature": 0.2},
}


def header(name: str) -> str:
    """The comment lines a recipe starts with."""
    lines = (CONFIG_DIR / "experiment" / f"{name}.yaml").read_text().splitlines()
    return "\n".join(itertools.takewhile(lambda line: line.startswith("#"), lines))


# the baselines' recipes (these nine, and any recipe that follows solo-learn): each header states
# the number it aims at and where that number comes from, and docs/recipes.md lists the same number
BASELINES = sorted({"barlow_twins_cifar10", "byol_cifar10", "dino_cifar10", "mocov3_cifar10",
                    "nnclr_cifar10", "simsiam_cifar10", "supcon_cifar10", "swav_cifar10",
                    "vicreg_cifar10"} | {name for name in RECIPES if "vturrisi/solo-learn" in header(name)})
# "# Target: 92.58 linear top-1 after 1000 epochs (solo-learn README, ...)."
TARGET = re.compile(r"^# Target: (\d+(?:\.\d+)?) [^(\n]*\(([^)\n]+)\)", re.M)


def _missing_groups(name: str) -> list[str]:
    """Config groups a recipe overrides that this checkout does not have."""
    text = (CONFIG_DIR / "experiment" / f"{name}.yaml").read_text()
    groups = re.findall(r"^\s*- override /(\w+):", text, flags=re.M)
    return [g for g in groups if not (CONFIG_DIR / g).is_dir()]


@functools.lru_cache(maxsize=None)
def _composed(name: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={name}"])
    with open_dict(cfg):
        cfg.logger = None  # its save_dir is Hydra's runtime dir, unset here
    return cfg


def _compose(name: str):
    """The recipe composed as ``experiment=NAME``: composed once per process (the schema test and
    the build test read the same recipe), a copy each time since the build test edits it."""
    return copy.deepcopy(_composed(name))


def test_recipes_found_and_expectations_name_real_recipes():
    assert {"cacr_fmnist", "gca_fmnist", "dunif_fmnist"} <= set(RECIPES)
    assert set(EXPECTED) <= set(RECIPES) and set(BASELINES) <= set(RECIPES)


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_header_cites_its_source(name):
    text = (CONFIG_DIR / "experiment" / f"{name}.yaml").read_text()
    assert text.startswith("# @package _global_\n# ")
    if "_fmnist" not in name and name != "smoke":
        assert "Source: " in text, "a paper recipe names the official file it follows (or says none is public)"


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_recipe_header_states_its_target_and_source(name):
    text = header(name)
    found = TARGET.findall(text)
    assert len(found) == 1, "a baseline recipe's header states one '# Target: NUMBER ... (SOURCE)' line"
    value, source = found[0]
    assert 0 < float(value) <= 100 and source.strip()
    assert re.search(r"^# Source: \S", text, re.M), "and the official files it follows"
    assert re.search(r"^# Deviations: \S", text, re.M), "and where it differs from them"
    rows = re.findall(rf"^\| `{name}` \|.*$", (ROOT / "docs" / "recipes.md").read_text(), re.M)
    assert any(f"| {value} |" in row for row in rows), "docs/recipes.md lists the recipe with the same target"


def test_a_header_without_a_target_is_caught():
    assert not TARGET.search("# @package _global_\n# BYOL on CIFAR-10.\n# Source: solo-learn byol.yaml")
    assert not TARGET.search("# Target: about 92 (solo-learn README)")  # a number, not a word
    assert TARGET.search("# Target: 92.58 linear top-1 (solo-learn README, CIFAR-10 table)")


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_config_passes_the_schema_check(name):
    if _missing_groups(name):
        pytest.skip("needs a config group this checkout lacks")
    validate(_compose(name))  # what train.py checks before any work: keys, types, ranges


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
        if cfg.model.get("adversarial") and "steps" in cfg.model.adversarial.get("attack", {}):
            # each PGD step runs the same code: one shows the recipe's attack runs (its 5 steps
            # were 4 of robust_cifar10's 7 s); tests/test_robust.py checks the attack itself
            cfg.model.adversarial.attack.steps = 1
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
