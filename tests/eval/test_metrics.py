"""Representation metrics against values computed by hand on small inputs."""

from __future__ import annotations

import math

import pytest
import torch

from sslkit.eval.metrics import (alignment, collapse_warning, covariance_rank, dimension_std, rankme,
                                 representation_metrics, spread, uniformity)


def entropy_rank(p):
    return math.exp(-sum(x * math.log(x) for x in p))


def test_alignment_by_hand():
    a = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    b = torch.tensor([[0.0, 2.0], [0.0, 1.0]])  # normalised: distances sqrt(2) and 0
    assert alignment(a, b, alpha=2) == pytest.approx((2 + 0) / 2)
    assert alignment(a, b, alpha=1) == pytest.approx(math.sqrt(2) / 2)


def test_uniformity_by_hand():
    z = torch.tensor([[2.0, 0.0], [-1.0, 0.0], [0.0, 5.0]])  # e1, -e1, e2: squared distances 4, 2, 2
    expected = math.log((math.exp(-2 * 4) + 2 * math.exp(-2 * 2)) / 3)
    assert uniformity(z, t=2) == pytest.approx(expected)
    assert uniformity(torch.ones(4, 3)) == pytest.approx(0.0, abs=1e-12)  # collapsed


def test_rankme_by_hand():
    z = torch.tensor([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]])  # singular values 3 and 1
    assert rankme(z, eps=0) == pytest.approx(entropy_rank([0.75, 0.25]))
    assert rankme(torch.eye(5) * 2) == pytest.approx(5, rel=1e-5)  # full rank, equal spectrum
    assert rankme(torch.ones(10, 4)) == pytest.approx(1, rel=1e-4)  # rank one


def test_covariance_rank_by_hand():
    z = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]])  # cov = diag(2/3, 8/3)
    assert covariance_rank(z, eps=0) == pytest.approx(entropy_rank([0.2, 0.8]))


def svd_rankme(z, eps=1e-7):
    s = torch.linalg.svdvals(z.double())
    p = s / s.sum() + eps
    return math.exp(-(p * p.log()).sum().item())


def full_covariance_rank(z, eps=1e-7):
    lam = torch.linalg.eigvalsh(torch.cov(z.double().T)).clamp_min(0)
    p = lam / lam.sum() + eps
    return math.exp(-(p * p.log()).sum().item())


@pytest.mark.parametrize("n, d", [(64, 300), (300, 64), (40, 40), (3, 9)])
def test_spectra_from_the_smaller_gram_match_svd_and_the_full_covariance(n, d):
    torch.manual_seed(n + d)
    full = torch.randn(n, d, dtype=torch.float64) * torch.logspace(0, -3, d, dtype=torch.float64)
    low = torch.randn(n, 2, dtype=torch.float64) @ torch.randn(2, d, dtype=torch.float64)
    for z in (full, low):
        assert rankme(z) == pytest.approx(svd_rankme(z), rel=1e-9)
        assert covariance_rank(z) == pytest.approx(full_covariance_rank(z), rel=1e-9)
    # float32 rank-deficient input: svdvals also resolves the float32 rounding noise
    low32 = low.float()
    assert rankme(low32) == pytest.approx(svd_rankme(low32), rel=1e-4)
    assert covariance_rank(low32) == pytest.approx(full_covariance_rank(low32), rel=1e-9)


def test_dimension_std_by_hand():
    z = torch.tensor([[3.0, 0.0], [0.0, 0.5]])  # normalised: e1, e2; unbiased std sqrt(1/2) each
    torch.testing.assert_close(dimension_std(z), torch.full((2,), math.sqrt(0.5), dtype=torch.float64))
    assert spread(z)["std_ratio"] == pytest.approx(1.0)
    assert spread(torch.ones(6, 4))["std_ratio"] == pytest.approx(0.0, abs=1e-12)


def test_collapse_warning_names_what_fell():
    healthy = {"rankme": 10.0, "std_ratio": 0.8}
    assert collapse_warning({"encoder": healthy}, 2.0, 0.05) is None
    msg = collapse_warning({"encoder": healthy, "projector": {"rankme": 1.1, "std_ratio": 0.01}}, 2.0, 0.05)
    assert "\n" not in msg and "projector RankMe 1.10 < 2.0" in msg and "projector std ratio" in msg
    assert "encoder" not in msg


def test_representation_metrics_of_a_real_module(smoke_parts):
    _, module, dm = smoke_parts
    images = next(iter(dm.eval_dataloader(dm.test_split)))["image"][:64]
    out = representation_metrics(module, images, seed=0, chunk_size=16)
    again = representation_metrics(module, images, seed=0, chunk_size=16)
    rechunked = representation_metrics(module, images, seed=0, chunk_size=64)
    other_seed = representation_metrics(module, images, seed=1, chunk_size=16)
    for space in ("encoder", "projector"):
        m = out[space]
        assert 0 <= m["alignment"] <= 4 and m["uniformity"] <= 0
        assert 1 <= m["rankme"] <= m["dim"] + 1e-6
        assert m == again[space]  # seeded
        assert m["alignment"] != other_seed[space]["alignment"]
        # the un-augmented metrics do not depend on the chunking (eval-mode BatchNorm)
        for key in ("rankme", "covariance_rank", "std_mean", "std_min", "std_ratio"):
            assert m[key] == pytest.approx(rechunked[space][key], rel=1e-4, abs=1e-6)
    assert not module.training
