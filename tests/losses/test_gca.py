"""Tests for the GCA heads (sslkit.losses.gca) against a plain-loop float64 reference."""

from __future__ import annotations

import inspect
import math
import pathlib

import hydra.utils
import pytest
import torch
from omegaconf import OmegaConf

from sslkit.losses.gca import GCAINCE, GCARINCE, GCAUOT, HSINCE, HSRINCE
from sslkit.losses.infonce import InfoNCE

torch.set_num_threads(1)
CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs" / "loss"
HEADS = {"hs_ince": HSINCE, "gca_ince": GCAINCE, "hs_rince": HSRINCE, "gca_rince": GCARINCE,
         "gca_uot": GCAUOT}


# --------------------------------------------------------------------------------------------
# Plain reference: rows in instance-major order (the official CIFAR layout), Python loops.
# --------------------------------------------------------------------------------------------
def reference(name, z, *, epsilon=0.5, iterations=10, q=0.98, lam=0.01, rho1=0.2, rho2=0.2,
              r1=1.0, r2=0.02, form="code", normalize=True, self_pair="max_cost",
              sim_clamp=1e-7, target=None, mu=None, nu=None, return_plan=False):
    batch, views, _ = z.shape
    rows = [(i, v) for i in range(batch) for v in range(views)]
    n = len(rows)
    x = [z[i, v] / z[i, v].norm() if normalize else z[i, v] for i, v in rows]
    cost = [[None] * n for _ in range(n)]
    for r in range(n):
        for c in range(n):
            s = (x[r] * x[c]).sum()
            if sim_clamp is not None:
                s = torch.clamp(s, min=sim_clamp)
            cost[r][c] = 1 - s
    if self_pair == "max_cost":
        c_max = max((cost[r][c] for r in range(n) for c in range(n)),
                    key=lambda c: c.detach().item())
    kern = [[torch.exp(-cost[r][c] / epsilon) for c in range(n)] for r in range(n)]
    for r in range(n):
        kern[r][r] = torch.exp(-c_max / epsilon) if self_pair == "max_cost" else z.new_zeros(())

    # target plan, rows normalised
    tgt = [[0.0] * n for _ in range(n)]
    for r, (i, v) in enumerate(rows):
        for c, (j, w) in enumerate(rows):
            if target is not None:
                tgt[r][c] = float(target[i, v, j, w])
            elif i == j and r != c:
                tgt[r][c] = 1.0
        tot = sum(tgt[r])
        tgt[r] = [t / tot for t in tgt[r]]

    unit = name in ("hs_ince", "gca_ince")
    a = [float(mu[i, v]) if mu is not None else (1.0 if unit else 1.0 / n) for i, v in rows]
    b = [float(nu[i, v]) if nu is not None else (1.0 if unit else 1.0 / n) for i, v in rows]
    fa = fb = 1.0
    if name == "gca_uot":
        fa, fb = rho1 / (rho1 + epsilon), rho2 / (rho2 + epsilon)
    half = name in ("hs_ince", "hs_rince") or (name == "gca_rince" and form == "paper")
    steps = 1 if name.startswith("hs_") else iterations

    v_s = list(b)
    for t in range(steps):
        u_s = [(a[r] / sum(kern[r][c] * v_s[c] for c in range(n))) ** fa for r in range(n)]
        if half and t == steps - 1:
            break
        v_s = [(b[c] / sum(kern[r][c] * u_s[r] for r in range(n))) ** fb for c in range(n)]
    plan = [[u_s[r] * kern[r][c] * v_s[c] for c in range(n)] for r in range(n)]
    if return_plan:
        return plan, rows, a, b

    ce = 0.0
    rince = 0.0
    for r in range(n):
        row_sum = sum(plan[r])
        attract = 0.0
        inv_u = 0.0
        for c in range(n):
            if tgt[r][c] > 0:
                ce = ce - tgt[r][c] * torch.log(plan[r][c] / row_sum)
                attract = attract + tgt[r][c] * (plan[r][c] / u_s[r]) ** q
                inv_u = inv_u + tgt[r][c] / u_s[c]
        rince = rince - attract / q + (lam * inv_u) ** q / q
    ce, rince = ce / n, rince / n
    if name in ("hs_ince", "gca_ince"):
        return ce
    if name == "hs_rince" or (name == "gca_rince" and form == "paper"):
        return rince
    if name == "gca_rince":
        return ce**q / q
    return r2 * rince + r1 * ce


