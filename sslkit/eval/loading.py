"""Rebuild a trained run from its checkpoint: config, module (weights loaded, eval mode, on the
training device) and data module; or an :class:`EvalContext` around them."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from sslkit.training.checkpoint import load_checkpoint, run_dir_of
from sslkit.errors import CheckpointError
from sslkit.eval.context import EvalContext


def load_for_evaluation(path: str | Path, overrides: dict | None = None):
    """Vet an sslkit checkpoint and rebuild its module (weights loaded) and data module (set up)
    from the config saved in it; ``overrides`` (dotted keys) adjust that config, e.g. a moved
    ``data.root``. Returns ``(cfg, module, datamodule, checkpoint)``; a missing, foreign or
    mismatching file raises a one-line CheckpointError."""
    from sslkit.training.build import build_datamodule, build_module
    from sslkit.training.checkpoint import check_same_model

    path = Path(path).expanduser()
    ckpt = load_checkpoint(path)
    cfg: DictConfig = OmegaConf.create(ckpt["sslkit"].get("config") or {})
    if "model" not in cfg or "data" not in cfg:
        raise CheckpointError(f"checkpoint {path} refused: it holds no sslkit run config")
    for key, value in (overrides or {}).items():
        if value is not None:
            OmegaConf.update(cfg, key, value, merge=False)
    module = build_module(cfg)
    check_same_model(path, ckpt["state_dict"], module)
    module.load_state_dict(ckpt["state_dict"])
    datamodule = build_datamodule(cfg)
    datamodule.setup("validate")
    return cfg, module, datamodule, ckpt


def load_trained(checkpoint: str | Path, device: str | torch.device | None = None,
                 overrides: dict | None = None):
    """``(cfg, module, datamodule)`` of a vetted sslkit checkpoint, the module in eval mode on
    ``device`` (default: the GPU when there is one)."""
    cfg, module, dm, _ = load_for_evaluation(checkpoint, overrides)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    module.to(device).eval()
    return cfg, module, dm


def context_from_checkpoint(checkpoint: str | Path, device=None) -> EvalContext:
    cfg, module, dm = load_trained(checkpoint, device)
    return EvalContext(module=module, datamodule=dm, run_dir=run_dir_of(checkpoint),
                       seed=int(cfg.get("seed") or 0))
