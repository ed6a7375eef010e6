"""SimSiam: a predictor matches the stop-gradient projection of another view (no momentum)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from sslkit.losses.base import LossOutput, check_views, detached_logs
from sslkit.losses.cacr import full_precision, prepare
from sslkit.losses.keys import check_keys


class SimSiam(nn.Module):
    r"""SimSiam loss (Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021).

    Called as ``head(z, k=targets)``: ``z`` ``[B, V, D]`` are the *predictor* outputs
    :math:`p^v = h(f(x^v))` of every view (``uses_predictor``), ``k`` ``[B, V, D]`` the
    projections :math:`z^w = f(x^w)` of the same views, which get a stop-gradient here:

    .. math::
        \mathcal L = \frac{1}{V(V-1)}\sum_{v\ne w}\frac1B\sum_i
            -\frac{p^v_i}{\|p^v_i\|}\cdot\frac{\mathrm{sg}(z^w_i)}{\|\mathrm{sg}(z^w_i)\|}

    For V = 2 this is the symmetrised loss :math:`\tfrac12 D(p_1, \mathrm{sg}(z_2)) + \tfrac12
    D(p_2, \mathrm{sg}(z_1))` of ``facebookresearch/simsiam`` ``main_simsiam.py``
    (``-(criterion(p1, z2).mean() + criterion(p2, z1).mean()) * 0.5``, ``criterion`` the cosine
    similarity); its minimum is -1.

    Where the targets come from: SimSiam has no momentum encoder; its target is the online
    network's own projection, detached. With ``momentum = None`` (the default) the training module
    passes as ``k`` the online projections of the views before the predictor, detached (and
    gathered across ranks), and builds no key network. A number instead gives ``k`` from a
    momentum encoder with that coefficient: the momentum-target variant the paper compares with
    BYOL (its Table 4).

    Args:
        momentum: None (SimSiam: the online network's projections, detached) or the EMA
            coefficient of a target network.

    Logs: ``cos`` (mean cosine of a prediction to its targets).

    Example::

        >>> import torch
        >>> from sslkit.losses import SimSiam
        >>> p = torch.randn(8, 2, 16, requires_grad=True)  # predictor outputs, 2 views
        >>> out = SimSiam()(p, k=torch.randn(8, 2, 16))
        >>> out.loss.backward()
    """

    requires: ClassVar[frozenset[str]] = frozenset({"k"})
    uses_predictor: ClassVar[bool] = True
    shuffle_bn: ClassVar[bool] = False

    def __init__(self, momentum: float | None = None) -> None:
        super().__init__()
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be None or in [0, 1], got {momentum}")
        self.momentum = None if momentum is None else float(momentum)

    def extra_repr(self) -> str:
        return f"momentum={self.momentum}"

    def forward(self, z: Tensor, k: Tensor | None = None, **_: object) -> LossOutput:
        check_views(z)
        check_keys("simsiam", z, k, z.shape[1])
        views = z.shape[1]
        with full_precision(z):
            p = prepare(z, True)
            t = prepare(k.detach(), True, p.dtype)
            cos = torch.einsum("bvd,bwd->bvw", p, t)
            off = ~torch.eye(views, dtype=torch.bool, device=p.device)
            loss = -cos[:, off].mean()
            with torch.no_grad():
                # the paper's collapse monitor: per-channel std of the normalised projections
                # (about 1/sqrt(D) for well-spread outputs, 0 when collapsed)
                std = t.std(dim=0).mean()
        return LossOutput(loss, detached_logs(cos=-loss.detach(), output_std=std))
