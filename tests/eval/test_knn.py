"""Weighted cosine kNN against a brute-force reference written out loop by loop."""

from __future__ import annotations

import math

import pytest
import torch

from tests.eval.conftest import blobs, context_with
from sslkit.eval.knn import KNNClassifier, knn_predict, knn_predict_many


def brute_force(bank, bank_labels, queries, num_classes, k, temperature):
    scores = []
    for q in queries.tolist():
        sims = []
        for b, label in zip(bank.tolist(), bank_labels.tolist()):
            dot = sum(x * y for x, y in zip(q, b))
            sims.append((dot / math.sqrt(sum(x * x for x in q)) / math.sqrt(sum(y * y for y in b)), label))
        sims.sort(key=lambda s: -s[0])
        votes = [0.0] * num_classes
        for sim, label in sims[:k]:
            votes[label] += math.exp(sim / temperature)
        scores.append(votes)
    return torch.tensor(scores)


@pytest.mark.parametrize("k", [1, 5, 20, 200])
def test_knn_matches_brute_force(k):
    g = torch.Generator().manual_seed(k)
    bank, queries = torch.randn(60, 5, generator=g), torch.randn(17, 5, generator=g)
    labels = torch.randint(0, 3, (60,), generator=g)
    ours = knn_predict(bank, labels, queries, 3, k=k, temperature=0.1, chunk=4)
    ref = brute_force(bank, labels, queries, 3, min(k, 60), 0.1)
    torch.testing.assert_close(ours, ref.float(), rtol=1e-4, atol=1e-3)
    assert torch.equal(ours.argmax(1), ref.argmax(1))


def test_one_pass_serves_every_k():
    g = torch.Generator().manual_seed(0)
    bank, queries = torch.randn(80, 6, generator=g), torch.randn(9, 6, generator=g)
    labels = torch.randint(0, 4, (80,), generator=g)
    many = knn_predict_many(bank, labels, queries, 4, (3, 20, 80), 0.07, chunk=5)
    for k in (3, 20, 80):
        torch.testing.assert_close(many[k], brute_force(bank, labels, queries, 4, k, 0.07).float(),
                                   rtol=1e-4, atol=1e-3)


def test_ks_past_the_bank_size_vote_once():
    """A bank of 16 entries with k = (20, 200): both clamp to 16, and each query keeps one row of
    scores (a README command on a tiny CIFAR stand-in found them voted twice)."""
    g = torch.Generator().manual_seed(1)
    bank, queries = torch.randn(16, 4, generator=g), torch.randn(8, 4, generator=g)
    labels = torch.randint(0, 3, (16,), generator=g)
    many = knn_predict_many(bank, labels, queries, 3, (20, 200), 0.1, chunk=3)
    assert list(many) == [16] and many[16].shape == (8, 3)
    torch.testing.assert_close(many[16], brute_force(bank, labels, queries, 3, 16, 0.1).float(),
                               rtol=1e-4, atol=1e-3)


def test_bf16_similarity_rounds_only_the_product():
    """In bfloat16 the normalised vectors and their product are rounded (8-bit mantissa), the
    top-k and weights are float32: scores within the rounding of exp(sim / t), same predictions
    on separable data, and different from float32 (the bf16 path really ran)."""
    g = torch.Generator().manual_seed(1)
    centres = torch.randn(4, 32, generator=g) * 3
    bank_labels = torch.arange(400) % 4
    bank = centres[bank_labels] + torch.randn(400, 32, generator=g)
    query_labels = torch.arange(40) % 4
    queries = centres[query_labels] + torch.randn(40, 32, generator=g)
    fp32 = knn_predict(bank, bank_labels, queries, 4, k=20, temperature=0.1)
    bf16 = knn_predict(bank, bank_labels, queries, 4, k=20, temperature=0.1, dtype=torch.bfloat16)
    assert not torch.equal(bf16, fp32)
    # |sim error| <= 2^-8 (two roundings of unit vectors and one of the product) -> weights e^(±0.04)
    torch.testing.assert_close(bf16, fp32, rtol=0.05, atol=1e-3)
    assert torch.equal(bf16.argmax(1), fp32.argmax(1)) and torch.equal(fp32.argmax(1), query_labels)


def test_knn_evaluator_reports_each_k(smoke_parts, tmp_path):
    train, test = blobs(400, 8, 16, 0.05, seed=1), blobs(100, 8, 16, 0.05, seed=2)
    ctx = context_with(smoke_parts, tmp_path, train, test, num_classes=8)
    out = KNNClassifier(k=[20, 200], temperature=0.1, summary_k=200)(ctx)
    ref = brute_force(*train, test[0], 8, 20, 0.1).argmax(1)
    assert out["k20_top1"] == pytest.approx((ref == test[1]).float().mean().item())
    assert out["top1"] == out["k200_top1"] and out["k20_top1"] > 0.99 and "k20_top5" in out


def test_summary_k_must_be_one_of_k():
    from sslkit.errors import ConfigError

    with pytest.raises(ConfigError, match="summary_k"):
        KNNClassifier(k=[20], summary_k=200)
