"""Gathering embeddings across processes, with and without gradient.

Both helpers are the identity in a single process. Every rank must pass a tensor of the same
shape (training batches are equal-sized: the sampler drops the last incomplete global batch).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _GatherWithGrad(torch.autograd.Function):
    """``all_gather`` along dim 0 whose backward sums the gradients of every rank's copy of the
    gathered tensor and hands each rank the rows it contributed (a reduce-scatter)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        if dist.get_backend() == dist.Backend.NCCL:
            mine = grad.new_empty((ctx.rows, *grad.shape[1:]))
            dist.reduce_scatter_tensor(mine, grad)
            return mine
        # gloo has no reduce-scatter: all-reduce (on a copy: autograd owns ``grad``) and slice
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from every rank along dim 0 (rank order), keeping the autograd graph.

    The backward sums the incoming gradients over ranks (reduce-scatter). Every rank evaluates
    the same global loss, so rank r receives ``world_size * dL/dx_r``; DDP then averages
    parameter gradients over ranks, which leaves exactly the single-process gradient of the
    global loss (tests/test_distributed.py checks this for every loss head).
    """
    if world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


@torch.no_grad()
def gather_no_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from every rank along dim 0 (no gradient: keys, labels, indices)."""
    n = world_size()
    if n == 1:
        return x
    out = [torch.empty_like(x) for _ in range(n)]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)


_LABELLED = "_labelled_global_batch"


def labelled_global_batch(outputs: dict) -> tuple[Tensor, Tensor] | None:
    """The detached ``features`` and ``labels`` a training step returned, gathered over the
    global batch (a no-op in one process), without unlabelled rows (label < 0); None if none.

    Computed once per step and kept in ``outputs`` (key ``_labelled_global_batch``): the online
    probe and the kNN monitor receive the same ``outputs`` and share one gather and one copy.
    Every rank runs the same callbacks in the same order, so the gather stays collective."""
    if _LABELLED not in outputs:
        feats = gather_no_grad(outputs["features"].float())
        labels = gather_no_grad(outputs["labels"])
        keep = labels >= 0
        if bool(keep.all()):  # the usual case: no copy
            outputs[_LABELLED] = (feats, labels)
        else:
            outputs[_LABELLED] = (feats[keep], labels[keep]) if keep.any() else None
    return outputs[_LABELLED]
