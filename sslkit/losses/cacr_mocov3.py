r"""CACR in the MoCo-v3 framework (momentum encoder + predictor, no queue, optional multi-crop)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from sslkit.losses.base import LossOutput, check_views, detached_logs, sqdist
from sslkit.losses.cacr import (
    check_positive,
    entropy,
    full_precision,
    prepare,
    warn_two_views,
)

COSTS = ("rbf", "euclidean")


class CACRMoCoV3(nn.Module):
    r"""CACR loss of the official MoCo-v3-style ImageNet pretraining (Zheng et al., TMLR 2023).

    Called as ``head(z, k=keys)``: ``z`` ``[B, V, D]`` are the *predictor* outputs of the online
    branch for all V views (the first ``n_global`` are the global crops, the rest local crops),
    ``k`` ``[B, V', D]`` the momentum-encoder projections (stop-gradient is applied here); the
    first ``n_global`` key views are used, or all V when ``full_mode``. Queries and keys are
    L2-normalised (``normalize``); T is ``temperature``.

    For every key view i, the queries are all *other* views v != i. Each positive query is
    weighted, per instance n, by a stop-gradient softmax over those views that favours the
    farther ones (the contrastive attraction weights):

    .. math::
        p_{v,n} = \mathrm{sg}\Big[\operatorname{softmax}_{v\ne i}
            \big(\|q^v_n - k^i_n\|^2 / T\big)\Big]

    ``cost="rbf"`` (official default): an InfoNCE over the batch of keys of view i (the RBF
    kernel :math:`e^{-\|q-k\|^2/2T}` on the sphere is :math:`\propto e^{q^\top k/T}`),

    .. math::
        \mathcal L = \frac{1}{L}\sum_{i}\sum_{v\ne i}\frac{1}{B}\sum_n p_{v,n}\; 2T\,
            \Big(-\frac{q^{v\top}_n k^i_n}{T} + \log\sum_m e^{q^{v\top}_n k^i_m / T}\Big)

    ``cost="euclidean"``: with :math:`c_{nm} = 1 - q^{v\top}_n k^i_m`
    (:math:`= \tfrac12\|q - k\|^2` on the sphere) and stop-gradient negative weights
    :math:`r_{nm} = \mathrm{sg}[\operatorname{softmax}_{m\ne n}(-c_{nm}/T)]`,

    .. math::
        \mathcal L = \frac{1}{L}\sum_{i}\sum_{v\ne i}\sum_n p_{v,n}
            \Big(c_{nn} - \sum_{m\ne n} r_{nm}\, c_{nm}\Big)

    where L is the number of key views. With two views p = 1 and the rbf loss is MoCo v3's
    symmetric loss divided by 2.

    Follows ``imagenet_pretraining/moco/builder.py`` (``MoCo.forward``, ``MoCo.cacr_rbfloss``,
    ``MoCo.cacr_euclideanloss``) of github JegZheng/CACR-SSL. The official code computes the
    loss per GPU (local queries against all-gathered keys); this head sees the global batch,
    which equals the official code on one process. The euclidean loss *sums* over the batch
    (official; the rbf loss averages), so its scale grows with B. With ``normalize=False`` the
    euclidean cost is :math:`\tfrac12\|q - k\|^2` (the official ``1 - q^\top k`` assumes unit
    vectors).

    Args:
        temperature: T (official ``--moco-t`` default 1.0; 0.2 in the ViT recipe).
        cost: ``rbf | euclidean`` (official ``--cacr-cost``, default rbf).
        n_global: number of leading views that are global crops and have keys (official: 2).
        full_mode: use the keys of every view, local crops too (``--use-full-mode``, off).
        momentum: EMA coefficient of the momentum encoder, for the training module (official
            ``--moco-m`` default 0.99; the R50 recipe uses 0.996 with a cosine schedule).
        normalize: L2-normalise queries and keys (the official code does).
        shuffle_bn: shuffle BN for the key encoder (off: MoCo v3 and this official code do not
            shuffle; their multi-GPU runs use SyncBN).

    The training module computes keys for ``key_views`` only: the ``n_global`` global crops
    (all views with ``full_mode``, the one case where local crops give keys); every view is a
    query. ``n_global`` must equal ``augment.views`` (checked before training).

    Logs: ``pos_w_entropy``/``pos_w_max`` (attraction weights over the positive views),
    ``pos_cos``/``neg_cos`` (mean cosine of query to its key / to other instances' keys);
    rbf: ``infonce`` (unweighted mean cross-entropy); euclidean: ``attraction``,
    ``repulsion``, ``neg_w_entropy``, ``neg_w_max``.

    Example::

        >>> import torch
        >>> from sslkit.losses import CACRMoCoV3
        >>> z = torch.randn(8, 2, 16, requires_grad=True)  # [instances, views, dim]
        >>> out = CACRMoCoV3()(z, k=torch.randn(8, 2, 16))
        >>> out.loss.backward()
        >>> z.grad.shape
        torch.Size([8, 2, 16])
    """

    requires: ClassVar[frozenset[str]] = frozenset({"k"})
    uses_predictor: ClassVar[bool] = True

    def __init__(
        self,
        temperature: float = 1.0,
        cost: str = "rbf",
        n_global: int = 2,
        full_mode: bool = False,
        momentum: float = 0.99,
        normalize: bool = True,
        shuffle_bn: bool = False,
    ) -> None:
        super().__init__()
        check_positive(temperature=temperature)
        if cost not in COSTS:
            raise ValueError(f"cost must be one of {COSTS}, got {cost!r}")
        if int(n_global) != n_global or n_global < 1:
            raise ValueError(f"n_global must be an integer >= 1, got {n_global}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.temperature = float(temperature)
        self.cost = cost
        self.n_global = int(n_global)
        self.full_mode = bool(full_mode)
        self.momentum = float(momentum)
        self.normalize = bool(normalize)
        self.shuffle_bn = bool(shuffle_bn)

    @property
    def key_views(self) -> slice:
        return slice(None) if self.full_mode else slice(0, self.n_global)

    @property
    def keys_from_local_crops(self) -> bool:
        return self.full_mode

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, cost={self.cost!r}, n_global={self.n_global}, "
            f"full_mode={self.full_mode}, momentum={self.momentum}, normalize={self.normalize}, "
            f"shuffle_bn={self.shuffle_bn}"
        )

    def forward(self, z: Tensor, k: Tensor | None = None, **_: object) -> LossOutput:
        check_views(z)
        warn_two_views(self, "cacr_mocov3", z.shape[1],
                       effect="the positive weights are 1 and the loss is MoCo v3's halved",
                       remedy="add local crops (augment=multicrop) as the paper's multi-crop runs do")
        batch, views, dim = z.shape
        if views < self.n_global:
            raise ValueError(f"n_global={self.n_global} but z has only {views} views")
        n_keys = views if self.full_mode else self.n_global
        if k is None:
            raise ValueError("cacr_mocov3 needs k=[B, V, D] momentum-encoder keys")
        if k.dim() != 3 or k.shape[0] != batch or k.shape[2] != dim or k.shape[1] < n_keys:
            raise ValueError(
                f"k must be [{batch}, >={n_keys}, {dim}] (keys of the first {n_keys} views), "
                f"got {tuple(k.shape)}"
            )
        t = self.temperature
        with full_precision(z):
            q = prepare(z, self.normalize)
            key = prepare(k[:, :n_keys].detach(), self.normalize, q.dtype)

            # (key view i, query view v != i) pairs, i-major: P = n_keys * (V - 1)
            grid = torch.arange(views, device=q.device)
            kv = grid[:n_keys].repeat_interleave(views - 1)
            not_self = ~torch.eye(n_keys, views, dtype=torch.bool, device=q.device)
            qv = grid.expand(n_keys, views)[not_self]
            qs = q[:, qv].transpose(0, 1)  # [P, B, D]
            ks = key[:, kv].transpose(0, 1)  # [P, B, D]

            with torch.no_grad():
                d_pos = (qs - ks).pow(2).sum(-1).reshape(n_keys, views - 1, batch)
                p = torch.softmax(d_pos / t, dim=1)  # over the positive views
            sims = qs @ ks.transpose(-2, -1)  # [P, B, B], q_n . k_m
            pos_sim = sims.diagonal(dim1=-2, dim2=-1)  # [P, B]
            eye = torch.eye(batch, dtype=torch.bool, device=q.device)
            weights = p.reshape(-1, batch)

            if self.cost == "rbf":
                ce = torch.logsumexp(sims / t, dim=-1) - pos_sim / t
                loss = (ce * weights).mean(-1).sum() * (2.0 * t) / n_keys
                extra = {"infonce": ce.mean()}
            else:
                if self.normalize:
                    cost = 1.0 - sims
                else:
                    cost = 0.5 * sqdist(qs, ks)
                ca = cost.diagonal(dim1=-2, dim2=-1)
                with torch.no_grad():
                    r = torch.softmax((-cost / t).masked_fill(eye, float("-inf")), dim=-1)
                cr = -(r * cost).sum(-1)  # r is 0 on the diagonal
                attraction = (ca * weights).sum() / n_keys
                repulsion = (cr * weights).sum() / n_keys
                loss = attraction + repulsion
                extra = {
                    "attraction": attraction,
                    "repulsion": repulsion,
                    "neg_w_entropy": entropy(r).mean(),
                    "neg_w_max": r.amax(-1).mean(),
                }

            with torch.no_grad():
                if self.normalize:
                    cos = sims
                else:
                    norms = qs.norm(dim=-1).unsqueeze(-1) * ks.norm(dim=-1).unsqueeze(-2)
                    cos = sims / norms.clamp_min(1e-12)
                pos_cos = cos.diagonal(dim1=-2, dim2=-1)
                logs = detached_logs(
                    pos_w_entropy=entropy(p, dim=1).mean(),
                    pos_w_max=p.amax(1).mean(),
                    pos_cos=pos_cos.mean(),
                    neg_cos=(cos.sum() - pos_cos.sum()) / (pos_cos.numel() * (batch - 1)),
                    **extra,
                )
        return LossOutput(loss, logs)
