"""BYOL: an online predictor regresses the EMA target network's projection of another view."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslkit.losses.base import LossOutput, check_views, detached_logs
from sslkit.losses.cacr import full_precision, prepare
from sslkit.losses.keys import check_keys


class BYOL(nn.Module):
    r"""BYOL loss (Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020).

    Called as ``head(z, k=keys)``: ``z`` ``[B, V, D]`` are the online *predictor* outputs
    :math:`q_\theta(z_\theta)` of every view (``uses_predictor``), ``k`` ``[B, V, D]`` the target
    network's projections :math:`z'_\xi` of the same views (the module's momentum encoder;
    stop-gradient is applied here). With unit vectors :math:`\hat p, \hat k`, every view predicts
    every other view's target:

    .. math::
        \mathcal L = \frac{2}{V(V-1)}\sum_{v\ne w}\frac1B\sum_i
            \big\|\hat p^v_i - \hat k^w_i\big\|^2
        = \frac{2}{V(V-1)}\sum_{v\ne w}\frac1B\sum_i \big(2 - 2\cos(p^v_i, k^w_i)\big)

    For V = 2 this is the paper's symmetrised loss :math:`\mathcal L_{\theta,\xi} +
    \tilde{\mathcal L}_{\theta,\xi}` (the sum of the two directions, each a batch mean), as
    ``deepmind-research/byol/byol_experiment.py`` adds ``regression_loss`` of (view 1 prediction,
    view 2 target) and (view 2, view 1); more views keep that scale (mean over ordered pairs,
    times 2).

    The target is an exponential moving average of the online network,
    :math:`\xi \leftarrow \tau\xi + (1-\tau)\theta`, with
    :math:`\tau = 1 - (1-\tau_{base})(\cos(\pi k/K) + 1)/2` over the K training steps: ``momentum``
    is :math:`\tau_{base}` and ``momentum_schedule = "cosine"`` names that schedule, which the
    module's momentum encoder follows unless ``model.momentum_schedule`` overrides it (k = 0 at the
    first step).

    Args:
        momentum: :math:`\tau_{base}` (0.99: the official presets for 100-300 epochs and
            solo-learn's CIFAR recipe; 0.996 for the paper's 1000-epoch runs).
        normalize: L2-normalise predictions and targets (the paper does; off gives the plain
            squared error, for ablations).

    Logs: ``cos`` (mean cosine of a prediction to its targets).

    Example::

        >>> import torch
        >>> from sslkit.losses import BYOL
        >>> p = torch.randn(8, 2, 16, requires_grad=True)  # predictor outputs, 2 views
        >>> out = BYOL()(p, k=torch.randn(8, 2, 16))
        >>> out.loss.backward()
    """

    requires: ClassVar[frozenset[str]] = frozenset({"k"})
    uses_predictor: ClassVar[bool] = True
    momentum_schedule: ClassVar[str] = "cosine"
    shuffle_bn: ClassVar[bool] = False

    def __init__(self, momentum: float = 0.99, normalize: bool = True) -> None:
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.momentum = float(momentum)
        self.normalize = bool(normalize)

    def extra_repr(self) -> str:
        return f"momentum={self.momentum}, normalize={self.normalize}"

    def forward(self, z: Tensor, k: Tensor | None = None, **_: object) -> LossOutput:
        check_views(z)
        check_keys("byol", z, k, z.shape[1])
        views = z.shape[1]
        with full_precision(z):
            p = prepare(z, self.normalize)
            t = prepare(k.detach(), self.normalize, p.dtype)
            # [B, V, V]: entry (v, w) = <p^v_i, t^w_i>, summed over instances below
            dots = torch.einsum("bvd,bwd->bvw", p, t)
            off = ~torch.eye(views, dtype=torch.bool, device=p.device)
            if self.normalize:
                per_pair = 2.0 - 2.0 * dots[:, off]
            else:
                sq_p, sq_t = p.square().sum(-1), t.square().sum(-1)
                per_pair = (sq_p[:, :, None] + sq_t[:, None, :] - 2.0 * dots)[:, off]
            loss = 2.0 * per_pair.mean()
            with torch.no_grad():
                cos = torch.einsum("bvd,bwd->bvw", F.normalize(p, dim=-1),
                                   F.normalize(t, dim=-1))[:, off].mean()
        return LossOutput(loss, detached_logs(cos=cos))

