r"""Generalized Contrastive Alignment (GCA): contrastive losses as entropic optimal transport.

Chen, Lin, Liu, Xiao, Dyer. "Your contrastive learning problem is secretly a distribution
alignment problem", NeurIPS 2024 (arXiv 2502.20141). Official code: github.com/nerdslab/gca,
file ``gca_loss_cifar.py`` (the CIFAR-10/100 path), whose math every head here follows by default.
The shared transport problem (kernel, target plan, marginals, Sinkhorn plan, loss forms, logs)
lives in :mod:`sslkit.losses.transport`; this module holds the five heads.

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


import torch
from torch import Tensor

from sslkit.losses.base import LossOutput
from sslkit.losses.sinkhorn import unbalanced_exponent
from sslkit.losses.transport import (
    RINCE_FORMS,
    TransportHead,
    check_choice,
    check_iterations,
    check_nonneg,
    check_positive,
)


class HSINCE(TransportHead):
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


class GCAINCE(TransportHead):
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
        check_iterations(iterations)
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


class HSRINCE(TransportHead):
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
        check_positive(q=q)
        check_nonneg(lam=lam)
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


class GCARINCE(TransportHead):
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
        check_iterations(iterations)
        check_positive(q=q)
        check_nonneg(lam=lam)
        check_choice("form", form, RINCE_FORMS)
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


class GCAUOT(TransportHead):
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
        check_iterations(iterations)
        check_positive(q=q, rho1=rho1, rho2=rho2)
        check_nonneg(lam=lam, r1=r1, r2=r2)
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
