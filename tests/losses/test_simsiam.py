"""SimSiam head (Chen & He 2021) against plain float64 loops; its targets from a momentum copy
with m = 0 are exactly the online network's detached projections."""

from __future__ import annotations

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from sslkit.losses.simsiam import SimSiam
from sslkit.parts.momentum import MomentumCopy
from tests.conftest import F64, assert_matches, rand, unit

torch.set_num_threads(1)


def ref_simsiam(p, k):
    """Loops: mean over instances and ordered view pairs (v != w) of -cos(p^v, sg(z^w))."""
    b, v, _ = p.shape
    terms = [-torch.dot(unit(p[i, a]), unit(k[i, w].detach()))
             for a in range(v) for w in range(v) if w != a for i in range(b)]
    return torch.stack(terms).mean()


@pytest.mark.parametrize("batch", [2, 6])
@pytest.mark.parametrize("views", [2, 3, 4])
def test_matches_reference(batch, views):
    p, k = rand(batch, views, 5, seed=views), rand(batch, views, 5, seed=20 + views)
    assert_matches(lambda x: SimSiam()(x, k=k).loss, lambda x: ref_simsiam(x, k), p)


def test_official_two_view_form():
    # main_simsiam.py: loss = -(criterion(p1, z2).mean() + criterion(p2, z1).mean()) * 0.5
    p, z = rand(6, 2, 4, seed=1), rand(6, 2, 4, seed=2)
    cos = torch.nn.CosineSimilarity(dim=1)
    expected = -(cos(p[:, 0], z[:, 1]).mean() + cos(p[:, 1], z[:, 0]).mean()) * 0.5
    assert torch.allclose(SimSiam()(p, k=z).loss, expected, atol=1e-14, rtol=0)


def test_minimum_is_minus_one_and_no_gradient_to_targets():
    z = rand(4, 1, 3, seed=3).repeat(1, 2, 1)  # both views' projections equal
    assert torch.allclose(SimSiam()(2.0 * z, k=z).loss, torch.tensor(-1.0, dtype=F64))
    p, k = rand(4, 2, 3, seed=4).requires_grad_(), rand(4, 2, 3, seed=5).requires_grad_()
    SimSiam()(p, k=k).loss.backward()
    assert k.grad is None and p.grad.abs().sum() > 0


def test_gradcheck():
    p, k = rand(3, 2, 4, seed=6).requires_grad_(), rand(3, 2, 4, seed=7)
    assert torch.autograd.gradcheck(lambda x: SimSiam()(x, k=k).loss, (p,))


def test_momentum_zero_copy_gives_the_detached_online_projections():
    """Why ``momentum = None`` (the online projections, detached, which the module passes without
    any key network) is SimSiam's target: a momentum copy with m = 0 would hold the online weights
    (and BatchNorm buffers) after each update, so its train-mode output on the same batch is the
    online projection itself, at the price of a second forward."""
    torch.manual_seed(0)
    online = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(),
                                 torch.nn.Linear(8, 4)).double()
    copy = MomentumCopy(online, 0.0, "constant")
    with torch.no_grad():  # an optimiser step of the online network
        for p in online.parameters():
            p.add_(0.1 * torch.randn_like(p))
    assert copy.update(online, progress=0.37) == 0.0
    x = rand(6, 5, seed=8)
    with torch.no_grad():
        keys = copy(x)
    assert torch.equal(keys, online(x).detach())


def test_yaml_defaults_and_contract():
    head = hydra.utils.instantiate(OmegaConf.load("configs/loss/simsiam.yaml"))
    assert isinstance(head, SimSiam) and head.momentum is None
    assert head.requires == frozenset({"k"}) and head.uses_predictor and not head.shuffle_bn
    out = head(rand(4, 2, 3), k=rand(4, 2, 3, seed=1))
    assert set(out.logs) == {"cos", "output_std"}
    assert out.logs["cos"] == pytest.approx(-out.loss.item())
    with pytest.raises(ValueError, match="simsiam needs k"):
        head(rand(4, 2, 3))
