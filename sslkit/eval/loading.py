"""Rebuild a trained run from its checkpoint: config, module (weights loaded, eval mode, on the
training device) and data module; or an :class:`EvalContext` around them."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from sslkit.checkpoint import load_checkpoint
from sslkit.eval.context import EvalContext


def load_trained(checkpoint: str | Path, device: str | torch.device | None = None):
    """``(cfg, module, datamodule)`` of a vetted sslkit checkpoint; a foreign or missing file
    raises a one-line :class:`~sslkit.errors.CheckpointError`."""
    from sslkit.run import build_datamodule, build_module, check_same_model

    path = Path(checkpoint).expanduser()
    ckpt = load_checkpoint(path)
    cfg: DictConfig = OmegaConf.create(ckpt["sslkit"].get("config") or {})
    module = build_module(cfg)
    check_same_model(path, ckpt["state_dict"], module)
    module.load_state_dict(ckpt["state_dict"])
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    module.to(device).eval()
    dm = build_datamodule(cfg)
    dm.setup("fit")
    return cfg, module, dm


def run_dir_of(checkpoint: str | Path) -> Path:
    """The run dir of a checkpoint: the folder holding ``checkpoints/``."""
    path = Path(checkpoint).expanduser().resolve()
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def context_from_checkpoint(checkpoint: str | Path, device=None) -> EvalContext:
    cfg, module, dm = load_trained(checkpoint, device)
    return EvalContext(module=module, datamodule=dm, run_dir=run_dir_of(checkpoint),
                       seed=int(cfg.get("seed") or 0))
