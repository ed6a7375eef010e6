"""Tests of the MoCo-v3-style CACR head (cacr_mocov3.py)."""

from __future__ import annotations

import math
from pathlib import Path

import hydra.utils
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from sslkit.losses.cacr_mocov3 import CACRMoCoV3
from tests.conftest import F64, loss_and_grad

ROOT = Path(__file__).resolve().parents[2]


def reference_cacr_mocov3(z, k, temperature=1.0, cost="rbf", n_global=2, full_mode=False,
                          normalize=True):
    """Loop form of the official MoCo-v3 CACR loss (``cacr_rbfloss`` / ``cacr_euclideanloss``)."""
    batch, views, _ = z.shape
    t = temperature

    def unit(a):
        return a / a.norm() if normalize else a

    q = [[unit(z[n, v]) for v in range(views)] for n in range(batch)]
    key = [[unit(k[n, v]).detach() for v in range(k.shape[1])] for n in range(batch)]

    def softmax(logits):
        exps = [torch.exp(x) for x in logits]
        total = sum(exps)
        return [e / total for e in exps]

    key_views = range(views) if full_mode else range(n_global)
    loss = 0.0
    for i in key_views:
        others = [v for v in range(views) if v != i]
        for n in range(batch):
            p = softmax([((q[n][v] - key[n][i]) ** 2).sum().detach() / t for v in others])
            for p_v, v in zip(p, others):
                if cost == "rbf":
                    logits = [(q[n][v] * key[m][i]).sum() / t for m in range(batch)]
                    ce = -logits[n] + torch.log(sum(torch.exp(x) for x in logits))
                    loss = loss + p_v * 2 * t * ce / batch
                else:
                    if normalize:
                        c = [1 - (q[n][v] * key[m][i]).sum() for m in range(batch)]
                    else:
                        c = [((q[n][v] - key[m][i]) ** 2).sum() / 2 for m in range(batch)]
                    negs = [-c[m] for m in range(batch) if m != n]
                    r = softmax([x.detach() / t for x in negs])
                    loss = loss + p_v * (c[n] + sum(w * x for w, x in zip(r, negs)))
    return loss / len(key_views)


def make_inputs(batch, views, dim, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, views, dim, generator=g, dtype=dtype)
    k = z + 0.7 * torch.randn(batch, views, dim, generator=g, dtype=dtype)
    return z, k


def random_rotation(dim, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=F64))
    return q * torch.sign(torch.diagonal(r))


CASES = [
    dict(),
    dict(temperature=0.3),
    dict(full_mode=True, temperature=0.7),
    dict(cost="euclidean"),
    dict(cost="euclidean", full_mode=True, temperature=0.4),
    dict(cost="euclidean", normalize=False, temperature=2.0),
    dict(normalize=False, temperature=3.0),
    dict(n_global=1, temperature=0.5),
]


@pytest.mark.parametrize("views", [2, 3, 5])
@pytest.mark.parametrize("kwargs", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_matches_plain_reference(views, kwargs):
    z, k = make_inputs(4, views, 4, seed=views)
    head = CACRMoCoV3(**kwargs)
    loss, grad = loss_and_grad(lambda t: head(t, k=k).loss, z)
    ref_loss, ref_grad = loss_and_grad(lambda t: reference_cacr_mocov3(t, k, **kwargs), z)
    assert loss.dtype == F64
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=1e-10)
    torch.testing.assert_close(grad, ref_grad, rtol=0, atol=1e-10)


def test_two_views_rbf_is_half_the_moco_v3_loss():
    # MoCo v3: ctr(q1, k2) + ctr(q2, k1), ctr = 2T * cross-entropy(q k^T / T, arange)
    z, k = make_inputs(16, 2, 8, seed=1)
    t = 0.2
    q, key = F.normalize(z, dim=-1), F.normalize(k, dim=-1)
    labels = torch.arange(16)

    def ctr(a, b):
        return F.cross_entropy(a @ b.T / t, labels) * 2 * t

    moco_v3 = ctr(q[:, 0], key[:, 1]) + ctr(q[:, 1], key[:, 0])
    out = CACRMoCoV3(temperature=t)(z, k=k)
    torch.testing.assert_close(out.loss, moco_v3 / 2, rtol=0, atol=1e-12)
    assert out.logs["pos_w_max"] == pytest.approx(1.0)  # one positive view: weight 1


