"""The chunked log-sum-exp (sslkit/losses/chunked.py) and the heads that use it: the same values
and gradients as the dense heads, a plain-loop reference, float64 gradchecks with blocks that do
not divide the rows, and one-line refusals of bad block sizes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sslkit.losses import (
    DebiasedContrastive,
    DecoupledContrastive,
    HardNegativeContrastive,
    InfoNCE,
    RobustInfoNCE,
)
from sslkit.losses.chunked import row_logsumexp
from tests.conftest import F64, assert_matches, rand


def reference_lse(u: torch.Tensor, scale: float, ids: list[int] | None) -> list[float]:
    """log sum_b exp(scale u_a.u_b) over b != a (or over other instances), as a plain loop."""
    out = []
    for a in range(len(u)):
        terms = [scale * float(u[a] @ u[b]) for b in range(len(u))
                 if (b != a if ids is None else ids[b] != ids[a])]
        m = max(terms)
        out.append(m + math.log(sum(math.exp(t - m) for t in terms)))
    return out


@pytest.mark.parametrize("by_instance", [False, True])
@pytest.mark.parametrize("chunk", [1, 3, 4, 11, None])
def test_row_logsumexp_matches_a_plain_loop(by_instance, chunk):
    u = F.normalize(rand(11, 5, seed=2), dim=-1)
    ids = torch.arange(11) % 4 if by_instance else None
    got = row_logsumexp(u, 1 / 0.3, ids, chunk)
    want = reference_lse(u, 1 / 0.3, None if ids is None else ids.tolist())
    assert torch.allclose(got, torch.tensor(want, dtype=F64), atol=1e-12, rtol=0)


@pytest.mark.parametrize("by_instance", [False, True])
def test_row_logsumexp_gradcheck_in_blocks(by_instance):
    u = rand(10, 4, seed=3).requires_grad_()
    ids = torch.arange(10) % 5 if by_instance else None
    weights = rand(10, seed=4)  # a non-uniform upstream gradient
    assert torch.autograd.gradcheck(lambda x: (row_logsumexp(x, 0.7, ids, 3) * weights).sum(), (u,))


def test_chunked_gradient_equals_dense_gradient():
    u = rand(13, 6, seed=5)
    assert_matches(lambda x: row_logsumexp(x, 2.0, None, 4).square().sum(),
                   lambda x: row_logsumexp(x, 2.0, None, None).square().sum(), u)


HEADS = [
    (InfoNCE, {"temperature": 0.5}),
    (InfoNCE, {"temperature": 0.1, "normalize": False}),
    (DebiasedContrastive, {"temperature": 0.5, "tau_plus": 0.1}),
    (DecoupledContrastive, {"temperature": 0.1}),
    (HardNegativeContrastive, {"temperature": 0.5, "tau_plus": 0.1, "beta": 1.0}),
    (HardNegativeContrastive, {"temperature": 0.5, "tau_plus": 0.0, "beta": 0.0}),
    (RobustInfoNCE, {"temperature": 0.1, "q": 0.1, "lam": 0.01}),
]


@pytest.mark.parametrize("views", [2, 3])
@pytest.mark.parametrize("cls,kwargs", HEADS)
def test_chunked_head_equals_dense_head_float64(cls, kwargs, views):
    z = rand(7, views, 6, seed=views, scale=0.5)
    dense, chunked = cls(**kwargs), cls(**kwargs, chunk_size=4)
    assert_matches(lambda x: chunked(x).loss, lambda x: dense(x).loss, z, tol=1e-12)


@pytest.mark.parametrize("cls,kwargs", HEADS)
def test_chunked_head_equals_dense_head_float32_to_1e6(cls, kwargs):
    z = rand(256, 2, 32, seed=9, scale=0.3, dtype=torch.float32)
    dense, chunked = cls(**kwargs), cls(**kwargs, chunk_size=100)
    z1, z2 = z.clone().requires_grad_(), z.clone().requires_grad_()
    l1, l2 = dense(z1).loss, chunked(z2).loss
    l1.backward(), l2.backward()
    assert abs(l1.item() - l2.item()) <= 1e-6 * max(1.0, abs(l1.item()))
    assert torch.allclose(z1.grad, z2.grad, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("cls,kwargs", HEADS)
def test_chunked_head_logs_equal_dense_logs(cls, kwargs):
    z = rand(9, 3, 5, seed=7, scale=0.6)
    dense, chunked = cls(**kwargs)(z).logs, cls(**kwargs, chunk_size=4)(z).logs
    assert dense.keys() == chunked.keys()
    for key in dense:  # HCL's weight entropy and largest weight come from the blocks too
        assert torch.allclose(torch.as_tensor(dense[key]), torch.as_tensor(chunked[key]),
                              atol=1e-12, rtol=0), key


@pytest.mark.parametrize("cls,kwargs", HEADS)
def test_chunked_head_gradcheck(cls, kwargs):
    head = cls(**kwargs, chunk_size=3)
    z = rand(4, 2, 5, seed=1).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: head(x).loss, (z,))


def test_chunked_head_under_bf16_autocast_computes_in_float32():
    z = rand(64, 2, 16, seed=6, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = InfoNCE(chunk_size=50)(z.bfloat16())
    assert out.loss.dtype == torch.float32
    assert abs(out.loss.item() - InfoNCE()(z.bfloat16().float()).loss.item()) < 1e-5


@pytest.mark.parametrize("bad", [0, -2, 2.5, True, "1024"])
@pytest.mark.parametrize("cls", [InfoNCE, DebiasedContrastive, DecoupledContrastive,
                                 HardNegativeContrastive, RobustInfoNCE])
def test_bad_chunk_size_is_refused(cls, bad):
    with pytest.raises(ValueError, match="chunk_size must be a positive number of rows"):
        cls(chunk_size=bad)
