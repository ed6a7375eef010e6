"""MoCo v3 head (Chen, Xie & He 2021) against plain float64 loops and the official form."""

from __future__ import annotations

import warnings

import hydra
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from sslkit.losses.cacr_mocov3 import CACRMoCoV3
from sslkit.losses.mocov3 import MoCoV3
from tests.conftest import assert_matches, rand, unit

torch.set_num_threads(1)


def ref_mocov3(q, k, t):
    """Loops: for every ordered view pair (v, w), v != w, and instance i, the InfoNCE of query
    q^v_i against the keys of view w of every instance, times 2t; mean over i; summed over the
    pairs and scaled by 2 / (V (V - 1))."""
    b, v, _ = q.shape
    total = 0.0
    for a in range(v):
        for w in range(v):
            if w == a:
                continue
            terms = []
            for i in range(b):
                qi = unit(q[i, a])
                logits = [torch.dot(qi, unit(k[j, w].detach())) / t for j in range(b)]
                terms.append(-torch.log(torch.exp(logits[i]) / sum(torch.exp(x) for x in logits)))
            total = total + 2 * t * torch.stack(terms).mean()
    return total * 2 / (v * (v - 1))


@pytest.mark.parametrize("batch", [2, 5])
@pytest.mark.parametrize("views", [2, 3])
@pytest.mark.parametrize("t", [0.2, 1.0])
def test_matches_reference(batch, views, t):
    q, k = rand(batch, views, 4, seed=views), rand(batch, views, 4, seed=30 + views)
    assert_matches(lambda x: MoCoV3(temperature=t)(x, k=k).loss, lambda x: ref_mocov3(x, k, t), q)


def test_official_two_view_form():
    # moco/builder.py: contrastive_loss(q1, k2) + contrastive_loss(q2, k1), each
    # CrossEntropyLoss(q @ k.T / T, arange(N)) * 2T on normalised q and k
    q, k, t = rand(6, 2, 5, seed=1), rand(6, 2, 5, seed=2), 0.2

    def ctr(a, b):
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
        return F.cross_entropy(a @ b.T / t, torch.arange(6)) * (2 * t)

    expected = ctr(q[:, 0], k[:, 1]) + ctr(q[:, 1], k[:, 0])
    assert torch.allclose(MoCoV3(temperature=t)(q, k=k).loss, expected, atol=1e-13, rtol=0)


def test_twice_cacr_mocov3_rbf_with_two_views():
    q, k = rand(5, 2, 4, seed=3), rand(5, 2, 4, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cacr = CACRMoCoV3(temperature=0.3, cost="rbf")(q, k=k).loss
    assert torch.allclose(MoCoV3(temperature=0.3)(q, k=k).loss, 2 * cacr, atol=1e-13, rtol=0)


def test_gradcheck_and_no_gradient_to_keys():
    q, k = rand(3, 2, 4, seed=5).requires_grad_(), rand(3, 2, 4, seed=6).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: MoCoV3(temperature=0.5)(x, k=k.detach()).loss, (q,))
    MoCoV3()(q, k=k).loss.backward()
    assert k.grad is None


def test_logs():
    q = rand(6, 1, 5, seed=7).repeat(1, 2, 1)
    out = MoCoV3()(q, k=q)  # each query's key (its other view) is itself: acc1 = 1
    assert out.logs["acc1"] == 1.0 and out.logs["pos_cos"].item() == pytest.approx(1.0)
    q, k = rand(6, 2, 5, seed=8), rand(6, 2, 5, seed=9)
    u, w = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    pos = ((u[:, 0] * w[:, 1]).sum(-1).mean() + (u[:, 1] * w[:, 0]).sum(-1).mean()) / 2
    neg = torch.stack([u[i, a] @ w[j, 1 - a] for a in range(2) for i in range(6) for j in range(6)
                       if i != j]).mean()
    out = MoCoV3()(q, k=k)
    assert out.logs["pos_cos"].item() == pytest.approx(pos.item(), abs=1e-12)
    assert out.logs["neg_cos"].item() == pytest.approx(neg.item(), abs=1e-12)


def test_yaml_defaults_and_contract():
    head = hydra.utils.instantiate(OmegaConf.load("configs/loss/mocov3.yaml"))
    assert isinstance(head, MoCoV3)
    assert (head.temperature, head.momentum, head.normalize) == (0.2, 0.99, True)
    assert head.requires == frozenset({"k"}) and head.uses_predictor
    assert head.momentum_schedule == "cosine" and not head.shuffle_bn
    with pytest.raises(ValueError, match="temperature"):
        MoCoV3(temperature=0)
    with pytest.raises(ValueError, match="mocov3 needs k"):
        head(rand(4, 2, 3))
