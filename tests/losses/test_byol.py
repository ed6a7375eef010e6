"""BYOL head (Grill et al. 2020) against plain float64 loops, and its momentum schedule."""

from __future__ import annotations

import math

import hydra
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from sslkit.losses.byol import BYOL
from sslkit.parts.momentum import MomentumCopy
from tests.conftest import assert_matches, rand, unit

torch.set_num_threads(1)


def ref_byol(p, k):
    """Loops: every view v predicts the target of every other view w: 2 - 2 cos, averaged over
    instances and ordered pairs, times 2 (the symmetrised sum of the paper for V = 2)."""
    b, v, _ = p.shape
    terms = [2 - 2 * torch.dot(unit(p[i, a]), unit(k[i, w].detach()))
             for a in range(v) for w in range(v) if w != a for i in range(b)]
    return 2 * torch.stack(terms).mean()


@pytest.mark.parametrize("batch", [2, 5])
@pytest.mark.parametrize("views", [2, 3, 4])
def test_matches_reference(batch, views):
    p, k = rand(batch, views, 6, seed=views), rand(batch, views, 6, seed=10 + views)
    assert_matches(lambda x: BYOL()(x, k=k).loss, lambda x: ref_byol(x, k), p)


def test_official_two_view_form():
    # deepmind-research byol_experiment.py: regression_loss(p1, t2) + regression_loss(p2, t1),
    # each 2 - 2 cos averaged over the batch
    p, k = rand(7, 2, 5, seed=1), rand(7, 2, 5, seed=2)
    expected = ((2 - 2 * F.cosine_similarity(p[:, 0], k[:, 1], dim=-1)).mean()
                + (2 - 2 * F.cosine_similarity(p[:, 1], k[:, 0], dim=-1)).mean())
    assert torch.allclose(BYOL()(p, k=k).loss, expected, atol=1e-13, rtol=0)


def test_unnormalised_is_plain_squared_error():
    p, k = rand(4, 3, 5, seed=3), rand(4, 3, 5, seed=4)

    def ref(x):
        terms = [(x[i, a] - k[i, w]).square().sum() for a in range(3) for w in range(3) if w != a
                 for i in range(4)]
        return 2 * torch.stack(terms).mean()

    assert_matches(lambda x: BYOL(normalize=False)(x, k=k).loss, ref, p)


def test_gradcheck_and_no_gradient_to_targets():
    p = rand(3, 2, 4, seed=5).requires_grad_()
    k = rand(3, 2, 4, seed=6).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: BYOL()(x, k=k.detach()).loss, (p,))
    BYOL()(p, k=k).loss.backward()
    assert k.grad is None and p.grad.abs().sum() > 0


def test_perfect_prediction_gives_zero_and_scale_invariance():
    k = rand(5, 1, 4, seed=7).repeat(1, 2, 1)  # both views' targets equal
    assert BYOL()(3.0 * k, k=k).loss.abs() < 1e-12  # every prediction on its targets
    p = rand(5, 2, 4, seed=8)
    assert torch.allclose(BYOL()(p, k=k).loss, BYOL()(2.5 * p, k=0.1 * k).loss, atol=1e-13)


def test_momentum_schedule_first_and_last_step():
    """tau = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2: tau_base at step 0, 1 at k = K."""
    head = hydra.utils.instantiate(OmegaConf.load("configs/loss/byol.yaml"))
    ema = MomentumCopy(torch.nn.Linear(3, 3), head.momentum, head.momentum_schedule)
    total = 1000
    assert ema.momentum_at(0 / total) == pytest.approx(0.99, abs=1e-15)
    assert ema.momentum_at(total / total) == pytest.approx(1.0, abs=1e-15)
    last = 1 - (1 - 0.99) * (math.cos(math.pi * (total - 1) / total) + 1) / 2
    assert ema.momentum_at((total - 1) / total) == pytest.approx(last, abs=1e-15)
    assert 0.99 < last < 1.0
    # one update: xi <- tau xi + (1 - tau) theta
    online = torch.nn.Linear(3, 3)
    before = ema.net.weight.detach().clone()
    m = ema.update(online, 0.0)
    assert torch.allclose(ema.net.weight, m * before + (1 - m) * online.weight.detach())


def test_yaml_defaults_and_contract():
    head = hydra.utils.instantiate(OmegaConf.load("configs/loss/byol.yaml"))
    assert isinstance(head, BYOL) and head.momentum == 0.99 and head.normalize
    assert head.requires == frozenset({"k"}) and head.uses_predictor
    assert head.momentum_schedule == "cosine" and not head.shuffle_bn
    assert not list(head.parameters()) and not list(head.buffers())


def test_refuses_missing_or_misshapen_keys():
    p = rand(4, 2, 3)
    with pytest.raises(ValueError, match="byol needs k"):
        BYOL()(p)
    with pytest.raises(ValueError, match=r"k must be \[4, 2, 3\]"):
        BYOL()(p, k=rand(4, 3, 3))
