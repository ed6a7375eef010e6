"""DebiasedContrastive (Chuang et al. 2020) and DecoupledContrastive (Yeh et al. 2022)."""

from __future__ import annotations

import math

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from sslkit.losses.dcl import DebiasedContrastive, DecoupledContrastive
from sslkit.losses.infonce import InfoNCE
from tests.conftest import assert_matches, orthogonal, positive_pairs, rand_z, unit

torch.set_num_threads(1)


def ref_debiased(z, temperature, tau_plus):
    """Plain loops over anchors, positives and negatives (Chuang et al. 2020, M = 1)."""
    b, v, _ = z.shape
    u = [[unit(z[i, a]) for a in range(v)] for i in range(b)]
    m = (b - 1) * v
    terms = []
    for i in range(b):
        for a in range(v):
            neg = 0.0
            for j in range(b):
                if j == i:
                    continue
                for w in range(v):
                    neg = neg + torch.exp(torch.dot(u[i][a], u[j][w]) / temperature)
            for p in range(v):
                if p == a:
                    continue
                pos = torch.exp(torch.dot(u[i][a], u[i][p]) / temperature)
                ng = (neg - tau_plus * m * pos) / (1 - tau_plus)
                ng = torch.clamp(ng, min=m * math.exp(-1 / temperature))
                terms.append(-torch.log(pos / (pos + ng)))
    return torch.stack(terms).mean()


def ref_nt_xent_plain(z, temperature):
    """Non-debiased form: -log pos / (pos + sum over negatives), no clamp."""
    return torch.stack([-torch.log(pos / (pos + neg)) for pos, neg in positive_pairs(z, temperature)]).mean()


def ref_decoupled(z, temperature):
    """-log pos / sum over negatives: InfoNCE with the positive removed from the denominator."""
    b, v, _ = z.shape
    u = [[unit(z[i, a]) for a in range(v)] for i in range(b)]
    terms = []
    for i in range(b):
        for a in range(v):
            neg = sum(
                torch.exp(torch.dot(u[i][a], u[j][w]) / temperature)
                for j in range(b)
                for w in range(v)
                if j != i
            )
            for p in range(v):
                if p != a:
                    pos = torch.exp(torch.dot(u[i][a], u[i][p]) / temperature)
                    terms.append(-torch.log(pos / neg))
    return torch.stack(terms).mean()


# ---------------------------------------------------------------- debiased (Chuang et al.)


@pytest.mark.parametrize("views", [2, 3])
@pytest.mark.parametrize("temperature,tau_plus", [(0.5, 0.1), (0.2, 0.3)])
def test_debiased_matches_reference(views, temperature, tau_plus):
    head = DebiasedContrastive(temperature=temperature, tau_plus=tau_plus)
    z = rand_z(v=views, seed=views)
    assert_matches(lambda x: head(x).loss, lambda x: ref_debiased(x, temperature, tau_plus), z)


def test_debiased_clamp_active_matches_reference():
    # aligned positives + a large class prior push the estimator below its floor
    z = rand_z(b=6, seed=3)
    z[:, 1] = z[:, 0] + 0.05 * rand_z(b=6, v=1, seed=4)[:, 0]
    head = DebiasedContrastive(temperature=0.5, tau_plus=0.5)
    assert head(z).logs["clamp_frac"] > 0
    assert_matches(lambda x: head(x).loss, lambda x: ref_debiased(x, 0.5, 0.5), z)


def test_debiased_tau_plus_zero_is_plain_nt_xent():
    z = rand_z(b=6, v=3, seed=5)
    head = DebiasedContrastive(temperature=0.3, tau_plus=0.0)
    assert_matches(lambda x: head(x).loss, lambda x: ref_nt_xent_plain(x, 0.3), z)
    # and for two views it is SimCLR's NT-Xent as implemented by the InfoNCE head
    z2 = rand_z(b=7, v=2, seed=6)
    infonce = InfoNCE(temperature=0.3)
    assert_matches(lambda x: head(x).loss, lambda x: infonce(x).loss, z2)


def test_debiased_differs_from_biased():
    z = rand_z(b=6, seed=7)
    assert (
        abs(DebiasedContrastive(tau_plus=0.1)(z).loss - DebiasedContrastive(tau_plus=0.0)(z).loss)
        > 1e-3
    )


