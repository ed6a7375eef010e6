"""Tests for sslkit.losses.sinkhorn: plans against POT, both solvers, gradients, underflow."""

from __future__ import annotations

import math
import warnings

import numpy as np
import ot
import pytest
import torch

from sslkit.losses.sinkhorn import (
    log_sinkhorn,
    sinkhorn,
    sinkhorn_unbalanced,
    unbalanced_exponent,
)

torch.set_num_threads(1)
METHODS = ["scaling", "log"]


def _problem(n=7, m=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    cost = torch.rand(n, m, generator=g, dtype=torch.float64)
    a = torch.rand(n, generator=g, dtype=torch.float64) + 0.5
    b = torch.rand(m, generator=g, dtype=torch.float64) + 0.5
    return a, b, cost


def _pot_unbalanced(a, b, cost, eps, rho1, rho2, iters, stop, warm_v):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # POT warns that reg_type="entropy" overrides c
        return ot.unbalanced.sinkhorn_unbalanced(
            a.numpy(), b.numpy(), cost.numpy(), eps, (rho1, rho2), reg_type="entropy",
            numItermax=iters, stopThr=stop,
            warmstart=None if warm_v is None else (np.zeros(len(a)), np.log(warm_v.numpy())),
        )


@pytest.mark.parametrize("method", METHODS)
def test_balanced_plan_equals_pot_converged(method):
    a, b, cost = _problem()
    b = b * a.sum() / b.sum()  # balanced OT needs equal masses
    plan = sinkhorn(a, b, cost, 0.3, 3000, method=method)
    ref = ot.sinkhorn(a.numpy(), b.numpy(), cost.numpy(), 0.3, numItermax=10000, stopThr=1e-15)
    np.testing.assert_allclose(plan.numpy(), ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(plan.sum(1).numpy(), a.numpy(), atol=1e-12)
    np.testing.assert_allclose(plan.sum(0).numpy(), b.numpy(), atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_balanced_iterates_equal_pot_step_by_step(method):
    # POT updates v first from u0; ours updates u first from v0 = b. Transposing the problem
    # and warm-starting POT at u0 = a makes the two sequences of iterates identical.
    a, b, cost = _problem(6, 6, seed=1)
    b = b * a.sum() / b.sum()
    for iters in (1, 2, 5):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "did not converge": intended, few iterations
            ref = ot.sinkhorn(
                a.numpy(), b.numpy(), cost.numpy(), 0.2, numItermax=iters, stopThr=-1.0,
                warmstart=(np.log(a.numpy()), np.zeros(6)),
            )
        plan = sinkhorn(b, a, cost.T, 0.2, iters, method=method).T
        np.testing.assert_allclose(plan.numpy(), ref, rtol=1e-13, atol=0)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("rho", [(0.2, 0.2), (0.7, 3.0)])
def test_unbalanced_plan_equals_pot(method, rho):
    a, b, cost = _problem()
    for iters in (1, 3, 10):
        ref = _pot_unbalanced(a, b, cost, 0.5, *rho, iters, -1.0, warm_v=b)
        plan = sinkhorn_unbalanced(a, b, cost, 0.5, *rho, iters, method=method)
        np.testing.assert_allclose(plan.numpy(), ref, rtol=1e-13, atol=0)
    # converged: POT from its own start (u = v = 1) reaches the same plan
    ref = _pot_unbalanced(a, b, cost, 0.5, *rho, 20000, 1e-16, warm_v=None)
    plan = sinkhorn_unbalanced(a, b, cost, 0.5, *rho, 3000, method=method)
    np.testing.assert_allclose(plan.numpy(), ref, rtol=1e-10, atol=0)


def test_unbalanced_approaches_balanced_as_rho_grows():
    a, b, cost = _problem()
    b = b * a.sum() / b.sum()
    balanced = sinkhorn(a, b, cost, 0.3, 3000)
    gaps = []
    for rho in (0.1, 1.0, 10.0, 100.0, 1e4):
        plan = sinkhorn_unbalanced(a, b, cost, 0.3, rho, rho, 3000)
        gaps.append((plan - balanced).abs().max().item())
    assert all(g1 > g2 for g1, g2 in zip(gaps, gaps[1:])), gaps
    assert gaps[-1] < 1e-4 * gaps[0]
    exact = sinkhorn_unbalanced(a, b, cost, 0.3, math.inf, math.inf, 3000)
    torch.testing.assert_close(exact, balanced, rtol=0, atol=1e-14)


@pytest.mark.parametrize("last_half", [False, True])
@pytest.mark.parametrize("f", [(1.0, 1.0), (0.3, 0.8)])
def test_scaling_and_log_paths_agree_with_gradients(last_half, f):
    a, b, cost = _problem(6, 4, seed=2)
    log_k = (-cost / 0.25).requires_grad_()
    log_k_data = log_k.detach().clone()
    log_k_data[0, 1] = -math.inf  # a forbidden pair
    log_a = a.log().requires_grad_()
    log_b = b.log().requires_grad_()
    g = torch.Generator().manual_seed(3)
    wu = torch.randn(6, generator=g, dtype=torch.float64)
    wv = torch.randn(4, generator=g, dtype=torch.float64)
    results = []
    for method in METHODS:
        lk = log_k_data.clone().requires_grad_()
        s = log_sinkhorn(lk, log_a, log_b, 4, fa=f[0], fb=f[1], last_half=last_half, method=method)
        obj = (wu * s.log_u).sum() + (wv * s.log_v).sum() + (s.log_u.exp().sum() * 0.3)
        grads = torch.autograd.grad(obj, [lk, log_a, log_b])
        results.append((s, grads))
    (s1, g1), (s2, g2) = results
    for x, y in zip(s1, s2):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)
    for x, y in zip(g1, g2):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)
    assert g1[0][0, 1] == 0


def test_plain_loop_reference_and_last_half():
    # u first, from v = b; last_half stops after the u-update (P^(2T-1))
    a, b, cost = _problem(5, 5, seed=4)
    k = torch.exp(-cost / 0.4)
    fa, fb = unbalanced_exponent(0.5, 0.4), unbalanced_exponent(2.0, 0.4)
    u, v = [None] * 5, [b[j].item() for j in range(5)]
    for t in range(3):
        u = [(a[i].item() / sum(k[i, j].item() * v[j] for j in range(5))) ** fa for i in range(5)]
        if t == 2:
            break
        v = [(b[j].item() / sum(k[i, j].item() * u[i] for i in range(5))) ** fb for j in range(5)]
    for method in METHODS:
        s = log_sinkhorn(-cost / 0.4, a.log(), b.log(), 3, fa=fa, fb=fb, last_half=True,
                         method=method)
        np.testing.assert_allclose(s.log_u.exp().numpy(), u, rtol=1e-13)
        np.testing.assert_allclose(s.log_v.exp().numpy(), v, rtol=1e-13)
        ktu = [sum(k[i, j].item() * u[i] for i in range(5)) for j in range(5)]
        np.testing.assert_allclose(s.log_ktu.exp().numpy(), ktu, rtol=1e-13)


def test_one_half_step_is_row_softmax():
    _, _, cost = _problem(6, 6)
    log_k = -cost / 0.1
    ones = torch.zeros(6, dtype=torch.float64)
    s = log_sinkhorn(log_k, ones, ones, 1, last_half=True)
    plan = torch.exp(s.log_u[:, None] + log_k + s.log_v[None, :])
    torch.testing.assert_close(plan, torch.softmax(log_k, dim=1), rtol=1e-14, atol=0)


@pytest.mark.parametrize("method", METHODS)
def test_gradcheck(method):
    a, b, cost = _problem(4, 3, seed=5)
    args = (-cost / 0.5, a.log(), b.log())
    args = tuple(x.clone().requires_grad_() for x in args)

    def fn(lk, la, lb):
        s = log_sinkhorn(lk, la, lb, 3, fa=0.6, fb=0.9, method=method)
        return s.log_u, s.log_v

    assert torch.autograd.gradcheck(fn, args)


def test_low_temperature_no_underflow_float32():
    # At eps = 0.004 exp(-C/eps) underflows to 0 in float32 for most pairs: the naive
    # multiplicative algorithm divides by zero, the auto solver switches to the log domain.
    a, b, cost = _problem(8, 8, seed=6)
    b = b * a.sum() / b.sum()
    assert (torch.exp(-cost.float() / 0.004) == 0).any()
    ref = sinkhorn(a, b, cost, 0.004, 200, method="log")
    plan = sinkhorn(a.float(), b.float(), cost.float(), 0.004, 200)
    assert torch.isfinite(plan).all()
    torch.testing.assert_close(plan.double(), ref, rtol=0, atol=1e-5)


def test_autocast_does_not_lower_precision():
    a, b, cost = _problem(16, 16, seed=7)
    args = (-cost.float() / 0.5, a.float().log(), b.float().log())
    ref = log_sinkhorn(*args, 10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = log_sinkhorn(*args, 10)
    assert got.log_u.dtype == torch.float32
    torch.testing.assert_close(got.log_u, ref.log_u, rtol=1e-6, atol=1e-6)


def test_argument_validation():
    _, _, cost = _problem(3, 3)
    z = torch.zeros(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="method"):
        log_sinkhorn(-cost, z, z, 1, method="fast")
    with pytest.raises(ValueError, match="iterations"):
        log_sinkhorn(-cost, z, z, 0)
    with pytest.raises(ValueError, match="log_k"):
        log_sinkhorn(-cost, z[:2], z, 1)
    with pytest.raises(ValueError, match="rho"):
        unbalanced_exponent(0.0, 0.5)
    assert unbalanced_exponent(math.inf, 0.5) == 1.0
    assert unbalanced_exponent(0.2, 0.5) == pytest.approx(0.2 / 0.7)
