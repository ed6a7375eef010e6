"""Debiased contrastive loss (Chuang et al. 2020) and decoupled contrastive loss (Yeh et al. 2022).

Both are NT-Xent variants that change what sits in the denominator: ``DebiasedContrastive``
corrects the sum over negatives for same-class "negatives", ``DecoupledContrastive`` drops the
positive from the denominator. :func:`pair_logits` is the shared anchor/positive/negative layout,
also used by :mod:`sslkit.losses.hcl` and :mod:`sslkit.losses.rince`.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslkit.losses.base import (
    LossOutput,
    check_views,
    cosine_logs,
    detached_logs,
    instance_ids,
    upcast,
    view_major,
)
from sslkit.losses.chunked import check_chunk_size, row_logsumexp


class PairLogits(NamedTuple):
    """Anchor-wise logits of the N = B*V view-major rows.

    ``pos``: ``[N, V-1]`` logits :math:`s_{ap}` to the other views of the anchor's instance.
    ``logits``: ``[N, N]`` all logits :math:`s_{ab} = u_a^\\top u_b / \\tau` (``None`` when
    chunked: never built).
    ``neg_mask``: ``[N, N]`` True where ``b`` is a negative of ``a`` (another instance; ``None``
    when chunked).
    ``n_neg``: number of negatives per anchor, :math:`M = (B-1)V`.
    ``u``, ``ids``, ``temperature``, ``chunk_size``: the rows, their instances, :math:`\\tau` and
    the block size of :func:`sslkit.losses.chunked.row_logsumexp` (``None``: dense).
    """

    pos: Tensor
    logits: Tensor | None
    neg_mask: Tensor | None
    n_neg: int
    u: Tensor | None = None
    ids: Tensor | None = None
    temperature: float = 1.0
    chunk_size: int | None = None

    def negative_logsumexp(self, factor: float = 1.0) -> Tensor:
        """``[N]``: :math:`\\log\\sum_n e^{c\\, s_{an}}` over each anchor's negatives, ``c`` the
        ``factor``."""
        if self.logits is None:
            return row_logsumexp(self.u, factor / self.temperature, self.ids, self.chunk_size)
        logits = self.logits if factor == 1.0 else self.logits * factor
        return logits.masked_fill(~self.neg_mask, float("-inf")).logsumexp(dim=1)


def pair_logits(z: Tensor, temperature: float, normalize: bool,
                chunk_size: int | None = None) -> PairLogits:
    """Logits of every anchor against its positives and negatives (see :class:`PairLogits`).

    ``z`` is ``[B, V, D]``; rows are laid out view-major (row ``v*B + i`` = view v of instance i),
    the order of ``torch.cat([out_1, out_2])`` in the official SimCLR-style code. With
    ``chunk_size`` the N x N logits are never built: the positives are computed row by row and
    :meth:`PairLogits.negative_logsumexp` runs in blocks of ``chunk_size`` rows.
    """
    batch, views, _ = z.shape
    u = view_major(F.normalize(z, dim=-1) if normalize else z)
    ids = instance_ids(batch, views, u.device)
    # positives of row v*B+i are the rows w*B+i, w != v, in increasing w
    other = torch.arange(views, device=u.device).expand(views, views)
    other = other[~torch.eye(views, dtype=torch.bool, device=u.device)].view(views, views - 1)
    pos_idx = other.repeat_interleave(batch, dim=0) * batch + ids[:, None]
    n_neg = (batch - 1) * views
    if chunk_size is not None:
        pos = (u[:, None, :] * u[pos_idx]).sum(dim=-1) / temperature
        return PairLogits(pos, None, None, n_neg, u, ids, temperature, chunk_size)
    logits = (u @ u.T) / temperature
    neg_mask = ids[:, None] != ids[None, :]
    pos = logits.gather(1, pos_idx)
    return PairLogits(pos, logits, neg_mask, n_neg)


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def _check_tau_plus(tau_plus: float) -> None:
    if not 0 <= tau_plus < 1:
        raise ValueError(f"tau_plus (class prior) must be in [0, 1), got {tau_plus}")


def debiased_neg_sum(
    reweighted: Tensor, pos: Tensor, n_neg: int, tau_plus: float, temperature: float
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Debiased estimator :math:`N_g` of Chuang et al. (2020), in a shifted, overflow-free form.

    ``reweighted``: ``[N]`` log of the (possibly importance-reweighted) sum over negatives;
    ``pos``: ``[N, P]`` positive logits. With :math:`c` a detached per-anchor shift, returns
    ``(log(e^{s_p} + N_g), N_g e^{-c}, clamped)`` where

    .. math:: N_g = \max\Big(\frac{\mathrm{neg} - \tau^+ M e^{s_p}}{1-\tau^+},\; M e^{-1/\tau}\Big)

    (the official code's "constrain" clamp, at the theoretical minimum of the negative sum for
    unit vectors).
    """
    shift = torch.maximum(reweighted, pos.amax(dim=1)).detach()
    pos_s = torch.exp(pos - shift[:, None])
    neg_s = torch.exp(reweighted - shift)[:, None]
    ng = (neg_s - tau_plus * n_neg * pos_s) / (1.0 - tau_plus)
    floor = n_neg * torch.exp(-1.0 / temperature - shift)[:, None]
    clamped = ng < floor
    ng = torch.maximum(ng, floor)
    return shift[:, None] + torch.log(pos_s + ng), ng, clamped


