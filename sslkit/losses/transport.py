r"""The transport problem shared by the GCA heads (:mod:`sslkit.losses.gca`): the Gibbs
kernel of the clamped cosine cost over the N = B*V rows, the target plan, the marginals, the
unrolled Sinkhorn plan (:mod:`sslkit.losses.sinkhorn`), the two loss forms on its rows
(cross-entropy and RINCE), and the logs of the plan. :class:`TransportHead` holds it; the heads
only choose the marginals, the number of iterations and the loss form. The formulas are in
:mod:`sslkit.losses.gca`'s docstring.
"""

from __future__ import annotations

import math
from functools import partial
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from sslkit.losses.base import check_views, detached_logs, upcast, view_major
from sslkit.losses.sinkhorn import SOLVERS, LogScalings, log_sinkhorn

SELF_PAIRS = ("max_cost", "mask")
# what the alpha/beta target groups instances by: domain ids, or class labels (supervised GCA)
GROUPS = ("domains", "labels")
RINCE_FORMS = ("code", "paper")


def check_positive(**kwargs: float) -> None:
    for name, value in kwargs.items():
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")


def check_nonneg(**kwargs: float) -> None:
    for name, value in kwargs.items():
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


def check_iterations(iterations: int) -> None:
    if int(iterations) != iterations or iterations < 1:
        raise ValueError(f"iterations must be an integer >= 1, got {iterations}")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


