r"""CACR / CCT: contrastive attraction and contrastive repulsion, in-batch (SimCLR-style) form.

Zheng, Chen, Yao, Yang, Li, Zhang, Zhang, Tsang, Zhou, Zhou. *Contrastive Attraction and
Contrastive Repulsion for Representation Learning*, TMLR 2023 (arXiv 2105.03746 v2-v4).
Its first version, *Contrastive Conditional Transport for Representation Learning* (CCT,
arXiv 2105.03746 v1), is the same method: one released code base (github JegZheng/CACR-SSL)
serves both, so ``loss=cct`` builds this class too (``configs/loss/cct.yaml``).

The momentum-encoder variants live in :mod:`sslkit.losses.cacr_moco` (MoCo-v2 style, queue) and
:mod:`sslkit.losses.cacr_mocov3` (MoCo-v3 style, predictor); they share the numerics helpers
defined at the bottom of this module.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslkit.losses.base import LossOutput, check_views, detached_logs, sqdist
from sslkit.losses.chunked import check_chunk_size, map_row_blocks

WEIGHTINGS = ("full", "uniform_pos", "uniform_neg", "uniform")


class CACR(nn.Module):
    r"""CACR / CCT loss, in-batch form of the official CIFAR-10/100 and STL-10 code.

    With :math:`u^x_i` the L2-normalised projection of view x of instance i (V views, B
    instances) and :math:`d(a, b) = \|a - b\|_2^2`:

    *Contrastive attraction.* Every view x is a query in turn; its positives are the other V-1
    views of its instance, weighted by a softmax that favours the *farther* positives:

    .. math::
        w^+_{i,xy} = \operatorname{softmax}_{y\ne x}\big(\tau_+\, d(u^x_i, u^y_i)\big),\qquad
        \mathcal L_{CA} = \frac{\alpha}{VB}\sum_{x}\sum_i\sum_{y\ne x} w^+_{i,xy}\,d(u^x_i,u^y_i)

    *Contrastive repulsion.* For every unordered view pair x < y, query :math:`u^x_i` repels the
    other instances of view y, weighted by a softmax that favours the *closer* negatives:

    .. math::
        w^-_{ij} = \operatorname{softmax}_{j\ne i}\big(-\tau_-\, d(u^x_i, u^y_j)\big),\qquad
        \mathcal L_{CR} = \frac{1}{\binom V2 B}\sum_{x<y}\sum_i\sum_{j\ne i}
        w^-_{ij}\,\big(-\beta\, d(u^x_i, u^y_j)\big)

    and :math:`\mathcal L = \mathcal L_{CA} + \mathcal L_{CR}`. As in the official code only the
    pairs x < y are used (with V = 2, view 0 queries and view 1 negatives: not symmetric) and
    negatives come from the paired view only. With V = 2 the positive softmax
    has one entry (weight 1), so :math:`\mathcal L_{CA}` is the alignment loss
    :math:`\alpha\,\mathbb E\|u^1 - u^2\|^2`. ``tau_pos``/``tau_neg`` *multiply* the squared
    distance (inverse temperatures); ``alpha``/``beta`` scale the costs only.

    ``weighting`` selects the paper's ablations of the two conditional distributions (official
    ``choice``): ``full``; ``uniform_pos`` (``without_w1``: :math:`w^+ = 1/(V-1)`);
    ``uniform_neg`` (``without_w2``: :math:`w^- = 1/(B-1)`); ``uniform`` (``none``: both).

    ``debiased`` (official ``with_debiased``, after Chuang et al. 2020) replaces each query's
    repulsion by :math:`\big(-\tau^+ d(u^x_i,u^y_i) + \sum_j w^-_{ij}c^-_{ij}\big)/(1-\tau^+)`,
    exactly as the official code writes it: the positive term is **not** scaled by ``beta`` and
    enters with a minus sign (so it pushes the positive pair apart); see docs/losses/cacr.md.
    The official code applies it only when the negative weights are contrastive, so here
    ``debiased=True`` with ``uniform_neg``/``uniform`` is refused.

    Follows ``small_scale_experiments/losses/__init__.py`` (``our_loss1`` + ``our_loss2`` /
    ``forward_negative_loss``) of github JegZheng/CACR-SSL, whose CIFAR/STL training adds the
    two terms with no further weighting. Differences: the official loss expects inputs already
    on the sphere (the encoder ends with an ``L2Norm`` layer); here ``normalize=True`` plays that
    layer's part. The weights are computed as ``softmax(tau * d)`` directly (official:
    ``(alpha*d) * tau/alpha``, which is NaN for ``alpha = 0``).

    Args:
        alpha: scale :math:`\alpha` of the attraction cost (official default 1.0).
        beta: scale :math:`\beta` of the repulsion cost (official default 1.0).
        tau_pos: inverse temperature :math:`\tau_+` of the positive weights (default 1.0).
        tau_neg: inverse temperature :math:`\tau_-` of the negative weights (default 1.0).
        weighting: ``full | uniform_pos | uniform_neg | uniform``.
        debiased: debiased repulsion (default off).
        tau_plus: class prior :math:`\tau^+` of the debiased repulsion (default 0.1).
        detach_weights: stop the gradient through both conditional weights. The code paths
            disagree: the CIFAR/STL code differentiates through them (default False); the
            MoCo-style code paths detach them.
        normalize: L2-normalise the projections first (the official encoder's last layer does).
        chunk_size: query rows per block of the repulsion's ``[P, B, B]`` distances and
            weights, computed a block at a time forward and recomputed in backward (memory
            O(P x chunk_size x B) instead of O(P x B^2), same values and gradients; see
            :func:`sslkit.losses.chunked.map_row_blocks`); ``None``: all rows at once.

    Logs: ``attraction``, ``repulsion``; ``pos_w_entropy``/``pos_w_max`` and
    ``neg_w_entropy``/``neg_w_max`` (mean entropy and mean largest weight of the conditional
    distributions, per query); ``pos_sqdist``/``neg_sqdist`` (mean squared distance of positive
    pairs = the alignment metric, and of the negative pairs used). Tensors, for pictures (the
    training module logs only scalars): ``pos_pair_sqdist``/``pos_pair_weight`` ``[B, V, V-1]``
    (distance and weight :math:`w^+` of every query-positive pair) and
    ``neg_pair_sqdist``/``neg_pair_weight`` ``[P, B, B]`` (every query-negative pair of each
    view pair; the diagonal, the positive pair, has weight 0). With ``chunk_size < B`` these two
    cover the first block of queries only, ``[P, chunk_size, B]`` (query i's positive pair is
    column i); the scalar logs cover every query.

    Example::

        >>> import torch
        >>> from sslkit.losses import CACR
        >>> z = torch.randn(8, 2, 16, requires_grad=True)  # [instances, views, dim]
        >>> out = CACR()(z)
        >>> out.loss.backward()
        >>> z.grad.shape
        torch.Size([8, 2, 16])
    """

    requires: ClassVar[frozenset[str]] = frozenset()
    uses_predictor: ClassVar[bool] = False

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 1.0,
        tau_pos: float = 1.0,
        tau_neg: float = 1.0,
        weighting: str = "full",
        debiased: bool = False,
        tau_plus: float = 0.1,
        detach_weights: bool = False,
        normalize: bool = True,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        check_nonnegative(alpha=alpha, beta=beta)
        check_chunk_size(chunk_size)
        check_positive(tau_pos=tau_pos, tau_neg=tau_neg)
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        if not 0.0 <= tau_plus < 1.0:
            raise ValueError(f"tau_plus must be in [0, 1), got {tau_plus}")
        if debiased and weighting in ("uniform_neg", "uniform"):
            raise ValueError(
                "debiased=True needs contrastive negative weights (weighting 'full' or "
                f"'uniform_pos'), got weighting={weighting!r}"
            )
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.tau_pos = float(tau_pos)
        self.tau_neg = float(tau_neg)
        self.weighting = weighting
        self.debiased = bool(debiased)
        self.tau_plus = float(tau_plus)
        self.detach_weights = bool(detach_weights)
        self.normalize = bool(normalize)
        self.chunk_size = chunk_size

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, beta={self.beta}, tau_pos={self.tau_pos}, "
            f"tau_neg={self.tau_neg}, weighting={self.weighting!r}, debiased={self.debiased}, "
            f"tau_plus={self.tau_plus}, detach_weights={self.detach_weights}, "
            f"normalize={self.normalize}, chunk_size={self.chunk_size}"
        )

    def forward(self, z: Tensor, **_: object) -> LossOutput:
        check_views(z)
        batch, views, _ = z.shape
        warn_two_views(self, "cacr", views)
        with full_precision(z):
            u = prepare(z, self.normalize)

            # attraction: [B, V, V-1] squared distances from query view x to the other views
            d_pos = off_diagonal(sqdist(u, u))
            if self.weighting in ("full", "uniform_neg"):
                logits = self.tau_pos * (d_pos.detach() if self.detach_weights else d_pos)
                w_pos = torch.softmax(logits, dim=-1)
            else:
                w_pos = torch.full_like(d_pos, 1.0 / (views - 1))
            attraction = self.alpha * (w_pos * d_pos).sum(-1).mean()

            # repulsion: every view pair x < y, query u^x_i against u^y_j (j != i): [P, B, B],
            # built a block of query rows at a time when chunked (each row's softmax is its own)
            xs, ys = torch.triu_indices(views, views, offset=1, device=u.device)
            queries, others = u[:, xs].transpose(0, 1), u[:, ys].transpose(0, 1)  # [P, B, D]
            pairs = {"keep": True}
            rep, neg_entropy, neg_max, neg_dsum = map_row_blocks(
                self._repulsion_rows, queries, self.chunk_size, others, pairs, dim=1)
            pairs["keep"] = False  # a block recomputed in backward keeps nothing
            repulsion = rep.mean()
            loss = attraction + repulsion

            with torch.no_grad():
                n_neg = rep.shape[0] * batch * (batch - 1)
                logs = detached_logs(
                    attraction=attraction,
                    repulsion=repulsion,
                    pos_w_entropy=entropy(w_pos).mean(),
                    pos_w_max=w_pos.amax(-1).mean(),
                    neg_w_entropy=neg_entropy.mean(),
                    neg_w_max=neg_max.mean(),
                    pos_sqdist=d_pos.mean(),
                    neg_sqdist=neg_dsum.sum() / n_neg,
                    # per-pair samples for the weight-vs-distance picture (not logged as scalars)
                    pos_pair_sqdist=d_pos,
                    pos_pair_weight=w_pos,
                    neg_pair_sqdist=pairs["sqdist"],
                    neg_pair_weight=pairs["weight"],
                )
        return LossOutput(loss, logs)

    def _repulsion_rows(self, q: Tensor, start: int, others: Tensor, pairs: dict
                        ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Query rows ``start:start+c`` (``q`` ``[P, c, D]``) against every row of ``others``
        ``[P, B, D]``: each query's repulsion ``[P, c]`` and, without gradient, the entropy and
        largest value of its negative weights and the sum of its negative squared distances.
        The first block's ``[P, c, B]`` distances and weights go to ``pairs`` (for pictures)."""
        batch = others.shape[1]
        d_neg = sqdist(q, others)
        rows = torch.arange(start, start + q.shape[1], device=q.device)
        eye = rows[:, None] == torch.arange(batch, device=q.device)[None, :]  # the positive pair
        if self.weighting in ("full", "uniform_pos"):
            logits = -self.tau_neg * (d_neg.detach() if self.detach_weights else d_neg)
            w_neg = torch.softmax(logits.masked_fill(eye, float("-inf")), dim=-1)
        else:
            w_neg = (~eye).to(d_neg.dtype).expand_as(d_neg) / (batch - 1)
        rep = -self.beta * (w_neg * d_neg).sum(-1)  # [P, c], w_neg is 0 on the positive pair
        if self.debiased:
            pos = d_neg.diagonal(offset=start, dim1=-2, dim2=-1)
            rep = (rep - self.tau_plus * pos) / (1.0 - self.tau_plus)
        if start == 0 and pairs["keep"]:
            pairs["sqdist"], pairs["weight"] = d_neg.detach(), w_neg.detach()
        with torch.no_grad():
            stats = (entropy(w_neg), w_neg.amax(-1), d_neg.masked_fill(eye, 0.0).sum(-1))
        return (rep, *stats)


# --------------------------------------------------------------------------------------------
# Helpers shared by the CACR heads (cacr, cacr_moco, cacr_mocov3).


def warn_two_views(
    head: nn.Module,
    name: str,
    views: int,
    effect: str = "contrastive attraction is plain alignment",
    remedy: str = "the paper uses 5 views (augment.views=5, see configs/experiment/cacr_*.yaml)",
) -> None:
    """Warn once per head when it runs with two views: each query then has a single positive,
    whose contrastive weight is 1, and the head loses what sets CACR apart."""
    if views == 2 and not getattr(head, "_warned_two_views", False):
        head._warned_two_views = True
        warnings.warn(f"{name} with 2 views: each query has one positive, so {effect}; {remedy}",
                      UserWarning, stacklevel=3)


def check_positive(**values: float) -> None:
    """One-line ValueError for any value that is not > 0."""
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")


def check_nonnegative(**values: float) -> None:
    """One-line ValueError for any value that is not >= 0."""
    for name, value in values.items():
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


def full_precision(z: Tensor) -> contextlib.AbstractContextManager:
    """Switch autocast off for the head's math (inputs are upcast by :func:`prepare`)."""
    return torch.autocast(device_type=z.device.type, enabled=False)


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """float32 for half-precision inputs, else the widest floating dtype given (float64 stays)."""
    dtype = torch.float32
    for t in tensors:
        if t.dtype == torch.float64:
            dtype = torch.float64
    return dtype


def prepare(x: Tensor, normalize: bool, dtype: torch.dtype | None = None) -> Tensor:
    """Upcast below-float32 inputs (or to ``dtype``) and L2-normalise the last dim if asked."""
    x = x.to(dtype or compute_dtype(x))
    return F.normalize(x, dim=-1) if normalize else x


def off_diagonal(m: Tensor) -> Tensor:
    """``[..., V, V] -> [..., V, V-1]``: row x keeps the entries y != x, in order."""
    views = m.shape[-1]
    keep = ~torch.eye(views, dtype=torch.bool, device=m.device)
    return m[..., keep].reshape(*m.shape[:-2], views, views - 1)


def entropy(w: Tensor, dim: int = -1) -> Tensor:
    """Shannon entropy (nats) of probability rows, with 0 log 0 = 0."""
    return -torch.special.xlogy(w, w).sum(dim)