def _z(batch=4, views=2, dim=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, views, dim, generator=g, dtype=dtype)
    return z + 0.8 * z[:, :1]  # correlated views, as augmentations give


def _loss_and_grad(fn, z):
    z = z.clone().requires_grad_()
    loss = fn(z)
    (grad,) = torch.autograd.grad(loss, z)
    return loss.detach(), grad


CASES = [
    ("hs_ince", {}, {}),
    ("gca_ince", {}, {}),
    ("hs_rince", {}, {}),
    ("gca_rince", {}, {}),
    ("gca_rince", {"form": "paper", "iterations": 4}, {}),
    ("gca_uot", {}, {}),
    ("gca_uot", {"q": 0.6, "r2": 0.2, "rho1": 0.3, "rho2": 1.5, "lam": 0.5}, {}),
    ("gca_ince", {"epsilon": 0.2, "iterations": 3, "self_pair": "mask", "sim_clamp": None}, {}),
    ("gca_uot", {"self_pair": "mask", "sim_clamp": None, "normalize": False, "epsilon": 4.0}, {}),
    ("hs_rince", {"q": 0.5, "lam": 0.1, "epsilon": 0.3}, {}),
    ("gca_ince", {"sim_clamp": None, "iterations": 3}, {}),  # gradient through min S
    ("hs_rince", {"sim_clamp": None, "normalize": False, "epsilon": 8.0}, {}),
    ("gca_uot", {"sim_clamp": 0.3, "epsilon": 0.2}, {}),
    ("gca_ince", {}, {"views": 3}),
    ("gca_uot", {"iterations": 3}, {"views": 3}),
    ("gca_rince", {"form": "paper", "iterations": 2}, {"views": 3}),
    ("hs_rince", {}, {"views": 3}),
]


@pytest.mark.parametrize(("name", "kwargs", "shape"), CASES)
def test_matches_plain_reference(name, kwargs, shape):
    z = _z(**shape)
    head = HEADS[name](**kwargs)
    got_loss, got_grad = _loss_and_grad(lambda t: head(t).loss, z)
    ref_loss, ref_grad = _loss_and_grad(lambda t: reference(name, t, **kwargs), z)
    torch.testing.assert_close(got_loss, ref_loss, rtol=0, atol=1e-10)
    torch.testing.assert_close(got_grad, ref_grad, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", ["gca_ince", "gca_uot", "gca_rince"])
def test_custom_target_plan_and_marginals_match_reference(name):
    batch, views = 3, 3
    z = _z(batch, views)
    g = torch.Generator().manual_seed(1)
    target = torch.rand(batch, views, batch, views, generator=g, dtype=torch.float64)
    target[torch.arange(batch)[:, None], torch.arange(views)[None, :],
           torch.arange(batch)[:, None], torch.arange(views)[None, :]] = 0.0
    mu = torch.rand(batch, views, generator=g, dtype=torch.float64) + 0.5
    nu = torch.rand(batch, views, generator=g, dtype=torch.float64) + 0.5
    kwargs = {"form": "paper"} if name == "gca_rince" else {}
    head = HEADS[name](iterations=5, **kwargs)
    got = _loss_and_grad(lambda t: head(t, target_plan=target, mu=mu, nu=nu).loss, z)
    ref = _loss_and_grad(
        lambda t: reference(name, t, iterations=5, target=target, mu=mu, nu=nu, **kwargs), z
    )
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-10)


