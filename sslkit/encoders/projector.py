"""Projection and prediction MLPs."""

from __future__ import annotations

from torch import nn


class MLP(nn.Sequential):
    """``layers`` linear layers; between them BatchNorm (if ``batch_norm``) and ReLU.

    ``layers=2`` is SimCLR's projector; ``last_batch_norm`` adds an affine-free BN at the output
    (MoCo v3). ``layers=0`` is the identity (features used directly).
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 512,
        out_dim: int = 128,
        layers: int = 2,
        batch_norm: bool = True,
        last_batch_norm: bool = False,
    ) -> None:
        mods: list[nn.Module] = []
        dim = in_dim
        for _ in range(max(layers - 1, 0)):
            mods.append(nn.Linear(dim, hidden_dim, bias=not batch_norm))
            if batch_norm:
                mods.append(nn.BatchNorm1d(hidden_dim))
            mods.append(nn.ReLU(inplace=True))
            dim = hidden_dim
        if layers > 0:
            mods.append(nn.Linear(dim, out_dim, bias=not last_batch_norm))
            if last_batch_norm:
                mods.append(nn.BatchNorm1d(out_dim, affine=False))
            dim = out_dim
        super().__init__(*mods)
        self.out_dim = dim
