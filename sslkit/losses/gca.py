r"""Generalized Contrastive Alignment (GCA): contrastive losses as entropic optimal transport.

Chen, Lin, Liu, Xiao, Dyer. "Your contrastive learning problem is secretly a distribution
alignment problem", NeurIPS 2024 (arXiv 2502.20141). Official code: github.com/nerdslab/gca,
file ``gca_loss_cifar.py`` (the CIFAR-10/100 path), whose math every head here follows by default.

All heads share one transport problem over the N = B*V rows :math:`x_a` (view-major order,
L2-normalised when ``normalize``):

* similarity :math:`S_{ab} = \max(x_a^\top x_b, c)` with ``sim_clamp`` :math:`c = 10^{-7}`
  (the official code clamps: pairs with negative cosine give no gradient),
* cost :math:`C_{ab} = 1 - S_{ab}` off the diagonal; the self-pair costs
  :math:`C_{aa} = \max_{cd} C_{cd}` (``self_pair="max_cost"``, official) or is forbidden
  (``self_pair="mask"``, :math:`K_{aa} = 0`),
* Gibbs kernel :math:`K = e^{-C/\varepsilon}` and plan :math:`P = \mathrm{diag}(u) K
  \mathrm{diag}(v)` from unrolled Sinkhorn iterations (:mod:`sslkit.losses.sinkhorn`) towards
  row/column marginals :math:`\mu, \nu`,
* target plan :math:`P^{tgt}`: by default mass 1 on every other view of the same instance
  (the identity "positive pair" target of the paper; for V = 2 one partner per row), optionally
  :math:`+\alpha` on other instances of the same domain and :math:`+\beta` on other domains
  (the paper's domain-aware target; with ``groups="labels"`` the groups are classes: a
  supervised target plan), or any ``target_plan`` passed to ``forward``.
  :math:`\hat T` denotes :math:`P^{tgt}` with rows normalised to sum to one.

Two loss forms built on the plan (a runs over rows, p over target columns):

.. math::
    \mathrm{CE}_a = -\sum_p \hat T_{ap} \log \frac{P_{ap}}{\sum_b P_{ab}}
    \qquad\text{(cross-entropy of the row-renormalised plan: ``F.cross_entropy(P.log())``)}

.. math::
    \mathrm{R}_a = -\frac1q \sum_p \hat T_{ap} \Big(\frac{P_{ap}}{u_a}\Big)^q
      + \frac1q\Big(\lambda \sum_p \hat T_{ap} \frac{1}{u_p}\Big)^q
    \qquad\text{(RINCE, Chuang et al. 2022, on the plan: the ``hs_rince``/``gca_uot`` bracket)}

For V = 2 and the default target both reduce exactly to the official per-row expressions.
Shared constructor arguments: ``epsilon`` (:math:`\varepsilon`, the temperature),
``normalize``, ``self_pair``, ``sim_clamp`` (``None`` disables the clamp), ``alpha``, ``beta``
(group-aware target; need ``domains``, or ``labels`` when ``groups="labels"``, in ``forward``;
the head then lists that name in ``requires``) and ``solver`` (``"auto"``, ``"scaling"``
or ``"log"``: the Sinkhorn implementation, all exact; see :mod:`sslkit.losses.sinkhorn`).

``forward(z, *, domains=None, labels=None, target_plan=None, mu=None, nu=None)``:

* ``z``: ``[B, V, D]``; ``domains`` / ``labels``: ``[B]`` integer group ids (for
  ``alpha``/``beta``, whichever ``groups`` names);
* ``target_plan``: ``[B, V, B, V]`` (or ``[N, N]`` in view-major order) non-negative target,
  replaces the default (rows are normalised; every row needs positive mass);
* ``mu``, ``nu``: ``[B, V]`` (or ``[N]``) positive row/column marginals, replacing the head's
  default (ones for ``hs_ince``/``gca_ince``, 1/N for the others), used as given.

Logs: ``loss``-term values (``ce``, ``rince_pos``, ``rince_neg``), ``plan_row_err`` and
``plan_col_err`` (:math:`\|P1-\mu\|_1/\|\mu\|_1` and the same for columns), ``plan_mass``
(:math:`\sum P / \sum\mu`), ``plan_entropy`` (entropy in nats of :math:`P/\sum P`),
``pos_mass`` (fraction of the plan's mass on the positive pairs), ``pos_sim``/``neg_sim``
(mean cosine of positive / negative pairs). Tensors, for pictures (the training module logs
only scalars): ``plan_log_u`` ``[N]`` and ``plan_log_kv`` ``[N, N]`` (:math:`\log u` and
:math:`\log(K\,\mathrm{diag}(v))`, so :math:`P = e^{\text{plan\_log\_u}[:, None] +
\text{plan\_log\_kv}}`), ``plan_mu``, ``plan_nu`` ``[N]`` (the marginals); rows and columns
in view-major order.
"""