def test_debiased_gradcheck():
    z = rand_z(b=3, v=2, d=3, seed=8).requires_grad_()
    head = DebiasedContrastive(temperature=0.5, tau_plus=0.1)
    assert torch.autograd.gradcheck(lambda x: head(x).loss, (z,))


# ---------------------------------------------------------------- decoupled (Yeh et al.)


@pytest.mark.parametrize("views", [2, 3])
def test_decoupled_matches_reference(views):
    head = DecoupledContrastive(temperature=0.1)
    z = rand_z(v=views, seed=10 + views)
    assert_matches(lambda x: head(x).loss, lambda x: ref_decoupled(x, 0.1), z)


def test_decoupled_is_infonce_without_positive_in_denominator():
    # -log(e^s / neg) = -log(e^s / (e^s + neg)) - log(1 + e^s / neg): InfoNCE minus a correction
    z = rand_z(b=8, v=2, d=5, seed=12)
    t = 0.4
    dec = DecoupledContrastive(temperature=t)(z).loss
    nce = InfoNCE(temperature=t)(z).loss
    u = torch.nn.functional.normalize(z, dim=-1)
    rows = torch.cat([u[:, 0], u[:, 1]])
    sim = rows @ rows.T / t
    n = z.shape[0]
    pos = torch.cat([sim.diagonal(n), sim.diagonal(-n)])
    negsum = sim.exp().sum(dim=1) - sim.diagonal().exp() - pos.exp()
    correction = torch.log1p(pos.exp() / negsum).mean()
    assert torch.allclose(dec, nce - correction, atol=1e-12)
    assert correction > 1e-3


def test_decoupled_gradcheck():
    z = rand_z(b=3, v=3, d=3, seed=13).requires_grad_()
    head = DecoupledContrastive(temperature=0.3)
    assert torch.autograd.gradcheck(lambda x: head(x).loss, (z,))


# ---------------------------------------------------------------- both heads


HEADS = [
    pytest.param(lambda **kw: DebiasedContrastive(**kw), id="debiased"),
    pytest.param(lambda **kw: DecoupledContrastive(**kw), id="decoupled"),
]


@pytest.mark.parametrize("make", HEADS)
def test_permutation_and_rotation_invariance(make):
    head = make(temperature=0.3)
    z = rand_z(b=9, v=3, d=6, seed=14)
    base = head(z).loss
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(head(z[perm]).loss, base, atol=1e-12)
    assert torch.allclose(head(z @ orthogonal(6)).loss, base, atol=1e-12)
    # a real change of the input changes the loss
    assert not torch.allclose(head(z + 0.3 * rand_z(b=9, v=3, d=6, seed=15)).loss, base, atol=1e-6)


@pytest.mark.parametrize("make", HEADS)
def test_low_temperature_finite(make):
    head = make(temperature=0.05)
    z = rand_z(b=64, v=2, d=16, seed=16).float().requires_grad_()
    out = head(z)
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(z.grad).all()


def test_yaml_defaults():
    dcl = hydra.utils.instantiate(OmegaConf.load("configs/loss/dcl.yaml"))
    assert isinstance(dcl, DebiasedContrastive)
    assert (dcl.temperature, dcl.tau_plus, dcl.normalize) == (0.5, 0.1, True)  # chingyaoc/DCL
    dec = hydra.utils.instantiate(OmegaConf.load("configs/loss/dcl_decoupled.yaml"))
    assert isinstance(dec, DecoupledContrastive)
    assert (dec.temperature, dec.normalize) == (0.1, True)
    z = rand_z(b=4, seed=19)
    for head in (dcl, dec):
        assert torch.isfinite(head(z, labels=torch.arange(4)).loss)  # ignores unknown extras


@pytest.mark.parametrize(
    "kwargs", [{"temperature": 0.0}, {"tau_plus": 1.0}, {"tau_plus": -0.1}], ids=str
)
def test_debiased_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        DebiasedContrastive(**kwargs)


def test_decoupled_rejects_bad_temperature():
    with pytest.raises(ValueError, match="temperature"):
        DecoupledContrastive(temperature=-1.0)
