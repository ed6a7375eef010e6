"""SwAV: swapped prediction of Sinkhorn-Knopp cluster codes over learnable prototypes."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from sslkit.errors import ConfigError
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

    **Queue** (official ``--queue_length``, off at 0; for small batches). With
    ``queue_length`` = L > 0 the head asks for ``queue`` (``requires``) and the training module
    keeps it in its FIFO :class:`~sslkit.parts.queue.KeyQueue`: from epoch
    ``epoch_queue_starts`` on, :meth:`enqueue` hands it the unit embeddings
    :math:`\hat z^a` of the global views of each step's global batch after the loss. Once it
    holds L earlier embeddings :math:`u^a_1..u^a_L` per global view (it is full: the official
    ``use_the_queue``, set once the last queue row is non-zero), the codes of view a come from
    Sinkhorn-Knopp over the L + B rows of the stacked scores, of which the batch's B are kept:

    .. math::
        q^a = \operatorname{SK}\!\left(\begin{bmatrix} u^a C^\top \\ s^a\end{bmatrix}
            \right)_{L+1..L+B}

    (rows sum to 1; each prototype receives about (L + B)/K of the whole). The queue enters the
    codes only, without gradient, scored against the current prototypes (official ``train``:
    ``torch.cat((torch.mm(queue[i], prototypes.weight.t()), out))``, then
    ``distributed_sinkhorn(out)[-bs:]``; the queue is shifted and refilled with the batch's
    embeddings in the same step, after its scores were taken). Official ``main_swav.py`` keeps
    one queue of ``queue_length // world_size`` local embeddings per GPU, whose all-reduced
    Sinkhorn runs over all of them: here the module's queue holds the embeddings of the
    gathered global batch, the same L rows per view as the union of those per-GPU queues, and
    is identical on every rank, so the rank-0 checkpoint holds all of it and a resume is
    bit-exact (the official code saves one queue file per GPU). L must be a multiple of the
    batch the head sees (the global batch): the official code rounds it down to a multiple of
    ``batch_size * world_size`` (to 0, no queue, when shorter); this head refuses instead.
    The order of the queue's rows (a ring buffer here, shifted in the official code) does not
    change the codes: Sinkhorn-Knopp treats each row alike. With ``model.loss_scope=local``
    (codes per rank, not an official setting) the queue still holds every rank's embeddings.

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
        queue_length: L, earlier embeddings per global view in the queue (official
            ``--queue_length`` 0: no queue; its ImageNet batch-256 scripts use 3840).
        epoch_queue_starts: first (0-based) epoch whose embeddings fill the queue (official
            ``--epoch_queue_starts`` 15); it is used once full.
        dim: input dimension, if known (null: from the first batch).

    Logs: ``code_entropy`` (mean entropy of a code), ``usage_entropy`` (entropy of the mean
    code: log K when the prototypes are used equally), ``frozen`` (1 while the prototypes are
    frozen), and with a queue ``queue_in_use`` (1 once the codes include it).

    Example::

        >>> import torch
        >>> from sslkit.losses import SwAV
        >>> z = torch.randn(8, 2, 16, requires_grad=True)
        >>> SwAV(num_prototypes=10)(z).loss.backward()
        >>> head = SwAV(num_prototypes=10, queue_length=8, epoch_queue_starts=0)
        >>> queue = head.enqueue(torch.randn(8, 2, 16))  # what the module's queue takes: [16, 16]
        >>> head(z, queue=queue).logs["queue_in_use"]  # full: 8 embeddings per global view
        1.0
    """

    uses_predictor: ClassVar[bool] = False
    # with a queue: its rows are the online projections of the global views (no key network)
    momentum: ClassVar[None] = None

    def __init__(self, num_prototypes: int = 3000, temperature: float = 0.1,
                 epsilon: float = 0.05, sinkhorn_iterations: int = 3, n_global: int = 2,
                 freeze_prototypes_iters: int = 313, queue_length: int = 0,
                 epoch_queue_starts: int = 15, dim: int | None = None) -> None:
        super().__init__()
        check_positive(temperature=temperature, epsilon=epsilon)
        for name, value, low in (("sinkhorn_iterations", sinkhorn_iterations, 1),
                                 ("n_global", n_global, 1),
                                 ("freeze_prototypes_iters", freeze_prototypes_iters, 0),
                                 ("queue_length", queue_length, 0),
                                 ("epoch_queue_starts", epoch_queue_starts, 0)):
            if int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value}")
        self.temperature, self.epsilon = float(temperature), float(epsilon)
        self.sinkhorn_iterations = int(sinkhorn_iterations)
        self.n_global = int(n_global)
        self.freeze_prototypes_iters = int(freeze_prototypes_iters)
        self.queue_length, self.epoch_queue_starts = int(queue_length), int(epoch_queue_starts)
        # the module builds its KeyQueue of queue_size rows (L per global view, interleaved:
        # row n_global * j + a is view a) when the head requires "queue", filled from key_views
        self.requires = frozenset({"queue"}) if self.queue_length else frozenset()
        self.queue_size = self.n_global * self.queue_length
        self.key_views = slice(0, self.n_global)
        self.prototypes = Prototypes(num_prototypes, dim, normalization="inplace")
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        # not a buffer: set before every training forward from the trainer's epoch, which the
        # checkpoint's loop state restores (checkpoints of heads without it keep loading)
        self.epoch = 0

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, epsilon={self.epsilon}, "
                f"sinkhorn_iterations={self.sinkhorn_iterations}, n_global={self.n_global}, "
                f"freeze_prototypes_iters={self.freeze_prototypes_iters}, "
                f"queue_length={self.queue_length}, epoch_queue_starts={self.epoch_queue_starts}")

    def materialize(self, dim: int) -> None:
        """Create the prototypes for ``dim``-dimensional projections (before the optimiser)."""
        self.prototypes.materialize(dim)

    def set_progress(self, step: int, epoch: int = 0) -> None:
        """The optimiser steps done so far (the official ``iteration``) and the 0-based epoch,
        before this step."""
        self.step.fill_(int(step))
        self.epoch = int(epoch)

    @property
    def queue_started(self) -> bool:
        """Whether this epoch's embeddings go into the queue (official: it exists)."""
        return self.queue_length > 0 and self.epoch >= self.epoch_queue_starts

    def enqueue(self, k: Tensor) -> Tensor:
        """Rows for the module's queue from the global views' projections ``k``
        ``[B, n_global, D]`` of the global batch: unit vectors, row ``n_global * i + a`` view a
        of instance i; none before ``epoch_queue_starts``."""
        if not self.queue_started:
            return k.new_zeros((0, k.shape[-1]))
        return prepare(k.detach(), True).reshape(-1, k.shape[-1])

    def queued(self, queue: Tensor | None, batch: int, dim: int) -> Tensor | None:
        """The queue ``[L, n_global, D]`` when the codes use it (started and full), else None;
        refuses a queue length the official code would not use as given."""
        if not self.queue_length:
            return None
        length = self.queue_length
        if length % batch:
            fix = max(batch, length - length % batch)
            raise ConfigError(
                f"swav: loss.queue_length={length} is not a multiple of the batch of {batch} the "
                f"head sees (the global batch; official main_swav.py rounds it down to one, and to "
                f"0, no queue, below it); set loss.queue_length={fix} or 0")
        if (queue is None or queue.dim() != 2 or queue.shape[1] != dim
                or queue.shape[0] > self.queue_size or queue.shape[0] % self.n_global):
            got = None if queue is None else tuple(queue.shape)
            raise ValueError(f"swav with queue_length={length} needs queue=Tensor[<= "
                             f"{self.queue_size}, {dim}] (the module's queue), got {got}")
        if not self.queue_started or queue.shape[0] < self.queue_size:
            return None
        return queue.detach().reshape(length, self.n_global, dim)

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

    def forward(self, z: Tensor, queue: Tensor | None = None, **_: object) -> LossOutput:
        check_views(z)
        batch, views, dim = z.shape
        if views < self.n_global:
            raise ValueError(f"swav: n_global={self.n_global} but z has only {views} views")
        memory = self.queued(queue, batch, dim)
        frozen = self.frozen
        with full_precision(z):
            x = prepare(z, False)
            scores = self.prototypes(x)  # [B, V, K], normalises x
            if memory is not None:
                with torch.no_grad():  # [L, n_global, K], the current prototypes
                    memory = memory.to(x.dtype) @ self.prototypes.matrix().to(x.dtype).T
            log_p = torch.log_softmax(scores / self.temperature, dim=-1)
            loss = x.new_zeros(())
            codes = []
            for a in range(self.n_global):
                s = scores[:, a].detach()
                if memory is not None:
                    s = torch.cat([memory[:, a], s])
                q = self.sinkhorn(s)[-batch:]
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
                if self.queue_length:
                    logs["queue_in_use"] = float(memory is not None)
        return LossOutput(loss, logs)
