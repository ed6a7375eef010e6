"""InfoNCE / NT-Xent (SimCLR), multi-positive for V > 2 views."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslkit.losses.base import (
    LossOutput,
    check_views,
    cosine_logs,
    detached_logs,
    instance_ids,
    upcast,
    view_major,
)
from sslkit.losses.chunked import check_chunk_size, row_logsumexp


class InfoNCE(nn.Module):
    r"""NT-Xent loss of SimCLR (Chen et al., ICML 2020), with every other view a positive.

    With the N = B*V rows :math:`u_a` (L2-normalised when ``normalize``) and
    :math:`s_{ab} = u_a^\top u_b / \tau`, each anchor ``a`` has positives :math:`P(a)` (the other
    V-1 views of its instance) and the denominator runs over every row but itself:

    .. math::
        \mathcal{L} = \frac{1}{N}\sum_a \frac{1}{|P(a)|}\sum_{p\in P(a)}
        -\log \frac{e^{s_{ap}}}{\sum_{b\ne a} e^{s_{ab}}}

    For V = 2 this is exactly SimCLR's NT-Xent; for V > 2 it is the multi-positive form
    (the "L_out" of SupCon, Khosla et al. 2020, with instance ids as labels).

    Args:
        temperature: :math:`\tau`.
        normalize: L2-normalise the projections first (SimCLR does).
        chunk_size: rows per block of a memory-bounded log-sum-exp (forward and backward in
            O(chunk_size x N) memory instead of O(N^2), same values; for batches of thousands,
            see :mod:`sslkit.losses.chunked`); ``None``: the dense N x N logits.

    Example::

        >>> import torch
        >>> from sslkit.losses import InfoNCE
        >>> z = torch.randn(8, 2, 16, requires_grad=True)  # [instances, views, dim]
        >>> out = InfoNCE()(z)
        >>> out.loss.backward()
        >>> z.grad.shape
        torch.Size([8, 2, 16])
    """

    def __init__(self, temperature: float = 0.5, normalize: bool = True,
                 chunk_size: int | None = None) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        check_chunk_size(chunk_size)
        self.temperature = temperature
        self.normalize = normalize
        self.chunk_size = chunk_size

    def forward(self, z: Tensor, **_: object) -> LossOutput:
        check_views(z)
        with torch.autocast(z.device.type, enabled=False):
            return self._loss(upcast(z))

    def _loss(self, z: Tensor) -> LossOutput:
        batch, views, _ = z.shape
        u = view_major(F.normalize(z, dim=-1) if self.normalize else z)
        n = u.shape[0]
        if self.chunk_size is not None:
            # sum_p s_ap = u_a . (sum of the instance's views - u_a) / tau: no N x N matrix
            per_instance = u.view(views, batch, -1).sum(dim=0).repeat(views, 1)
            pos_sum = (u * (per_instance - u)).sum(dim=1) / self.temperature
            lse = row_logsumexp(u, 1.0 / self.temperature, None, self.chunk_size)
            loss = (lse - pos_sum / (views - 1)).mean()
            return LossOutput(loss, detached_logs(**cosine_logs(z)))
        ids = instance_ids(batch, views, u.device)
        self_mask = torch.eye(n, dtype=torch.bool, device=u.device)
        pos_mask = (ids[:, None] == ids[None, :]) & ~self_mask

        logits = (u @ u.T) / self.temperature
        logits = logits.masked_fill(self_mask, float("-inf"))
        log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        pos_log_prob = log_prob.masked_fill(~pos_mask, 0.0).sum(dim=1) / (views - 1)
        loss = -pos_log_prob.mean()

        return LossOutput(loss, detached_logs(**cosine_logs(z)))
