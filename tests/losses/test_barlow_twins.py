"""Barlow Twins head (Zbontar et al. 2021) against plain float64 loops and the official form."""

from __future__ import annotations

import itertools

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from sslkit.losses.barlow_twins import BarlowTwins
from tests.conftest import F64, assert_matches, assert_reads_the_axes, rand

torch.set_num_threads(1)


def standardise(x, eps):
    """Loops over dimensions: (x - mean) / sqrt(biased variance + eps) over the batch."""
    b, d = x.shape
    cols = []
    for j in range(d):
        mean = sum(x[n, j] for n in range(b)) / b
        var = sum((x[n, j] - mean) ** 2 for n in range(b)) / b
        cols.append(torch.stack([(x[n, j] - mean) / torch.sqrt(var + eps) for n in range(b)]))
    return torch.stack(cols, dim=1)


def ref_barlow(z, lambd, scale, eps=1e-5):
    b, v, d = z.shape
    losses = []
    for a, c in itertools.combinations(range(v), 2):
        za, zc = standardise(z[:, a], eps), standardise(z[:, c], eps)
        total = 0.0
        for i in range(d):
            for j in range(d):
                cij = sum(za[n, i] * zc[n, j] for n in range(b)) / b
                total = total + ((1 - cij) ** 2 if i == j else lambd * cij ** 2)
        losses.append(scale * total)
    return torch.stack(losses).mean()


@pytest.mark.parametrize("batch", [3, 6])
@pytest.mark.parametrize("views", [2, 3])
def test_matches_reference(batch, views):
    z = rand(batch, views, 4, seed=batch + views)
    head = BarlowTwins(lambd=0.3, scale_loss=0.5)
    assert_matches(lambda x: head(x).loss, lambda x: ref_barlow(x, 0.3, 0.5), z)


def test_official_form():
    # barlowtwins main.py: c = bn(z1).T @ bn(z2) / batch_size; on_diag + lambd * off_diag,
    # bn = BatchNorm1d(affine=False) in training mode
    z = rand(16, 2, 6, seed=1)
    bn = torch.nn.BatchNorm1d(6, affine=False, dtype=F64).train()
    c = bn(z[:, 0]).T @ bn(z[:, 1]) / 16
    on_diag = (torch.diagonal(c) - 1).pow(2).sum()
    off_diag = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
    expected = on_diag + 0.0051 * off_diag
    out = BarlowTwins()(z)
    assert torch.allclose(out.loss, expected, atol=1e-12, rtol=0)
    assert torch.allclose(out.logs["on_diag"], on_diag) and torch.allclose(out.logs["off_diag"], off_diag)


def test_gradcheck():
    z = rand(4, 2, 3, seed=2).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: BarlowTwins(lambd=0.2)(x).loss, (z,))


def test_invariant_to_per_dimension_affine_maps():
    """Standardisation removes each dimension's shift and (up to eps) its scale."""
    z = rand(32, 2, 5, seed=3)
    head = BarlowTwins(eps=1e-12)
    scale, shift = torch.linspace(0.5, 4.0, 5, dtype=F64), rand(5, seed=4)
    assert torch.allclose(head(z * scale + shift).loss, head(z).loss, atol=1e-9, rtol=0)


def test_identical_whitened_views_give_zero():
    """Views equal and decorrelated with unit variance: C = I, loss 0."""
    x = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=F64)
    z = x[:, None, :].repeat(1, 2, 1)
    assert BarlowTwins(eps=0.0 + 1e-300)(z).loss.abs() < 1e-12


def test_yaml_defaults():
    head = hydra.utils.instantiate(OmegaConf.load("configs/loss/barlow_twins.yaml"))
    assert isinstance(head, BarlowTwins)
    assert (head.lambd, head.scale_loss, head.eps) == (0.0051, 1.0, 1e-5)
    assert head.requires == frozenset() and not head.uses_predictor
    with pytest.raises(ValueError, match="lambd"):
        BarlowTwins(lambd=-1)


def test_invariances_of_the_embedding_axes():
    """Instance order and signed permutations of the dimensions leave the loss unchanged; a
    general rotation does not (the loss reads the axes: why the contract's rotation clause
    cannot hold for this head)."""
    z = rand(10, 2, 5, seed=5)
    assert_reads_the_axes(BarlowTwins(), z)
