"""scripts/export.py: the encoder alone, loaded strictly by torchvision / timm / sslkit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import hydra
import timm
import torch
import torchvision
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from safetensors.torch import load_file
from torch import nn

from sslkit.encoders.convnet import ConvNet
from sslkit.eval.loading import load_trained
from sslkit.training.export import build_encoder, export_encoder
from sslkit.training.module import FORMAT_VERSION
from tests.conftest import copy_run, run_entry

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}


def run(*args: str, script: str = "scripts/export.py") -> subprocess.CompletedProcess:
    """``python SCRIPT ARGS``, run in this process (tests/conftest.py ``run_entry``)."""
    return run_entry([script, *args])


def run_subprocess(*args: str, script: str = "scripts/export.py") -> subprocess.CompletedProcess:
    """``python SCRIPT ARGS`` in a fresh interpreter: the command line itself under test."""
    return subprocess.run([sys.executable, script, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=ENV)


def checkpoint_of(tmp_path: Path, *overrides: str) -> tuple[Path, nn.Module]:
    """A checkpoint in sslkit's format holding a freshly built encoder of the composed config,
    with BatchNorm statistics moved off their defaults so buffers are checked too."""
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=["data=synthetic", *overrides])
    torch.manual_seed(0)
    encoder = hydra.utils.instantiate(cfg.encoder).eval()
    for m in encoder.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    config = {k: OmegaConf.to_container(cfg[k], resolve=True)
              for k in ("encoder", "augment", "data", "loss")}
    state = {f"online.encoder.{k}": v for k, v in encoder.state_dict().items()}
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": state, "epoch": 0, "global_step": 0,
                "sslkit": {"format_version": FORMAT_VERSION, "config": config}}, path)
    return path, encoder


def assert_same_features(a: nn.Module, b: nn.Module, in_chans: int, size: int) -> None:
    x = torch.randn(3, in_chans, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b.eval()(x), rtol=0, atol=0)


def test_resnet_with_cifar_stem_loads_into_torchvision(tmp_path):
    path, encoder = checkpoint_of(tmp_path, "encoder=resnet18")
    files = export_encoder(path)
    assert files["safetensors"].parent == tmp_path / "run" / "export"
    recipe = json.loads(files["recipe"].read_text())
    assert recipe["build"]["library"] == "torchvision" and recipe["num_features"] == 512
    net = torchvision.models.resnet18(weights=None)
    net.conv1 = nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    net.load_state_dict(load_file(files["safetensors"]), strict=True)
    assert_same_features(net, encoder, 1, 16)
    plain = torchvision.models.resnet18(weights=None)
    for attr, spec in recipe["build"]["replace"].items():
        setattr(plain, attr, getattr(nn, spec["module"])(*spec["args"], **spec["kwargs"]))
    plain.load_state_dict(torch.load(files["state_dict"], weights_only=True), strict=True)
    assert_same_features(plain, encoder, 1, 16)


def test_resnet_with_imagenet_stem_and_three_channels(tmp_path):
    path, encoder = checkpoint_of(tmp_path, "encoder=resnet18", "encoder.cifar_stem=false",
                                  "data.in_chans=3", "data.mean=[0.5,0.5,0.5]",
                                  "data.std=[0.25,0.25,0.25]")
    files = export_encoder(path, tmp_path / "out")
    assert json.loads(files["recipe"].read_text())["build"]["replace"].keys() == {"fc"}
    net = torchvision.models.resnet18(weights=None)
    net.fc = nn.Identity()
    net.load_state_dict(load_file(files["safetensors"]), strict=True)
    assert_same_features(net, encoder, 3, 32)


def test_timm_model_loads_into_timm_create_model(tmp_path):
    path, encoder = checkpoint_of(tmp_path, "encoder=timm", "encoder.name=resnet10t")
    files = export_encoder(path)
    net = timm.create_model("resnet10t", pretrained=False, num_classes=0, in_chans=1)
    net.load_state_dict(load_file(files["safetensors"]), strict=True)
    assert_same_features(net, encoder, 1, 16)
    recipe = json.loads(files["recipe"].read_text())
    assert recipe["build"]["kwargs"] == {"model_name": "resnet10t", "pretrained": False,
                                         "num_classes": 0, "in_chans": 1}
    rebuilt = build_encoder(recipe)
    rebuilt.load_state_dict(load_file(files["safetensors"]), strict=True)
    assert_same_features(rebuilt, encoder, 1, 16)


def test_convnet_of_a_smoke_run_via_the_cli(smoke_session_run, tmp_path):
    run_dir = copy_run(smoke_session_run, tmp_path / "smoke")  # the export goes into the run dir
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    proc = run(f"checkpoint={ckpt}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    recipe = json.loads((run_dir / "export" / "encoder.json").read_text())
    assert recipe["build"]["call"] == "sslkit.encoders.convnet.ConvNet"
    assert recipe["input"]["mean"] == [0.5] and recipe["input"]["image_size"] == 16
    net = ConvNet(**recipe["build"]["kwargs"])
    net.load_state_dict(load_file(run_dir / "export" / "encoder.safetensors"), strict=True)
    assert recipe["num_features"] == net.num_features
    _, module, dm = load_trained(ckpt, device="cpu")
    images = next(iter(dm.eval_dataloader(dm.test_split)))["image"][:8]
    x = module.augment.eval_transform(images)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x), module.features(images), rtol=1e-5, atol=1e-6)


def test_cli_refuses_missing_and_foreign_checkpoints_in_one_line(tmp_path):
    for args, words in (
        ([f"checkpoint={tmp_path / 'none.ckpt'}"], "no such file"),
        ([f"checkpoint={ROOT / 'README.md'}"], "not a readable checkpoint"),
        (["checkpint=x"], "unknown argument"),
        ([], "checkpoint=PATH is required"),
    ):
        # the argument parsing from a fresh interpreter: the command's own exit code and stderr
        proc = (run_subprocess if words == "unknown argument" else run)(*args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode != 0 and len(lines) == 1 and words in lines[0], proc.stderr
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, foreign)
    proc = run(f"checkpoint={foreign}")
    assert proc.returncode != 0 and "not written by sslkit" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