def test_domain_aware_target_plan():
    # P_tgt = positives + alpha * same domain + beta * other domain (paper, PACS experiment)
    batch, views = 4, 2
    z = _z(batch, views)
    domains = torch.tensor([0, 1, 0, 1])
    target = torch.zeros(batch, views, batch, views, dtype=torch.float64)
    for i in range(batch):
        for v in range(views):
            for j in range(batch):
                for w in range(views):
                    if i == j:
                        target[i, v, j, w] = 0.0 if v == w else 1.0
                    else:
                        target[i, v, j, w] = 0.3 if domains[i] == domains[j] else 0.05
    head = GCAUOT(alpha=0.3, beta=0.05)
    got = _loss_and_grad(lambda t: head(t, domains=domains).loss, z)
    ref = _loss_and_grad(lambda t: reference("gca_uot", t, target=target), z)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-10)
    plain = _loss_and_grad(lambda t: GCAUOT()(t).loss, z)
    assert not torch.allclose(got[0], plain[0])
    with pytest.raises(ValueError, match="domains"):
        head(z)


@pytest.mark.parametrize("name", list(HEADS))
def test_dense_target_equals_default_positive_target(name):
    z = _z(3, 3)
    indicator = torch.zeros(3, 3, 3, 3, dtype=torch.float64)
    for i in range(3):
        indicator[i, :, i, :] = 1.0 - torch.eye(3, dtype=torch.float64)
    head = HEADS[name]()
    got = _loss_and_grad(lambda t: head(t, target_plan=indicator).loss, z)
    ref = _loss_and_grad(lambda t: head(t).loss, z)
    torch.testing.assert_close(got, ref, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("views", [2, 3])
@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_one_half_step_is_infonce(views, tau):
    # InfoNCE = one row normalisation of the Gibbs kernel, once the self pair is masked
    z = _z(6, views, 8)
    head = HSINCE(epsilon=tau, self_pair="mask", sim_clamp=None)
    got = _loss_and_grad(lambda t: head(t).loss, z)
    ref = _loss_and_grad(lambda t: InfoNCE(temperature=tau)(t).loss, z)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)
    # the official self-pair cost makes it differ
    official = _loss_and_grad(lambda t: HSINCE(epsilon=tau)(t).loss, z)
    assert not torch.allclose(official[0], ref[0], atol=1e-6)


def test_reductions_between_heads():
    z = _z(5, 2, 6)
    q = 0.7
    # GCA-RINCE (code) = (GCA-INCE)^q / q
    ince = GCAINCE(iterations=4)(z).loss
    torch.testing.assert_close(GCARINCE(iterations=4, q=q)(z).loss, ince**q / q, rtol=1e-13, atol=0)
    # GCA-RINCE (paper form) with one iteration = HS-RINCE
    torch.testing.assert_close(
        GCARINCE(form="paper", iterations=1, q=q, lam=0.2)(z).loss,
        HSRINCE(q=q, lam=0.2)(z).loss, rtol=1e-13, atol=0,
    )
    # GCA-UOT with hard marginals and no RINCE term = GCA-INCE
    torch.testing.assert_close(
        GCAUOT(iterations=4, rho1=math.inf, rho2=math.inf, r2=0.0)(z).loss, ince,
        rtol=1e-13, atol=0,
    )


def test_uot_loss_and_plan_approach_balanced_as_rho_grows():
    z = _z(5, 2, 6)
    balanced = GCAINCE(iterations=30)(z)
    gaps = []
    for rho in (0.2, 2.0, 20.0, 200.0, 2e4):
        out = GCAUOT(iterations=30, rho1=rho, rho2=rho, r2=0.0)(z)
        gaps.append(abs(out.loss - balanced.loss).item())
        assert out.logs["plan_mass"] > 0
    assert all(g1 > g2 for g1, g2 in zip(gaps, gaps[1:])), gaps
    assert gaps[-1] < 1e-3 * gaps[0]


