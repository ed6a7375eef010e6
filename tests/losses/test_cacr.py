"""Tests of the in-batch CACR / CCT head (sslkit/losses/cacr.py)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import hydra.utils
import pytest
import torch
from hydra import compose, initialize_config_dir

from sslkit.losses.cacr import CACR
from tests.conftest import F64, loss_and_grad

ROOT = Path(__file__).resolve().parents[2]


def reference_cacr(
    z,
    alpha=1.0,
    beta=1.0,
    tau_pos=1.0,
    tau_neg=1.0,
    weighting="full",
    debiased=False,
    tau_plus=0.1,
    detach_weights=False,
    normalize=True,
):
    """The paper's / official code's CACR written out pair by pair, as plainly as possible."""
    batch, views, _ = z.shape
    u = [[z[i, v] / z[i, v].norm() if normalize else z[i, v] for v in range(views)]
         for i in range(batch)]

    def dist(a, b):
        return ((a - b) ** 2).sum()

    def softmax(logits):
        exps = [torch.exp(t) for t in logits]
        total = sum(exps)
        return [e / total for e in exps]

    def maybe_detach(t):
        return t.detach() if detach_weights else t

    attraction = 0.0
    for x in range(views):  # every view is a query in turn
        for i in range(batch):
            costs = [dist(u[i][x], u[i][y]) for y in range(views) if y != x]
            if weighting in ("uniform_pos", "uniform"):
                weights = [1.0 / len(costs)] * len(costs)
            else:
                weights = softmax([tau_pos * maybe_detach(c) for c in costs])
            attraction = attraction + alpha * sum(w * c for w, c in zip(weights, costs))
    attraction = attraction / (views * batch)

    repulsion, n_pairs = 0.0, 0
    for x in range(views):
        for y in range(x + 1, views):
            n_pairs += 1
            for i in range(batch):
                costs = [dist(u[i][x], u[j][y]) for j in range(batch) if j != i]
                if weighting in ("uniform_neg", "uniform"):
                    weights = [1.0 / len(costs)] * len(costs)
                else:
                    weights = softmax([-tau_neg * maybe_detach(c) for c in costs])
                term = sum(w * (-beta * c) for w, c in zip(weights, costs))
                if debiased:
                    term = (term - tau_plus * dist(u[i][x], u[i][y])) / (1.0 - tau_plus)
                repulsion = repulsion + term
    repulsion = repulsion / (n_pairs * batch)
    return attraction + repulsion


def random_rotation(dim, dtype=F64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=dtype))
    return q * torch.sign(torch.diagonal(r))


def make_z(batch, views, dim, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, views, dim, generator=g, dtype=dtype)


CASES = [
    dict(),
    dict(alpha=1.3, beta=0.7, tau_pos=1.7, tau_neg=2.2),
    dict(weighting="uniform_pos", tau_neg=2.0),
    dict(weighting="uniform_neg", tau_pos=0.5),
    dict(weighting="uniform", alpha=2.0, beta=0.5),
    dict(detach_weights=True, tau_pos=3.0, tau_neg=3.0),
    dict(debiased=True, tau_plus=0.2, beta=1.5),
    dict(debiased=True, weighting="uniform_pos", detach_weights=True),
    dict(normalize=False, tau_pos=0.3, tau_neg=0.2),
]


@pytest.mark.parametrize("views", [2, 3, 4])
@pytest.mark.parametrize("kwargs", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_matches_plain_reference(views, kwargs):
    z = make_z(5, views, 4, seed=views)
    head = CACR(**kwargs)
    loss, grad = loss_and_grad(lambda t: head(t).loss, z)
    ref_loss, ref_grad = loss_and_grad(lambda t: reference_cacr(t, **kwargs), z)
    assert loss.dtype == F64
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=1e-10)
    torch.testing.assert_close(grad, ref_grad, rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    "kwargs",
    [dict(), dict(normalize=False), dict(debiased=True), dict(weighting="uniform")],
)
def test_gradcheck(kwargs):
    # (detach_weights=True is a surrogate gradient by design: gradcheck does not apply)
    head = CACR(tau_pos=1.5, tau_neg=2.0, **kwargs)
    z = make_z(3, 3, 3, seed=1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: head(t).loss, (z,), eps=1e-6, atol=1e-8)


def test_instance_permutation_and_rotation_invariance():
    head = CACR(tau_pos=1.5, tau_neg=2.5)
    z = make_z(8, 3, 6, seed=2)
    loss, grad = loss_and_grad(lambda t: head(t).loss, z)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(0))
    p_loss, p_grad = loss_and_grad(lambda t: head(t).loss, z[perm])
    torch.testing.assert_close(p_loss, loss, rtol=0, atol=1e-12)
    torch.testing.assert_close(p_grad, grad[perm], rtol=0, atol=1e-12)
    rot = random_rotation(6)
    r_loss, r_grad = loss_and_grad(lambda t: head(t).loss, z @ rot)
    torch.testing.assert_close(r_loss, loss, rtol=0, atol=1e-12)
    torch.testing.assert_close(r_grad, grad @ rot, rtol=0, atol=1e-12)


def test_two_views_attraction_is_the_alignment_loss():
    # one positive per query: its softmax weight is 1, whatever tau_pos
    z = make_z(16, 2, 8, seed=3)
    u = torch.nn.functional.normalize(z, dim=-1)
    align = (u[:, 0] - u[:, 1]).pow(2).sum(-1).mean()
    for tau_pos in (0.1, 1.0, 20.0):
        out = CACR(alpha=2.5, tau_pos=tau_pos)(z)
        torch.testing.assert_close(out.logs["attraction"], 2.5 * align, rtol=0, atol=1e-12)
        assert out.logs["pos_w_max"] == pytest.approx(1.0)
    full = CACR()(z).loss
    torch.testing.assert_close(CACR(weighting="uniform_pos")(z).loss, full, rtol=0, atol=1e-12)


def test_uniform_weighting_is_the_papers_ablation():
    # without both conditional distributions: alpha * E_pos ||u - u+||^2 - beta * E_neg ||u - u-||^2
    # over all ordered positive pairs and all (x < y, i != j) negative pairs
    z = make_z(7, 3, 5, seed=4)
    u = torch.nn.functional.normalize(z, dim=-1)
    d = torch.stack([torch.cdist(u[:, x], u[:, y]).pow(2) for x in range(3) for y in range(3)])
    d = d.reshape(3, 3, 7, 7)  # d[x, y, i, j] = ||u^x_i - u^y_j||^2
    pos = torch.stack([d[x, y].diagonal() for x in range(3) for y in range(3) if x != y]).mean()
    off = ~torch.eye(7, dtype=torch.bool)
    neg = torch.stack([d[x, y][off] for x in range(3) for y in range(x + 1, 3)]).mean()
    expected = 1.5 * pos - 0.5 * neg
    out = CACR(alpha=1.5, beta=0.5, weighting="uniform")(z)
    torch.testing.assert_close(out.loss, expected, rtol=0, atol=1e-12)
    # uniform weights have the maximal entropy
    assert out.logs["pos_w_entropy"] == pytest.approx(math.log(2))
    assert out.logs["neg_w_entropy"] == pytest.approx(math.log(6))


def test_contrastive_weights_favour_far_positives_and_near_negatives():
    z = make_z(32, 4, 8, seed=5)
    full = CACR(tau_pos=2.0, tau_neg=2.0)(z).logs
    flat = CACR(tau_pos=2.0, tau_neg=2.0, weighting="uniform")(z).logs
    assert full["attraction"] > flat["attraction"]  # far positives weigh more
    assert full["repulsion"] > flat["repulsion"]  # near negatives weigh more: less negative
    assert full["pos_w_entropy"] < flat["pos_w_entropy"]
    assert full["neg_w_entropy"] < flat["neg_w_entropy"]


def test_detach_weights_changes_gradients_not_values():
    # the CIFAR/STL code differentiates through the weights (default), the MoCo code paths do not
    assert CACR().detach_weights is False
    z = make_z(6, 3, 4, seed=6)
    live, g_live = loss_and_grad(lambda t: CACR(tau_pos=2.0, tau_neg=2.0)(t).loss, z)
    cut, g_cut = loss_and_grad(
        lambda t: CACR(tau_pos=2.0, tau_neg=2.0, detach_weights=True)(t).loss, z
    )
    torch.testing.assert_close(cut, live, rtol=0, atol=1e-12)
    assert (g_live - g_cut).abs().max() > 1e-3
    _, g_ref = loss_and_grad(
        lambda t: reference_cacr(t, tau_pos=2.0, tau_neg=2.0, detach_weights=True), z
    )
    torch.testing.assert_close(g_cut, g_ref, rtol=0, atol=1e-10)


def test_debiased_with_zero_prior_is_plain_cacr():
    z = make_z(6, 3, 4, seed=7)
    plain = CACR()(z).loss
    torch.testing.assert_close(CACR(debiased=True, tau_plus=0.0)(z).loss, plain, rtol=0, atol=1e-14)
    assert (CACR(debiased=True, tau_plus=0.1)(z).loss - plain).abs() > 1e-4


def test_low_temperature_is_finite():
    z = make_z(256, 3, 32, seed=8, dtype=torch.float32).requires_grad_(True)
    for tau in (20.0, 200.0):  # 1/0.05 and far sharper
        out = CACR(tau_pos=tau, tau_neg=tau)(z)
        (grad,) = torch.autograd.grad(out.loss, z)
        assert torch.isfinite(out.loss) and torch.isfinite(grad).all()


def test_logs_are_detached_and_complete():
    z = make_z(8, 3, 4, seed=11).requires_grad_(True)
    out = CACR()(z)
    expected = {"attraction", "repulsion", "pos_w_entropy", "pos_w_max", "neg_w_entropy",
                "neg_w_max", "pos_sqdist", "neg_sqdist", "pos_pair_sqdist", "pos_pair_weight",
                "neg_pair_sqdist", "neg_pair_weight"}
    assert set(out.logs) == expected
    assert all(not torch.is_tensor(v) or not v.requires_grad for v in out.logs.values())
    torch.testing.assert_close(out.logs["attraction"] + out.logs["repulsion"], out.loss.detach())
    u = torch.nn.functional.normalize(z.detach(), dim=-1)
    off = ~torch.eye(8, dtype=torch.bool)
    negs = [torch.cdist(u[:, x], u[:, y]).pow(2)[off] for x, y in ((0, 1), (0, 2), (1, 2))]
    torch.testing.assert_close(out.logs["neg_sqdist"], torch.cat(negs).mean())
    pos = [(u[:, x] - u[:, y]).pow(2).sum(-1) for x in range(3) for y in range(3) if x != y]
    torch.testing.assert_close(out.logs["pos_sqdist"], torch.cat(pos).mean())


def test_ignores_unknown_extras_and_declares_no_requirements():
    z = make_z(4, 2, 3, seed=12)
    head = CACR()
    torch.testing.assert_close(head(z, k=z, queue=z[0], labels=None).loss, head(z).loss)
    assert head.requires == frozenset()
    assert not getattr(head, "uses_predictor", False)


@pytest.mark.parametrize(
    "kwargs",
    [dict(tau_pos=0.0), dict(tau_neg=-1.0), dict(alpha=-1.0), dict(weighting="w1"),
     dict(tau_plus=1.0), dict(debiased=True, weighting="uniform")],
)
def test_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        CACR(**kwargs)


OFFICIAL_DEFAULTS = dict(alpha=1.0, beta=1.0, tau_pos=1.0, tau_neg=1.0, weighting="full",
                         debiased=False, tau_plus=0.1, detach_weights=False, normalize=True)


@pytest.mark.parametrize("name", ["cacr", "cct"])
def test_builds_from_yaml_with_official_defaults(name):
    path = ROOT / "configs" / "loss" / f"{name}.yaml"
    assert path.read_text().startswith("# ")
    # composed as train.py does: cct.yaml inherits cacr.yaml through its defaults list
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        head = hydra.utils.instantiate(compose("train", overrides=[f"loss={name}"]).loss)
    assert type(head) is CACR  # cct is the first version of the same loss: same class
    for key, value in OFFICIAL_DEFAULTS.items():
        assert getattr(head, key) == value, key
    z = make_z(6, 3, 4, seed=13)
    torch.testing.assert_close(head(z).loss, reference_cacr(z), rtol=0, atol=1e-10)


def test_two_views_warn_once_that_attraction_is_alignment():
    head = CACR()
    with pytest.warns(UserWarning, match="cacr with 2 views: each query has one positive"):
        head(make_z(6, 2, 4, seed=14))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        head(make_z(6, 2, 4, seed=15))  # once per head
        CACR()(make_z(6, 5, 4, seed=16))  # the paper's 5 views: no warning


def test_momentum_forms_warn_with_two_views():
    from sslkit.losses.cacr_moco import CACRMoCo
    from sslkit.losses.cacr_mocov3 import CACRMoCoV3

    z, k = make_z(6, 2, 4, seed=17), make_z(6, 2, 4, seed=18)
    queue = torch.nn.functional.normalize(make_z(8, 1, 4, seed=19)[:, 0], dim=-1)
    with pytest.warns(UserWarning, match="cacr_moco with 2 views"):
        CACRMoCo(queue_size=8)(z, k=k, queue=queue)
    with pytest.warns(UserWarning, match="cacr_mocov3 with 2 views.*MoCo v3's halved"):
        CACRMoCoV3()(z, k=k)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CACRMoCoV3()(make_z(6, 4, 4, seed=20), k=k)  # 2 global + 2 local crops


def test_pair_samples_in_logs_match_reference_weights():
    batch, views = 5, 3
    z = make_z(batch, views, 4, seed=3)
    out = CACR(tau_pos=2.0, tau_neg=3.0)(z)
    u = torch.nn.functional.normalize(z, dim=-1)
    for i in range(batch):
        for x in range(views):
            others = [y for y in range(views) if y != x]
            d = torch.stack([(u[i, x] - u[i, y]).pow(2).sum() for y in others])
            w = torch.exp(2.0 * d) / torch.exp(2.0 * d).sum()
            torch.testing.assert_close(out.logs["pos_pair_sqdist"][i, x], d)
            torch.testing.assert_close(out.logs["pos_pair_weight"][i, x], w)
    for p, (x, y) in enumerate(((0, 1), (0, 2), (1, 2))):
        for i in range(batch):
            js = [j for j in range(batch) if j != i]
            d = torch.stack([(u[i, x] - u[j, y]).pow(2).sum() for j in js])
            w = torch.exp(-3.0 * d) / torch.exp(-3.0 * d).sum()
            torch.testing.assert_close(out.logs["neg_pair_sqdist"][p, i, js], d)
            torch.testing.assert_close(out.logs["neg_pair_weight"][p, i, js], w)
            assert out.logs["neg_pair_weight"][p, i, i] == 0
