"""MoCo's shuffle BN for the key encoder (He et al., CVPR 2020, Sec. 3.3).

BatchNorm normalises a query with statistics of its own batch; if its key is normalised with
statistics of the same samples, the pair shares a cue the queue's negatives lack, and the
network can find the positive through it instead of through the content. The official builder
(``facebookresearch/moco`` ``moco/builder.py``, ``_batch_shuffle_ddp`` / ``_batch_unshuffle_ddp``)
gathers the key batch from every GPU, permutes it with a permutation drawn on rank 0, runs each
GPU's key encoder on its slice, and undoes the permutation. Within one process, the key batch is
shuffled and run in groups that normalise with their own statistics (split BN, as MoCo's CIFAR-10
demo and lightly's ``SplitBatchNorm`` simulate several GPUs). Running each group as a separate
forward call gives exactly those per-group statistics without replacing any BatchNorm layer; the
key encoder's own running statistics are never used (they are copied from the online network).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from sslkit.runtime.distributed import gather_no_grad, world_size


class ShuffleBN:
    """``__call__(net, x, generator)``: ``net(x)`` with BatchNorm statistics over ``groups``
    random groups of the global key batch (``groups // world_size`` per process, at least one,
    at most half the local batch so each group has two samples); outputs in the order of
    ``x``. ``groups=1`` in one process is a plain forward."""

    def __init__(self, groups: int = 8) -> None:
        if int(groups) != groups or groups < 1:
            raise ValueError(f"model.shuffle_bn_groups must be an integer >= 1, got {groups}")
        self.groups = int(groups)

    @torch.no_grad()
    def __call__(self, net: nn.Module, x: Tensor, generator: torch.Generator | None = None):
        world = world_size()
        local_groups = max(1, min(self.groups // world, x.shape[0] // 2))
        if world == 1:
            if local_groups == 1:
                return net(x)
            perm = torch.randperm(x.shape[0], generator=generator, device=x.device)
            return _index(_grouped(net, x[perm], local_groups), torch.argsort(perm))
        everyone = gather_no_grad(x)
        perm = torch.randperm(everyone.shape[0], generator=generator, device=x.device)
        dist.broadcast(perm, 0)  # one permutation for all ranks: rank 0's
        rank = dist.get_rank()
        out = _grouped(net, everyone[perm.view(world, -1)[rank]], local_groups)
        out = tuple(gather_no_grad(o) for o in out) if isinstance(out, tuple) else gather_no_grad(out)
        # row j of ``out`` is net(everyone[perm[j]]): sample i sits at row argsort(perm)[i]
        return _index(out, torch.argsort(perm).view(world, -1)[rank])


def _grouped(net: nn.Module, x: Tensor, groups: int):
    if groups == 1:
        return net(x)
    outs = [net(part) for part in x.tensor_split(groups)]
    if isinstance(outs[0], tuple):
        return tuple(torch.cat(parts) for parts in zip(*outs))
    return torch.cat(outs)


def _index(out, idx: Tensor):
    return tuple(o[idx] for o in out) if isinstance(out, tuple) else out[idx]
