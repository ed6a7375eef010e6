"""VICReg: invariance, variance and covariance terms on raw embeddings."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslkit.losses.base import LossOutput, check_views, detached_logs
from sslkit.losses.cacr import check_nonnegative, check_positive, full_precision, prepare


class VICReg(nn.Module):
    r"""VICReg loss (Bardes, Ponce & LeCun, "VICReg: Variance-Invariance-Covariance
    Regularization for Self-Supervised Learning", ICLR 2022).

    On the raw projections :math:`z^v` ``[B, D]`` of each view (B instances, D dimensions):

    .. math::
        s(z^a, z^b) = \frac{1}{BD}\sum_b\|z^a_b - z^b_b\|^2,\qquad
        v(z) = \frac1D\sum_j \max\!\big(0,\ 1 - \sqrt{\operatorname{Var}(z_{:,j}) + \epsilon}\big),

    .. math::
        c(z) = \frac1D\sum_{i\ne j} C(z)_{ij}^2,\quad
        C(z) = \frac{1}{B-1}\sum_b (z_b - \bar z)(z_b - \bar z)^\top

    (Var unbiased), and with :math:`\lambda, \mu, \nu` = ``sim_coeff``, ``std_coeff``,
    ``cov_coeff``:

    .. math::
        \mathcal L = \lambda\,\overline{s} + \mu\,\frac1V\sum_v v(z^v)
            + \nu\,\frac2V\sum_v c(z^v)

    where :math:`\overline s` is the mean of s over the unordered pairs of views. For V = 2 this
    is exactly ``facebookresearch/vicreg`` ``main_vicreg.py`` (``VICReg.forward``:
    ``repr_loss = F.mse_loss(x, y)``; ``std_loss`` the mean of the two views' hinge terms;
    ``cov_loss`` the *sum* of the two views' covariance terms). The official code takes the
    variance and covariance over the batch gathered from every GPU, as this head does, and the
    invariance per GPU (the same mean when the GPUs hold equal batches).

    Args:
        sim_coeff: :math:`\lambda`, invariance weight (official 25).
        std_coeff: :math:`\mu`, variance weight (official 25).
        cov_coeff: :math:`\nu`, covariance weight (official 1).
        eps: :math:`\epsilon` inside the square root of the variance (official 1e-4).

    Logs: ``invariance`` (:math:`\overline s`), ``variance`` (the mean of v), ``covariance``
    (:math:`\tfrac2V\sum_v c`), each unweighted, so that the loss is their weighted sum.

    Example::

        >>> import torch
        >>> from sslkit.losses import VICReg
        >>> z = torch.randn(8, 2, 16, requires_grad=True)
        >>> out = VICReg()(z)
        >>> sorted(out.logs)
        ['covariance', 'invariance', 'variance']
    """

    requires: ClassVar[frozenset[str]] = frozenset()
    uses_predictor: ClassVar[bool] = False

    def __init__(self, sim_coeff: float = 25.0, std_coeff: float = 25.0, cov_coeff: float = 1.0,
                 eps: float = 1e-4) -> None:
        super().__init__()
        check_nonnegative(sim_coeff=sim_coeff, std_coeff=std_coeff, cov_coeff=cov_coeff)
        check_positive(eps=eps)
        self.sim_coeff, self.std_coeff = float(sim_coeff), float(std_coeff)
        self.cov_coeff, self.eps = float(cov_coeff), float(eps)

    def extra_repr(self) -> str:
        return (f"sim_coeff={self.sim_coeff}, std_coeff={self.std_coeff}, "
                f"cov_coeff={self.cov_coeff}, eps={self.eps}")

    def forward(self, z: Tensor, **_: object) -> LossOutput:
        check_views(z)
        batch, views, dim = z.shape
        with full_precision(z):
            x = prepare(z, False)
            a, b = torch.triu_indices(views, views, offset=1, device=x.device)
            invariance = (x[:, a] - x[:, b]).square().mean()
            centred = x - x.mean(dim=0, keepdim=True)
            std = torch.sqrt(centred.square().sum(0) / (batch - 1) + self.eps)  # [V, D]
            variance = F.relu(1.0 - std).mean()
            cov = torch.einsum("bvi,bvj->vij", centred, centred) / (batch - 1)  # [V, D, D]
            off = cov.square().sum((-2, -1)) - cov.diagonal(dim1=-2, dim2=-1).square().sum(-1)
            covariance = 2.0 * (off / dim).mean()
            loss = (self.sim_coeff * invariance + self.std_coeff * variance
                    + self.cov_coeff * covariance)
        return LossOutput(loss, detached_logs(invariance=invariance, variance=variance,
                                              covariance=covariance))
