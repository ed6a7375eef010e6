"""HardNegativeContrastive (HCL; Robinson et al. 2021)."""

from __future__ import annotations

import math

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from sslkit.losses.dcl import DebiasedContrastive
from sslkit.losses.hcl import HardNegativeContrastive
from sslkit.losses.infonce import InfoNCE
from tests.conftest import F64, assert_matches, loss_and_grad, rand_z, unit

torch.set_num_threads(1)


def ref_hcl(z, temperature, tau_plus, beta):
    """Loops: importance weights exp(beta * s) on every negative, debiased estimator, clamp."""
    b, v, _ = z.shape
    u = [[unit(z[i, a]) for a in range(v)] for i in range(b)]
    m = (b - 1) * v
    terms = []
    for i in range(b):
        for a in range(v):
            negs = [
                torch.exp(torch.dot(u[i][a], u[j][w]) / temperature)
                for j in range(b)
                for w in range(v)
                if j != i
            ]
            imp = [n**beta for n in negs]
            reweighted = sum(w * n for w, n in zip(imp, negs)) / (sum(imp) / len(imp))
            for p in range(v):
                if p == a:
                    continue
                pos = torch.exp(torch.dot(u[i][a], u[i][p]) / temperature)
                ng = (reweighted - tau_plus * m * pos) / (1 - tau_plus)
                ng = torch.clamp(ng, min=m * math.exp(-1 / temperature))
                terms.append(-torch.log(pos / (pos + ng)))
    return torch.stack(terms).mean()


@pytest.mark.parametrize("views", [2, 3])
@pytest.mark.parametrize(
    "temperature,tau_plus,beta", [(0.5, 0.1, 1.0), (0.2, 0.2, 3.0), (0.5, 0.0, 0.5)]
)
def test_matches_reference(views, temperature, tau_plus, beta):
    head = HardNegativeContrastive(temperature=temperature, tau_plus=tau_plus, beta=beta)
    z = rand_z(v=views, seed=views)
    assert_matches(lambda x: head(x).loss, lambda x: ref_hcl(x, temperature, tau_plus, beta), z)


def test_gradient_flows_through_importance_weights():
    # the official code does not detach the weights; detaching them changes the gradient
    z = rand_z(b=5, seed=1).requires_grad_()
    head = HardNegativeContrastive(temperature=0.5, tau_plus=0.1, beta=2.0)
    (g,) = torch.autograd.grad(head(z).loss, z)
    _, g_ref = loss_and_grad(lambda x: ref_hcl(x, 0.5, 0.1, 2.0), z)
    assert torch.allclose(g, g_ref, atol=1e-10)

    def detached_weights(x):
        b, v, _ = x.shape
        u = torch.nn.functional.normalize(x, dim=-1).transpose(0, 1).reshape(b * v, -1)
        s = u @ u.T / 0.5
        ids = torch.arange(b).repeat(v)
        neg = ids[:, None] != ids[None, :]
        e = s.exp() * neg
        imp = (2.0 * s).exp().detach() * neg
        rw = (imp * e).sum(1) / (imp.sum(1) / neg.sum(1))
        pos = torch.cat([s.diagonal(b), s.diagonal(-b)]).exp()
        m = (b - 1) * v
        ng = torch.clamp((rw - 0.1 * m * pos) / 0.9, min=m * math.exp(-2))
        return -torch.log(pos / (pos + ng)).mean()

    _, g_det = loss_and_grad(detached_weights, z)
    assert (g - g_det).abs().max() > 1e-4


def test_beta_zero_tau_plus_zero_is_infonce():
    z = rand_z(b=7, v=2, d=5, seed=2)
    head = HardNegativeContrastive(temperature=0.3, tau_plus=0.0, beta=0.0)
    infonce = InfoNCE(temperature=0.3)
    assert_matches(lambda x: head(x).loss, lambda x: infonce(x).loss, z)


def test_beta_zero_is_debiased():
    z = rand_z(b=6, v=3, d=5, seed=3)
    head = HardNegativeContrastive(temperature=0.4, tau_plus=0.15, beta=0.0)
    dcl = DebiasedContrastive(temperature=0.4, tau_plus=0.15)
    assert_matches(lambda x: head(x).loss, lambda x: dcl(x).loss, z)
    assert abs(HardNegativeContrastive(beta=1.0)(z).loss - dcl(z).loss) > 1e-3


def test_weight_logs():
    z = rand_z(b=6, v=2, d=5, seed=4)
    logs = HardNegativeContrastive(beta=0.0)(z).logs
    assert torch.allclose(logs["weight_entropy"], torch.tensor(math.log(10.0), dtype=F64))
    assert torch.allclose(logs["weight_max"], torch.tensor(0.1, dtype=F64))
    hard = HardNegativeContrastive(beta=5.0)(z).logs
    assert hard["weight_entropy"] < math.log(10.0) and hard["weight_max"] > 0.1


def test_gradcheck():
    z = rand_z(b=3, v=2, d=3, seed=5).requires_grad_()
    head = HardNegativeContrastive(temperature=0.5, tau_plus=0.1, beta=1.0)
    assert torch.autograd.gradcheck(lambda x: head(x).loss, (z,))


def test_permutation_and_rotation_invariance():
    head = HardNegativeContrastive(temperature=0.3)
    z = rand_z(b=9, v=3, d=6, seed=6)
    base = head(z).loss
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(0))
    q, _ = torch.linalg.qr(rand_z(b=6, v=1, d=6, seed=7)[:, 0])
    assert torch.allclose(head(z[perm]).loss, base, atol=1e-12)
    assert torch.allclose(head(z @ q).loss, base, atol=1e-12)
    assert not torch.allclose(head(z + 0.3 * rand_z(b=9, v=3, d=6, seed=8)).loss, base, atol=1e-6)


def test_low_temperature_high_beta_finite():
    head = HardNegativeContrastive(temperature=0.05, beta=6.0)
    z = rand_z(b=64, v=2, d=16, seed=9).float().requires_grad_()
    out = head(z)
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(z.grad).all()


def test_yaml_defaults():
    head = hydra.utils.instantiate(OmegaConf.load("configs/loss/hcl.yaml"))
    assert isinstance(head, HardNegativeContrastive)
    # joshr17/HCL image/main.py argparse defaults
    assert (head.temperature, head.tau_plus, head.beta, head.normalize) == (0.5, 0.1, 1.0, True)
    assert torch.isfinite(head(rand_z(b=4, seed=12), prior=None).loss)


@pytest.mark.parametrize(
    "kwargs", [{"temperature": 0.0}, {"tau_plus": 1.0}, {"beta": -1.0}], ids=str
)
def test_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        HardNegativeContrastive(**kwargs)