from __future__ import annotations

import math
from functools import partial
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from sslkit.losses.base import LossOutput, check_views, detached_logs, upcast, view_major
from sslkit.losses.sinkhorn import SOLVERS, LogScalings, log_sinkhorn, unbalanced_exponent

SELF_PAIRS = ("max_cost", "mask")
# what the alpha/beta target groups instances by: domain ids, or class labels (supervised GCA)
GROUPS = ("domains", "labels")
RINCE_FORMS = ("code", "paper")


def _check_positive(**kwargs: float) -> None:
    for name, value in kwargs.items():
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")


def _check_nonneg(**kwargs: float) -> None:
    for name, value in kwargs.items():
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


def _check_iterations(iterations: int) -> None:
    if int(iterations) != iterations or iterations < 1:
        raise ValueError(f"iterations must be an integer >= 1, got {iterations}")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
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


class _GCAHead(nn.Module):
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
        _check_positive(epsilon=epsilon)
        _check_choice("groups", groups, GROUPS)
        _check_choice("self_pair", self_pair, SELF_PAIRS)
        _check_choice("solver", solver, SOLVERS)
        _check_nonneg(alpha=alpha, beta=beta)
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


class HSINCE(_GCAHead):
    r"""``hs_ince``: InfoNCE as one half Sinkhorn step (row normalisation of the Gibbs kernel).

    .. math::
        P = \mathrm{diag}(\mu / K\nu)\,K, \qquad
        \mathcal L = \frac1N \sum_a -\sum_p \hat T_{ap}\log\frac{P_{ap}}{\sum_b P_{ab}}
        = \frac1N\sum_a -\sum_p \hat T_{ap}\log\frac{K_{ap}\nu_p}{\sum_b K_{ab}\nu_b}

    Chen et al., NeurIPS 2024 (GCA), Sec. "InfoNCE as a proximal operator"; official
    ``gca_loss_cifar.hs_ince``. With ``self_pair="mask"``, ``sim_clamp=None`` and V = 2 this
    is exactly NT-Xent / :class:`~sslkit.losses.infonce.InfoNCE` at temperature ``epsilon``;
    the official default keeps the self pair with logit :math:`\min S/\varepsilon`.

    Example::

        >>> import torch
        >>> from sslkit.losses import HSINCE
        >>> z = torch.randn(8, 2, 16, requires_grad=True)  # [instances, views, dim]
        >>> out = HSINCE()(z)
        >>> out.loss.backward()
        >>> z.grad.shape
        torch.Size([8, 2, 16])
    """

    unit_marginals = True

    def __init__(
        self,
        epsilon: float = 0.5,
        normalize: bool = True,
        self_pair: str = "max_cost",
        sim_clamp: float | None = 1e-7,
        alpha: float = 0.0,
        beta: float = 0.0,
        groups: str = "domains",
        solver: str = "auto",
    ) -> None:
        super().__init__()
        self._setup(epsilon, normalize, self_pair, sim_clamp, alpha, beta, solver, groups)

    def forward(self, z: Tensor, *, domains=None, labels=None, target_plan=None, mu=None, nu=None,
                **_: object) -> LossOutput:
        bt = self._prepare(z, self._groups(domains, labels), target_plan, mu, nu)
        with torch.autocast(device_type=z.device.type, enabled=False):
            s = self._sinkhorn(bt, 1, last_half=True)
            rows = self._rows(bt, s.log_v)
            loss = rows.ce().mean()
            logs = self._logs(bt, s, rows, ce=loss)
        return LossOutput(loss, logs)