def test_logs_match_reference_plan():
    z = _z(3, 3)
    head = GCAUOT(iterations=5)
    logs = head(z).logs
    plan, rows, a, b = reference("gca_uot", z, iterations=5, return_plan=True)
    p = torch.tensor([[float(x) for x in row] for row in plan], dtype=torch.float64)
    a, b = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    mass = p.sum()
    pos = sum(p[r, c] for r in range(len(rows)) for c in range(len(rows))
              if rows[r][0] == rows[c][0] and r != c)
    expected = {
        "plan_row_err": (p.sum(1) - a).abs().sum() / a.sum(),
        "plan_col_err": (p.sum(0) - b).abs().sum() / b.sum(),
        "plan_mass": mass / a.sum(),
        "plan_entropy": -((p / mass) * torch.log(p / mass)).sum(),
        "pos_mass": pos / mass,
    }
    for key, value in expected.items():
        torch.testing.assert_close(logs[key], value, rtol=1e-10, atol=1e-12, msg=key)
    for key in ("ce", "rince_pos", "rince_neg", "pos_sim", "neg_sim"):
        assert not logs[key].requires_grad


def test_balanced_plan_marginals_in_logs():
    z = _z(4, 2)
    mu = torch.rand(4, 2, dtype=torch.float64) + 0.5
    nu = torch.rand(4, 2, dtype=torch.float64) + 0.5
    nu = nu * mu.sum() / nu.sum()
    logs = GCAINCE(iterations=300)(z, mu=mu, nu=nu).logs
    assert logs["plan_col_err"] < 1e-13 and logs["plan_row_err"] < 1e-9
    logs = HSINCE()(z).logs
    assert logs["plan_row_err"] < 1e-13 and logs["plan_col_err"] > 1e-4
    few, many = GCAINCE(iterations=1)(z).logs, GCAINCE(iterations=10)(z).logs
    assert many["plan_row_err"] < few["plan_row_err"]


@pytest.mark.parametrize("name", list(HEADS))
@pytest.mark.parametrize("solver", ["scaling", "log"])
def test_gradcheck(name, solver):
    z = _z(3, 2, 4).requires_grad_()
    head = HEADS[name](solver=solver, epsilon=0.3, **({"iterations": 3} if "gca" in name else {}))
    assert torch.autograd.gradcheck(lambda t: head(t).loss, (z,))


@pytest.mark.parametrize("name", list(HEADS))
def test_solvers_agree(name):
    z = _z(6, 3, 8)
    got = _loss_and_grad(lambda t: HEADS[name](solver="scaling")(t).loss, z)
    ref = _loss_and_grad(lambda t: HEADS[name](solver="log")(t).loss, z)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("name", list(HEADS))
