"""SwAV: swapped prediction of Sinkhorn-Knopp cluster codes over learnable prototypes."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from sslkit.losses.base import LossOutput, check_views, detached_logs
from sslkit.losses.cacr import check_positive, entropy, full_precision, prepare
from sslkit.losses.prototypes import Prototypes


class SwAV(nn.Module):
    r"""SwAV loss (Caron, Misra, Mairal, Goyal, Bojanowski & Joulin, "Unsupervised Learning of
    Visual Features by Contrasting Cluster Assignments", NeurIPS 2020).

    ``z`` ``[B, V, D]`` are the raw projections of every view, the first ``n_global`` the global
    crops (multi-crop: the rest are local crops). With K learnable unit prototypes C ``[K, D]``
    (:class:`~sslkit.losses.prototypes.Prototypes`, held by this head, renormalised before each
    step) the scores are :math:`s^v_i = \hat z^v_i\, C^\top`. For each global view a, the codes
    :math:`q^a` ``[B, K]`` are computed without gradient by ``sinkhorn_iterations`` steps of
    Sinkhorn-Knopp on :math:`Q = \exp(s^a/\varepsilon)^\top` ``[K, B]`` (normalised to total
    mass 1; each step scales the rows to 1/K, then the columns to 1/B; finally
    :math:`q = B\,Q^\top`, so each code sums to 1 and each prototype receives about B/K). The
    loss predicts them from every other view:

    .. math::
        \mathcal L = \frac{1}{n_{global}}\sum_{a<n_{global}}\frac{1}{V-1}\sum_{v\ne a}
            \frac1B\sum_i -\sum_k q^a_{ik}\,\log\operatorname{softmax}_k(s^v_i/\tau)

    Follows ``facebookresearch/swav`` ``main_swav.py`` (``train``: prototypes normalised in place
    at each iteration, ``crops_for_assign = [0, 1]``, ``distributed_sinkhorn``, ``subloss /
    (sum(nmb_crops) - 1)``, ``loss /= len(crops_for_assign)``; the gradients of the prototypes
    are dropped, ``p.grad = None``, for the first ``freeze_prototypes_niters`` iterations: here
    :meth:`frozen_parameters`, whose gradients the training module drops after each backward).
    The official Sinkhorn
    all-reduces its sums over GPUs, i.e. runs over the global batch, as this head does.
    Not implemented: the official queue of earlier batches' embeddings (``queue_length``, off by
    default, used for small batches).

    The prototypes' input dimension is the projector's output size, taken from the first batch
    (or :meth:`materialize`). Whether they are frozen follows the training step that the module
    passes through :meth:`set_progress` (the step counter is a buffer, saved in checkpoints).
    The forward always uses them with gradient, as the official code does (so under DDP they
    take part in every gradient all-reduce); freezing only drops that gradient.

    Args:
        num_prototypes: K (official ``--nmb_prototypes`` 3000).
        temperature: :math:`\tau` (official 0.1).
        epsilon: :math:`\varepsilon`, entropic regularisation of the codes (official 0.05).
        sinkhorn_iterations: Sinkhorn-Knopp steps (official 3).
        n_global: leading views that get codes (official ``crops_for_assign`` [0, 1]: 2).
        freeze_prototypes_iters: steps during which the prototypes get no gradient (official
            ``--freeze_prototypes_niters`` 313: one ImageNet epoch at batch 4096).
        dim: input dimension, if known (null: from the first batch).

    Logs: ``code_entropy`` (mean entropy of a code), ``usage_entropy`` (entropy of the mean
    code: log K when the prototypes are used equally), ``frozen`` (1 while the prototypes are
    frozen).

    Example::

        >>> import torch
        >>> from sslkit.losses import SwAV
        >>> z = torch.randn(8, 2, 16, requires_grad=True)
        >>> SwAV(num_prototypes=10)(z).loss.backward()
    """

    requires: ClassVar[frozenset[str]] = frozenset()
    uses_predictor: ClassVar[bool] = False

    def __init__(self, num_prototypes: int = 3000, temperature: float = 0.1,
                 epsilon: float = 0.05, sinkhorn_iterations: int = 3, n_global: int = 2,
                 freeze_prototypes_iters: int = 313, dim: int | None = None) -> None:
        super().__init__()
        check_positive(temperature=temperature, epsilon=epsilon)
        for name, value, low in (("sinkhorn_iterations", sinkhorn_iterations, 1),
                                 ("n_global", n_global, 1),
                                 ("freeze_prototypes_iters", freeze_prototypes_iters, 0)):
            if int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value}")
        self.temperature, self.epsilon = float(temperature), float(epsilon)
        self.sinkhorn_iterations = int(sinkhorn_iterations)
        self.n_global = int(n_global)
        self.freeze_prototypes_iters = int(freeze_prototypes_iters)
        self.prototypes = Prototypes(num_prototypes, dim, normalization="inplace")
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, epsilon={self.epsilon}, "
                f"sinkhorn_iterations={self.sinkhorn_iterations}, n_global={self.n_global}, "
                f"freeze_prototypes_iters={self.freeze_prototypes_iters}")

    def materialize(self, dim: int) -> None:
        """Create the prototypes for ``dim``-dimensional projections (before the optimiser)."""
        self.prototypes.materialize(dim)

    def set_progress(self, step: int, epoch: int = 0) -> None:
        """The optimiser steps done so far (the official ``iteration``), before this step."""
        self.step.fill_(int(step))

    @property
    def frozen(self) -> bool:
        return int(self.step) < self.freeze_prototypes_iters

    def frozen_parameters(self) -> list[nn.Parameter]:
        """Parameters whose gradient this step is dropped after the backward: the prototypes,
        during the first ``freeze_prototypes_iters`` steps."""
        return [self.prototypes.weight] if self.frozen else []

    @torch.no_grad()
    def sinkhorn(self, scores: Tensor) -> Tensor:
        """Codes ``[B, K]`` of the scores ``[B, K]``: each row sums to 1, each column to about
        B/K (exactly, as the iterations go to infinity)."""
        batch, k = scores.shape
        # exp((s - max) / eps): the shift cancels in the first normalisation
        q = torch.exp((scores - scores.max()) / self.epsilon).T  # [K, B]
        q = q / q.sum()
        for _ in range(self.sinkhorn_iterations):
            q = q / q.sum(dim=1, keepdim=True) / k
            q = q / q.sum(dim=0, keepdim=True) / batch
        return (q * batch).T

    def forward(self, z: Tensor, **_: object) -> LossOutput:
        check_views(z)
        views = z.shape[1]
        if views < self.n_global:
            raise ValueError(f"swav: n_global={self.n_global} but z has only {views} views")
        frozen = self.frozen
        with full_precision(z):
            x = prepare(z, False)
            scores = self.prototypes(x)  # [B, V, K], normalises x
            log_p = torch.log_softmax(scores / self.temperature, dim=-1)
            loss = x.new_zeros(())
            codes = []
            for a in range(self.n_global):
                q = self.sinkhorn(scores[:, a].detach())
                codes.append(q)
                others = [v for v in range(views) if v != a]
                ce = -(q[:, None, :] * log_p[:, others]).sum(-1)  # [B, V-1]
                loss = loss + ce.mean()
            loss = loss / self.n_global
            with torch.no_grad():
                q = torch.stack(codes)  # [n_global, B, K]
                logs = detached_logs(code_entropy=entropy(q).mean(),
                                     usage_entropy=entropy(q.mean(dim=1)).mean(),
                                     frozen=float(frozen))
        return LossOutput(loss, logs)
