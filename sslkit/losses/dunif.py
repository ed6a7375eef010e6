"""Decoupled uniformity, optionally with a prior kernel (Dufumier et al., ICML 2023)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslkit.losses.au import log_mean_gaussian_potential
from sslkit.losses.base import LossOutput, check_views, detached_logs, sqdist, upcast

KERNELS = (None, "rbf", "cosine")


class DecoupledUniformity(nn.Module):
    r"""Decoupled uniformity (Dufumier, Barbano, Louiset, Duchesnay, Gori, "Integrating Prior
    Knowledge in Contrastive Learning with Kernel", ICML 2023).

    Views are L2-normalised and averaged into (un-normalised) centroids
    :math:`\mu_i = \frac1V\sum_v z_i^v/\|z_i^v\|`; the loss is the uniformity of the centroids,

    .. math:: \mathcal{L} = \log \frac{1}{B(B-1)}\sum_{i\ne j} e^{-t\|\mu_i - \mu_j\|^2}.

    There is no separate alignment term: :math:`\|\mu_i\|^2` grows as the views of ``i`` align,
    so spreading the centroids also aligns positives, with gradient weights that depend only on
    centroid distances (no positive in a softmax denominator).

    With a prior (``kernel`` not ``None``), ``head(z, prior=prior[B, P])`` replaces the centroids
    by the conditional-mean-embedding estimate :math:`\hat\mu = \alpha\,\mu` with
    :math:`\alpha = (K + \lambda I)^{-1} K`, :math:`K_{ij} = k(\mathrm{prior}_i, \mathrm{prior}_j)`;
    :math:`\alpha` is treated as a constant (no gradient). Kernels: ``rbf``
    :math:`e^{-\|x-y\|^2 / (2\sigma^2)}`, ``cosine`` :math:`x^\top y / (\|x\|\|y\|)`. With
    :math:`K = I`, :math:`\hat\mu = \mu/(1+\lambda)`.

    Follows ``Duplums/contrastive-decoupled-uniformity``
    ``src/decoupled_uniformity.py::DecoupledUniformityLoss`` (``forward``, ``_get_centroids``,
    ``uniform_loss``) and ``src/util.py::RBFKernel, CosineKernel``. Differences: the official
    ``CosineKernel`` calls ``torch.functional.normalize``, which does not exist (AttributeError),
    so ``kernel='cosine'`` never ran; here it normalises with ``torch.nn.functional.normalize``
    as intended. The official code casts a 1-D prior with ``.float()`` (a dtype clash in
    float64) and adds :math:`\lambda` through a float32 ``torch.eye`` (so float64 runs use
    float32-rounded :math:`\lambda`); here prior and :math:`\lambda` take the compute dtype.
    The official code silently ignores the kernel when no prior is passed; here that is an
    error. :math:`\alpha` is obtained with a linear solve instead of an explicit inverse; the
    uniformity is a log-sum-exp rather than ``pdist().pow(2).mul(-t).exp().mean().log()``
    (same value).

    Args:
        t: scale :math:`t > 0` of the Gaussian potential (official default 2).
        kernel: ``None`` (no prior), ``"rbf"`` or ``"cosine"`` (official default ``None``).
        sigma: RBF bandwidth :math:`\sigma > 0`, required for ``kernel="rbf"`` (no official
            default; the paper's recipes use 10 to 100).
        lam: ridge :math:`\lambda \ge 0` of the estimator (official default 0.01);
            0 means :math:`1/\sqrt{B}`.
        normalize: L2-normalise each view before averaging (the official code does).

    Logs ``align`` :math:`= -\operatorname{mean}_i\|\hat\mu_i\|^2` (the official alignment
    metric, lower is better aligned), ``unif`` (the loss), and with a kernel ``cme_diag``
    (mean of :math:`\alpha_{ii}`) and ``cme_offdiag`` (mean over ``i`` of
    :math:`\sum_{j\ne i}|\alpha_{ij}|`), how much a centroid borrows from other instances.

    Example::

        >>> import torch
        >>> from sslkit.losses import DecoupledUniformity
        >>> z = torch.randn(8, 2, 16, requires_grad=True)  # [instances, views, dim]
        >>> out = DecoupledUniformity()(z)
        >>> out.loss.backward()
        >>> z.grad.shape
        torch.Size([8, 2, 16])
    """

    requires: frozenset[str] = frozenset()  # set per instance: {"prior"} with a kernel
    uses_predictor: ClassVar[bool] = False

    def __init__(
        self,
        t: float = 2.0,
        kernel: str | None = None,
        sigma: float | None = None,
        lam: float = 0.01,
        normalize: bool = True,
    ):
        super().__init__()
        if not t > 0:
            raise ValueError(f"t must be > 0, got {t}")
        if kernel not in KERNELS:
            raise ValueError(f"unknown kernel {kernel!r}; valid choices: null, 'rbf', 'cosine'")
        if kernel == "rbf" and (sigma is None or not sigma > 0):
            raise ValueError(f"kernel='rbf' needs a bandwidth sigma > 0, got sigma={sigma}")
        if not lam >= 0:
            raise ValueError(f"lam must be >= 0 (0 means 1/sqrt(batch)), got {lam}")
        self.t = t
        self.kernel = kernel
        self.sigma = sigma
        self.lam = lam
        self.normalize = normalize
        self.requires = frozenset({"prior"}) if kernel is not None else frozenset()

    def gram(self, prior: Tensor) -> Tensor:
        """Kernel matrix ``K[B, B]`` of the prior rows."""
        if self.kernel == "cosine":
            x = F.normalize(prior, dim=-1)
            return x @ x.T
        return torch.exp(-sqdist(prior, prior) / (2.0 * self.sigma**2))

    def cme_weights(self, prior: Tensor, batch: int, dtype: torch.dtype) -> Tensor:
        r"""The detached estimator weights :math:`\alpha = (K + \lambda I)^{-1}K`, ``[B, B]``."""
        with torch.no_grad():
            prior = prior.detach().to(dtype)
            if prior.dim() == 1:
                prior = prior[:, None]
            if prior.shape[0] != batch:
                raise ValueError(
                    f"prior has {prior.shape[0]} rows, expected one per instance ({batch})"
                )
            lam = self.lam or 1.0 / math.sqrt(batch)
            k = self.gram(prior.flatten(1))
            eye = torch.eye(batch, dtype=dtype, device=k.device)
            return torch.linalg.solve(k + lam * eye, k)

    def forward(self, z: Tensor, prior: Tensor | None = None, **_: object) -> LossOutput:
        check_views(z)
        batch = z.shape[0]
        logs: dict[str, Tensor] = {}
        with torch.autocast(z.device.type, enabled=False):
            x = upcast(z)
            if self.normalize:
                x = F.normalize(x, dim=-1)
            mu = x.mean(dim=1)
            if self.kernel is not None:
                if prior is None:
                    raise ValueError(f"kernel={self.kernel!r} needs head(z, prior=Tensor[B, P])")
                alpha = self.cme_weights(prior, batch, mu.dtype)
                mu = alpha @ mu
                diag = alpha.diagonal()
                logs["cme_diag"] = diag.mean()
                logs["cme_offdiag"] = (alpha.abs().sum(dim=1) - diag.abs()).mean()
            loss = log_mean_gaussian_potential(mu, self.t)
            with torch.no_grad():
                align = -mu.square().sum(dim=-1).mean()
        return LossOutput(loss, detached_logs(align=align, unif=loss, **logs))