def test_permutation_and_rotation_invariance(name):
    z = _z(7, 2, 6)
    head = HEADS[name]()
    loss, grad = _loss_and_grad(lambda t: head(t).loss, z)
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(0))
    loss_p, grad_p = _loss_and_grad(lambda t: head(t).loss, z[perm])
    torch.testing.assert_close(loss_p, loss, rtol=1e-13, atol=0)
    torch.testing.assert_close(grad_p, grad[perm], rtol=1e-10, atol=1e-13)
    rot, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(1),
                                         dtype=torch.float64))
    loss_r, grad_r = _loss_and_grad(lambda t: head(t).loss, z @ rot)
    torch.testing.assert_close(loss_r, loss, rtol=1e-12, atol=0)
    torch.testing.assert_close(grad_r, grad @ rot, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", list(HEADS))
def test_low_temperature_float32(name):
    z = _z(64, 2, 16, dtype=torch.float32)
    for kwargs in ({"epsilon": 0.05}, {"epsilon": 0.05, "self_pair": "mask", "sim_clamp": None}):
        head = HEADS[name](**kwargs)
        loss, grad = _loss_and_grad(lambda t: head(t).loss, z)
        ref_loss, ref_grad = _loss_and_grad(lambda t: head(t).loss, z.double())
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
        torch.testing.assert_close(loss.double(), ref_loss, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(grad.double(), ref_grad, rtol=1e-3,
                                   atol=1e-4 * ref_grad.abs().max().item())


EXPECTED_DEFAULTS = {
    "hs_ince": (HSINCE, {"epsilon": 0.5}),
    "gca_ince": (GCAINCE, {"epsilon": 0.5, "iterations": 10}),
    "hs_rince": (HSRINCE, {"epsilon": 0.5, "q": 0.98, "lam": 0.01}),
    "gca_rince": (GCARINCE, {"epsilon": 0.5, "iterations": 10, "q": 0.98, "lam": 0.01,
                             "form": "code"}),
    "gca_uot": (GCAUOT, {"epsilon": 0.5, "iterations": 10, "q": 0.98, "lam": 0.01,
                         "rho1": 0.2, "rho2": 0.2, "r1": 1.0, "r2": 0.02}),
}
COMMON_DEFAULTS = {"normalize": True, "self_pair": "max_cost", "sim_clamp": 1e-7,
                   "alpha": 0.0, "beta": 0.0, "groups": "domains", "solver": "auto"}


@pytest.mark.parametrize("name", list(EXPECTED_DEFAULTS))
def test_builds_from_yaml_with_official_defaults(name):
    path = CONFIGS / f"{name}.yaml"
    assert path.read_text().startswith("# ")
    cfg = OmegaConf.load(path)
    head = hydra.utils.instantiate(cfg)
    cls, expected = EXPECTED_DEFAULTS[name]
    assert type(head) is cls
    expected = {**expected, **COMMON_DEFAULTS}
    params = set(inspect.signature(cls.__init__).parameters) - {"self"}
    assert set(cfg.keys()) - {"_target_"} == params == set(expected)
    for key, value in expected.items():
        assert getattr(head, key) == value, key
        assert inspect.signature(cls.__init__).parameters[key].default == value, key
    assert head.requires == frozenset()
    assert not list(head.parameters()) and not list(head.buffers())
    out = head(_z(4, 2), k=None, queue=None, labels=torch.arange(4))  # unknown extras ignored
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)


def test_argument_validation():
    for bad in ({"epsilon": 0.0}, {"self_pair": "zero"}, {"solver": "fast"},
                {"alpha": -1.0}, {"sim_clamp": math.nan}):
        with pytest.raises(ValueError):
            GCAINCE(**bad)
    with pytest.raises(ValueError, match="iterations"):
        GCAINCE(iterations=0)
    with pytest.raises(ValueError, match="form"):
        GCARINCE(form="poster")
    with pytest.raises(ValueError, match="q"):
        HSRINCE(q=0.0)
    with pytest.raises(ValueError, match="rho1"):
        GCAUOT(rho1=0.0)
    with pytest.raises(ValueError, match="r2"):
        GCAUOT(r2=-1.0)
    z = _z(3, 2)
    with pytest.raises(ValueError, match="target_plan"):
        GCAINCE()(z, target_plan=torch.ones(4, 4))
    with pytest.raises(ValueError, match="mu"):
        GCAINCE()(z, mu=torch.ones(5))
    with pytest.raises(ValueError, match="positive mass"):
        GCAINCE()(z, target_plan=torch.zeros(3, 2, 3, 2))
    with pytest.raises(ValueError, match="views"):
        GCAINCE()(z[:, :1])


@pytest.mark.parametrize("name", ["gca_ince", "gca_uot"])
def test_plan_tensors_in_logs_match_reference_plan(name):
    batch, views = 3, 2
    z = _z(batch, views)
    head = {"gca_ince": GCAINCE, "gca_uot": GCAUOT}[name](iterations=5)
    logs = head(z).logs
    plan, rows, a, b = reference(name, z, iterations=5, return_plan=True)
    ref = torch.tensor([[float(x) for x in row] for row in plan], dtype=torch.float64)
    # the head orders rows view-major (v * B + i), the reference instance-major
    order = torch.tensor([v * batch + i for i, v in rows])
    p = torch.exp(logs["plan_log_u"][:, None] + logs["plan_log_kv"])[order][:, order]
    torch.testing.assert_close(p, ref, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(logs["plan_mu"][order], torch.tensor(a, dtype=torch.float64))
    torch.testing.assert_close(logs["plan_nu"][order], torch.tensor(b, dtype=torch.float64))
    assert not any(logs[k].requires_grad for k in ("plan_log_u", "plan_log_kv"))
