"""Fast linear protocol: the objective against scikit-learn, separability, and a held-out
selection that never reads the test labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.eval.conftest import blobs, context_with
from sslkit.eval.linear import LinearProbe, fit_logistic, holdout_split


def test_fit_logistic_matches_scikit_learn():
    from sklearn.linear_model import LogisticRegression

    x, y = blobs(300, 4, 6, spread=0.8, seed=1)
    x = x.double().float()
    l2 = 1e-2
    ours = fit_logistic(x, y, 4, l2, max_iter=500, tolerance=1e-9)
    xs = ((x - x.mean(0)) / x.std(0)).numpy().astype(np.float64)
    ref = LogisticRegression(C=1 / (l2 * len(x)), tol=1e-10, max_iter=5000).fit(xs, y.numpy())
    # softmax weights are defined up to a constant per feature; scikit-learn's penalised solution
    # has zero-sum columns, and so does ours (the penalty picks the same representative)
    np.testing.assert_allclose(ours.weight.numpy(), ref.coef_, atol=2e-3)
    ref_b = ref.intercept_ - ref.intercept_.mean()
    np.testing.assert_allclose((ours.bias - ours.bias.mean()).numpy(), ref_b, atol=2e-3)


def test_holdout_split_is_seeded_and_disjoint():
    fit, held = holdout_split(100, 0.1, seed=3)
    assert len(held) == 10 and len(fit) == 90
    assert set(fit.tolist()).isdisjoint(held.tolist()) and len(set(fit.tolist()) | set(held.tolist())) == 100
    assert torch.equal(held, holdout_split(100, 0.1, seed=3)[1])
    assert not torch.equal(held, holdout_split(100, 0.1, seed=4)[1])


def probe() -> LinearProbe:
    return LinearProbe(l2_grid=[1e-4, 1e-2, 1.0, 30.0], holdout_fraction=0.1, max_iter=100)


def test_separable_features_near_one(smoke_parts, tmp_path):
    train, test = blobs(600, 8, 16, 0.05, seed=1), blobs(300, 8, 16, 0.05, seed=2)
    out = probe()(context_with(smoke_parts, tmp_path, train, test, num_classes=8))
    assert out["top1"] > 0.99 and out["top5"] > 0.99
    assert len(out["per_class_top1"]) == 8 and min(out["per_class_top1"]) > 0.95
    assert out["n_train"] == 600 and out["n_test"] == 300


def test_unrelated_features_near_chance(smoke_parts, tmp_path):
    g = torch.Generator().manual_seed(0)
    train = (torch.randn(2000, 16, generator=g), torch.randint(0, 4, (2000,), generator=g))
    test = (torch.randn(2000, 16, generator=g), torch.randint(0, 4, (2000,), generator=g))
    out = probe()(context_with(smoke_parts, tmp_path, train, test, num_classes=4))
    assert abs(out["top1"] - 0.25) < 0.05
    assert "top5" not in out  # 4 classes: top-5 is meaningless


def test_selection_never_reads_test_labels(smoke_parts, tmp_path):
    # noisy blobs: the held-out scores differ between strengths, so a selection on the test set
    # would see its scores move when the test labels are poisoned
    train, (test_x, test_y) = blobs(800, 4, 16, 1.2, seed=1), blobs(400, 4, 16, 1.2, seed=2)
    clean = probe()(context_with(smoke_parts, tmp_path, train, (test_x, test_y), num_classes=4))
    poisoned_y = (test_y + 1 + torch.randint(0, 3, test_y.shape, generator=torch.Generator().manual_seed(5))) % 4
    poisoned = probe()(context_with(smoke_parts, tmp_path, train, (test_x, poisoned_y), num_classes=4))
    assert poisoned["top1"] < clean["top1"] - 0.3  # the poison reached the test score ...
    assert poisoned["l2"] == clean["l2"]  # ... and nothing of the selection
    assert poisoned["holdout_top1"] == clean["holdout_top1"]
    assert len(set(clean["holdout_top1"].values())) > 1


def test_bad_settings_are_config_errors(smoke_parts, tmp_path):
    from sslkit.errors import ConfigError

    ctx = context_with(smoke_parts, tmp_path, blobs(50, 2, 4, 0.1, 1), blobs(20, 2, 4, 0.1, 2), num_classes=2)
    with pytest.raises(ConfigError, match="holdout_fraction"):
        LinearProbe(l2_grid=[1.0], holdout_fraction=1.5)(ctx)
    with pytest.raises(ConfigError, match="l2_grid"):
        LinearProbe(l2_grid=[])(ctx)
