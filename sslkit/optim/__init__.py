"""Optimiser parameter groups and the warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn


def param_groups(modules: Iterable[nn.Module], weight_decay: float) -> list[dict]:
    """Two groups: weights with ``weight_decay``; biases and norm parameters (every tensor of
    one dimension or less) without, as in SimCLR/MoCo/BYOL recipes (LARS skips its trust
    ratio on the latter because their weight decay is 0)."""
    decay, no_decay = [], []
    for module in modules:
        for p in module.parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def warmup_cosine(total_steps: int, warmup_steps: int, final_lr_ratio: float = 0.0) -> Callable[[int], float]:
    """Multiplier of the base lr: linear from 1/warmup to 1 over ``warmup_steps``, then cosine
    down to ``final_lr_ratio`` at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return final_lr_ratio + (1 - final_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def build_optimizer(factory: Callable[..., torch.optim.Optimizer], modules: Iterable[nn.Module],
                    weight_decay: float) -> torch.optim.Optimizer:
    """``factory`` is a Hydra ``_partial_`` optimiser class (SGD, AdamW, timm's Lars, ...)."""
    return factory(param_groups(modules, weight_decay))
