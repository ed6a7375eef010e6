"""Exponential-moving-average copy of the online network (MoCo's key encoder)."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


class MomentumCopy(nn.Module):
    """A frozen copy of ``online`` updated as ``theta_k <- m * theta_k + (1 - m) * theta_q``.

    ``schedule="cosine"`` raises m from ``momentum`` to 1 over training (BYOL / MoCo v3);
    ``"constant"`` keeps it (MoCo v2). Buffers (BatchNorm statistics) are copied, not averaged,
    as in MoCo.
    """

    def __init__(self, online: nn.Module, momentum: float, schedule: str = "constant") -> None:
        super().__init__()
        if not 0 <= momentum <= 1:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        if schedule not in ("constant", "cosine"):
            raise ValueError(f"momentum schedule must be 'constant' or 'cosine', got {schedule!r}")
        self.net = copy.deepcopy(online)
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.base_momentum, self.schedule = momentum, schedule

    def momentum_at(self, progress: float) -> float:
        if self.schedule == "constant":
            return self.base_momentum
        return 1 - (1 - self.base_momentum) * (math.cos(math.pi * min(progress, 1.0)) + 1) / 2

    @torch.no_grad()
    def update(self, online: nn.Module, progress: float) -> float:
        m = self.momentum_at(progress)
        for pk, pq in zip(self.net.parameters(), online.parameters()):
            pk.mul_(m).add_(pq.detach(), alpha=1 - m)
        for bk, bq in zip(self.net.buffers(), online.buffers()):
            bk.copy_(bq)
        return m

    def forward(self, *args, **kwargs):
        return self.net(*args, **kwargs)
