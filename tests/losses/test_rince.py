"""RobustInfoNCE (RINCE; Chuang et al. 2022)."""

from __future__ import annotations

import math

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from sslkit.losses.infonce import InfoNCE
from sslkit.losses.rince import RobustInfoNCE
from tests.conftest import assert_matches, loss_and_grad, positive_pairs, rand_z

torch.set_num_threads(1)


def ref_rince(z, temperature, q, lam):
    """Loops: mean over (anchor, positive) of -pos^q/q and of (lam (pos + neg))^q / q."""
    pos_terms, neg_terms = [], []
    for pos, neg in positive_pairs(z, temperature):
        pos_terms.append(-(pos**q) / q)
        neg_terms.append((lam * (pos + neg)) ** q / q)
    return torch.stack(pos_terms).mean() + torch.stack(neg_terms).mean()


@pytest.mark.parametrize("views", [2, 3])
@pytest.mark.parametrize("temperature,q,lam", [(0.1, 0.1, 0.01), (0.5, 0.5, 0.1), (0.3, 1.0, 0.02)])
def test_matches_reference(views, temperature, q, lam):
    head = RobustInfoNCE(temperature=temperature, q=q, lam=lam)
    z = rand_z(v=views, seed=views)
    # loss values reach ~1e3 at q=1, T=0.1: compare relatively there
    scale = max(1.0, abs(ref_rince(z, temperature, q, lam).item()))
    assert_matches(
        lambda x: head(x).loss, lambda x: ref_rince(x, temperature, q, lam), z, tol=1e-10 * scale
    )


def test_q_to_zero_approaches_infonce_plus_log_lam():
    z = rand_z(b=7, v=2, d=5, seed=1)
    nce_loss, nce_grad = loss_and_grad(lambda x: InfoNCE(temperature=0.5)(x).loss, z)
    errors = []
    for q in (1e-2, 1e-4, 1e-6):
        head = RobustInfoNCE(temperature=0.5, q=q, lam=0.3)
        loss, grad = loss_and_grad(lambda x, h=head: h(x).loss, z)
        errors.append((loss - (nce_loss + math.log(0.3))).abs().item())
        assert torch.allclose(grad, nce_grad, atol=50 * q)
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-5


def test_q_one_is_linear_form():
    z = rand_z(b=6, v=2, d=4, seed=2)
    t, lam = 0.5, 0.05
    u = torch.nn.functional.normalize(z, dim=-1)
    rows = torch.cat([u[:, 0], u[:, 1]])
    e = (rows @ rows.T / t).exp()
    n = z.shape[0]
    pos = torch.cat([e.diagonal(n), e.diagonal(-n)])
    neg = e.sum(1) - e.diagonal() - pos
    expected = (-pos + lam * (pos + neg)).mean()
    assert torch.allclose(
        RobustInfoNCE(temperature=t, q=1.0, lam=lam)(z).loss, expected, atol=1e-12
    )


def test_logged_terms_are_the_official_terms():
    z = rand_z(b=5, v=2, seed=3)
    out = RobustInfoNCE()(z)
    assert torch.allclose(out.logs["pos_term"] + out.logs["neg_term"], out.loss, atol=1e-9)
    assert out.logs["pos_term"] < 0 < out.logs["neg_term"]


def test_gradcheck():
    z = rand_z(b=3, v=2, d=3, seed=4).requires_grad_()
    head = RobustInfoNCE(temperature=0.5, q=0.5, lam=0.1)
    assert torch.autograd.gradcheck(lambda x: head(x).loss, (z,))


def test_permutation_and_rotation_invariance():
    head = RobustInfoNCE(temperature=0.3, q=0.5)
    z = rand_z(b=9, v=3, d=6, seed=5)
    base = head(z).loss
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(0))
    q, _ = torch.linalg.qr(rand_z(b=6, v=1, d=6, seed=6)[:, 0])
    assert torch.allclose(head(z[perm]).loss, base, atol=1e-12)
    assert torch.allclose(head(z @ q).loss, base, atol=1e-12)
    assert not torch.allclose(head(z + 0.3 * rand_z(b=9, v=3, d=6, seed=7)).loss, base, atol=1e-6)


@pytest.mark.parametrize("q", [0.1, 1.0])
def test_low_temperature_finite(q):
    head = RobustInfoNCE(temperature=0.05, q=q)
    z = rand_z(b=64, v=2, d=16, seed=8).float().requires_grad_()
    out = head(z)
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(z.grad).all()


def test_yaml_defaults():
    head = hydra.utils.instantiate(OmegaConf.load("configs/loss/rince.yaml"))
    assert isinstance(head, RobustInfoNCE)
    # chingyaoc/RINCE ImageNet/simclr argparse defaults (--temperature 0.1 --q 0.1 --lam 0.01)
    assert (head.temperature, head.q, head.lam, head.normalize) == (0.1, 0.1, 0.01, True)
    assert torch.isfinite(head(rand_z(b=4, seed=11), k=None).loss)


@pytest.mark.parametrize(
    "kwargs", [{"temperature": 0.0}, {"q": 0.0}, {"q": 1.5}, {"lam": 0.0}], ids=str
)
def test_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        RobustInfoNCE(**kwargs)