class _Batch:
    """Everything the loss forms need about one batch (internal)."""

    def __init__(self, log_k: Tensor, cos: Tensor, batch: int, views: int) -> None:
        self.log_k, self.cos, self.batch, self.views = log_k, cos, batch, views
        self.n = batch * views
        dev = log_k.device
        rows = torch.arange(self.n, device=dev)
        other = (rows[:, None] // batch + torch.arange(1, views, device=dev)) % views
        self.pos_idx = other * batch + (rows % batch)[:, None]  # [N, V-1] partner columns
        self.target: Tensor | None = None  # row-normalised dense target, or None (= pos_idx)
        self.log_a: Tensor
        self.log_b: Tensor


class _LogKernel(torch.autograd.Function):
    r"""Log Gibbs kernel :math:`-C/\varepsilon = (\max(S, c) - 1)/\varepsilon` off the diagonal.

    The diagonal (self pair) is :math:`-\max C/\varepsilon = (\max(\min S, c) - 1)/\varepsilon`
    (the official cost; the gradient of the min is split evenly between tied entries, as
    ``torch.amin``'s is) or ``-inf`` when masked. Same values and gradients as the plain
    ``clamp``/``sub``/``div``/diagonal-copy chain, with a backward of two passes instead of
    a branchy ``where`` plus a full copy.
    """

    @staticmethod
    def forward(ctx, sim, epsilon, clamp, mask_self):  # type: ignore[override]
        s_min = sim.amin()
        log_k = sim.clone() if clamp is None else sim.clamp(min=clamp)
        log_k.sub_(1.0).div_(epsilon)
        if mask_self:
            log_k.diagonal().fill_(-math.inf)
        else:
            s_diag = s_min if clamp is None else s_min.clamp(min=clamp)
            diag = log_k.diagonal()
            diag.copy_(((s_diag - 1.0) / epsilon).expand_as(diag))
        ctx.save_for_backward(sim, s_min)
        ctx.config = (epsilon, clamp, mask_self)
        return log_k

    @staticmethod
    @once_differentiable
    def backward(ctx, g):  # type: ignore[override]
        sim, s_min = ctx.saved_tensors
        epsilon, clamp, mask_self = ctx.config
        g_diag = g.diagonal().sum() / epsilon
        g_sim = g / epsilon
        if clamp is not None:
            g_sim.mul_(sim >= clamp)
        g_sim.diagonal().zero_()
        if not mask_self and (clamp is None or bool(s_min >= clamp)):
            ties = (sim == s_min).nonzero(as_tuple=True)
            g_sim.index_put_(ties, g_diag / len(ties[0]), accumulate=True)
        return g_sim, None, None, None


class _RowStats(torch.autograd.Function):
    """Row log-sum-exp of ``e`` and ``e`` at the positive columns, in one fused pass.

    Returns ``lse[a] = log sum_b exp(e[a, b])``, ``e_pos = e.gather(1, pos_idx)`` (both
    differentiable) and, detached, ``sum_b softmax(e)[a, b] * e[a, b]`` (for the entropy log).
    The backward writes softmax * grad and scatters the positive-pair gradient into one
    N x N buffer instead of materialising one per use.
    """

    @staticmethod
    def forward(ctx, e, pos_idx, masked_diag):  # type: ignore[override]
        mx = e.amax(1, keepdim=True)
        p = torch.sub(e, mx).exp_()
        tot = p.sum(1, keepdim=True)
        p.div_(tot)
        lse = (mx + tot.log()).squeeze(1)
        pe = p * e
        if masked_diag:  # the masked self pair: 0 * -inf -> 0
            pe.diagonal().zero_()
        ew = pe.sum(1)
        e_pos = e.gather(1, pos_idx)
        ctx.mark_non_differentiable(ew)
        ctx.save_for_backward(p, pos_idx)
        return lse, e_pos, ew

    @staticmethod
    @once_differentiable
    def backward(ctx, g_lse, g_pos, _g_ew):  # type: ignore[override]
        p, pos_idx = ctx.saved_tensors
        ge = p * g_lse[:, None] if g_lse is not None else torch.zeros_like(p)
        if g_pos is not None:
            ge.scatter_add_(1, pos_idx, g_pos)
        return ge, None, None


class _Rows:
    """Per-row quantities of the plan P = diag(u) K diag(v) for a fixed v (internal)."""

    def __init__(self, bt: _Batch, lv: Tensor, masked_diag: bool) -> None:
        self.bt, self.lv = bt, lv
        self.e = bt.log_k + lv[None, :]  # log(K_ab v_b)
        self.lse, self.e_pos, self.ew = _RowStats.apply(self.e, bt.pos_idx, masked_diag)

    def ce(self) -> Tensor:
        r"""Per row :math:`-\sum_p \hat T_{ap}\log(P_{ap}/\sum_b P_{ab})`."""
        t = self.bt.target
        if t is None:
            return self.lse - self.e_pos.mean(1)
        return self.lse - (t * torch.where(t > 0, self.e, torch.zeros_like(self.e))).sum(1)

    def rince(self, lu: Tensor, q: float, lam: float) -> tuple[Tensor, Tensor]:
        r"""Per row: attraction :math:`-\frac1q\sum_p\hat T_{ap}(P_{ap}/u_a)^q` and repulsion
        :math:`\frac1q(\lambda\sum_p\hat T_{ap}/u_p)^q`."""
        t, idx = self.bt.target, self.bt.pos_idx
        if t is None:
            pos = torch.exp(q * self.e_pos).mean(1)
            inv_u = torch.exp(-lu)[idx].mean(1)
        else:
            pos = (t * torch.exp(q * self.e)).sum(1)
            inv_u = t @ torch.exp(-lu)
        neg = (lam * inv_u).pow(q) / q if lam > 0 else torch.zeros_like(pos)
        return -pos / q, neg


class TransportHead(nn.Module):
    requires: frozenset[str] = frozenset()  # set per instance: {groups} when alpha/beta != 0
    unit_marginals: ClassVar[bool] = False  # default marginals: ones (True) or 1/N (False)

    def _setup(
        self,
        epsilon: float,
        normalize: bool,
        self_pair: str,
        sim_clamp: float | None,
        alpha: float,
        beta: float,
        solver: str,
        groups: str = "domains",
    ) -> None:
        check_positive(epsilon=epsilon)
        check_choice("groups", groups, GROUPS)
        check_choice("self_pair", self_pair, SELF_PAIRS)
        check_choice("solver", solver, SOLVERS)
        check_nonneg(alpha=alpha, beta=beta)
        if sim_clamp is not None and not math.isfinite(sim_clamp):
            raise ValueError(f"sim_clamp must be a finite float or None, got {sim_clamp}")
        self.epsilon = epsilon
        self.normalize = normalize
        self.self_pair = self_pair
        self.sim_clamp = sim_clamp
        self.alpha = alpha
        self.beta = beta
        self.solver = solver
        self.groups = groups
        # the module passes the batch field named here (sslkit/data/fields.py)
        self.requires = frozenset({groups}) if alpha != 0 or beta != 0 else frozenset()

    def _groups(self, domains: Tensor | None, labels: Tensor | None) -> Tensor | None:
        """The group ids the alpha/beta target plan is built on."""
        return labels if self.groups == "labels" else domains

    # batch preparation ---------------------------------------------------------------------
    def _prepare(
        self,
        z: Tensor,
        domains: Tensor | None,
        target_plan: Tensor | None,
        mu: Tensor | None,
        nu: Tensor | None,
    ) -> _Batch:
        check_views(z)
        batch, views, _ = z.shape
        with torch.autocast(device_type=z.device.type, enabled=False):
            z = upcast(z)
            x = view_major(F.normalize(z, dim=-1) if self.normalize else z)
            sim = x @ x.T
            log_k = _LogKernel.apply(sim, self.epsilon, self.sim_clamp, self.self_pair == "mask")
            with torch.no_grad():
                if self.normalize:
                    cos = sim.detach()
                else:
                    xn = view_major(F.normalize(z.detach(), dim=-1)).to(sim.dtype)
                    cos = xn @ xn.T
            bt = _Batch(log_k, cos, batch, views)
            bt.target = self._target(bt, domains, target_plan, log_k)
            bt.log_a = self._log_marginal(mu, "mu", bt, log_k)
            bt.log_b = self._log_marginal(nu, "nu", bt, log_k)
        return bt

    def _target(
        self, bt: _Batch, domains: Tensor | None, target_plan: Tensor | None, like: Tensor
    ) -> Tensor | None:
        n, dev = bt.n, like.device
        if target_plan is not None and domains is not None:
            raise ValueError("pass either target_plan or domains (with alpha/beta), not both")
        if target_plan is not None:
            t = target_plan
            if t.shape == (bt.batch, bt.views, bt.batch, bt.views):
                t = t.permute(1, 0, 3, 2).reshape(n, n)
            elif t.shape != (n, n):
                raise ValueError(
                    f"target_plan must have shape [B, V, B, V] = "
                    f"{(bt.batch, bt.views, bt.batch, bt.views)} or [N, N] = {(n, n)}, "
                    f"got {tuple(t.shape)}"
                )
            t = t.detach().to(device=dev, dtype=like.dtype)
        elif self.alpha != 0 or self.beta != 0:
            if domains is None:
                raise ValueError(
                    f"alpha/beta (group-aware target plan) need `{self.groups}` ([B] ids)"
                )
            if domains.shape != (bt.batch,):
                raise ValueError(
                    f"{self.groups} must have shape [B] = [{bt.batch}], got {tuple(domains.shape)}"
                )
            ids = torch.arange(n, device=dev) % bt.batch
            dom = domains.to(dev).repeat(bt.views)
            same_inst = ids[:, None] == ids[None, :]
            same_dom = dom[:, None] == dom[None, :]
            val = partial(torch.tensor, dtype=like.dtype, device=dev)
            t = torch.where(same_dom, val(self.alpha), val(self.beta))
            t = torch.where(same_inst, val(1.0), t)
            t.fill_diagonal_(0.0)
        else:
            return None
        if (t < 0).any() or not torch.isfinite(t).all():
            raise ValueError("target_plan entries must be finite and >= 0")
        rows = t.sum(1, keepdim=True)
        if (rows <= 0).any():
            raise ValueError("every row of the target plan needs positive mass")
        if self.self_pair == "mask" and (t.diagonal() > 0).any():
            raise ValueError("target plan puts mass on a self pair but self_pair='mask'")
        return t / rows

    def _log_marginal(self, m: Tensor | None, name: str, bt: _Batch, like: Tensor) -> Tensor:
        n = bt.n
        if m is None:
            val = 0.0 if self.unit_marginals else -math.log(n)
            return torch.full((n,), val, dtype=like.dtype, device=like.device)
        if m.shape == (bt.batch, bt.views):
            m = m.T.reshape(n)
        elif m.shape != (n,):
            raise ValueError(
                f"{name} must have shape [B, V] = {(bt.batch, bt.views)} or [N] = ({n},), "
                f"got {tuple(m.shape)}"
            )
        m = m.detach().to(device=like.device, dtype=like.dtype)
        if not (m > 0).all() or not torch.isfinite(m).all():
            raise ValueError(f"{name} entries must be finite and > 0")
        return torch.log(m)

    def _sinkhorn(self, bt: _Batch, iterations: int, fa: float = 1.0, fb: float = 1.0,
                  last_half: bool = False) -> LogScalings:
        return log_sinkhorn(
            bt.log_k, bt.log_a, bt.log_b, iterations, fa=fa, fb=fb, last_half=last_half,
            method=self.solver,
        )

    def _rows(self, bt: _Batch, lv: Tensor) -> _Rows:
        return _Rows(bt, lv, self.self_pair == "mask")

    @staticmethod
    def _logs(bt: _Batch, s: LogScalings, rows: _Rows, **terms: Tensor) -> dict:
        """Diagnostics of the plan P = diag(u) K diag(v) given by ``s``."""
        with torch.no_grad():
            lu, lv = s.log_u.detach(), s.log_v.detach()
            a, b = bt.log_a.exp(), bt.log_b.exp()
            row_mass = torch.exp(lu + rows.lse.detach())
            col_mass = torch.exp(lv + s.log_ktu)
            mass = row_mass.sum()
            plogp = (row_mass * (lu + rows.ew)).sum()
            pos_mass = torch.exp(lu[:, None] + rows.e_pos.detach()).sum()
            pos_cos = bt.cos.gather(1, bt.pos_idx)
            n_neg = bt.n * (bt.n - bt.views)
            neg_sim = (bt.cos.sum() - bt.cos.diagonal().sum() - pos_cos.sum()) / n_neg
            out = dict(
                plan_row_err=(row_mass - a).abs().sum() / a.sum(),
                plan_col_err=(col_mass - b).abs().sum() / b.sum(),
                plan_mass=mass / a.sum(),
                plan_entropy=torch.log(mass) - plogp / mass,
                pos_mass=pos_mass / mass,
                pos_sim=pos_cos.mean(),
                neg_sim=neg_sim,
                # the plan itself, for pictures: P = exp(plan_log_u[:, None] + plan_log_kv)
                plan_log_u=lu,
                plan_log_kv=rows.e,
                plan_mu=a,
                plan_nu=b,
            )
        return detached_logs(**out, **terms)
