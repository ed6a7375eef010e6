"""VICReg head (Bardes et al. 2022): each term against plain float64 loops and the official form."""

from __future__ import annotations

import itertools

import hydra
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from sslkit.losses.vicreg import VICReg
from tests.conftest import F64, assert_matches, assert_reads_the_axes, rand

torch.set_num_threads(1)


def ref_terms(z, eps=1e-4):
    """Loops: invariance (mean squared difference, mean over view pairs), variance (hinge on the
    unbiased std, mean over dims and views), covariance (squared off-diagonal covariances / D,
    summed over views, times 2 / V)."""
    b, v, d = z.shape
    inv = torch.stack([sum((z[n, a, j] - z[n, c, j]) ** 2 for n in range(b) for j in range(d)) / (b * d)
                       for a, c in itertools.combinations(range(v), 2)]).mean()
    var_terms, cov_terms = [], []
    for a in range(v):
        mean = [sum(z[n, a, j] for n in range(b)) / b for j in range(d)]
        cov = [[sum((z[n, a, i] - mean[i]) * (z[n, a, j] - mean[j]) for n in range(b)) / (b - 1)
                for j in range(d)] for i in range(d)]
        var_terms.append(sum(torch.relu(1 - torch.sqrt(cov[j][j] + eps)) for j in range(d)) / d)
        cov_terms.append(sum(cov[i][j] ** 2 for i in range(d) for j in range(d) if i != j) / d)
    return inv, torch.stack(var_terms).mean(), 2 * torch.stack(cov_terms).mean()


def ref_vicreg(z, sim=25.0, std=25.0, cov=1.0):
    inv, var, covariance = ref_terms(z)
    return sim * inv + std * var + cov * covariance


@pytest.mark.parametrize("batch", [3, 7])
@pytest.mark.parametrize("views", [2, 3])
def test_matches_reference(batch, views):
    z = 0.4 * rand(batch, views, 4, seed=batch * views)  # stds around 0.6: the hinge is active
    assert_matches(lambda x: VICReg()(x).loss, ref_vicreg, z)


@pytest.mark.parametrize("coeffs", [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)])
def test_each_term_separately(coeffs):
    """One coefficient at a time: the loss (value and gradient) is that term alone, and the
    logs hold the unweighted terms."""
    z = 0.4 * rand(5, 3, 4, seed=11)
    head = VICReg(*coeffs)
    assert_matches(lambda x: head(x).loss, lambda x: ref_vicreg(x, *coeffs), z)
    inv, var, cov = ref_terms(z)
    logs = head(z).logs
    for name, expected in zip(("invariance", "variance", "covariance"), (inv, var, cov)):
        assert logs[name].item() == pytest.approx(expected.item(), abs=1e-12), name


def test_official_two_view_form():
    # main_vicreg.py VICReg.forward, one process
    z = 0.5 * rand(9, 2, 6, seed=1)
    x, y = z[:, 0], z[:, 1]
    repr_loss = F.mse_loss(x, y)
    x, y = x - x.mean(dim=0), y - y.mean(dim=0)
    std_x, std_y = torch.sqrt(x.var(dim=0) + 0.0001), torch.sqrt(y.var(dim=0) + 0.0001)
    std_loss = torch.mean(F.relu(1 - std_x)) / 2 + torch.mean(F.relu(1 - std_y)) / 2
    cov_x, cov_y = (x.T @ x) / (9 - 1), (y.T @ y) / (9 - 1)

    def off(m):
        return m.flatten()[:-1].view(5, 7)[:, 1:].flatten()

    cov_loss = off(cov_x).pow(2).sum() / 6 + off(cov_y).pow(2).sum() / 6
    expected = 25.0 * repr_loss + 25.0 * std_loss + 1.0 * cov_loss
    out = VICReg()(z)
    assert torch.allclose(out.loss, expected, atol=1e-12, rtol=0)
    assert torch.allclose(out.logs["invariance"], repr_loss)
    assert torch.allclose(out.logs["variance"], std_loss)
    assert torch.allclose(out.logs["covariance"], cov_loss)


def test_terms_vanish_where_they_should():
    # identical views: no invariance term; large spread: no variance term
    z = 10.0 * rand(8, 1, 3, seed=2).repeat(1, 2, 1)
    logs = VICReg()(z).logs
    assert logs["invariance"] == 0 and logs["variance"] == 0 and logs["covariance"] > 0
    # uncorrelated dimensions (orthogonal centred columns): no covariance term
    x = torch.tensor([[1, 1], [1, -1], [-1, 1], [-1, -1]], dtype=F64)
    assert VICReg()(x[:, None].repeat(1, 2, 1)).logs["covariance"].abs() < 1e-15
    # a collapsed batch pays the full variance hinge: 1 - sqrt(eps)
    collapsed = torch.ones(6, 2, 4, dtype=F64)
    assert VICReg()(collapsed).logs["variance"].item() == pytest.approx(1 - 1e-2, abs=1e-12)


def test_gradcheck():
    z = (0.4 * rand(4, 2, 3, seed=3)).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: VICReg()(x).loss, (z,))


def test_yaml_defaults():
    head = hydra.utils.instantiate(OmegaConf.load("configs/loss/vicreg.yaml"))
    assert isinstance(head, VICReg)
    assert (head.sim_coeff, head.std_coeff, head.cov_coeff, head.eps) == (25.0, 25.0, 1.0, 1e-4)
    assert head.requires == frozenset() and not head.uses_predictor


def test_invariances_of_the_embedding_axes():
    """Instance order and signed permutations of the dimensions leave the loss unchanged; a
    general rotation does not (the variance and covariance terms read the axes)."""
    z = 0.5 * rand(10, 2, 5, seed=5)
    assert_reads_the_axes(VICReg(), z)
