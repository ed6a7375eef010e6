"""NNCLR: InfoNCE with the nearest neighbour from a support set of past embeddings as positive."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslkit.losses.base import LossOutput, check_views, detached_logs
from sslkit.losses.cacr import check_positive, full_precision, prepare
from sslkit.losses.keys import check_keys


class NNCLR(nn.Module):
    r"""NNCLR loss (Dwibedi, Aytar, Tompson, Sermanet & Zisserman, "With a Little Help from My
    Friends: Nearest-Neighbor Contrastive Learning of Visual Representations", ICCV 2021).

    Called as ``head(z, k=projections, queue=support)``: ``z`` ``[B, V, D]`` are the *predictor*
    outputs :math:`p^v_i` of every view (``uses_predictor``), ``k`` ``[B, V, D]`` the projections
    :math:`z^w_i` of the same views, without gradient, and ``queue`` ``[S, D]`` the support set
    Q of unit projections of earlier batches. With unit vectors and
    :math:`\mathrm{NN}(z) = \arg\max_{q\in Q} \hat z\cdot q` (the projection itself while Q is
    still empty, at the very first step):

    .. math::
        \ell(w\to v) = \frac1B\sum_i -\log
            \frac{e^{\mathrm{NN}(z^w_i)\cdot \hat p^v_i/\tau}}
                 {\sum_j e^{\mathrm{NN}(z^w_i)\cdot \hat p^v_j/\tau}},\qquad
        \mathcal L = \frac{1}{V(V-1)}\sum_{v\ne w}\ell(w\to v)

    i.e. the paper's Eq. 2 with the predictor of its Sec. 3.2 (each neighbour's row runs over the
    other view's predictions of the batch), symmetrised; for V = 2 it is
    ``nnclr_loss_func(nn1, p2) / 2 + nnclr_loss_func(nn2, p1) / 2`` of solo-learn's
    ``solo/methods/nnclr.py`` (no official code was released). Gradients reach only the
    predictions: the neighbours come from the support set. :meth:`enqueue` returns the unit
    projections of view 0, which the module pushes into its FIFO queue after the step (the
    paper updates the support set with one view's embeddings per batch).

    Where the projections come from: with ``momentum = None`` (the default) the training module
    passes as ``k`` the online projections of the views before the predictor, detached (and
    gathered across ranks), without any key network; the same ``k`` fills the support set.

    Args:
        temperature: :math:`\tau` (paper 0.1; solo-learn's CIFAR recipe 0.2).
        queue_size: support-set size S (paper 98304 on ImageNet; solo-learn 65536; here 32768,
            the largest power of two below the 50k/60k images of CIFAR/Fashion-MNIST, which the
            module requires of a queue).
        momentum: None (NNCLR: ``k`` are the online network's projections, detached) or the EMA
            coefficient of a momentum encoder giving ``k`` (a variant).

    Logs: ``nn_cos`` (mean cosine of a projection to its neighbour), ``acc1`` (how often a
    neighbour scores its own instance's prediction highest).

    Example::

        >>> import torch
        >>> from sslkit.losses import NNCLR
        >>> p = torch.randn(8, 2, 16, requires_grad=True)  # predictor outputs
        >>> support = torch.nn.functional.normalize(torch.randn(32, 16), dim=-1)
        >>> NNCLR()(p, k=torch.randn(8, 2, 16), queue=support).loss.backward()
    """

    requires: ClassVar[frozenset[str]] = frozenset({"k", "queue"})
    uses_predictor: ClassVar[bool] = True
    shuffle_bn: ClassVar[bool] = False

    def __init__(self, temperature: float = 0.1, queue_size: int = 32768,
                 momentum: float | None = None) -> None:
        super().__init__()
        check_positive(temperature=temperature)
        if int(queue_size) != queue_size or queue_size < 1:
            raise ValueError(f"queue_size must be a positive integer, got {queue_size}")
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be None or in [0, 1], got {momentum}")
        self.temperature = float(temperature)
        self.queue_size = int(queue_size)
        self.momentum = None if momentum is None else float(momentum)

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, queue_size={self.queue_size}, "
                f"momentum={self.momentum}")

    def enqueue(self, k: Tensor) -> Tensor:
        """Rows ``[B, D]`` for the support set: view 0's projections, normalised."""
        return F.normalize(k[:, 0].detach(), dim=-1)

    def neighbours(self, k: Tensor, queue: Tensor) -> tuple[Tensor, Tensor]:
        """Nearest support-set row of each normalised projection ``k`` ``[B, V, D]`` (by cosine;
        the projection itself when the set is empty) and its cosine to it."""
        with torch.no_grad():
            z = F.normalize(k, dim=-1)
            if queue.shape[0] == 0:
                return z, torch.ones(z.shape[:-1], dtype=z.dtype, device=z.device)
            support = queue.detach().to(z.dtype)
            sims = z @ support.T  # [B, V, S]
            best, idx = sims.max(dim=-1)
            return support[idx], best

    def forward(self, z: Tensor, k: Tensor | None = None, queue: Tensor | None = None,
                **_: object) -> LossOutput:
        check_views(z)
        check_keys("nnclr", z, k, z.shape[1])
        batch, views, dim = z.shape
        if queue is None or queue.dim() != 2 or queue.shape[1] != dim:
            got = None if queue is None else tuple(queue.shape)
            raise ValueError(f"nnclr needs queue=Tensor[S, {dim}] (the support set), got {got}")
        with full_precision(z):
            p = prepare(z, True)
            nn_rows, nn_cos = self.neighbours(k.detach().to(p.dtype), queue)
            grid = torch.arange(views, device=p.device)
            pv, nv = torch.meshgrid(grid, grid, indexing="ij")
            off = pv != nv
            preds = p[:, pv[off]].transpose(0, 1)  # [P, B, D]: view v's predictions
            anchors = nn_rows[:, nv[off]].transpose(0, 1)  # [P, B, D]: neighbours of view w
            logits = anchors @ preds.transpose(-2, -1) / self.temperature  # [P, B, B]
            pos = logits.diagonal(dim1=-2, dim2=-1)
            loss = (torch.logsumexp(logits, dim=-1) - pos).mean()
            with torch.no_grad():
                acc1 = (logits.argmax(-1) == torch.arange(batch, device=p.device)).float().mean()
        return LossOutput(loss, detached_logs(nn_cos=nn_cos.mean(), acc1=acc1))
