"""SupCon: supervised contrastive loss, every view of every same-class instance a positive."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from sslkit.losses.base import LossOutput, check_views, cosine_logs, detached_logs, view_major
from sslkit.losses.cacr import check_positive, full_precision, prepare


class SupCon(nn.Module):
    r"""Supervised contrastive loss (Khosla et al., "Supervised Contrastive Learning",
    NeurIPS 2020), the :math:`\mathcal L^{sup}_{out}` form.

    Called as ``head(z, labels=y)``. With the N = B*V rows :math:`u_a` (L2-normalised
    projections, every view of every instance), :math:`A(a)` all rows but a and :math:`P(a)` the
    rows of A(a) whose instance has a's label (the other views of a's own instance included):

    .. math::
        \mathcal L = \frac{\tau}{\tau_{base}}\cdot\frac1N\sum_a \frac{-1}{|P(a)|}
            \sum_{p\in P(a)} \log\frac{e^{u_a\cdot u_p/\tau}}{\sum_{b\in A(a)} e^{u_a\cdot u_b/\tau}}

    Follows ``HobbitLong/SupContrast`` ``losses.py`` (``SupConLoss``, ``contrast_mode='all'``),
    including its factor :math:`\tau/\tau_{base}`; the official code adds 1e-9 inside the log of
    the denominator in some versions, this head uses the exact log-sum-exp. With every instance
    its own class and :math:`\tau_{base} = \tau` it is the multi-positive NT-Xent of
    :class:`~sslkit.losses.infonce.InfoNCE` (SimCLR for V = 2).

    Args:
        temperature: :math:`\tau` (0.1 in the official README's SupCon recipe, ``--temp 0.1``;
            ``main_supcon.py``'s argparse default is 0.07).
        base_temperature: :math:`\tau_{base}` (official ``SupConLoss`` default 0.07).
        normalize: L2-normalise the projections (the official model does, in ``SupConResNet``).

    A batch without labels, or with unlabelled samples (label < 0), is refused.

    Logs: ``pos_sim``/``neg_sim`` (mean cosine of same-instance and other-instance pairs),
    ``positives`` (mean |P(a)|).

    Example::

        >>> import torch
        >>> from sslkit.losses import SupCon
        >>> z = torch.randn(8, 2, 16, requires_grad=True)
        >>> SupCon()(z, labels=torch.arange(8) % 3).loss.backward()
    """

    requires: ClassVar[frozenset[str]] = frozenset({"labels"})
    uses_predictor: ClassVar[bool] = False

    def __init__(self, temperature: float = 0.1, base_temperature: float = 0.07,
                 normalize: bool = True) -> None:
        super().__init__()
        check_positive(temperature=temperature, base_temperature=base_temperature)
        self.temperature = float(temperature)
        self.base_temperature = float(base_temperature)
        self.normalize = bool(normalize)

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, base_temperature={self.base_temperature}, "
                f"normalize={self.normalize}")

    def forward(self, z: Tensor, labels: Tensor | None = None, **_: object) -> LossOutput:
        check_views(z)
        batch, views, _ = z.shape
        if labels is None:
            raise ValueError("supcon needs labels=Tensor[B] (class of each instance); this batch "
                             "has none: pretrain on a labelled split")
        if labels.dim() != 1 or labels.shape[0] != batch:
            raise ValueError(f"supcon: labels must be [{batch}], got {tuple(labels.shape)}")
        if bool((labels < 0).any()):
            raise ValueError("supcon: the batch has unlabelled samples (label < 0); pretrain on a "
                             "fully labelled split")
        with full_precision(z):
            u = view_major(prepare(z, self.normalize))
            n = u.shape[0]
            y = labels.to(u.device).repeat(views)
            self_mask = torch.eye(n, dtype=torch.bool, device=u.device)
            pos_mask = (y[:, None] == y[None, :]) & ~self_mask
            logits = (u @ u.T / self.temperature).masked_fill(self_mask, float("-inf"))
            log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
            n_pos = pos_mask.sum(1)
            mean_log_prob_pos = log_prob.masked_fill(~pos_mask, 0.0).sum(1) / n_pos
            loss = -(self.temperature / self.base_temperature) * mean_log_prob_pos.mean()
        return LossOutput(loss, detached_logs(**cosine_logs(z), positives=n_pos.float().mean()))
