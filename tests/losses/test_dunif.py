"""DecoupledUniformity (Dufumier et al. 2023)."""

from __future__ import annotations

import math

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from sslkit.losses.dunif import DecoupledUniformity
from tests.conftest import F64, assert_matches, rand, unit

torch.set_num_threads(1)


def centroids(z):
    b, v, _ = z.shape
    return [sum(unit(z[i, a]) for a in range(v)) / v for i in range(b)]


def ref_uniformity(mus, t):
    """log of the mean over unordered pairs i < j of exp(-t ||mu_i - mu_j||^2)."""
    pots = []
    for i in range(len(mus)):
        for j in range(i + 1, len(mus)):
            pots.append(torch.exp(-t * ((mus[i] - mus[j]) ** 2).sum()))
    return torch.log(torch.stack(pots).mean())


def ref_kernel(prior, kernel, sigma):
    b = prior.shape[0]
    k = torch.empty(b, b, dtype=F64)
    for i in range(b):
        for j in range(b):
            x, y = prior[i], prior[j]
            if kernel == "rbf":
                k[i, j] = math.exp(-((x - y) ** 2).sum().item() / (2 * sigma**2))
            else:
                k[i, j] = (x @ y / (x.norm() * y.norm())).item()
    return k


def ref_dunif(z, t, prior=None, kernel=None, sigma=None, lam=0.01):
    mus = centroids(z)
    if kernel is not None:
        b = len(mus)
        k = ref_kernel(prior, kernel, sigma)
        lam = lam or 1 / math.sqrt(b)
        alpha = torch.linalg.inv(k + lam * torch.eye(b, dtype=F64)) @ k
        mus = [sum(alpha[i, j] * mus[j] for j in range(b)) for i in range(b)]
    return ref_uniformity(mus, t)


@pytest.mark.parametrize("views", [2, 3])
@pytest.mark.parametrize("t", [2.0, 0.5])
def test_no_prior_matches_reference(views, t):
    head = DecoupledUniformity(t=t)
    z = rand(6, views, 4, seed=views)
    assert_matches(lambda x: head(x).loss, lambda x: ref_dunif(x, t), z)


@pytest.mark.parametrize("kernel,sigma", [("rbf", 1.5), ("rbf", 4.0), ("cosine", None)])
@pytest.mark.parametrize("lam", [0.01, 0.0, 0.5])
def test_kernel_matches_reference(kernel, sigma, lam):
    head = DecoupledUniformity(kernel=kernel, sigma=sigma, lam=lam)
    z = rand(7, 2, 4, seed=1)
    prior = rand(7, 3, seed=2)
    assert_matches(
        lambda x: head(x, prior=prior).loss,
        lambda x: ref_dunif(x, 2.0, prior, kernel, sigma, lam),
        z,
        tol=1e-9,  # (K + lam I)^-1 amplifies rounding by its condition number (~1e3 here)
    )


def test_one_dimensional_prior():
    z = rand(6, 2, 4, seed=3)
    prior = torch.tensor([0.0, 1.0, 1.0, 2.0, 0.5, 3.0])
    head = DecoupledUniformity(kernel="rbf", sigma=1.0)
    expected = ref_dunif(z, 2.0, prior[:, None].to(F64), "rbf", 1.0)
    assert torch.allclose(head(z, prior=prior).loss, expected, atol=1e-10)


def test_identity_kernel_scales_centroids():
    # one-hot priors: the cosine kernel is exactly I, so the estimator is mu / (1 + lam)
    z = rand(6, 3, 4, seed=4)
    prior = torch.eye(6, dtype=F64)
    lam = 0.3
    head = DecoupledUniformity(kernel="cosine", lam=lam)

    def scaled(x):
        return ref_uniformity([mu / (1 + lam) for mu in centroids(x)], 2.0)

    assert_matches(lambda x: head(x, prior=prior).loss, scaled, z)
    # and it is not the plain-centroid loss
    assert abs(head(z, prior=prior).loss - DecoupledUniformity()(z).loss) > 1e-3
    # an RBF kernel with a tiny bandwidth on distinct priors is numerically I too
    rbf = DecoupledUniformity(kernel="rbf", sigma=1e-3, lam=lam)
    assert torch.allclose(
        rbf(z, prior=rand(6, 2, seed=5)).loss, head(z, prior=prior).loss, atol=1e-12
    )


def test_no_prior_is_uniformity_of_centroids():
    # centroids from a closed form: for V = 2 unit views a, b, ||(a + b) / 2||^2 = (1 + a.b) / 2
    z = rand(8, 2, 5, seed=6)
    out = DecoupledUniformity(t=2.0)(z)
    u = torch.nn.functional.normalize(z, dim=-1)
    mu = u.mean(dim=1)
    d2 = torch.cdist(mu, mu).square()
    iu = torch.triu_indices(8, 8, offset=1)
    expected = torch.log(torch.exp(-2.0 * d2[iu[0], iu[1]]).mean())
    assert torch.allclose(out.loss, expected, atol=1e-12)
    cos = (u[:, 0] * u[:, 1]).sum(-1)
    assert torch.allclose(out.logs["align"], -((1 + cos) / 2).mean(), atol=1e-12)
    assert torch.allclose(out.logs["unif"], out.loss)


