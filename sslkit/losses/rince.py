"""Robust InfoNCE (RINCE; Chuang et al., CVPR 2022)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from sslkit.losses.base import LossOutput, check_views, detached_logs
from sslkit.losses.chunked import check_chunk_size
from sslkit.losses.dcl import _check_temperature, cosine_logs, pair_logits, upcast


class RobustInfoNCE(nn.Module):
    r"""RINCE (Chuang et al., "Robust Contrastive Learning against Noisy Views", CVPR 2022).

    With :math:`s_{ab} = u_a^\top u_b/\tau` on the N = B*V L2-normalised rows, positives ``p``
    the other views of the anchor's instance and negatives ``n`` every view of every other
    instance, :math:`\mathrm{pos} = e^{s_{ap}}`, :math:`\mathrm{neg} = \sum_n e^{s_{an}}`:

    .. math::
        \mathcal{L} = \operatorname{mean}_{a,p}\Big[-\frac{\mathrm{pos}^q}{q}
        + \frac{(\lambda(\mathrm{pos} + \mathrm{neg}))^q}{q}\Big]

    As :math:`q \to 0` this tends to InfoNCE (NT-Xent) :math:`+ \log\lambda`; :math:`q = 1` is
    the linear form :math:`-\mathrm{pos} + \lambda(\mathrm{pos}+\mathrm{neg})`, robust to noisy
    positives. Follows ``chingyaoc/RINCE`` ``ImageNet/simclr/simclr_module.py::SimCLR.sym_loss``;
    evaluated as :math:`(\mathrm{expm1}(q\log(\lambda(\mathrm{pos}+\mathrm{neg})))
    - \mathrm{expm1}(q s_{ap}))/q` (the same number, without cancelling two :math:`1/q` terms
    and with a log-sum-exp for neg). For V > 2 one term per (anchor, positive) pair.

    Args:
        temperature: :math:`\tau` (official argparse default 0.1; the CIFAR-10 branch of the
            script overrides it to 0.5).
        q: :math:`q \in (0, 1]` (official default 0.1).
        lam: :math:`\lambda > 0`, weight of the density term (official default 0.01).
        normalize: L2-normalise the projections (the official code feeds unit vectors).
        chunk_size: rows per block of a memory-bounded log-sum-exp over negatives (forward and
            backward in O(chunk_size x N) memory, same values; for batches of thousands);
            ``None``: the dense N x N logits.

    Example::

        >>> import torch
        >>> from sslkit.losses import RobustInfoNCE
        >>> z = torch.randn(8, 2, 16, requires_grad=True)  # [instances, views, dim]
        >>> out = RobustInfoNCE()(z)
        >>> out.loss.backward()
        >>> z.grad.shape
        torch.Size([8, 2, 16])
    """

    requires: ClassVar[frozenset[str]] = frozenset()
    uses_predictor: ClassVar[bool] = False

    def __init__(
        self, temperature: float = 0.1, q: float = 0.1, lam: float = 0.01, normalize: bool = True,
        chunk_size: int | None = None,
    ):
        super().__init__()
        _check_temperature(temperature)
        check_chunk_size(chunk_size)
        self.chunk_size = chunk_size
        if not 0 < q <= 1:
            raise ValueError(f"q must be in (0, 1], got {q}")
        if not lam > 0:
            raise ValueError(f"lam must be > 0, got {lam}")
        self.temperature = temperature
        self.q = q
        self.lam = lam
        self.normalize = normalize

    def forward(self, z: Tensor, **_: object) -> LossOutput:
        check_views(z)
        with torch.autocast(z.device.type, enabled=False):
            pl = pair_logits(upcast(z), self.temperature, self.normalize, self.chunk_size)
            neg_lse = pl.negative_logsumexp()
            log_all = torch.logaddexp(pl.pos, neg_lse[:, None]) + math.log(self.lam)
            pos_term = -torch.expm1(self.q * pl.pos) / self.q
            neg_term = torch.expm1(self.q * log_all) / self.q
            loss = pos_term.mean() + neg_term.mean()
        return LossOutput(
            loss,
            detached_logs(
                **cosine_logs(z),
                pos_term=pos_term.mean() - 1.0 / self.q,
                neg_term=neg_term.mean() + 1.0 / self.q,
            ),
        )
