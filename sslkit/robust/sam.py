r"""Sharpness-aware minimisation (SAM) of one loss term.

Foret et al., "Sharpness-Aware Minimization for Efficiently Improving Generalization" (ICLR
2021): minimise :math:`\max_{\|\epsilon\|_2 \le \rho} L(w + \epsilon)`, approximated by
:math:`\hat\epsilon = \rho\, g / \|g\|_2` with :math:`g = \nabla L(w)`, and the gradient
:math:`\nabla L(w)|_{w + \hat\epsilon}`.

How it fits Lightning: instead of SAM's two optimiser steps (perturb the weights in place,
backward, restore), the perturbed loss is evaluated with ``torch.func.functional_call`` on
``w + eps`` (eps a constant), so its gradient with respect to ``w`` is exactly
:math:`\nabla L(w + \hat\epsilon)`. The perturbed term then enters the total loss like any
other and one ordinary backward (with DDP's gradient all-reduce, gradient clipping, AMP and the
non-finite guard all unchanged) produces the update. An optimizer wrapper calling Lightning's
closure twice would run the whole step (every other loss term, the attack) twice, and manual
optimisation would take over what Lightning does for every run.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from sslkit.runtime.distributed import world_size


def sam_perturbation(loss: Tensor, params: dict[str, nn.Parameter], rho: float,
                     retain_graph: bool = True) -> dict[str, Tensor]:
    r""":math:`\rho\, g/\|g\|_2` for the parameters of ``params`` (name -> parameter), with
    :math:`g` the gradient of ``loss`` averaged over the processes of a DDP run (so every rank
    perturbs the same weights by the gradient of the global batch, as DDP's update would see
    it). Parameters that ``loss`` does not reach get no perturbation. Does not touch ``.grad``."""
    names = list(params)
    grads = torch.autograd.grad(loss, [params[n] for n in names], retain_graph=retain_graph,
                                allow_unused=True)
    grads = [torch.zeros_like(params[n]) if g is None else g for n, g in zip(names, grads)]
    if world_size() > 1:
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= world_size()
        grads = [g.view_as(params[n]) for g, n in zip(flat.split([g.numel() for g in grads]), names)]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    scale = rho / norm.clamp_min(1e-12)
    # in each parameter's own layout (channels_last weights stay so; DDP's buckets expect it)
    return {n: torch.empty_like(params[n]).copy_(g.detach() * scale) for n, g in zip(names, grads)}


def perturbed(params: dict[str, nn.Parameter], eps: dict[str, Tensor]) -> dict[str, Tensor]:
    """``w + eps`` for ``functional_call``: differentiable in ``w``, constant in ``eps``."""
    return {n: p + eps[n] for n, p in params.items()}
