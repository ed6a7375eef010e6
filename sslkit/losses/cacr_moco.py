r"""CACR with a momentum encoder and a key queue (MoCo-v2 style): the ImageNet / WebVision form."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from sslkit.losses.base import LossOutput, check_views, detached_logs, sqdist
from sslkit.losses.cacr import (
    check_nonnegative,
    check_positive,
    entropy,
    full_precision,
    off_diagonal,
    prepare,
    warn_two_views,
)


class CACRMoCo(nn.Module):
    r"""CACR loss with momentum keys and a FIFO queue of negatives (Zheng et al., TMLR 2023).

    Called as ``head(z, k=keys, queue=queue)`` with ``z``: ``[B, V, D]`` online projections
    (queries, with gradient), ``k``: ``[B, V, D]`` momentum-encoder projections of the same V
    views (stop-gradient is applied here), ``queue``: ``[Q, D]`` past keys, one per row,
    L2-normalised (the official ``[D, Q]`` buffer, transposed). With :math:`q^x_i`, :math:`k^y_i`
    the normalised query / key of view x / y of instance i and :math:`d = \|\cdot\|^2`:

    .. math::
        \mathcal L_{CA} = \frac{\alpha}{VB}\sum_{x,i}\sum_{y\ne x}
            \mathrm{sg}\big[\operatorname{softmax}_{y\ne x}(\tau_+ d(q^x_i, k^y_i))\big]\,
            d(q^x_i, k^y_i)

    (each query attracts the momentum keys of the *other* views, weights stop-gradient), and,
    with negatives :math:`s_{i,m} = 2 - 2\,q^{x\top}_i Q_m` for the queue and
    :math:`s_{i,j} = d(q^x_i, q^x_j)`, :math:`j \ne i`, for the other queries of view x
    (``intra_batch``),

    .. math::
        \mathcal L_{CR} = \frac{\beta}{VB}\sum_{x,i}\sum_{n} w_{i,n}\,(-s_{i,n}),\qquad
        w_{i,\cdot} = \operatorname{softmax}\big(-\tau_-\,[\mathrm{sg}(s^{queue}_{i,\cdot}),\
            s^{intra}_{i,\cdot}]\big)

    and :math:`\mathcal L = \mathcal L_{CA} + \mathcal L_{CR}`. As in the official code the queue
    part of the negative weights is stop-gradient while the in-batch part is not (its gradient
    also reaches the queue weights through the shared normaliser).

    Follows ``large_scale_shift_experiments/imagenet/ours/builder.py``, ``MoCo.forward`` (same
    loss in ``webvision/ours/builder.py``) of github JegZheng/CACR-SSL. Deviation: the official
    forward caches the query-queue similarities on their first call, so every view reuses
    those of view 0 (only view 0 is repelled from the queue, counted V times); this head uses
    the intended :math:`q^x` for every view x. Without normalisation (``normalize=False``) the
    queue distance is the full :math:`\|q - Q_m\|^2` (the official ``2 - 2 q^\top Q_m`` assumes
    unit vectors). Only the keys of the last view are enqueued (:meth:`enqueue`), as officially.
    An empty queue (sslkit's queue starts empty and fills up) with ``intra_batch=False`` leaves
    no negatives: the repulsion is then 0 (the official queue starts from random unit vectors).

    Args:
        alpha: scale of the attraction cost (official ``main_ours.py`` default 3.0).
        beta: scale of the repulsion cost (official default 3.0).
        tau_pos: inverse temperature of the positive weights (default 1.0).
        tau_neg: inverse temperature of the negative weights (default 1.0).
        intra_batch: also repel the other queries of the same view (default True; official
            ``--moco-unif-no-intra-batch`` turns it off).
        momentum: EMA coefficient of the key encoder, used by the training module (0.999).
        queue_size: length of the key queue, used by the training module (4096; the official
            ImageNet default 65536 exceeds Fashion-MNIST / CIFAR, see ``check_queue_fits``).
        normalize: L2-normalise queries and keys (the official code does).
        shuffle_bn: the training module runs the key encoder with shuffle BN (the official
            builder shuffles; ``model.shuffle_bn_groups`` sets the groups in one process).

    Every view is a query and a key (``query_views`` / ``key_views`` default to all views), so
    keys of local crops would enter the attraction: the training module refuses local crops.

    Logs: ``attraction``, ``repulsion``, ``pos_w_entropy``/``pos_w_max``,
    ``neg_w_entropy``/``neg_w_max`` (per-query mean entropy / largest weight),
    ``neg_w_intra`` (weight mass on in-batch negatives), ``pos_sqdist`` (query to other views'
    keys), ``queue_sqdist`` (query to queue).

    Example::

        >>> import torch
        >>> from sslkit.losses import CACRMoCo
        >>> z = torch.randn(8, 2, 16, requires_grad=True)  # [instances, views, dim]
        >>> out = CACRMoCo(queue_size=32)(z, k=torch.randn(8, 2, 16), queue=torch.randn(32, 16))
        >>> out.loss.backward()
        >>> z.grad.shape
        torch.Size([8, 2, 16])
    """

    requires: ClassVar[frozenset[str]] = frozenset({"k", "queue"})
    uses_predictor: ClassVar[bool] = False

    def __init__(
        self,
        alpha: float = 3.0,
        beta: float = 3.0,
        tau_pos: float = 1.0,
        tau_neg: float = 1.0,
        intra_batch: bool = True,
        momentum: float = 0.999,
        queue_size: int = 4096,
        normalize: bool = True,
        shuffle_bn: bool = True,
    ) -> None:
        super().__init__()
        check_nonnegative(alpha=alpha, beta=beta)
        check_positive(tau_pos=tau_pos, tau_neg=tau_neg, queue_size=queue_size)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        if int(queue_size) != queue_size:
            raise ValueError(f"queue_size must be an integer, got {queue_size}")
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.tau_pos = float(tau_pos)
        self.tau_neg = float(tau_neg)
        self.intra_batch = bool(intra_batch)
        self.momentum = float(momentum)
        self.queue_size = int(queue_size)
        self.normalize = bool(normalize)
        self.shuffle_bn = bool(shuffle_bn)

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, beta={self.beta}, tau_pos={self.tau_pos}, "
            f"tau_neg={self.tau_neg}, intra_batch={self.intra_batch}, momentum={self.momentum}, "
            f"queue_size={self.queue_size}, normalize={self.normalize}, shuffle_bn={self.shuffle_bn}"
        )

    @torch.no_grad()
    def enqueue(self, k: Tensor) -> Tensor:
        """Rows to push into the queue after the step: the last view's keys, ``[B, D]``."""
        last = k[:, -1].detach()
        return prepare(last, self.normalize, last.dtype)

    def forward(
        self, z: Tensor, k: Tensor | None = None, queue: Tensor | None = None, **_: object
    ) -> LossOutput:
        check_views(z)
        warn_two_views(self, "cacr_moco", z.shape[1])
        if k is None or queue is None:
            raise ValueError("cacr_moco needs k=[B, V, D] momentum keys and queue=[Q, D]")
        if k.shape != z.shape:
            raise ValueError(f"k must have the shape of z {tuple(z.shape)}, got {tuple(k.shape)}")
        if queue.dim() != 2 or queue.shape[1] != z.shape[2]:
            raise ValueError(f"queue must be [Q, {z.shape[2]}], got {tuple(queue.shape)}")
        batch, views, _ = z.shape
        with full_precision(z):
            q = prepare(z, self.normalize)
            key = prepare(k.detach(), self.normalize, q.dtype)
            bank = queue.detach().to(q.dtype)

            # attraction: query view x against the keys of the other views, [B, V, V-1]
            d_pos = off_diagonal(sqdist(q, key))
            w_pos = torch.softmax(self.tau_pos * d_pos.detach(), dim=-1)
            attraction = self.alpha * (w_pos * d_pos).sum(-1).mean()

            # repulsion. Queue part, [V, B, Q]: its weights are stop-gradient, so with
            # a = softmax(-tau_neg * s_queue) (no grad) and m = a @ queue the weighted queue cost
            # sum_m a_m s_m is 2 - 2 q.m (normalised) and only [V, B, D] tensors carry gradient.
            qv = q.transpose(0, 1)
            n_queue = bank.shape[0]
            log_norms = []  # log-normalisers of the queue and the in-batch blocks
            if n_queue:
                with torch.no_grad():
                    a = qv @ bank.T
                    if self.normalize:  # -tau * (2 - 2 q.Q)
                        a.mul_(2.0 * self.tau_neg).sub_(2.0 * self.tau_neg)
                    else:  # -tau * (|q|^2 + |Q|^2 - 2 q.Q)
                        a.mul_(2.0 * self.tau_neg).sub_(self.tau_neg * bank.pow(2).sum(-1))
                        a.sub_(self.tau_neg * qv.pow(2).sum(-1, keepdim=True))
                    lse_queue = torch.logsumexp(a, dim=-1)
                    max_logit = a.amax(-1)
                    a.sub_(lse_queue.unsqueeze(-1)).exp_()  # a = softmax weights
                    mean_key = a @ bank  # [V, B, D]
                    a_sqnorm = None if self.normalize else a @ bank.pow(2).sum(-1)
                if self.normalize:
                    cost_queue = 2.0 - 2.0 * (qv * mean_key).sum(-1)
                else:
                    cost_queue = qv.pow(2).sum(-1) + a_sqnorm - 2.0 * (qv * mean_key).sum(-1)
                log_norms.append(lse_queue)
            if self.intra_batch:
                eye = torch.eye(batch, dtype=torch.bool, device=q.device)
                s_intra = sqdist(qv, qv).masked_fill(eye, 0.0)  # [V, B, B]
                logit_intra = (-self.tau_neg * s_intra).masked_fill(eye, float("-inf"))
                lse_intra = torch.logsumexp(logit_intra, dim=-1)
                log_norms.append(lse_intra)
            # one softmax over [queue, in-batch]: lse couples the two blocks (with gradient
            # through the in-batch distances, as in the official concatenated softmax)
            if not log_norms:  # empty queue and no in-batch negatives: nothing to repel yet
                log_norms.append(torch.full_like(d_pos[..., 0].T, float("-inf")))
            lse = log_norms[0] if len(log_norms) == 1 else torch.logaddexp(*log_norms)
            rep = torch.zeros_like(lse)
            if n_queue:
                mass_queue = torch.exp(lse_queue - lse)  # total weight of the queue block
                rep = rep + mass_queue * cost_queue
            if self.intra_batch:
                w_intra = torch.exp(logit_intra - lse.unsqueeze(-1))
                rep = rep + (w_intra * s_intra).sum(-1)
            repulsion = -self.beta * rep.mean()
            loss = attraction + repulsion

            with torch.no_grad():
                zero = torch.zeros_like(lse)
                neg_ent, neg_max, intra_mass, queue_sq = zero, zero, zero, zero
                if n_queue:
                    # entropy of the queue block: mass * (H(a) - log mass), H(a) = lse + tau*E_a[s]
                    h_queue = lse_queue + self.tau_neg * cost_queue
                    neg_ent = mass_queue * (h_queue - (lse_queue - lse))
                    neg_max = mass_queue * torch.exp(max_logit - lse_queue)
                    centre = bank.mean(0)
                    queue_sq = (qv - centre).pow(2).sum(-1) + (
                        bank.pow(2).sum(-1).mean() - centre.pow(2).sum()
                    )
                if self.intra_batch:
                    neg_ent = neg_ent + entropy(w_intra)
                    neg_max = torch.maximum(neg_max, w_intra.amax(-1))
                    intra_mass = w_intra.sum(-1)
                logs = detached_logs(
                    attraction=attraction,
                    repulsion=repulsion,
                    pos_w_entropy=entropy(w_pos).mean(),
                    pos_w_max=w_pos.amax(-1).mean(),
                    neg_w_entropy=neg_ent.mean(),
                    neg_w_max=neg_max.mean(),
                    neg_w_intra=intra_mass.mean(),
                    pos_sqdist=d_pos.mean(),
                    queue_sqdist=queue_sq.mean(),
                )
        return LossOutput(loss, logs)
