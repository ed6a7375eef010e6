"""Long-tailed class counts and shot groups against their formulas."""

from __future__ import annotations

import math

import pytest
import torch

from tests.eval.conftest import blobs, context_with
from sslkit.data.longtail import class_counts, longtail_indices
from sslkit.data.synthetic import Synthetic
from sslkit.errors import ConfigError
from sslkit.eval.longtail import LongTailEval, group_accuracy, shot_groups


@pytest.mark.parametrize("ratio", [10, 100])
def test_exponential_counts(ratio):
    labels = torch.arange(10).repeat_interleave(500)
    keep = longtail_indices(labels, ratio, seed=0, profile="exponential")
    counts = torch.bincount(labels[keep], minlength=10).tolist()
    assert counts == [max(1, math.floor(500 * ratio ** (-c / 9))) for c in range(10)]
    assert counts[0] / counts[-1] == pytest.approx(ratio, rel=0.02)


@pytest.mark.parametrize("ratio", [10, 100])
def test_step_counts(ratio):
    labels = torch.arange(10).repeat_interleave(500)
    keep = longtail_indices(labels, ratio, seed=0, profile="step")
    counts = torch.bincount(labels[keep], minlength=10).tolist()
    assert counts == [500] * 5 + [500 // ratio] * 5


@pytest.mark.parametrize("profile", ["exponential", "step"])
def test_no_class_left_empty(profile):
    labels = torch.arange(6).repeat_interleave(20)  # 20 / 100 < 1
    counts = torch.bincount(labels[longtail_indices(labels, 100, 0, profile)], minlength=6)
    assert counts.min() == 1 and counts.max() == 20
    assert class_counts(20, 6, 100, profile)[-1] == 1


def test_longtail_subset_is_seeded_and_validated():
    labels = torch.arange(4).repeat_interleave(50)
    assert torch.equal(longtail_indices(labels, 10, 3, "step"), longtail_indices(labels, 10, 3, "step"))
    with pytest.raises(ConfigError, match="exponential, step"):
        longtail_indices(labels, 10, 0, "linear")
    with pytest.raises(ConfigError, match="imbalance_profile"):
        Synthetic(num_train=64, num_classes=4, imbalance_ratio=10, imbalance_profile="linear")
    dm = Synthetic(num_train=400, num_classes=4, imbalance_ratio=10, imbalance_profile="step")
    assert torch.bincount(dm.split("pretrain").labels).tolist() == [100, 100, 10, 10]


def test_shot_groups_by_threshold():
    counts = [500, 101, 100, 20, 19, 1]
    assert shot_groups(counts, 100, 20) == ["many", "many", "medium", "medium", "few", "few"]
    with pytest.raises(ConfigError, match="few_threshold"):
        shot_groups(counts, 10, 20)


def test_group_accuracy_by_hand():
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    pred = torch.tensor([0, 0, 1, 0, 0, 0])
    out = group_accuracy(pred, y, ["many", "medium", "few"])
    assert out == {"top1": pytest.approx(0.5), "many_top1": 1.0, "medium_top1": 0.5, "few_top1": 0.0}
    assert group_accuracy(pred, y, ["many", "many", "many"])["few_top1"] is None


def test_longtail_evaluator_groups_by_pretraining_counts(smoke_parts, tmp_path):
    cfg, module, _ = smoke_parts
    dm = Synthetic(num_train=512, num_test=64, num_classes=4, imbalance_ratio=100,
                   imbalance_profile="exponential", image_size=16)
    dm.setup("validate")
    train, test = blobs(400, 4, 8, 0.05, seed=1), blobs(100, 4, 8, 0.05, seed=2)
    ctx = context_with((cfg, module, dm), tmp_path, train, test)
    out = LongTailEval(many_threshold=50, few_threshold=5, l2_grid=[1e-3], max_iter=50)(ctx)
    assert out["pretrain_class_counts"] == [128, 27, 5, 1]  # floor(128 * 100 ** (-c / 3))
    assert out["class_groups"] == ["many", "medium", "medium", "few"]
    assert out["linear"]["top1"] > 0.95 and out["knn"]["few_top1"] is not None
