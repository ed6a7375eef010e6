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

    Example::

        >>> import torch
        >>> from sslkit.losses import InfoNCE
        >>> z = torch.randn(8, 2, 16, requires_grad=True)  # [instances, views, dim]
        >>> out = InfoNCE()(z)
        >>> out.loss.backward()
        >>> z.grad.shape
        torch.Size([8, 2, 16])
    """

    def __init__(self, temperature: float = 0.5, normalize: bool = True) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.normalize = normalize

    def forward(self, z: Tensor, **_: object) -> LossOutput:
        check_views(z)
        with torch.autocast(z.device.type, enabled=False):
            return self._loss(upcast(z))

    def _loss(self, z: Tensor) -> LossOutput:
        batch, views, _ = z.shape
        u = view_major(F.normalize(z, dim=-1) if self.normalize else z)
        n = u.shape[0]
        ids = instance_ids(batch, views, u.device)
        self_mask = torch.eye(n, dtype=torch.bool, device=u.device)
        pos_mask = (ids[:, None] == ids[None, :]) & ~self_mask

        logits = (u @ u.T) / self.temperature
        logits = logits.masked_fill(self_mask, float("-inf"))
        log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        pos_log_prob = log_prob.masked_fill(~pos_mask, 0.0).sum(dim=1) / (views - 1)
        loss = -pos_log_prob.mean()

        return LossOutput(loss, detached_logs(**cosine_logs(z)))
