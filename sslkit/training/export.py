"""The trained encoder alone, for use outside sslkit: weights as safetensors and as a plain
state dict, and a JSON recipe of how to build the network that loads them strictly.

* ``encoder=resnet*``: keys of ``torchvision.models.<name>(weights=None)`` with ``fc``
  replaced by ``nn.Identity()`` (and, where the run used them, the CIFAR stem: ``conv1`` a
  3x3/stride-1 conv, ``maxpool`` an ``nn.Identity()``; or a 7x7 ``conv1`` for other channel
  counts). The recipe lists these replacements as ``{"module", "args", "kwargs"}`` of torch.nn.
* ``encoder=timm``: keys of ``timm.create_model(name, pretrained=False, num_classes=0, **kwargs)``.
* any other encoder (the convnet): keys of the sslkit class, built with the recipe's kwargs.

:func:`build_encoder` builds any recipe; the input section says how images are normalised.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor, nn

from sslkit.training.checkpoint import load_checkpoint, run_dir_of
from sslkit.errors import CheckpointError

RECIPE_VERSION = 1
RESNET = "sslkit.encoders.resnet.ResNet"
TIMM = "sslkit.encoders.timm.TimmEncoder"
PREFIX = "online.encoder."


def encoder_state_and_recipe(ckpt: dict, source: str) -> tuple[dict[str, Tensor], dict]:
    """The encoder's state dict (keys as the target library names them) and its recipe."""
    config = ckpt["sslkit"].get("config") or {}
    enc = dict(config.get("encoder") or {})
    target = enc.pop("_target_", None)
    state = {k[len(PREFIX):]: v for k, v in ckpt["state_dict"].items() if k.startswith(PREFIX)}
    if target is None or not state:
        raise CheckpointError(f"checkpoint {source} refused: it holds no encoder config or weights")
    in_chans = int(enc.get("in_chans", 3))
    if target in (RESNET, TIMM):
        state = {k[len("net."):]: v for k, v in state.items()}
    if target == RESNET:
        name = enc.get("name", "resnet18")
        identity = {"module": "Identity", "args": [], "kwargs": {}}
        replace = {"fc": identity}
        if enc.get("cifar_stem"):
            replace["conv1"] = {"module": "Conv2d", "args": [in_chans, 64], "kwargs": {
                "kernel_size": 3, "stride": 1, "padding": 1, "bias": False}}
            replace["maxpool"] = identity
        elif in_chans != 3:
            replace["conv1"] = {"module": "Conv2d", "args": [in_chans, 64], "kwargs": {
                "kernel_size": 7, "stride": 2, "padding": 3, "bias": False}}
        build = {"library": "torchvision", "call": f"torchvision.models.{name}",
                 "kwargs": {"weights": None}, "replace": replace}
    elif target == TIMM:
        # image_size is sslkit's (inputs smaller than the model runs on are upsampled first), not timm's
        kwargs = {k: v for k, v in enc.items() if k not in ("name", "pretrained", "image_size")}
        build = {"library": "timm", "call": "timm.create_model",
                 "kwargs": {"model_name": enc.get("name", "resnet18"), "pretrained": False,
                            "num_classes": 0, **kwargs}}
    else:
        build = {"library": "sslkit", "call": target, "kwargs": enc}
    augment, data = config.get("augment") or {}, config.get("data") or {}
    recipe = {
        "recipe_version": RECIPE_VERSION,
        "build": build,
        "load": "model.load_state_dict(safetensors.torch.load_file(weights), strict=True)",
        "num_features": None,
        "input": {
            "in_chans": in_chans,
            "image_size": augment.get("crop_size", data.get("image_size")),
            "mean": augment.get("mean", data.get("mean")),
            "std": augment.get("std", data.get("std")),
            "transform": "uint8 image / 255, then (x - mean) / std per channel",
        },
        "trained": {
            "checkpoint": source,
            "epoch": ckpt.get("epoch"),
            "global_step": ckpt.get("global_step"),
            "loss": (config.get("loss") or {}).get("_target_"),
            "data": data.get("_target_"),
        },
    }
    return state, recipe


def _module_from_spec(spec: dict) -> nn.Module:
    """``{"module": "Conv2d", "args": [1, 64], "kwargs": {...}}`` -> ``nn.Conv2d(1, 64, ...)``."""
    if not hasattr(nn, spec["module"]):
        raise ValueError(f"unknown torch.nn module in recipe: {spec['module']!r}")
    return getattr(nn, spec["module"])(*spec.get("args", []), **spec.get("kwargs", {}))


def build_encoder(recipe: dict) -> nn.Module:
    """The network a recipe describes, randomly initialised (load the exported weights into it)."""
    build = recipe["build"]
    lib, call, kwargs = build["library"], build["call"], dict(build["kwargs"])
    if lib == "torchvision":
        import torchvision

        model = getattr(torchvision.models, call.rsplit(".", 1)[1])(**kwargs)
        for attr, spec in build.get("replace", {}).items():
            setattr(model, attr, _module_from_spec(spec))
        return model
    if lib == "timm":
        import timm

        return timm.create_model(**kwargs)
    if lib == "sslkit":
        import importlib

        module_name, cls = call.rsplit(".", 1)
        return getattr(importlib.import_module(module_name), cls)(**kwargs)
    raise ValueError(f"unknown library {lib!r} in recipe")


def export_encoder(checkpoint: str | Path, out: str | Path | None = None) -> dict[str, Path]:
    """Write ``encoder.safetensors``, ``encoder.pt`` and ``encoder.json`` to ``out`` (default:
    ``export/`` in the checkpoint's run dir) and check the built recipe loads them strictly."""
    from safetensors.torch import save_file


    path = Path(checkpoint).expanduser()
    ckpt = load_checkpoint(path)
    state, recipe = encoder_state_and_recipe(ckpt, str(path))
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    model = build_encoder(recipe)
    model.load_state_dict(state, strict=True)
    recipe["num_features"] = count_features(model, recipe)
    folder = Path(out).expanduser() if out else run_dir_of(path) / "export"
    folder.mkdir(parents=True, exist_ok=True)
    files = {"safetensors": folder / "encoder.safetensors", "state_dict": folder / "encoder.pt",
             "recipe": folder / "encoder.json"}
    save_file(state, str(files["safetensors"]))
    torch.save(state, files["state_dict"])
    files["recipe"].write_text(json.dumps(recipe, indent=2) + "\n")
    return files


def count_features(model: nn.Module, recipe: dict) -> int:
    """The width of the encoder's features: its ``num_features``, else measured on zeros."""
    return int(getattr(model, "num_features", 0) or _num_features(model, recipe))


@torch.no_grad()
def _num_features(model: nn.Module, recipe: dict) -> int:
    size = recipe["input"]["image_size"] or 32
    x = torch.zeros(2, recipe["input"]["in_chans"], size, size)
    return int(model.eval()(x).flatten(1).shape[1])
