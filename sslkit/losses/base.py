"""The loss-head contract shared by every head in :mod:`sslkit.losses`.

A head is an ``nn.Module`` called as ``head(z, **extras) -> LossOutput``:

* ``z``: ``Tensor[B, V, D]``, projections grouped by instance (B instances, V >= 2 views),
  raw: a head normalises where its paper does.
* extras, only for heads that use them: ``k: Tensor[B, V', D]`` (momentum keys),
  ``queue: Tensor[Q, D]``, ``prior: Tensor[B, P]``, ``labels: Tensor[B]``.

Heads never know about ranks: the training module gathers embeddings across processes
(with gradient) before calling the head, so ``z`` is always the global batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class LossOutput:
    """A scalar ``loss`` and ``logs``: detached quantities worth plotting."""

    loss: Tensor
    logs: dict[str, Tensor | float] = field(default_factory=dict)


def check_views(z: Tensor, min_views: int = 2) -> None:
    """Raise a clear error unless ``z`` is ``[B, V, D]`` with ``B >= 2`` and ``V >= min_views``."""
    if z.dim() != 3:
        raise ValueError(
            f"a loss head expects z of shape [batch, views, dim], got shape {tuple(z.shape)}"
        )
    batch, views, _ = z.shape
    if views < min_views:
        raise ValueError(f"a loss head needs at least {min_views} views per instance, got {views}")
    if batch < 2:
        raise ValueError(f"a contrastive loss head needs at least 2 instances, got {batch}")


def upcast(z: Tensor) -> Tensor:
    """Return ``z`` in float32 if it is a lower-precision float, unchanged otherwise."""
    return z.float() if torch.finfo(z.dtype).bits < 32 else z


def cosine_logs(z: Tensor) -> dict[str, Tensor]:
    """Mean cosine similarity of positive pairs and of negative pairs of ``z: [B, V, D]``, in
    O(B V D): for unit rows, |sum of an instance's views|^2 = V + (its positive pair sum)."""
    with torch.no_grad():
        batch, views, _ = z.shape
        u = torch.nn.functional.normalize(upcast(z), dim=-1)
        total = u.sum(dim=(0, 1)).square().sum()
        per_instance = u.sum(dim=1).square().sum()
        n = batch * views
        diag = u.square().sum()
        pos_sim = (per_instance - diag) / (batch * views * (views - 1))
        neg_sim = (total - per_instance) / (n * n - batch * views * views)
    return {"pos_sim": pos_sim, "neg_sim": neg_sim}


def detached_logs(**values: Tensor | float) -> dict[str, Tensor | float]:
    """Detach every tensor so logs never hold the graph."""
    return {k: (v.detach() if isinstance(v, Tensor) else v) for k, v in values.items()}


def view_major(z: Tensor) -> Tensor:
    """``[B, V, D] -> [V*B, D]`` with row ``v*B + i`` = view v of instance i."""
    return z.transpose(0, 1).reshape(-1, z.shape[-1])


def instance_ids(batch: int, views: int, device: torch.device | None = None) -> Tensor:
    """Instance index of each row of :func:`view_major` output."""
    return torch.arange(batch, device=device).repeat(views)


def sqdist(a: Tensor, b: Tensor) -> Tensor:
    """Batched squared Euclidean distances ``[..., n, d] x [..., m, d] -> [..., n, m]``."""
    aa = a.pow(2).sum(-1)
    bb = b.pow(2).sum(-1)
    return (aa.unsqueeze(-1) + bb.unsqueeze(-2) - 2.0 * (a @ b.transpose(-2, -1))).clamp_min(0.0)
