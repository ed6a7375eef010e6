"""MoCo v3: symmetric InfoNCE of predicted queries against in-batch momentum keys."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from sslkit.losses.base import LossOutput, check_views, detached_logs
from sslkit.losses.cacr import check_positive, full_precision, prepare
from sslkit.losses.keys import check_keys


class MoCoV3(nn.Module):
    r"""MoCo v3 loss (Chen, Xie & He, "An Empirical Study of Training Self-Supervised Vision
    Transformers", ICCV 2021).

    Called as ``head(z, k=keys)``: ``z`` ``[B, V, D]`` are the queries, the online *predictor*
    outputs of every view (``uses_predictor``); ``k`` ``[B, V, D]`` the momentum encoder's
    projections of the same views (stop-gradient applied here). No queue: the keys of the other
    instances in the (global) batch are the negatives. With unit vectors and

    .. math::
        \operatorname{ctr}(q, k) = 2\tau\cdot\frac1B\sum_i
            -\log\frac{e^{q_i\cdot k_i/\tau}}{\sum_j e^{q_i\cdot k_j/\tau}},\qquad
        \mathcal L = \frac{2}{V(V-1)}\sum_{v\ne w}\operatorname{ctr}(q^v, k^w)

    For V = 2 this is ``ctr(q1, k2) + ctr(q2, k1)`` of ``facebookresearch/moco-v3``
    ``moco/builder.py`` (``contrastive_loss``: cross-entropy of ``q @ k.T / T`` against the
    diagonal, times ``2 * T``). The official code computes each GPU's queries against the keys
    gathered from all GPUs; this head sees the global batch, which is the same loss on one
    process and the mean of the per-GPU losses otherwise. With two views it is twice
    :class:`~sslkit.losses.cacr_mocov3.CACRMoCoV3` (``cost="rbf"``).

    Args:
        temperature: :math:`\tau`.
        momentum: base EMA coefficient of the key encoder (official ``--moco-m`` 0.99), raised to
            1 by the cosine schedule the official recipes use (``--moco-m-cos``), named by
            ``momentum_schedule``.
        normalize: L2-normalise queries and keys (the official code does).

    Logs: ``acc1`` (how often a query's own key scores highest), ``pos_cos``, ``neg_cos``.

    Example::

        >>> import torch
        >>> from sslkit.losses import MoCoV3
        >>> q = torch.randn(8, 2, 16, requires_grad=True)  # predictor outputs, 2 views
        >>> out = MoCoV3()(q, k=torch.randn(8, 2, 16))
        >>> out.loss.backward()
    """

    requires: ClassVar[frozenset[str]] = frozenset({"k"})
    uses_predictor: ClassVar[bool] = True
    momentum_schedule: ClassVar[str] = "cosine"
    shuffle_bn: ClassVar[bool] = False  # MoCo v3 uses SyncBN, no shuffling

    def __init__(self, temperature: float = 0.2, momentum: float = 0.99,
                 normalize: bool = True) -> None:
        super().__init__()
        check_positive(temperature=temperature)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.temperature = float(temperature)
        self.momentum = float(momentum)
        self.normalize = bool(normalize)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, momentum={self.momentum}, normalize={self.normalize}"

    def forward(self, z: Tensor, k: Tensor | None = None, **_: object) -> LossOutput:
        check_views(z)
        check_keys("mocov3", z, k, z.shape[1])
        batch, views, _ = z.shape
        t = self.temperature
        with full_precision(z):
            q = prepare(z, self.normalize)
            key = prepare(k.detach(), self.normalize, q.dtype)
            grid = torch.arange(views, device=q.device)
            qv, kv = torch.meshgrid(grid, grid, indexing="ij")
            off = qv != kv
            qs = q[:, qv[off]].transpose(0, 1)  # [P, B, D], P = V(V-1) ordered pairs
            ks = key[:, kv[off]].transpose(0, 1)
            logits = qs @ ks.transpose(-2, -1) / t  # [P, B, B]
            pos = logits.diagonal(dim1=-2, dim2=-1)
            ce = torch.logsumexp(logits, dim=-1) - pos  # [P, B]
            loss = 2.0 * (2.0 * t * ce.mean())  # 2/(V(V-1)) * sum over pairs
            with torch.no_grad():
                acc1 = (logits.argmax(dim=-1) == torch.arange(batch, device=q.device)).float().mean()
                cos = logits * t
                pos_cos = cos.diagonal(dim1=-2, dim2=-1).mean()
                neg_cos = (cos.sum() - cos.diagonal(dim1=-2, dim2=-1).sum()) / (
                    cos.shape[0] * batch * (batch - 1))
        return LossOutput(loss, detached_logs(acc1=acc1, pos_cos=pos_cos, neg_cos=neg_cos))