def test_attraction_weights_favour_far_positive_views():
    z, k = make_inputs(8, 4, 6, seed=2)
    out = CACRMoCoV3(temperature=0.5)(z, k=k)
    assert out.logs["pos_w_entropy"] < math.log(3)
    # positive views all at the same distance from the key: uniform weights
    g = torch.Generator().manual_seed(3)
    key = F.normalize(torch.randn(8, 6, generator=g, dtype=F64), dim=-1)
    noise = torch.randn(8, 4, 6, generator=g, dtype=F64)
    noise = F.normalize(noise - (noise * key[:, None]).sum(-1, keepdim=True) * key[:, None], dim=-1)
    views = 0.8 * key[:, None] + 0.6 * noise  # unit vectors with cosine 0.8 to the key
    out = CACRMoCoV3(temperature=0.5)(views, k=key[:, None].expand(8, 4, 6))
    assert out.logs["pos_w_entropy"] == pytest.approx(math.log(3))
    assert out.logs["pos_w_max"] == pytest.approx(1 / 3)


def test_full_mode_uses_the_local_keys_and_light_mode_ignores_them():
    z, k = make_inputs(6, 4, 5, seed=4)
    light = CACRMoCoV3()
    # light mode reads only the global keys: extra key views change nothing
    torch.testing.assert_close(light(z, k=k).loss, light(z, k=k[:, :2]).loss, rtol=0, atol=0)
    full = CACRMoCoV3(full_mode=True)
    assert (full(z, k=k).loss - light(z, k=k).loss).abs() > 1e-4
    with pytest.raises(ValueError):
        full(z, k=k[:, :2])
    # with only global crops, full mode is light mode
    torch.testing.assert_close(full(z[:, :2], k=k[:, :2]).loss, light(z[:, :2], k=k[:, :2]).loss)


def test_euclidean_cost_sums_over_the_batch():
    # official cacr_euclideanloss reduces with .sum() over instances (cacr_rbfloss with .mean())
    z, k = make_inputs(6, 2, 4, seed=5)
    out = CACRMoCoV3(cost="euclidean")(z, k=k)
    q, key = F.normalize(z, dim=-1), F.normalize(k, dim=-1)
    ca = (1 - (q[:, 1] * key[:, 0]).sum(-1)).sum() + (1 - (q[:, 0] * key[:, 1]).sum(-1)).sum()
    torch.testing.assert_close(out.logs["attraction"], ca / 2, rtol=0, atol=1e-12)
    twice = CACRMoCoV3(cost="euclidean")(z.repeat(2, 1, 1), k=k.repeat(2, 1, 1))
    torch.testing.assert_close(twice.logs["attraction"], ca, rtol=0, atol=1e-12)


def test_gradcheck_rbf_two_views():
    # two views: the attraction weights are 1, the rbf loss is a true function of z
    z, k = make_inputs(3, 2, 3, seed=6)
    head = CACRMoCoV3(temperature=0.5)
    assert torch.autograd.gradcheck(
        lambda t: head(t, k=k).loss, (z.requires_grad_(True),), eps=1e-6, atol=1e-8
    )


def test_stop_gradient_on_keys():
    z, k = make_inputs(4, 3, 4, seed=7)
    z.requires_grad_(True), k.requires_grad_(True)
    CACRMoCoV3(full_mode=True)(z, k=k).loss.backward()
    assert z.grad is not None and k.grad is None


