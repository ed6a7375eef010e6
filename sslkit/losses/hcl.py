"""Hard-negative contrastive loss (HCL; Robinson et al., ICLR 2021)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from sslkit.losses.base import LossOutput, check_views, detached_logs
from sslkit.losses.chunked import check_chunk_size, row_softmax_stats
from sslkit.losses.dcl import (
    _check_tau_plus,
    _check_temperature,
    cosine_logs,
    debiased_neg_sum,
    pair_logits,
    upcast,
)


class HardNegativeContrastive(nn.Module):
    r"""Contrastive learning with hard negative samples (Robinson, Chuang, Sra, Jegelka, ICLR 2021).

    The debiased loss of :class:`~sslkit.losses.dcl.DebiasedContrastive` with the negatives
    importance-weighted by :math:`w_{an} \propto e^{\beta s_{an}}` (harder negatives weigh more).
    With :math:`s_{ab} = u_a^\top u_b/\tau` on the N = B*V L2-normalised rows, positives ``p``
    the other views of the anchor's instance and the :math:`M = (B-1)V` negatives ``n``:

    .. math::
        R_a = \frac{\sum_n e^{\beta s_{an}} e^{s_{an}}}{\frac1M\sum_n e^{\beta s_{an}}},\quad
        N_g = \max\Big(\frac{R_a - \tau^+ M e^{s_{ap}}}{1-\tau^+},\; M e^{-1/\tau}\Big),\quad
        \mathcal{L} = \operatorname{mean}_{a,p}\; -\log\frac{e^{s_{ap}}}{e^{s_{ap}} + N_g}

    Follows ``joshr17/HCL`` ``image/main.py::criterion`` (``estimator='hard'``), including
    that the gradient flows through the importance weights (they are not detached there).
    ``beta = 0`` gives the debiased loss, ``beta = 0, tau_plus = 0`` SimCLR's NT-Xent.
    Computed in log space (no overflow at low temperature); for V > 2 every other view is a
    positive, one term per (anchor, positive) pair.

    Args:
        temperature: :math:`\tau` (official default 0.5).
        tau_plus: class prior :math:`\tau^+` in [0, 1) (official default 0.1).
        beta: concentration :math:`\beta \ge 0` of the hard-negative weights (official default 1.0).
        normalize: L2-normalise the projections (the official model does).
        chunk_size: rows per block of a memory-bounded log-sum-exp over negatives (forward and
            backward in O(chunk_size x N) memory, same values; for batches of thousands);
            ``None``: the dense N x N logits.

    Logs the entropy (nats) and the largest value of the normalised negative weights
    :math:`e^{\beta s_{an}}/\sum_n e^{\beta s_{an}}`, averaged over anchors.

    Example::

        >>> import torch
        >>> from sslkit.losses import HardNegativeContrastive
        >>> z = torch.randn(8, 2, 16, requires_grad=True)  # [instances, views, dim]
        >>> out = HardNegativeContrastive()(z)
        >>> out.loss.backward()
        >>> z.grad.shape
        torch.Size([8, 2, 16])
    """

    requires: ClassVar[frozenset[str]] = frozenset()
    uses_predictor: ClassVar[bool] = False

    def __init__(
        self,
        temperature: float = 0.5,
        tau_plus: float = 0.1,
        beta: float = 1.0,
        normalize: bool = True,
        chunk_size: int | None = None,
    ):
        super().__init__()
        _check_temperature(temperature)
        _check_tau_plus(tau_plus)
        check_chunk_size(chunk_size)
        self.chunk_size = chunk_size
        if not beta >= 0:
            raise ValueError(f"beta (hardness) must be >= 0, got {beta}")
        self.temperature = temperature
        self.tau_plus = tau_plus
        self.beta = beta
        self.normalize = normalize

    def forward(self, z: Tensor, **_: object) -> LossOutput:
        check_views(z)
        with torch.autocast(z.device.type, enabled=False):
            pl = pair_logits(upcast(z), self.temperature, self.normalize, self.chunk_size)
            lse_beta = pl.negative_logsumexp(self.beta)
            lse_both = pl.negative_logsumexp(1.0 + self.beta)
            log_reweighted = lse_both - lse_beta + math.log(pl.n_neg)
            log_den, _, clamped = debiased_neg_sum(
                log_reweighted, pl.pos, pl.n_neg, self.tau_plus, self.temperature
            )
            loss = (log_den - pl.pos).mean()

            if pl.logits is None:  # chunked: the N x N logits are never built
                entropy, w_max = row_softmax_stats(pl.u, self.beta / self.temperature, pl.ids,
                                                   lse_beta.detach(), self.chunk_size)
            else:
                with torch.no_grad():
                    off = ~pl.neg_mask
                    hard = (pl.logits * self.beta).masked_fill(off, float("-inf"))
                    w = torch.exp(hard - lse_beta[:, None])
                    entropy = lse_beta - (w * hard.masked_fill(off, 0.0)).sum(dim=1)
                    w_max = w.amax(dim=1)
        return LossOutput(
            loss,
            detached_logs(
                **cosine_logs(z),
                weight_entropy=entropy.mean(),
                weight_max=w_max.mean(),
                clamp_frac=clamped.float().mean(),
            ),
        )
