"""scripts/export.py format=hf: a model folder (config.json, model.safetensors, README.md) that
sslkit.from_pretrained, timm and torchvision load with the trained encoder's features; push=true
refuses in one line without huggingface_hub, a repo_id or a token (no network in tests)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from safetensors.torch import load_file
from torch import nn

import sslkit
from sslkit.errors import CheckpointError, ConfigError
from sslkit.eval.loading import load_trained
from sslkit.training.hf_export import check_push, export_model_folder, from_pretrained
from sslkit.training.model_card import PAPERS
from tests.conftest import copy_run, run_entry, train_run
from tests.test_export import assert_same_features, checkpoint_of

ROOT = Path(__file__).resolve().parent.parent


def export(*args: str, env: dict[str, str] | None = None):
    """``python scripts/export.py ARGS`` in this process (``run_entry``)."""
    return run_entry(["scripts/export.py", *args], env=env)


def one_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


def test_smoke_run_exports_a_folder_that_loads_back(smoke_session_run, tmp_path):
    run_dir = copy_run(smoke_session_run, tmp_path / "smoke")
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    proc = export(f"checkpoint={ckpt}", "format=hf", "license=cc-by-4.0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    folder = run_dir / "hf"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]

    encoder = sslkit.from_pretrained(folder)
    assert not encoder.training
    _, module, dm = load_trained(ckpt, device="cpu")
    assert set(load_file(folder / "model.safetensors")) == set(module.online.encoder.state_dict())
    images = next(iter(dm.eval_dataloader(dm.test_split)))["image"][:16]
    with torch.no_grad():
        torch.testing.assert_close(encoder(module.augment.eval_transform(images)),
                                   module.features(images), rtol=1e-5, atol=1e-6)

    config = json.loads((folder / "config.json").read_text())
    assert config["sslkit"]["build"]["call"] == "sslkit.encoders.convnet.ConvNet"
    assert config["num_features"] == encoder.num_features
    card = (folder / "README.md").read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert card.startswith("---\nlicense: cc-by-4.0\n")
    assert "| loss head | `sslkit.losses.au.AlignUniform` |" in card
    assert "`sslkit.data.synthetic.Synthetic`, 1 channel(s), 16 px" in card
    assert "checkpoint written in epoch 2 of 2, after 16 optimiser steps" in card
    assert "`python train.py experiment=smoke threads=1 eval=[linear,knn,metrics]`" in card
    assert "peak lr 0.002 (`optim.lr_scaling=none`: as given)" in card
    # the run's numbers, each with its split
    assert f"| `test/linear_probe_top1` | test | {summary['test/linear_probe_top1']:.4f} | `summary.json` |" in card
    assert f"| `val/linear_probe_top1` | validation | {summary['val/linear_probe_top1']:.4f} |" in card
    assert "| `eval/knn/k20_top1` | test |" in card
    assert "[arXiv:2005.10242](https://arxiv.org/abs/2005.10242)" in card  # the head's paper


def test_every_loss_head_has_its_paper_for_the_card():
    targets = {(ROOT / "configs" / "loss" / p).read_text().split("_target_: ")[1].split()[0]
               for p in (ROOT / "configs" / "loss").glob("*.yaml") if "_target_: " in p.read_text()}
    assert {t.rsplit(".", 1)[-1] for t in targets} <= set(PAPERS)


@pytest.fixture(scope="module")
def timm_run(tmp_path_factory) -> Path:
    """Two training steps of a timm ResNet on 3-channel synthetic images."""
    return train_run(tmp_path_factory.mktemp("timm_run"), "experiment=smoke", "threads=1", "encoder=timm",
                     "~encoder.widths", "~encoder.pool_size", "encoder.name=resnet10t",
                     "data.in_chans=3", "data.mean=[0.5,0.5,0.5]", "data.std=[0.25,0.25,0.25]",
                     "trainer.max_epochs=1", "+trainer.limit_train_batches=2", "eval=[]",
                     "monitor.knn.every_n_epochs=0")


def test_a_timm_encoder_loads_in_timm_with_equal_features(timm_run, tmp_path):
    ckpt = timm_run / "checkpoints" / "last.ckpt"
    folder = tmp_path / "folder"
    export_model_folder(ckpt, folder)
    weights = folder / "model.safetensors"
    model = timm.create_model("resnet10t", pretrained=True, pretrained_cfg_overlay=dict(file=weights),
                              num_classes=0)
    assert set(load_file(weights)) == set(model.state_dict())  # timm's own names
    _, module, _ = load_trained(ckpt, device="cpu")
    # the timm model inside sslkit's encoder, in the default memory layout (training ran
    # channels_last, whose kernels round differently)
    trained = module.online.encoder.net.to(memory_format=torch.contiguous_format)
    assert_same_features(model, trained, 3, 16)
    assert_same_features(sslkit.from_pretrained(folder), trained, 3, 16)
    # the folder is timm's own format too: config.json read by timm
    assert_same_features(timm.create_model(f"local-dir:{folder}", pretrained=True), trained, 3, 16)
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "resnet10t" and config["num_classes"] == 0
    assert config["pretrained_cfg"]["mean"] == [0.5, 0.5, 0.5]
    assert config["pretrained_cfg"]["tag"] == "sslkit" and config["pretrained_cfg"]["license"] == "other"
    card = (folder / "README.md").read_text()
    assert "library_name: timm" in card and 'timm.create_model("resnet10t", pretrained=True,' in card
    assert "No evaluation numbers were found" not in card  # the run's online validation numbers


def test_a_torchvision_resnet_loads_strictly(tmp_path):
    path, encoder = checkpoint_of(tmp_path, "encoder=resnet18")
    folder = tmp_path / "folder"
    export_model_folder(path, folder)
    net = torchvision.models.resnet18(weights=None)
    net.conv1 = nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    net.load_state_dict(load_file(folder / "model.safetensors"), strict=True)
    assert_same_features(net, encoder, 1, 16)
    assert_same_features(from_pretrained(folder), encoder, 1, 16)
    card = (folder / "README.md").read_text()
    assert "model.conv1 = torch.nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1, bias=False)" in card
    assert "No evaluation numbers were found beside the checkpoint" in card  # no run files there


def test_push_is_refused_in_one_line_without_a_token(smoke_session_run, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))
    ckpt = smoke_session_run / "checkpoints" / "last.ckpt"
    out = tmp_path / "folder"
    line = one_line(export(f"checkpoint={ckpt}", "format=hf", f"out={out}", "push=true",
                           "repo_id=someone/smoke", env={"HF_HUB_OFFLINE": "1"}))
    assert "push=true needs a Hugging Face token" in line and "hf auth login" in line
    assert not out.exists(), "nothing is written before a refused push"
    assert "needs repo_id=OWNER/NAME" in one_line(export(f"checkpoint={ckpt}", "format=hf", "push=true"))
    with pytest.raises(ConfigError, match="not a Hub repository name"):
        check_push("not a/valid/name")
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    check_push("someone/smoke")  # a token and a name: the upload would go ahead


def test_push_without_huggingface_hub_and_other_refusals(smoke_session_run, tmp_path, monkeypatch):
    ckpt = smoke_session_run / "checkpoints" / "last.ckpt"
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # an import of it fails
    with pytest.raises(ConfigError, match=r"needs the huggingface_hub package: pip install 'sslkit\[hub\]'"):
        check_push("someone/smoke")
    monkeypatch.undo()
    assert "format='onnx': expected one of files, hf" in one_line(export(f"checkpoint={ckpt}", "format=onnx"))
    assert "apply to format=hf only" in one_line(export(f"checkpoint={ckpt}", "push=true"))
    assert "private goes with push=true" in one_line(export(f"checkpoint={ckpt}", "format=hf", "private=true"))
    with pytest.raises(CheckpointError, match="is not a model folder"):
        from_pretrained(tmp_path)