class GCAINCE(_GCAHead):
    r"""``gca_ince``: InfoNCE on the (approximately) doubly stochastic Sinkhorn plan.

    .. math::
        P = \mathrm{Sinkhorn}_T(K; \mu, \nu), \qquad
        \mathcal L = \frac1N\sum_a -\sum_p \hat T_{ap}\log\frac{P_{ap}}{\sum_b P_{ab}}

    i.e. :math:`\min_\theta\mathrm{KL}(P^{tgt}\|\mathrm{Prox}^{KL}_{C_1\cap C_2}(K_\theta))`,
    T = ``iterations`` unrolled (u, v) updates from :math:`v = \nu`, gradients through all
    of them. Chen et al., NeurIPS 2024 (GCA-INCE); official ``gca_loss_cifar.gca_ince``
    (marginals :math:`\mu = \nu = 1`; the log-loss via ``F.cross_entropy(P.log())``
    renormalises each row of P).

    Example::

        >>> import torch
        >>> from sslkit.losses import GCAINCE
        >>> z = torch.randn(8, 2, 16, requires_grad=True)  # [instances, views, dim]
        >>> out = GCAINCE()(z)
        >>> out.loss.backward()
        >>> z.grad.shape
        torch.Size([8, 2, 16])
    """

    unit_marginals = True

    def __init__(
        self,
        epsilon: float = 0.5,
        iterations: int = 10,
        normalize: bool = True,
        self_pair: str = "max_cost",
        sim_clamp: float | None = 1e-7,
        alpha: float = 0.0,
        beta: float = 0.0,
        groups: str = "domains",
        solver: str = "auto",
    ) -> None:
        super().__init__()
        self._setup(epsilon, normalize, self_pair, sim_clamp, alpha, beta, solver, groups)
        _check_iterations(iterations)
        self.iterations = int(iterations)

    def forward(self, z: Tensor, *, domains=None, labels=None, target_plan=None, mu=None, nu=None,
                **_: object) -> LossOutput:
        bt = self._prepare(z, self._groups(domains, labels), target_plan, mu, nu)
        with torch.autocast(device_type=z.device.type, enabled=False):
            s = self._sinkhorn(bt, self.iterations)
            rows = self._rows(bt, s.log_v)
            loss = rows.ce().mean()
            logs = self._logs(bt, s, rows, ce=loss)
        return LossOutput(loss, logs)


class HSRINCE(_GCAHead):
    r"""``hs_rince``: RINCE on the one-half-step plan (the "W1" alignment of the paper).

    With :math:`u = \mu / (K\nu)` and :math:`P = \mathrm{diag}(u) K \mathrm{diag}(\nu)`
    (:math:`\mu=\nu=1/N`):

    .. math::
        \mathcal L = \frac1N\sum_a\Big[-\frac1q\sum_p\hat T_{ap}\Big(\frac{P_{ap}}{u_a}\Big)^q
        + \frac1q\Big(\lambda\sum_p \hat T_{ap}\frac{1}{u_p}\Big)^q\Big]

    For V = 2: :math:`-(K_{ap}/N)^q/q + (\lambda\sum_b K_{pb})^q/q`, RINCE (Chuang et al., CVPR
    2022) on Gibbs-kernel similarities. Chen et al., NeurIPS 2024; official
    ``gca_loss_cifar.hs_rince``. Defaults q = 0.98, lam = 0.01 from the official CIFAR config.

    Example::

        >>> import torch
        >>> from sslkit.losses import HSRINCE
        >>> z = torch.randn(8, 2, 16, requires_grad=True)  # [instances, views, dim]
        >>> out = HSRINCE()(z)
        >>> out.loss.backward()
        >>> z.grad.shape
        torch.Size([8, 2, 16])
    """

    def __init__(
        self,
        epsilon: float = 0.5,
        q: float = 0.98,
        lam: float = 0.01,
        normalize: bool = True,
        self_pair: str = "max_cost",
        sim_clamp: float | None = 1e-7,
        alpha: float = 0.0,
        beta: float = 0.0,
        groups: str = "domains",
        solver: str = "auto",
    ) -> None:
        super().__init__()
        self._setup(epsilon, normalize, self_pair, sim_clamp, alpha, beta, solver, groups)
        _check_positive(q=q)
        _check_nonneg(lam=lam)
        self.q, self.lam = q, lam

    def forward(self, z: Tensor, *, domains=None, labels=None, target_plan=None, mu=None, nu=None,
                **_: object) -> LossOutput:
        bt = self._prepare(z, self._groups(domains, labels), target_plan, mu, nu)
        with torch.autocast(device_type=z.device.type, enabled=False):
            s = self._sinkhorn(bt, 1, last_half=True)
            rows = self._rows(bt, s.log_v)
            pos, neg = rows.rince(s.log_u, self.q, self.lam)
            loss = (pos + neg).mean()
            logs = self._logs(bt, s, rows, rince_pos=pos.mean(), rince_neg=neg.mean())
        return LossOutput(loss, logs)


