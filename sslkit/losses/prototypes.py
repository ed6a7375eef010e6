"""Learnable prototypes: SwAV's ``prototypes`` and DINO's weight-normalised last layer.

State of a head, held by the head (SwAV, DINO) as a submodule, so the training module saves it
in checkpoints with the head's other buffers and needs no code of its own for it (the layers
keep ``losses`` from importing ``parts``).

The input dimension is the projector's output size, which a loss head built from its own config
does not know; so the weight is created on the first call (or by :meth:`Prototypes.materialize`,
which the training module calls before building the optimiser) and restored from a checkpoint of
any state. The rows are compared to L2-normalised inputs, as both papers do.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter, is_lazy

NORMALIZATIONS = ("inplace", "weight_norm")
# a row whose computed norm is within this many units in the last place of 1 counts as unit
# (a freshly normalised row of up to ~1000 dimensions is, whatever the rounding of its norm)
UNIT_TOLERANCE = 1000


class LazyState(LazyModuleMixin, nn.Module):
    """A lazily sized module that survives ``module.to(memory_format=...)`` before it is sized
    (the training module turns itself channels-last at construction): PyTorch's conversion asks
    every tensor for its ``dim()``, which an uninitialised one cannot answer. Such a tensor is
    kept as it is when a conversion cannot be applied to it (a memory format means nothing to
    the 1- and 2-dimensional state here; device and dtype moves do apply)."""

    def _apply(self, fn, recurse=True):
        lazy = {name: t for name, t in self._parameters.items() if is_lazy(t)}
        lazy_buffers = {name: t for name, t in self._buffers.items() if is_lazy(t)}
        for name in lazy:
            del self._parameters[name]
        for name in lazy_buffers:
            del self._buffers[name]
        try:
            super()._apply(fn, recurse)
        finally:
            for name, t in lazy.items():
                self._parameters[name] = _try(fn, t)
            for name, t in lazy_buffers.items():
                self._buffers[name] = _try(fn, t)
        return self


def _try(fn, t):
    try:
        out = fn(t)
    except ValueError:  # an uninitialised tensor refuses shape queries
        return t
    return out if isinstance(out, type(t)) else t


class Prototypes(LazyState):
    r"""K prototype vectors, the rows of ``weight`` ``[K, D]``; ``forward(x)`` returns the
    scores :math:`\hat x\, C^\top` ``[..., K]`` of the L2-normalised inputs :math:`\hat x`.

    ``normalization="inplace"`` (SwAV, ``main_swav.py``): :math:`C` is ``weight`` itself, its rows
    renormalised in place, without gradient, at every forward (the official code does so at the
    start of every iteration), and the gradient is that of the plain linear map. Only rows off
    the unit sphere by more than ``UNIT_TOLERANCE`` units in the last place are rewritten, so
    the renormalisation is a function of the weight's bits alone and idempotent: a second
    forward in a step, a checkpoint load or DDP's broadcast of equal values changes nothing
    (a resumed run computes what the uninterrupted one did, bit for bit).
    ``normalization="weight_norm"`` (DINO's ``last_layer``, ``norm_last_layer=True``):
    :math:`C = \operatorname{normalize}(v)` with ``weight`` = v, the gradient flowing through
    the normalisation (``nn.utils.weight_norm`` with the scale g fixed at 1).

    ``ema=True`` keeps ``teacher_weight``, an exponential moving average of ``weight`` (DINO's
    teacher last layer), updated by :meth:`momentum_update` and scored by :meth:`teacher`
    (always weight-normalised, without gradient). Initialisation is ``nn.Linear``'s
    (uniform in :math:`\pm 1/\sqrt D`), which both official codes use for this layer.
    """

    def __init__(self, num_prototypes: int, dim: int | None = None,
                 normalization: str = "inplace", ema: bool = False) -> None:
        super().__init__()
        if int(num_prototypes) != num_prototypes or num_prototypes < 1:
            raise ValueError(f"the number of prototypes must be a positive integer, got {num_prototypes}")
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        self.num_prototypes = int(num_prototypes)
        self.normalization = normalization
        self.weight = UninitializedParameter()
        if ema:
            self.register_buffer("teacher_weight", UninitializedBuffer())
        else:
            self.teacher_weight = None
        if dim is not None:
            self.materialize(dim)

    @property
    def dim(self) -> int | None:
        return None if is_lazy(self.weight) else int(self.weight.shape[1])

    def initialize_parameters(self, x: Tensor, *_, **__) -> None:  # LazyModuleMixin's hook
        self.materialize(x.shape[-1])

    @torch.no_grad()
    def materialize(self, dim: int) -> None:
        """Create the ``[K, dim]`` weight (a no-op when it exists with that size)."""
        if not is_lazy(self.weight):
            if self.weight.shape[1] != dim:
                raise ValueError(f"the prototypes were built for {self.weight.shape[1]}-dim "
                                 f"inputs, got {dim}-dim ones")
            return
        self.weight.materialize((self.num_prototypes, int(dim)))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's default
        if self.teacher_weight is not None:
            self.teacher_weight.materialize((self.num_prototypes, int(dim)))
            self.teacher_weight.copy_(self.weight)

    @torch.no_grad()
    def renormalize_(self) -> None:
        """Rescale to unit norm, in place, the rows of ``weight`` whose norm is not 1 within
        ``UNIT_TOLERANCE`` units in the last place (SwAV); writes nothing when none is."""
        norms = self.weight.norm(dim=1, keepdim=True)
        off = (norms - 1).abs() > UNIT_TOLERANCE * torch.finfo(self.weight.dtype).eps
        if bool(off.any()):
            self.weight.copy_(torch.where(off, self.weight / norms.clamp_min(1e-12), self.weight))

    def matrix(self) -> Tensor:
        """The prototype matrix C ``[K, D]``. Freezing is the caller's: a head lists the weight
        in ``frozen_parameters`` and its gradient is dropped after the backward."""
        if self.normalization == "inplace":
            self.renormalize_()
            return self.weight
        return F.normalize(self.weight, dim=1)

    def forward(self, x: Tensor) -> Tensor:
        self.materialize(x.shape[-1])  # checks the size once created
        c = self.matrix().to(x.dtype)
        return F.normalize(x, dim=-1) @ c.T

    @torch.no_grad()
    def teacher(self, x: Tensor) -> Tensor:
        """Scores of ``x`` against the EMA prototypes (weight-normalised), no gradient."""
        if self.teacher_weight is None:
            raise RuntimeError("these prototypes keep no EMA copy (ema=False)")
        self.materialize(x.shape[-1])
        c = F.normalize(self.teacher_weight, dim=1).to(x.dtype)
        return F.normalize(x, dim=-1) @ c.T

    @torch.no_grad()
    def momentum_update(self, momentum: float) -> None:
        """``teacher_weight <- m * teacher_weight + (1 - m) * weight``."""
        if self.teacher_weight is None or is_lazy(self.teacher_weight):
            return
        self.teacher_weight.mul_(momentum).add_(self.weight.detach(), alpha=1.0 - momentum)

    def extra_repr(self) -> str:
        return (f"num_prototypes={self.num_prototypes}, dim={self.dim}, "
                f"normalization={self.normalization!r}, ema={self.teacher_weight is not None}")