class DebiasedContrastive(nn.Module):
    r"""Debiased contrastive loss (Chuang et al., "Debiased Contrastive Learning", NeurIPS 2020).

    For the N = B*V L2-normalised rows with logits :math:`s_{ab} = u_a^\top u_b/\tau`, each
    anchor ``a`` and each positive ``p`` (another view of its instance) with the
    :math:`M = (B-1)V` negatives ``n`` (every view of every other instance):

    .. math::
        N_g = \max\Big(\frac{\sum_n e^{s_{an}} - \tau^+ M e^{s_{ap}}}{1-\tau^+},\;
        M e^{-1/\tau}\Big), \qquad
        \mathcal{L} = \operatorname{mean}_{a,p}\; -\log\frac{e^{s_{ap}}}{e^{s_{ap}} + N_g}

    Follows ``chingyaoc/DCL`` ``main.py::train`` (debiased branch, M=1 positive sample). With
    ``tau_plus = 0`` it is SimCLR's NT-Xent (the clamp is then inactive for unit vectors).
    For V > 2 every other view is a positive, each (anchor, positive) pair is a term, and the
    other positives are in neither the positive nor the negative sum.

    Args:
        temperature: :math:`\tau` (official default 0.5).
        tau_plus: class prior :math:`\tau^+` in [0, 1) (official default 0.1).
        normalize: L2-normalise the projections (the official model does).
        chunk_size: rows per block of a memory-bounded log-sum-exp over negatives (forward and
            backward in O(chunk_size x N) memory, same values; for batches of thousands);
            ``None``: the dense N x N logits.

    Example::

        >>> import torch
        >>> from sslkit.losses import DebiasedContrastive
        >>> z = torch.randn(8, 2, 16, requires_grad=True)  # [instances, views, dim]
        >>> out = DebiasedContrastive()(z)
        >>> out.loss.backward()
        >>> z.grad.shape
        torch.Size([8, 2, 16])
    """

    requires: ClassVar[frozenset[str]] = frozenset()
    uses_predictor: ClassVar[bool] = False

    def __init__(self, temperature: float = 0.5, tau_plus: float = 0.1, normalize: bool = True,
                 chunk_size: int | None = None):
        super().__init__()
        _check_temperature(temperature)
        _check_tau_plus(tau_plus)
        check_chunk_size(chunk_size)
        self.temperature = temperature
        self.tau_plus = tau_plus
        self.normalize = normalize
        self.chunk_size = chunk_size

    def forward(self, z: Tensor, **_: object) -> LossOutput:
        check_views(z)
        with torch.autocast(z.device.type, enabled=False):
            pl = pair_logits(upcast(z), self.temperature, self.normalize, self.chunk_size)
            neg_lse = pl.negative_logsumexp()
            log_den, _, clamped = debiased_neg_sum(
                neg_lse, pl.pos, pl.n_neg, self.tau_plus, self.temperature
            )
            loss = (log_den - pl.pos).mean()
        return LossOutput(
            loss,
            detached_logs(**cosine_logs(z), clamp_frac=clamped.float().mean()),
        )


class DecoupledContrastive(nn.Module):
    r"""Decoupled contrastive loss (Yeh et al., "Decoupled Contrastive Learning", ECCV 2022).

    NT-Xent with the positive removed from the denominator (no negative-positive coupling),
    Eq. (6) of the paper with the mean over anchors:

    .. math::
        \mathcal{L} = \operatorname{mean}_{a,p}\Big(-s_{ap} + \log\sum_{n} e^{s_{an}}\Big)

    over the N = B*V L2-normalised rows, :math:`s = u^\top u/\tau`, positives ``p`` the other
    views of the anchor's instance, negatives ``n`` every view of every other instance. The
    authors released no code; this follows the paper and the single log-sum-exp over all
    2B-2 negatives of ``raminnakhli/Decoupled-Contrastive-Learning`` ``loss/dcl.py::DCL``,
    averaged over both directions (the reduction of lightly's ``DCLLoss``).

    Args:
        temperature: :math:`\tau` (default 0.1, as both reference implementations).
        normalize: L2-normalise the projections.
        chunk_size: rows per block of a memory-bounded log-sum-exp over negatives (forward and
            backward in O(chunk_size x N) memory, same values; for batches of thousands);
            ``None``: the dense N x N logits.

    Example::

        >>> import torch
        >>> from sslkit.losses import DecoupledContrastive
        >>> z = torch.randn(8, 2, 16, requires_grad=True)  # [instances, views, dim]
        >>> out = DecoupledContrastive()(z)
        >>> out.loss.backward()
        >>> z.grad.shape
        torch.Size([8, 2, 16])
    """

    requires: ClassVar[frozenset[str]] = frozenset()
    uses_predictor: ClassVar[bool] = False

    def __init__(self, temperature: float = 0.1, normalize: bool = True,
                 chunk_size: int | None = None):
        super().__init__()
        _check_temperature(temperature)
        check_chunk_size(chunk_size)
        self.temperature = temperature
        self.normalize = normalize
        self.chunk_size = chunk_size

    def forward(self, z: Tensor, **_: object) -> LossOutput:
        check_views(z)
        with torch.autocast(z.device.type, enabled=False):
            pl = pair_logits(upcast(z), self.temperature, self.normalize, self.chunk_size)
            neg_lse = pl.negative_logsumexp()
            attraction = -pl.pos.mean()
            repulsion = neg_lse.mean()
            loss = attraction + repulsion
        return LossOutput(
            loss,
            detached_logs(**cosine_logs(z), attraction=attraction, repulsion=repulsion),
        )