class GCARINCE(_GCAHead):
    r"""``gca_rince``: robust (RINCE-type) alignment with the multistep Sinkhorn plan.

    ``form="code"`` (default; official ``gca_loss_cifar.gca_rince``): the q-power of the
    GCA-INCE loss on the plan with marginals :math:`\mu=\nu=1/N`,

    .. math:: \mathcal L = \frac1q\Big(\frac1N\sum_a -\sum_p \hat T_{ap}
        \log\frac{P_{ap}}{\sum_b P_{ab}}\Big)^q

    (the code's class weights built from ``lam`` are all 1, so ``lam`` has no effect there).

    ``form="paper"`` (the formula of the paper/poster): RINCE on :math:`P^{(2T-1)}`, the plan
    after the T-th row scaling,
    :math:`P^{(2T-1)} = \mathrm{diag}(u^{(T)})K\mathrm{diag}(v^{(T-1)})`:

    .. math:: \mathcal L = \frac1N\sum_a\Big[-\frac1q\sum_p\hat T_{ap}
        \Big(\frac{P^{(2T-1)}_{ap}}{u^{(T)}_a}\Big)^q
        + \frac1q\Big(\lambda\sum_p\hat T_{ap}\frac{1}{u^{(T)}_p}\Big)^q\Big]

    which is :class:`HSRINCE` for T = 1. Chen et al., NeurIPS 2024 (GCA-RINCE).

    Example::

        >>> import torch
        >>> from sslkit.losses import GCARINCE
        >>> z = torch.randn(8, 2, 16, requires_grad=True)  # [instances, views, dim]
        >>> out = GCARINCE()(z)
        >>> out.loss.backward()
        >>> z.grad.shape
        torch.Size([8, 2, 16])
    """

    def __init__(
        self,
        epsilon: float = 0.5,
        iterations: int = 10,
        q: float = 0.98,
        lam: float = 0.01,
        form: str = "code",
        normalize: bool = True,
        self_pair: str = "max_cost",
        sim_clamp: float | None = 1e-7,
        alpha: float = 0.0,
        beta: float = 0.0,
        groups: str = "domains",
        solver: str = "auto",
    ) -> None:
        super().__init__()
        self._setup(epsilon, normalize, self_pair, sim_clamp, alpha, beta, solver, groups)
        _check_iterations(iterations)
        _check_positive(q=q)
        _check_nonneg(lam=lam)
        _check_choice("form", form, RINCE_FORMS)
        self.iterations, self.q, self.lam, self.form = int(iterations), q, lam, form

    def forward(self, z: Tensor, *, domains=None, labels=None, target_plan=None, mu=None, nu=None,
                **_: object) -> LossOutput:
        bt = self._prepare(z, self._groups(domains, labels), target_plan, mu, nu)
        with torch.autocast(device_type=z.device.type, enabled=False):
            if self.form == "code":
                s = self._sinkhorn(bt, self.iterations)
                rows = self._rows(bt, s.log_v)
                ce = rows.ce().mean()
                loss = ce.pow(self.q) / self.q
                logs = self._logs(bt, s, rows, ce=ce)
            else:
                s = self._sinkhorn(bt, self.iterations, last_half=True)
                rows = self._rows(bt, s.log_v)
                pos, neg = rows.rince(s.log_u, self.q, self.lam)
                loss = (pos + neg).mean()
                logs = self._logs(bt, s, rows, rince_pos=pos.mean(), rince_neg=neg.mean())
        return LossOutput(loss, logs)


