"""NNCLR head (Dwibedi et al. 2021) against plain float64 loops: nearest neighbour from the
support set as the positive of the other view's prediction."""

from __future__ import annotations

import hydra
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from sslkit.losses.nnclr import NNCLR
from tests.conftest import F64, assert_matches, rand, unit

torch.set_num_threads(1)


def nearest(x, support):
    """Loop: the support row with the largest cosine to x (x itself, normalised, if empty)."""
    if len(support) == 0:
        return unit(x)
    sims = [torch.dot(unit(x), s) for s in support]
    return support[max(range(len(support)), key=lambda r: float(sims[r]))]


def ref_nnclr(p, k, support, t):
    b, v, _ = p.shape
    pairs = [(a, w) for a in range(v) for w in range(v) if w != a]
    total = 0.0
    for a, w in pairs:  # view a's predictions, neighbours of view w's projections
        for i in range(b):
            nn = nearest(k[i, w], support)
            logits = [torch.dot(nn, unit(p[j, a])) / t for j in range(b)]
            total = total - torch.log(torch.exp(logits[i]) / sum(torch.exp(x) for x in logits))
    return total / (len(pairs) * b)


def support_set(q, d, seed):
    return F.normalize(rand(q, d, seed=seed), dim=-1)


@pytest.mark.parametrize("batch", [2, 5])
@pytest.mark.parametrize("views", [2, 3])
@pytest.mark.parametrize("size", [0, 1, 7])
def test_matches_reference(batch, views, size):
    p, k = rand(batch, views, 4, seed=views), rand(batch, views, 4, seed=40 + views)
    support = support_set(size, 4, seed=size)
    head = NNCLR(temperature=0.1)
    assert_matches(lambda x: head(x, k=k, queue=support).loss,
                   lambda x: ref_nnclr(x, k, support, 0.1), p)


def test_solo_learn_two_view_form():
    # solo/methods/nnclr.py: nnclr_loss_func(nn1, p2) / 2 + nnclr_loss_func(nn2, p1) / 2, with
    # nnclr_loss_func = cross_entropy(normalize(nn) @ normalize(p).T / T, arange)
    p, k, support = rand(6, 2, 5, seed=1), rand(6, 2, 5, seed=2), support_set(20, 5, seed=3)
    z = F.normalize(k, dim=-1)
    nn1 = support[(z[:, 0] @ support.T).max(dim=1)[1]]
    nn2 = support[(z[:, 1] @ support.T).max(dim=1)[1]]

    def loss(nn, pred):
        logits = F.normalize(nn, dim=-1) @ F.normalize(pred, dim=-1).T / 0.2
        return F.cross_entropy(logits, torch.arange(6))

    expected = loss(nn1, p[:, 1]) / 2 + loss(nn2, p[:, 0]) / 2
    assert torch.allclose(NNCLR(temperature=0.2)(p, k=k, queue=support).loss, expected, atol=1e-13)


def test_neighbour_is_the_closest_support_row():
    support = torch.eye(3, dtype=F64)
    k = torch.tensor([[[0.1, 2.0, 0.3], [1.0, 0.0, -3.0]]], dtype=F64).repeat(2, 1, 1)
    nn, cos = NNCLR().neighbours(k, support)
    assert torch.equal(nn[0, 0], support[1]) and torch.equal(nn[0, 1], support[0])
    assert cos[0, 0].item() == pytest.approx((2.0 / k[0, 0].norm()).item())


def test_gradcheck_and_no_gradient_to_projections_or_support():
    p = rand(3, 2, 4, seed=4).requires_grad_()
    k, support = rand(3, 2, 4, seed=5).requires_grad_(), support_set(6, 4, seed=6).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x: NNCLR(0.5)(x, k=k.detach(), queue=support.detach()).loss, (p,))
    NNCLR()(p, k=k, queue=support).loss.backward()
    assert k.grad is None and support.grad is None


def test_enqueue_gives_view_zero_normalised():
    k = rand(4, 2, 5, seed=7)
    rows = NNCLR().enqueue(k)
    assert rows.shape == (4, 5) and torch.allclose(rows, F.normalize(k[:, 0], dim=-1), atol=1e-15)


def test_yaml_defaults_and_contract():
    head = hydra.utils.instantiate(OmegaConf.load("configs/loss/nnclr.yaml"))
    assert isinstance(head, NNCLR)
    assert (head.temperature, head.queue_size, head.momentum) == (0.1, 32768, None)
    assert head.queue_size < 50_000  # below CIFAR's and Fashion-MNIST's pretraining images
    assert head.requires == frozenset({"k", "queue"}) and head.uses_predictor
    p = rand(4, 2, 3)
    with pytest.raises(ValueError, match="support set"):
        head(p, k=p)
    with pytest.raises(ValueError, match="nnclr needs k"):
        head(p, queue=support_set(2, 3, seed=0))
