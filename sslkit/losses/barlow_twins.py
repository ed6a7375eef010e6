"""Barlow Twins: the cross-correlation of two views' standardised embeddings driven to identity."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from sslkit.losses.base import LossOutput, check_views, detached_logs
from sslkit.losses.cacr import check_nonnegative, check_positive, full_precision, prepare


class BarlowTwins(nn.Module):
    r"""Barlow Twins loss (Zbontar, Jing, Misra, LeCun & Deny, "Barlow Twins: Self-Supervised
    Learning via Redundancy Reduction", ICML 2021).

    Each view's raw projections ``z[:, v]`` ``[B, D]`` are standardised per dimension over the
    batch, as an affine-free ``BatchNorm1d`` in training mode does (biased variance, ``eps``):
    :math:`\hat z_{bi} = (z_{bi} - \mu_i)/\sqrt{\sigma_i^2 + \epsilon}`. For a pair of views A, B
    the cross-correlation matrix and the loss are

    .. math::
        \mathcal C_{ij} = \frac1B\sum_b \hat z^A_{bi}\,\hat z^B_{bj},\qquad
        \mathcal L_{AB} = s\Big[\sum_i (1 - \mathcal C_{ii})^2
            + \lambda\sum_i\sum_{j\ne i}\mathcal C_{ij}^2\Big]

    and :math:`\mathcal L` is the mean over the unordered pairs of views (the one pair for
    V = 2; :math:`\mathcal C_{BA} = \mathcal C_{AB}^\top` gives the same value). Follows
    ``facebookresearch/barlowtwins`` ``main.py`` (``BarlowTwins.forward``: ``self.bn`` on each
    view, ``c = bn(z1).T @ bn(z2) / batch_size`` summed over GPUs, ``on_diag + lambd *
    off_diag``), whose ``bn`` is converted to SyncBatchNorm: the statistics are those of the
    global batch, which this head sees.

    Args:
        lambd: :math:`\lambda`, weight of the redundancy-reduction term (official ``--lambd``
            0.0051; the paper rounds it to 5e-3).
        scale_loss: s, a factor on the whole loss. 1 in the current official code; an earlier
            official version scaled by ``--scale-loss`` 1/32 (with ``lambd`` 3.9e-3), and
            solo-learn keeps a ``scale_loss`` (0.024 by default, 0.1 in its CIFAR recipe).
            With SGD/LARS it acts like a learning-rate factor.
        eps: the BatchNorm epsilon of the standardisation (PyTorch's 1e-5).

    Logs: ``on_diag`` and ``off_diag``, the two sums above (unweighted, mean over pairs).

    Example::

        >>> import torch
        >>> from sslkit.losses import BarlowTwins
        >>> z = torch.randn(8, 2, 16, requires_grad=True)
        >>> BarlowTwins()(z).loss.backward()
    """

    requires: ClassVar[frozenset[str]] = frozenset()
    uses_predictor: ClassVar[bool] = False

    def __init__(self, lambd: float = 0.0051, scale_loss: float = 1.0, eps: float = 1e-5) -> None:
        super().__init__()
        check_nonnegative(lambd=lambd)
        check_positive(scale_loss=scale_loss, eps=eps)
        self.lambd, self.scale_loss, self.eps = float(lambd), float(scale_loss), float(eps)

    def extra_repr(self) -> str:
        return f"lambd={self.lambd}, scale_loss={self.scale_loss}, eps={self.eps}"

    def forward(self, z: Tensor, **_: object) -> LossOutput:
        check_views(z)
        batch, views, _ = z.shape
        with full_precision(z):
            x = prepare(z, False)
            mean = x.mean(dim=0, keepdim=True)
            var = x.var(dim=0, unbiased=False, keepdim=True)
            x = (x - mean) / torch.sqrt(var + self.eps)
            a, b = torch.triu_indices(views, views, offset=1, device=x.device)
            # [P, D, D]: C for every unordered pair of views
            corr = torch.einsum("bpi,bpj->pij", x[:, a], x[:, b]) / batch
            diag = corr.diagonal(dim1=-2, dim2=-1)
            on_diag = (1.0 - diag).square().sum(-1)
            off_diag = corr.square().sum((-2, -1)) - diag.square().sum(-1)
            loss = self.scale_loss * (on_diag + self.lambd * off_diag).mean()
        return LossOutput(loss, detached_logs(on_diag=on_diag.mean(), off_diag=off_diag.mean()))
