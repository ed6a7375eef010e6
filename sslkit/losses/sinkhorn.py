r"""Differentiable, unrolled Sinkhorn scaling for balanced and unbalanced entropic OT.

Everything is phrased with a *log-kernel* :math:`\log K_{ij}` (``-inf`` allowed for forbidden
pairs), log-marginals :math:`\log a` and :math:`\log b`, and returns the log-scalings
:math:`\log u, \log v` of the plan :math:`P = \mathrm{diag}(u)\,K\,\mathrm{diag}(v)`.

One iteration is the generalised Sinkhorn-Knopp update of Chizat et al. (2018, "Scaling
algorithms for unbalanced optimal transport problems"), the one POT's
``ot.unbalanced.sinkhorn_unbalanced(..., reg_type="entropy")`` runs, u first:

.. math::
    u \leftarrow \Big(\frac{a}{K v}\Big)^{f_a}, \qquad
    v \leftarrow \Big(\frac{b}{K^\top u}\Big)^{f_b}, \qquad
    f = \frac{\rho}{\rho + \varepsilon}

with :math:`v` started at :math:`b`. :math:`f_a = f_b = 1` (:math:`\rho = \infty`) is the
balanced Sinkhorn-Knopp of Cuturi (2013): after each iteration the columns of :math:`P` sum to
:math:`b` exactly and the rows approximately to :math:`a`. For :math:`f < 1` the marginals are
only KL-penalised (weight :math:`\rho`) and :math:`P` solves
:math:`\min_P \langle P, C\rangle - \varepsilon H(P) + \rho_1 \mathrm{KL}(P1\|a) +
\rho_2 \mathrm{KL}(P^\top 1\|b)` in the limit.

The iterations are unrolled and differentiated through (no implicit differentiation, no
detach), as the GCA paper's code does. Two exact implementations of the same map:

* ``"scaling"``: multiplicative updates with matrix-vector products on
  :math:`\tilde K = e^{\log K - \max \log K}` and marginals shifted to a maximum of 1 (the
  shifts are carried as exact scalars, so values equal the unshifted algorithm's), with a
  hand-written backward that accumulates the kernel gradient of all 2T unrolled steps as one
  rank-2T product. Cost: O(T N^2) multiply-adds, no exponentials after the first.
* ``"log"``: log-domain updates with ``logsumexp`` (plain autograd). Immune to underflow at any
  temperature, but 2T exponential passes over the N x N kernel forward and again backward.

``"auto"`` (default) takes ``"scaling"`` whenever the dynamic range of the kernel and the
marginals is small enough for the working dtype (always the case for cosine costs at
temperatures >= ~0.05 in float32) and falls back to ``"log"`` otherwise or if the scaling
pass produced a non-finite value. Both paths are tested to agree to float64 rounding.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from typing import NamedTuple

import torch
from torch import Tensor

SOLVERS = ("auto", "log", "scaling")


class LogScalings(NamedTuple):
    """Result of :func:`log_sinkhorn`.

    ``log_u``, ``log_v``: log-scalings (differentiable); the plan is
    ``exp(log_u[:, None] + log_k + log_v[None, :])``. ``log_ktu``: ``log(K^T u)`` for the
    returned ``u`` (detached), so the plan's column sums are ``exp(log_v + log_ktu)`` at no
    extra cost.
    """

    log_u: Tensor
    log_v: Tensor
    log_ktu: Tensor


def unbalanced_exponent(rho: float, epsilon: float) -> float:
    r"""The scaling exponent :math:`\rho / (\rho + \varepsilon)`; 1 (balanced) for ``rho = inf``."""
    if rho <= 0 or epsilon <= 0:
        raise ValueError(f"rho and epsilon must be > 0, got rho={rho}, epsilon={epsilon}")
    return 1.0 if math.isinf(rho) else rho / (rho + epsilon)


def _no_autocast(t: Tensor) -> AbstractContextManager:
    return torch.autocast(device_type=t.device.type, enabled=False)


class _ScalingSinkhorn(torch.autograd.Function):
    """Unrolled multiplicative Sinkhorn with shifted kernel/marginals and a fused backward."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, log_k, log_a, log_b, shift, iterations, fa, fb, last_half
    ):
        with _no_autocast(log_k):
            kt = torch.sub(log_k, shift).exp_()  # max entry 1, -inf -> 0
            sa, sb = log_a.max(), log_b.max()
            at, bt = torch.exp(log_a - sa), torch.exp(log_b - sb)
            vt, beta = bt, sb
            xs, us, ys, vs = [], [], [], []
            alpha = sa
            ut = at
            for t in range(iterations):
                x = torch.mv(kt, vt)
                ut = at / x if fa == 1.0 else (at / x).pow(fa)
                alpha = fa * (sa - shift - beta)
                xs.append(x)
                us.append(ut)
                vs.append(vt)
                if last_half and t == iterations - 1:
                    break
                y = torch.mv(kt.t(), ut)
                vt = bt / y if fb == 1.0 else (bt / y).pow(fb)
                beta = fb * (sb - shift - alpha)
                ys.append(y)
            y_last = torch.mv(kt.t(), ut) if last_half else ys[-1]
            log_u = alpha + torch.log(ut)
            log_v = beta + torch.log(vt)
            log_ktu = shift + alpha + torch.log(y_last)
        ctx.mark_non_differentiable(log_ktu)
        ctx.save_for_backward(kt, *xs, *us, *ys, *vs)
        ctx.config = (iterations, fa, fb, last_half, len(ys))
        return log_u, log_v, log_ktu

    @staticmethod
    def backward(ctx, g_lu, g_lv, _g_ktu):  # type: ignore[override]
        iterations, fa, fb, last_half, n_y = ctx.config
        kt, *rest = ctx.saved_tensors
        n = len(rest) - n_y
        xs, us = rest[: n // 3], rest[n // 3 : 2 * n // 3]
        ys, vs = rest[2 * n // 3 : 2 * n // 3 + n_y], rest[2 * n // 3 + n_y :]
        with _no_autocast(kt):
            glu = torch.zeros_like(us[0]) if g_lu is None else g_lu
            glv = torch.zeros_like(vs[0]) if g_lv is None else g_lv
            ga = torch.zeros_like(glu)
            gb = torch.zeros_like(glv)
            left, right = [], []
            for t in reversed(range(len(xs))):
                if not (last_half and t == iterations - 1):
                    # v_t = (b / K^T u_t)^fb
                    gb = gb + fb * glv
                    w = (-fb * glv) / ys[t]
                    glu = glu + us[t] * torch.mv(kt, w)
                    left.append(us[t])
                    right.append(w)
                    glv = torch.zeros_like(glv)
                # u_t = (a / K v_{t-1})^fa
                ga = ga + fa * glu
                w = (-fa * glu) / xs[t]
                glv = glv + vs[t] * torch.mv(kt.t(), w)
                left.append(w)
                right.append(vs[t])
                glu = torch.zeros_like(glu)
            gb = gb + glv  # v_0 = b
            g_k = None
            if ctx.needs_input_grad[0]:
                g_k = kt * (torch.stack(left, 1) @ torch.stack(right, 1).t())
        return (
            g_k,
            ga if ctx.needs_input_grad[1] else None,
            gb if ctx.needs_input_grad[2] else None,
            None,
            None,
            None,
            None,
            None,
        )


def _log_path(
    log_k: Tensor, log_a: Tensor, log_b: Tensor, iterations: int, fa: float, fb: float,
    last_half: bool,
) -> LogScalings:
    lv = log_b
    lu = log_a
    ly = None
    for t in range(iterations):
        lu = fa * (log_a - torch.logsumexp(log_k + lv[None, :], dim=1))
        if last_half and t == iterations - 1:
            break
        ly = torch.logsumexp(log_k + lu[:, None], dim=0)
        lv = fb * (log_b - ly)
    if ly is None or last_half:
        with torch.no_grad():
            ly = torch.logsumexp(log_k + lu[:, None], dim=0)
    return LogScalings(lu, lv, ly.detach())


def log_sinkhorn(
    log_k: Tensor,
    log_a: Tensor,
    log_b: Tensor,
    iterations: int,
    *,
    fa: float = 1.0,
    fb: float = 1.0,
    last_half: bool = False,
    method: str = "auto",
) -> LogScalings:
    r"""``iterations`` unrolled (unbalanced) Sinkhorn iterations on a log-kernel.

    Args:
        log_k: ``[N, M]`` log-kernel, e.g. ``-C / epsilon``; ``-inf`` marks forbidden pairs.
        log_a, log_b: ``[N]``, ``[M]`` log-marginals (unnormalised masses are fine).
        iterations: number of (u, v) updates, u first, starting from ``v = b``.
        fa, fb: exponents :math:`\rho/(\rho+\varepsilon)` (see :func:`unbalanced_exponent`);
            1 for a hard (balanced) marginal.
        last_half: skip the final v-update, i.e. return :math:`u^{(T)}` and
            :math:`v^{(T-1)}` (the plan :math:`P^{(2T-1)}` after the T-th row scaling; with
            ``iterations=1`` this is the single row normalisation behind InfoNCE).
        method: ``"auto"``, ``"scaling"`` or ``"log"`` (see the module docstring).
    """
    if method not in SOLVERS:
        raise ValueError(f"method must be one of {SOLVERS}, got {method!r}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if log_k.dim() != 2 or log_a.shape != log_k.shape[:1] or log_b.shape != log_k.shape[1:]:
        raise ValueError(
            f"expected log_k [N, M], log_a [N], log_b [M], got {tuple(log_k.shape)}, "
            f"{tuple(log_a.shape)}, {tuple(log_b.shape)}"
        )
    if method == "log":
        return _log_path(log_k, log_a, log_b, iterations, fa, fb, last_half)

    with torch.no_grad():
        lo, hi = torch.aminmax(log_k.detach())
        if torch.isinf(lo):
            lo = log_k.detach().masked_fill(~torch.isfinite(log_k.detach()), math.inf).amin()
        spread = (hi - lo) + (log_a.max() - log_a.min()) + (log_b.max() - log_b.min())
        # e^{-spread} and products of a few such factors must stay well inside the dtype.
        budget = -0.3 * math.log(torch.finfo(log_k.dtype).tiny)
        use_scaling = method == "scaling" or bool(spread <= budget)
    if use_scaling:
        lu, lv, lktu = _ScalingSinkhorn.apply(
            log_k, log_a, log_b, hi, iterations, float(fa), float(fb), last_half
        )
        if method == "scaling" or bool(torch.isfinite(lu).all() & torch.isfinite(lv).all()):
            return LogScalings(lu, lv, lktu)
    return _log_path(log_k, log_a, log_b, iterations, fa, fb, last_half)


def _log_marginal(m: Tensor, n: int, like: Tensor) -> Tensor:
    if m.numel() == 0:
        return torch.full((n,), -math.log(n), dtype=like.dtype, device=like.device)
    return torch.log(m.to(like.dtype))


def sinkhorn(
    a: Tensor, b: Tensor, cost: Tensor, epsilon: float, iterations: int, method: str = "auto"
) -> Tensor:
    r"""Balanced entropic OT plan :math:`\mathrm{diag}(u) e^{-C/\varepsilon} \mathrm{diag}(v)`.

    Argument order as POT's ``ot.sinkhorn(a, b, M, reg)``; empty ``a``/``b`` mean uniform.
    Differs from POT only in the iteration order (u first from ``v = b``; POT updates v first
    from ``u = 1/N``) and in running exactly ``iterations`` steps without a stopping test;
    the converged plans are the same.
    """
    if epsilon <= 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon}")
    log_a = _log_marginal(a, cost.shape[0], cost)
    log_b = _log_marginal(b, cost.shape[1], cost)
    log_k = -cost / epsilon
    s = log_sinkhorn(log_k, log_a, log_b, iterations, method=method)
    return torch.exp(s.log_u[:, None] + log_k + s.log_v[None, :])


def sinkhorn_unbalanced(
    a: Tensor,
    b: Tensor,
    cost: Tensor,
    epsilon: float,
    rho1: float,
    rho2: float,
    iterations: int,
    method: str = "auto",
) -> Tensor:
    r"""Unbalanced entropic OT plan with KL-relaxed marginals (weights ``rho1``, ``rho2``).

    Solves :math:`\min_P \langle P,C\rangle - \varepsilon H(P) + \rho_1\mathrm{KL}(P1\|a) +
    \rho_2\mathrm{KL}(P^\top1\|b)` by the scaling iterations of POT's
    ``ot.unbalanced.sinkhorn_unbalanced(a, b, M, reg, (rho1, rho2), reg_type="entropy")``
    (same update order; POT starts from ``u = v = 1``, this from ``v = b``). ``rho = inf``
    makes that marginal hard.
    """
    log_a = _log_marginal(a, cost.shape[0], cost)
    log_b = _log_marginal(b, cost.shape[1], cost)
    fa, fb = unbalanced_exponent(rho1, epsilon), unbalanced_exponent(rho2, epsilon)
    log_k = -cost / epsilon
    s = log_sinkhorn(log_k, log_a, log_b, iterations, fa=fa, fb=fb, method=method)
    return torch.exp(s.log_u[:, None] + log_k + s.log_v[None, :])
