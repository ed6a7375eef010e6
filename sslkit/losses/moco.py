"""MoCo v2: InfoNCE against a momentum key and a FIFO queue of past keys (He et al. 2020)."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslkit.losses.base import LossOutput, detached_logs, upcast, view_major
from sslkit.losses.chunked import check_chunk_size, map_row_blocks


class MoCo(nn.Module):
    r"""MoCo v2 loss (He et al., CVPR 2020; Chen, Fan, Girshick, He, "Improved Baselines with
    Momentum Contrastive Learning", 2020).

    View 0 is the query :math:`q_i` (online encoder); the momentum encoder's keys of the other
    views are its positives; the queue rows :math:`n_j` are the negatives. All L2-normalised, no
    gradient to keys or queue:

    .. math::
        \mathcal{L} = \operatorname{mean}_{i,\,w\ge1}
        -\log\frac{e^{q_i^\top k^w_i/\tau}}{e^{q_i^\top k^w_i/\tau} + \sum_j e^{q_i^\top n_j/\tau}}

    Called as ``head(z, k=keys, queue=queue)`` with ``z`` ``[B, 1, D]``: the query view only
    (``query_views`` = view 0) and ``k`` ``[B, V-1, D]``: the keys of the other views
    (``key_views`` = views 1..V-1), so the training module runs the online encoder on one view
    and the key encoder on V - 1, as the official code does. For V = 2 this is exactly the
    official, asymmetric loss (``im_q`` = view 0, ``im_k`` = view 1); for V > 2 every other
    view's key is a positive, each with its own term. Follows
    ``facebookresearch/moco`` ``moco/builder.py::MoCo.forward`` (logits ``[l_pos, l_neg] / T``,
    cross-entropy with target 0) and ``_dequeue_and_enqueue``.

    Queue layout: ``queue`` is ``Tensor[Q, D]``, one L2-normalised key per row, oldest first or
    in any order (the loss does not depend on the order). The official buffer is its transpose,
    ``[D, K]`` columns, initialised with normalised Gaussian noise. :meth:`enqueue` returns the
    rows to push after the step: the normalised keys it was given (views 1..V-1, view-major),
    i.e. those of view 1 for V = 2, as the official code enqueues its keys.

    Args:
        temperature: :math:`\tau` (MoCo v2 recipe ``--moco-t 0.2``; the builder's v1 default is 0.07).
        momentum: EMA coefficient of the key encoder, used by the training module (0.999).
        queue_size: number of queued negative keys, used by the training module (4096, as
            MoCo's CIFAR-10 demo; the ImageNet builder's 65536 exceeds Fashion-MNIST / CIFAR).
        normalize: L2-normalise queries and keys (the official model does).
        shuffle_bn: the training module runs the key encoder with shuffle BN (the official
            builder shuffles; ``model.shuffle_bn_groups`` sets the groups in one process).
        chunk_size: queries per block of the ``[B, Q]`` logits against the queue, computed a
            block at a time forward and recomputed in backward (memory O(chunk_size x Q)
            instead of O(B x Q), same values and gradients; see
            :func:`sslkit.losses.chunked.map_row_blocks`); ``None``: all B rows at once.

    Example::

        >>> import torch
        >>> from sslkit.losses import MoCo
        >>> z = torch.randn(8, 1, 16, requires_grad=True)  # the query view of 8 instances
        >>> k = torch.randn(8, 1, 16)  # the momentum keys of the other view
        >>> out = MoCo(queue_size=32)(z, k=k, queue=torch.randn(32, 16))
        >>> out.loss.backward()
        >>> z.grad.shape
        torch.Size([8, 1, 16])
    """

    requires: ClassVar[frozenset[str]] = frozenset({"k", "queue"})
    uses_predictor: ClassVar[bool] = False
    query_views: ClassVar[slice] = slice(0, 1)
    key_views: ClassVar[slice] = slice(1, None)

    def __init__(
        self,
        temperature: float = 0.2,
        momentum: float = 0.999,
        queue_size: int = 4096,
        normalize: bool = True,
        shuffle_bn: bool = True,
        chunk_size: int | None = None,
    ):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0 <= momentum <= 1:
            raise ValueError(f"momentum (EMA coefficient) must be in [0, 1], got {momentum}")
        if int(queue_size) != queue_size or queue_size < 1:
            raise ValueError(f"queue_size must be a positive integer, got {queue_size}")
        self.temperature = temperature
        self.momentum = momentum
        self.queue_size = int(queue_size)
        self.normalize = normalize
        self.shuffle_bn = bool(shuffle_bn)
        check_chunk_size(chunk_size)
        self.chunk_size = chunk_size

    def enqueue(self, k: Tensor) -> Tensor:
        """Rows ``[(V-1)*B, D]`` to push into the queue: the keys used as positives (``k`` as
        passed to ``forward``), normalised."""
        rows = view_major(k.detach())
        return F.normalize(rows, dim=-1) if self.normalize else rows

    def forward(
        self, z: Tensor, k: Tensor | None = None, queue: Tensor | None = None, **_: object
    ) -> LossOutput:
        if z.dim() != 3 or z.shape[1] != 1:
            raise ValueError(
                "MoCo reads one query view: z must be [B, 1, D] (z[:, query_views]), got "
                f"{tuple(z.shape)}"
            )
        if k is None or queue is None:
            raise ValueError("MoCo needs head(z, k=Tensor[B, V-1, D], queue=Tensor[Q, D])")
        batch, _, dim = z.shape
        if k.dim() != 3 or k.shape[0] != batch or k.shape[2] != dim or k.shape[1] < 1:
            raise ValueError(
                f"keys k must be [{batch}, >=1, {dim}] (the keys of the views other than the "
                f"query), got {tuple(k.shape)}"
            )
        if queue.dim() != 2 or queue.shape[1] != z.shape[2]:
            raise ValueError(f"queue must be [Q, {z.shape[2]}], got {tuple(queue.shape)}")
        with torch.autocast(z.device.type, enabled=False):
            q = upcast(z[:, 0])
            keys = k.detach().to(q.dtype)
            if self.normalize:
                q = F.normalize(q, dim=-1)
                keys = F.normalize(keys, dim=-1)
            l_pos = torch.einsum("bd,bwd->bw", q, keys) / self.temperature
            queue_t = queue.detach().to(q.dtype).T
            neg_lse, largest, total = map_row_blocks(
                _queue_block, q, self.chunk_size, queue_t, self.temperature)
            loss = (torch.logaddexp(l_pos, neg_lse[:, None]) - l_pos).mean()
            with torch.no_grad():
                hit = l_pos > largest[:, None]  # largest is -inf for an empty queue: all hit
                pos_sim = l_pos.mean() * self.temperature
                n_neg = batch * queue.shape[0]
                neg_sim = total.sum() / n_neg * self.temperature if n_neg else l_pos.new_zeros(())
        return LossOutput(
            loss, detached_logs(pos_sim=pos_sim, neg_sim=neg_sim, acc1=hit.float().mean())
        )


def _queue_block(q: Tensor, start: int, queue_t: Tensor, temperature: float
                 ) -> tuple[Tensor, Tensor, Tensor]:
    """For each query row of ``q``: the log-sum-exp of its logits against the queue (``queue_t``
    ``[D, Q]``) and, without gradient, their largest value (-inf if Q = 0) and their sum."""
    l_neg = (q @ queue_t) / temperature
    lse = l_neg.logsumexp(dim=1)
    with torch.no_grad():
        largest = l_neg.amax(dim=1) if l_neg.shape[1] else torch.full_like(lse, float("-inf"))
        total = l_neg.sum(dim=1)
    return lse, largest, total
