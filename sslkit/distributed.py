"""Gathering embeddings across processes with gradient."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import Tensor


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from every rank along dim 0, keeping the autograd graph.

    The backward of ``torch.distributed.nn.all_gather`` sums the incoming gradients over ranks
    (reduce-scatter). Every rank evaluates the same global loss, so rank r receives
    ``world_size * dL/dx_r``; DDP then averages parameter gradients over ranks, which leaves
    exactly the single-process gradient of the global loss.
    """
    if world_size() == 1:
        return x
    return torch.cat(dist_fn.all_gather(x), dim=0)


@torch.no_grad()
def gather_no_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from every rank along dim 0 (no gradient: keys, labels, indices)."""
    n = world_size()
    if n == 1:
        return x
    out = [torch.empty_like(x) for _ in range(n)]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)
