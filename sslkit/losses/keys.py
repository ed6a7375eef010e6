"""Checks shared by the heads that read keys ``k``: the momentum encoder's projections (BYOL,
MoCo v3, DINO) or the online network's own, detached (SimSiam, NNCLR)."""

from __future__ import annotations

from torch import Tensor


def check_keys(name: str, z: Tensor, k: Tensor | None, n_keys: int) -> None:
    """One-line ValueError unless ``k`` is ``[B, n_keys, D]`` for ``z`` ``[B, V, D]``."""
    batch, _, dim = z.shape
    if k is None:
        raise ValueError(f"{name} needs k=Tensor[B, {n_keys}, D], the key projections "
                         "(momentum encoder or detached online network) of the views it reads")
    if k.dim() != 3 or tuple(k.shape) != (batch, n_keys, dim):
        raise ValueError(f"{name}: k must be [{batch}, {n_keys}, {dim}] (the keys of the "
                         f"views the head reads), got {tuple(k.shape)}")
