"""optim.lr_scaling: the learning rate scaled with the global batch (sslkit/training/lr_scaling.py),
the same on any number of devices and nodes, logged in the run's header and summary.json; the
recipes that follow a paper's rule keep the lr they had at their stated batch."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

import sslkit
from sslkit.errors import ConfigError
from sslkit.training.lr_scaling import effective_lr, scale
from sslkit.training.schema import validate
from tests.conftest import run_entry

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted(p.stem for p in (ROOT / "configs" / "experiment").glob("*.yaml"))

# the lr each recipe trained with at its stated batch before the rule was in the configs (the
# absolute lr of its yaml): written as base x rule they must give the same number
SCALED = {
    # solo-learn: lr x batch / 256, batch 256
    "barlow_twins_cifar10": ("linear", 0.3), "byol_cifar10": ("linear", 1.0),
    "dino_cifar10": ("linear", 0.3), "mocov3_cifar10": ("linear", 0.3),
    "nnclr_cifar10": ("linear", 0.4), "simsiam_cifar10": ("linear", 0.5),
    "supcon_cifar10": ("linear", 0.4), "swav_cifar10": ("linear", 0.6),
    "vicreg_cifar10": ("linear", 0.3),
    # CACR-SSL: small-scale 0.12 x 128/256; MoCo v3 code 0.3 x 4096/256 (LARS), 1.5e-4 x 4096/256
    "cacr_cifar10": ("linear", 0.06), "cacr_cifar100": ("linear", 0.06),
    "cacr_stl10": ("linear", 0.06), "cacr_imagenet": ("linear", 4.8),
    "cacr_imagenet_vit": ("linear", 2.4e-3),
    # decoupled uniformity: lr x batch / 256; ImageNet-100: 0.3 x 0.075 x sqrt(256)
    "dunif_cifar10": ("linear", 0.3), "dunif_cifar100": ("linear", 0.3),
    "dunif_cub200": ("linear", 0.3), "dunif_utzappos": ("linear", 0.3),
    "dunif_imagenet100": ("sqrt", 0.36),
}


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    with open_dict(cfg):
        cfg.logger = None  # its save_dir is Hydra's runtime dir, unset here
    return cfg


def test_rules_by_hand():
    assert scale(0.3, "linear", 4096, 256) == pytest.approx(4.8)
    assert scale(0.3, "linear", 128, 256) == pytest.approx(0.15)
    # SimCLR's square-root rule, 0.075 x sqrt(B), is 1.2 x sqrt(B / 256)
    assert scale(1.2, "sqrt", 4096, 256) == pytest.approx(0.075 * math.sqrt(4096))
    assert scale(0.5, "none", 4096, 256) == 0.5
    with pytest.raises(ConfigError, match="one of 'none', 'linear', 'sqrt'"):
        scale(0.5, "cubic", 256, 256)


def test_the_global_batch_not_the_device_count_sets_the_lr():
    one = effective_lr(_compose("experiment=smoke", "optim=lars", "data.batch_size=512"))
    many = effective_lr(_compose("experiment=smoke", "optim=lars", "data.batch_size=512",
                                 "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"))
    assert one.lr == many.lr == pytest.approx(0.3 * 512 / 256)
    assert (one.world_size, many.world_size) == (1, 8)
    assert "data.batch_size=512 global = 1 process x 512" in one.line()
    assert "data.batch_size=512 global = 8 processes x 64" in many.line()
    assert many.line().startswith("lr 0.6 = 0.3 x 512/256 (optim.lr_scaling=linear")
    # a larger global batch on the same 8 processes rescales by the rule
    bigger = effective_lr(_compose("experiment=smoke", "optim=lars", "data.batch_size=2048",
                                   "trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"))
    assert bigger.lr == pytest.approx(0.3 * 2048 / 256)
    root = effective_lr(_compose("experiment=smoke", "optim=lars", "optim.lr_scaling=sqrt",
                                 "data.batch_size=1024"))
    assert root.lr == pytest.approx(0.3 * 2.0)
    # gradients of accumulated batches are averaged into one step: its batch counts
    accumulated = effective_lr(_compose("experiment=smoke", "optim=lars", "data.batch_size=512",
                                        "+trainer.accumulate_grad_batches=2"))
    assert (accumulated.batch, accumulated.lr) == (1024, pytest.approx(0.3 * 1024 / 256))
    assert "x 2 accumulated = 1024 per step" in accumulated.line()


def test_the_defaults_keep_the_lr_as_given():
    for overrides, lr in ((["optim=adamw"], 2e-3), (["optim=sgd"], 0.5), (["optim=sgd", "data.batch_size=64"], 0.5),
                          (["optim=lars"], 0.6)):  # lars at the default batch of 512: 0.3 x 2
        got = effective_lr(_compose(*overrides))
        assert got.lr == pytest.approx(lr), overrides
    assert effective_lr(_compose("optim=adamw")).rule == "none"


@pytest.mark.parametrize("name", RECIPES)
def test_recipes_train_with_the_lr_of_their_stated_batch(name):
    cfg = _compose(f"experiment={name}")
    got = effective_lr(cfg)
    rule, lr = SCALED.get(name, ("none", cfg.optim.optimizer.lr))
    assert got.rule == rule
    assert got.lr == pytest.approx(lr, rel=1e-9)
    if rule != "none":  # and a paper's rule follows the batch: twice the batch, the rule's factor
        with open_dict(cfg):
            cfg.data.batch_size *= 2
        factor = 2.0 if rule == "linear" else math.sqrt(2.0)
        assert effective_lr(cfg).lr == pytest.approx(lr * factor, rel=1e-9)


def test_an_unknown_rule_is_refused_with_the_choices(tmp_path):
    cfg, _, _ = sslkit.compose(["experiment=smoke", "optim.lr_scaling=cubic"], run_dir=tmp_path)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert str(err.value) == "optim.lr_scaling='cubic': expected one of 'none', 'linear', 'sqrt'"
    proc = run_entry(["train.py", "experiment=smoke", "optim.lr_scaling=cubic",
                      f"hydra.run.dir={tmp_path / 'run'}"])
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr[-2000:]
    assert "optim.lr_scaling='cubic': expected one of 'none', 'linear', 'sqrt'" in lines[0]
    cfg, _, _ = sslkit.compose(["experiment=smoke", "optim.base_batch_size=0"], run_dir=tmp_path)
    with pytest.raises(ConfigError, match="optim.base_batch_size=0: expected an int >= 1"):
        validate(cfg)


def test_a_run_logs_and_trains_with_the_scaled_lr(tmp_path):
    run = tmp_path / "run"
    proc = run_entry(["train.py", "experiment=smoke", "threads=1", "optim=lars", "data.batch_size=32",
                      "trainer.max_epochs=1", "+trainer.limit_train_batches=2", "eval=[]",
                      "monitor.knn.every_n_epochs=0", f"hydra.run.dir={run}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    header = "lr 0.0375 = 0.3 x 32/256 (optim.lr_scaling=linear, optim.base_batch_size=256; " \
             "data.batch_size=32 global = 1 process x 32)"
    assert header in proc.stdout
    assert header in (run / "train.log").read_text()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["lr"] == pytest.approx(0.3 * 32 / 256)
    assert {k: summary[k] for k in ("lr_base", "lr_scaling", "lr_batch", "lr_base_batch_size",
                                    "global_batch", "accumulate_grad_batches", "world_size")} == {
        "lr_base": 0.3, "lr_scaling": "linear", "lr_batch": 32, "lr_base_batch_size": 256,
        "global_batch": 32, "accumulate_grad_batches": 1, "world_size": 1}
    # the optimiser was built with it: the schedule's base lr of every parameter group
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["lr_schedulers"][0]["base_lrs"] == pytest.approx([0.0375, 0.0375])


def test_an_unscaled_run_says_so(smoke_session_run):
    summary = json.loads((smoke_session_run / "summary.json").read_text())
    assert (summary["lr"], summary["lr_base"], summary["lr_scaling"]) == (2e-3, 2e-3, "none")
    log = (smoke_session_run / "train.log").read_text()
    assert "lr 0.002 (optim.lr_scaling=none: optim.optimizer.lr as given; data.batch_size=64 global" in log