@pytest.mark.parametrize("cost", ["rbf", "euclidean"])
def test_instance_permutation_and_rotation_invariance(cost):
    z, k = make_inputs(8, 4, 6, seed=8)
    head = CACRMoCoV3(cost=cost, temperature=0.5, full_mode=True)
    loss, grad = loss_and_grad(lambda t: head(t, k=k).loss, z)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(0))
    p_loss, p_grad = loss_and_grad(lambda t: head(t, k=k[perm]).loss, z[perm])
    torch.testing.assert_close(p_loss, loss, rtol=0, atol=1e-12)
    torch.testing.assert_close(p_grad, grad[perm], rtol=0, atol=1e-12)
    rot = random_rotation(6)
    r_loss, r_grad = loss_and_grad(lambda t: head(t, k=k @ rot).loss, z @ rot)
    torch.testing.assert_close(r_loss, loss, rtol=0, atol=1e-12)
    torch.testing.assert_close(r_grad, grad @ rot, rtol=0, atol=1e-12)


@pytest.mark.parametrize("cost", ["rbf", "euclidean"])
def test_low_temperature_is_finite(cost):
    z, k = make_inputs(256, 4, 32, seed=9, dtype=torch.float32)
    z.requires_grad_(True)
    for t in (0.05, 0.005):
        out = CACRMoCoV3(temperature=t, cost=cost, full_mode=True)(z, k=k)
        (grad,) = torch.autograd.grad(out.loss, z)
        assert torch.isfinite(out.loss) and torch.isfinite(grad).all()


@pytest.mark.parametrize("cost", ["rbf", "euclidean"])
def test_large_batch_float32_is_finite(cost):
    z, k = make_inputs(4096, 2, 128, seed=10, dtype=torch.float32)
    z.requires_grad_(True)
    out = CACRMoCoV3(cost=cost)(z, k=k)
    out.loss.backward()
    assert out.loss.dtype == torch.float32
    assert torch.isfinite(out.loss) and torch.isfinite(z.grad).all()


def test_logs():
    z, k = make_inputs(6, 3, 4, seed=12)
    rbf = CACRMoCoV3()(z, k=k).logs
    eu = CACRMoCoV3(cost="euclidean")(z, k=k)
    assert {"pos_w_entropy", "pos_w_max", "pos_cos", "neg_cos", "infonce"} <= set(rbf)
    assert {"attraction", "repulsion", "neg_w_entropy", "neg_w_max"} <= set(eu.logs)
    torch.testing.assert_close(eu.logs["attraction"] + eu.logs["repulsion"], eu.loss)
    q, key = F.normalize(z, dim=-1), F.normalize(k, dim=-1)
    cos = torch.stack([q[:, v] @ key[:, i].T for i in range(2) for v in range(3) if v != i])
    off = ~torch.eye(6, dtype=torch.bool)
    torch.testing.assert_close(rbf["pos_cos"], cos.diagonal(dim1=1, dim2=2).mean())
    torch.testing.assert_close(rbf["neg_cos"], cos[:, off].mean())
    assert all(not torch.is_tensor(v) or not v.requires_grad for v in eu.logs.values())


def test_declares_what_the_module_must_provide():
    head = CACRMoCoV3()
    assert head.requires == frozenset({"k"})
    assert head.uses_predictor is True
    z, k = make_inputs(4, 2, 3, seed=13)
    head(z, k=k, queue=None, labels=None)  # unknown extras are ignored
    with pytest.raises(ValueError):
        head(z)
    with pytest.raises(ValueError):
        CACRMoCoV3(n_global=3)(z, k=k)


@pytest.mark.parametrize(
    "kwargs",
    [dict(temperature=0.0), dict(cost="rbf2"), dict(n_global=0), dict(n_global=1.5),
     dict(momentum=-0.1)],
)
def test_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        CACRMoCoV3(**kwargs)


def test_builds_from_yaml_with_official_defaults():
    path = ROOT / "configs" / "loss" / "cacr_mocov3.yaml"
    assert path.read_text().startswith("# ")
    head = hydra.utils.instantiate(OmegaConf.load(path))
    assert type(head) is CACRMoCoV3
    # imagenet_pretraining/main_pretrain.py argparse defaults
    defaults = dict(temperature=1.0, cost="rbf", n_global=2, full_mode=False, momentum=0.99,
                    normalize=True)
    for key, value in defaults.items():
        assert getattr(head, key) == value, key
    z, k = make_inputs(4, 3, 4, seed=14)
    torch.testing.assert_close(head(z, k=k).loss, reference_cacr_mocov3(z, k), rtol=0, atol=1e-10)
