"""Alignment and uniformity on the hypersphere (AU; Wang & Isola, ICML 2020)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslkit.losses.base import LossOutput, check_views, detached_logs, sqdist, upcast
from sslkit.losses.chunked import check_chunk_size, map_row_blocks


def log_mean_gaussian_potential(x: Tensor, t: float, chunk_size: int | None = None) -> Tensor:
    r"""Uniformity :math:`\log \operatorname{mean}_{i \ne j} e^{-t\|x_i - x_j\|^2}` of ``x[..., n, d]``.

    Over the unordered pairs (what ``torch.pdist`` gives; the ordered mean is the same number),
    as a log-sum-exp so that it neither underflows nor needs ``pdist``'s square root.
    ``chunk_size``: rows i per block of the n x n distances (each row's log-sum-exp, then one
    over the rows; memory O(chunk_size x n) forward and backward); ``None``: all at once.
    """
    n = x.shape[-2]
    (rows,) = map_row_blocks(_potential_rows, x, chunk_size, x, t, dim=x.dim() - 2)
    return rows.logsumexp(dim=-1) - math.log(n * (n - 1))


def _potential_rows(block: Tensor, start: int, x: Tensor, t: float) -> tuple[Tensor]:
    """``[..., c]``: log-sum-exp over j != i of -t ||x_i - x_j||^2, rows i = start..start+c-1."""
    d2 = sqdist(block, x)
    rows = torch.arange(start, start + block.shape[-2], device=x.device)
    eye = rows[:, None] == torch.arange(x.shape[-2], device=x.device)[None, :]
    return ((-t * d2).masked_fill(eye, float("-inf")).logsumexp(dim=-1),)


class AlignUniform(nn.Module):
    r"""Alignment + uniformity loss (Wang & Isola, "Understanding Contrastive Representation
    Learning through Alignment and Uniformity on the Hypersphere", ICML 2020).

    On L2-normalised views :math:`x^v_i`:

    .. math::
        \mathcal{L}_{align} = \operatorname{mean}_{v<w}\operatorname{mean}_i
        \|x^v_i - x^w_i\|_2^{\alpha},\qquad
        \mathcal{L}_{unif} = \operatorname{mean}_v \log \operatorname{mean}_{i\ne j}
        e^{-t\|x^v_i - x^v_j\|_2^2},

    :math:`\mathcal{L} = w_{align}\mathcal{L}_{align} + w_{unif}\mathcal{L}_{unif}`. Follows
    ``SsnL/align_uniform`` (``align_uniform/__init__.py::align_loss, uniform_loss`` combined as
    in ``examples/stl10/main.py``: uniformity of each view separately, averaged). For V = 2 it is
    exactly the official loss; for V > 2 alignment is averaged over all view pairs and
    uniformity over views.

    Args:
        alpha: exponent :math:`\alpha > 0` of the alignment distance (official default 2).
        t: scale :math:`t > 0` of the Gaussian potential (official default 2).
        align_w: weight of the alignment term (official default 1).
        unif_w: weight of the uniformity term (official default 1).
        normalize: L2-normalise the projections (the official encoder ends with an L2Norm).
        chunk_size: rows per block of each view's B x B uniformity distances, computed a block
            at a time forward and recomputed in backward (memory O(V x chunk_size x B) instead
            of O(V x B^2), same values; :func:`sslkit.losses.chunked.map_row_blocks`);
            ``None``: all rows at once.

    Example::

        >>> import torch
        >>> from sslkit.losses import AlignUniform
        >>> z = torch.randn(8, 2, 16, requires_grad=True)  # [instances, views, dim]
        >>> out = AlignUniform()(z)
        >>> out.loss.backward()
        >>> z.grad.shape
        torch.Size([8, 2, 16])
    """

    requires: ClassVar[frozenset[str]] = frozenset()
    uses_predictor: ClassVar[bool] = False

    def __init__(
        self,
        alpha: float = 2.0,
        t: float = 2.0,
        align_w: float = 1.0,
        unif_w: float = 1.0,
        normalize: bool = True,
        chunk_size: int | None = None,
    ):
        super().__init__()
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        if not t > 0:
            raise ValueError(f"t must be > 0, got {t}")
        self.alpha = alpha
        self.t = t
        self.align_w = align_w
        self.unif_w = unif_w
        self.normalize = normalize
        check_chunk_size(chunk_size)
        self.chunk_size = chunk_size

    def forward(self, z: Tensor, **_: object) -> LossOutput:
        check_views(z)
        views = z.shape[1]
        with torch.autocast(z.device.type, enabled=False):
            x = upcast(z)
            if self.normalize:
                x = F.normalize(x, dim=-1)
            first, second = torch.triu_indices(views, views, offset=1, device=x.device)
            dist = torch.linalg.vector_norm(x[:, first] - x[:, second], dim=-1)
            align = dist.pow(self.alpha).mean()
            unif = log_mean_gaussian_potential(x.transpose(0, 1), self.t, self.chunk_size).mean()
            loss = self.align_w * align + self.unif_w * unif
        return LossOutput(loss, detached_logs(align=align, unif=unif))