def test_gradient_is_decoupled():
    # dL/dmu_k = -4t sum_j w_kj (mu_k - mu_j), w_kj = exp(-t d_kj^2) / sum_{p != q} exp(-t d_pq^2):
    # the weights depend on centroid distances only (no positive in a softmax denominator)
    t = 1.5
    mu = rand(6, 3, seed=7)
    z = mu[:, None, :].expand(6, 2, 3).clone().requires_grad_()  # identical views: mu = z_i^v
    loss = DecoupledUniformity(t=t, normalize=False)(z).loss
    (g,) = torch.autograd.grad(loss, z)
    d2 = torch.cdist(mu, mu).square()
    w = torch.exp(-t * d2) * (1 - torch.eye(6, dtype=F64))
    w = w / w.sum()
    grad_mu = -4 * t * (w.sum(1, keepdim=True) * mu - w @ mu)
    assert torch.allclose(g[:, 0] + g[:, 1], grad_mu, atol=1e-12)


def test_prior_gets_no_gradient():
    z = rand(5, 2, 4, seed=8).requires_grad_()
    prior = rand(5, 3, seed=9).requires_grad_()
    loss = DecoupledUniformity(kernel="rbf", sigma=2.0)(z, prior=prior).loss
    loss.backward()
    assert prior.grad is None and torch.isfinite(z.grad).all()


def test_requires_reflects_kernel():
    assert DecoupledUniformity().requires == frozenset()
    assert DecoupledUniformity(kernel="rbf", sigma=1.0).requires == frozenset({"prior"})
    assert DecoupledUniformity(kernel="cosine").requires == frozenset({"prior"})
    with pytest.raises(ValueError, match="prior"):
        DecoupledUniformity(kernel="cosine")(rand(4, 2, 3))


@pytest.mark.parametrize("kernel", [None, "rbf"])
def test_gradcheck(kernel):
    z = rand(4, 2, 3, seed=10).requires_grad_()
    head = DecoupledUniformity(kernel=kernel, sigma=1.0)
    prior = rand(4, 2, seed=11)
    assert torch.autograd.gradcheck(lambda x: head(x, prior=prior).loss, (z,))


@pytest.mark.parametrize("kernel", [None, "rbf", "cosine"])
def test_permutation_and_rotation_invariance(kernel):
    head = DecoupledUniformity(kernel=kernel, sigma=2.0)
    z, prior = rand(9, 3, 6, seed=12), rand(9, 4, seed=13)
    base = head(z, prior=prior).loss
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(0))
    q, _ = torch.linalg.qr(rand(6, 6, seed=14))
    assert torch.allclose(head(z[perm], prior=prior[perm]).loss, base, atol=1e-12)
    assert torch.allclose(head(z @ q, prior=prior).loss, base, atol=1e-12)
    assert not torch.allclose(
        head(z + 0.3 * rand(9, 3, 6, seed=15), prior=prior).loss, base, atol=1e-6
    )


def test_sharp_potential_finite():
    head = DecoupledUniformity(t=50.0, kernel="rbf", sigma=0.5)
    z = rand(64, 2, 16, seed=16).float().requires_grad_()
    out = head(z, prior=rand(64, 3, seed=17).float())
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(z.grad).all()


@pytest.mark.parametrize("kernel", [None, "rbf"])
def test_bf16_autocast(kernel):
    head = DecoupledUniformity(kernel=kernel, sigma=2.0)
    torch.manual_seed(19)
    layer = torch.nn.Linear(12, 8)
    x = torch.randn(32, 2, 12)
    prior = torch.randn(32, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = layer(x)
        assert z.dtype == torch.bfloat16
        out = head(z, prior=prior.bfloat16())
    assert out.loss.dtype == torch.float32
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(layer.weight.grad).all()
    assert torch.allclose(out.loss, head(layer(x), prior=prior).loss, rtol=5e-2, atol=2e-2)


def test_yaml_defaults():
    head = hydra.utils.instantiate(OmegaConf.load("configs/loss/dunif.yaml"))
    assert isinstance(head, DecoupledUniformity)
    # Duplums/contrastive-decoupled-uniformity: DecoupledUniformityLoss(kernel=None, lambda_=0.01, t=2)
    assert (head.t, head.kernel, head.sigma, head.lam, head.normalize) == (
        2.0,
        None,
        None,
        0.01,
        True,
    )
    assert head.requires == frozenset()
    assert torch.isfinite(head(rand(4, 2, 3), labels=torch.arange(4)).loss)
    cfg = OmegaConf.load("configs/loss/dunif.yaml")
    cfg.kernel, cfg.sigma = "rbf", 100.0  # the ImageNet-100 + BigBiGAN recipe
    rbf = hydra.utils.instantiate(cfg)
    assert torch.isfinite(rbf(rand(4, 2, 3), prior=rand(4, 5)).loss)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"t": 0.0},
        {"kernel": "linear"},
        {"kernel": "rbf"},
        {"kernel": "rbf", "sigma": -1.0},
        {"lam": -0.1},
    ],
    ids=str,
)
def test_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        DecoupledUniformity(**kwargs)