class GCAUOT(_GCAHead):
    r"""``gca_uot``: GCA with unbalanced OT (KL-relaxed marginals) for noisy views.

    The plan runs T = ``iterations`` unbalanced Sinkhorn iterations (Chizat et al. 2018)
    :math:`u \leftarrow (\mu/Kv)^{\rho_1/(\rho_1+\varepsilon)}`,
    :math:`v \leftarrow (\nu/K^\top u)^{\rho_2/(\rho_2+\varepsilon)}` from :math:`v=\nu`
    (:math:`\mu=\nu=1/N`), i.e. entropic OT with marginal penalties
    :math:`\rho_1\mathrm{KL}(P1\|\mu) + \rho_2\mathrm{KL}(P^\top 1\|\nu)`; then

    .. math::
        \mathcal L = \frac1N\sum_a \Big( r_2\Big[-\frac1q\sum_p\hat T_{ap}
        \Big(\frac{P_{ap}}{u_a}\Big)^q + \frac1q\Big(\lambda\sum_p\hat T_{ap}\frac1{u_p}\Big)^q\Big]
        - r_1\sum_p \hat T_{ap}\log\frac{P_{ap}}{\sum_b P_{ab}} \Big)

    Chen et al., NeurIPS 2024 (GCA-UOT); official ``gca_loss_cifar.gca_uot`` (a port of POT's
    ``sinkhorn_stabilized_unbalanced``). Defaults from the official CIFAR-10 config:
    rho1 = rho2 = 0.2, q = 0.98, lam = 0.01, r1 = 1, r2 = 0.02.

    Example::

        >>> import torch
        >>> from sslkit.losses import GCAUOT
        >>> z = torch.randn(8, 2, 16, requires_grad=True)  # [instances, views, dim]
        >>> out = GCAUOT()(z)
        >>> out.loss.backward()
        >>> z.grad.shape
        torch.Size([8, 2, 16])
    """

    def __init__(
        self,
        epsilon: float = 0.5,
        iterations: int = 10,
        q: float = 0.98,
        lam: float = 0.01,
        rho1: float = 0.2,
        rho2: float = 0.2,
        r1: float = 1.0,
        r2: float = 0.02,
        normalize: bool = True,
        self_pair: str = "max_cost",
        sim_clamp: float | None = 1e-7,
        alpha: float = 0.0,
        beta: float = 0.0,
        groups: str = "domains",
        solver: str = "auto",
    ) -> None:
        super().__init__()
        self._setup(epsilon, normalize, self_pair, sim_clamp, alpha, beta, solver, groups)
        _check_iterations(iterations)
        _check_positive(q=q, rho1=rho1, rho2=rho2)
        _check_nonneg(lam=lam, r1=r1, r2=r2)
        self.iterations, self.q, self.lam = int(iterations), q, lam
        self.rho1, self.rho2, self.r1, self.r2 = rho1, rho2, r1, r2

    def forward(self, z: Tensor, *, domains=None, labels=None, target_plan=None, mu=None, nu=None,
                **_: object) -> LossOutput:
        bt = self._prepare(z, self._groups(domains, labels), target_plan, mu, nu)
        fa = unbalanced_exponent(self.rho1, self.epsilon)
        fb = unbalanced_exponent(self.rho2, self.epsilon)
        with torch.autocast(device_type=z.device.type, enabled=False):
            s = self._sinkhorn(bt, self.iterations, fa=fa, fb=fb)
            rows = self._rows(bt, s.log_v)
            ce = rows.ce().mean()
            pos, neg = rows.rince(s.log_u, self.q, self.lam)
            loss = self.r2 * (pos + neg).mean() + self.r1 * ce
            logs = self._logs(bt, s, rows, ce=ce,
                              rince_pos=pos.mean(), rince_neg=neg.mean())
        return LossOutput(loss, logs)
