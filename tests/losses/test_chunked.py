"""The chunked log-sum-exp and row blocks (sslkit/losses/chunked.py) and the heads that use them:
the same values, gradients and logs as the dense heads, plain-loop references, float64
gradchecks with blocks that do not divide the rows, and one-line refusals of bad block sizes."""

from __future__ import annotations

import math

import hydra
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from sslkit.eval.plots import plot_weights
from sslkit.losses import (
    CACR,
    AlignUniform,
    DebiasedContrastive,
    DecoupledContrastive,
    HardNegativeContrastive,
    InfoNCE,
    MoCo,
    RobustInfoNCE,
)
from sslkit.losses.chunked import map_row_blocks, row_logsumexp
from tests.conftest import F64, ROOT, assert_matches, rand

pytestmark = pytest.mark.filterwarnings("ignore:cacr with 2 views")


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


def rowwise_softmax_terms(block, start, others, calls):
    """Per row: a softmax-weighted sum over every row of ``others`` (a row-wise function with
    a gradient to both arguments), and the row's first index; counts its calls."""
    calls.append(start)
    logits = block @ others.transpose(-1, -2)
    weights = torch.softmax(logits, dim=-1)
    rows = torch.arange(start, start + block.shape[-2], dtype=block.dtype).expand(logits.shape[:-1])
    return (weights * logits).sum(-1), rows


@pytest.mark.parametrize("chunk", [1, 3, 10, None])
def test_map_row_blocks_equals_one_call_and_recomputes_each_block_in_backward(chunk):
    x = rand(2, 10, 4, seed=8).requires_grad_()  # rows along dim 1
    upstream = rand(2, 10, seed=9)
    calls = []
    got, rows = map_row_blocks(rowwise_softmax_terms, x, chunk, x, calls, dim=1)
    blocks = 1 if chunk is None else math.ceil(10 / chunk)
    assert calls == [i * (chunk or 10) for i in range(blocks)]
    assert torch.equal(rows, torch.arange(10, dtype=F64).expand(2, 10))
    (got * upstream).sum().backward()
    # a checkpointed block is run again in backward; one block (dense) is plain autograd
    assert len(calls) == (blocks if blocks == 1 else 2 * blocks)
    y = x.detach().clone().requires_grad_()
    want, _ = rowwise_softmax_terms(y, 0, y, [])
    (want * upstream).sum().backward()
    assert torch.allclose(got, want, atol=1e-13, rtol=0)
    assert torch.allclose(x.grad, y.grad, atol=1e-13, rtol=0)


def test_map_row_blocks_without_gradient_runs_each_block_once():
    x, calls = rand(7, 3, seed=1), []
    with torch.no_grad():
        (got, _) = map_row_blocks(rowwise_softmax_terms, x, 2, x, calls)
    assert calls == [0, 2, 4, 6] and not got.requires_grad


HEADS = [
    (InfoNCE, {"temperature": 0.5}),
    (InfoNCE, {"temperature": 0.1, "normalize": False}),
    (DebiasedContrastive, {"temperature": 0.5, "tau_plus": 0.1}),
    (DecoupledContrastive, {"temperature": 0.1}),
    (HardNegativeContrastive, {"temperature": 0.5, "tau_plus": 0.1, "beta": 1.0}),
    (HardNegativeContrastive, {"temperature": 0.5, "tau_plus": 0.0, "beta": 0.0}),
    (RobustInfoNCE, {"temperature": 0.1, "q": 0.1, "lam": 0.01}),
    (CACR, {}),
    (CACR, {"weighting": "uniform_pos", "tau_neg": 2.0, "beta": 0.7}),
    (CACR, {"weighting": "uniform_neg", "tau_pos": 3.0}),
    (CACR, {"weighting": "uniform"}),
    (CACR, {"debiased": True, "tau_plus": 0.2}),
    (CACR, {"debiased": True, "weighting": "uniform_pos"}),
    (CACR, {"detach_weights": True, "normalize": False}),
    (AlignUniform, {}),
    (AlignUniform, {"alpha": 1.0, "t": 3.0, "unif_w": 0.5, "normalize": False}),
]


# 7 instances: blocks of one row, blocks that do not divide the rows, one block (>= rows)
@pytest.mark.parametrize("chunk", [1, 4, 7, 50])
@pytest.mark.parametrize("views", [2, 3, 5])
@pytest.mark.parametrize("cls,kwargs", HEADS)
def test_chunked_head_equals_dense_head_float64(cls, kwargs, views, chunk):
    z = rand(7, views, 6, seed=views, scale=0.5)
    dense, chunked = cls(**kwargs), cls(**kwargs, chunk_size=chunk)
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
    for key in dense:  # HCL's and CACR's weight entropies and largest weights come from blocks
        want, got = torch.as_tensor(dense[key]), torch.as_tensor(chunked[key])
        if key.startswith("neg_pair_"):  # CACR's [P, B, B] pictures: the first block of queries
            assert got.shape == (3, 4, 9) and want.shape == (3, 9, 9)
            want = want[:, :4]
        assert torch.allclose(want, got, atol=1e-12, rtol=0), key


# stop-gradient weights (detach_weights) are not the loss's derivative; the test above covers them
@pytest.mark.parametrize("cls,kwargs", [h for h in HEADS if not h[1].get("detach_weights")])
def test_chunked_head_gradcheck(cls, kwargs):
    head = cls(**kwargs, chunk_size=3)
    z = rand(4, 2, 5, seed=1).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: head(x).loss, (z,))


@pytest.mark.parametrize("cls,views,chunk,tol", [(InfoNCE, 2, 50, 1e-5), (CACR, 5, 10, 1e-6)])
def test_chunked_head_under_bf16_autocast_computes_in_float32(cls, views, chunk, tol):
    z = rand(64, views, 16, seed=6, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = cls(chunk_size=chunk)(z.bfloat16())
    assert out.loss.dtype == torch.float32
    assert abs(out.loss.item() - cls()(z.bfloat16().float()).loss.item()) < tol


@pytest.mark.parametrize("bad", [0, -2, 2.5, True, "1024"])
@pytest.mark.parametrize("cls", [InfoNCE, DebiasedContrastive, DecoupledContrastive,
                                 HardNegativeContrastive, RobustInfoNCE, MoCo, CACR,
                                 AlignUniform])
def test_bad_chunk_size_is_refused(cls, bad):
    with pytest.raises(ValueError, match="chunk_size must be a positive number of rows"):
        cls(chunk_size=bad)


def test_chunked_cacr_pictures_draw():
    """The weight-vs-distance picture reads the first block of a chunked head's negative pairs."""
    out = CACR(chunk_size=5)(rand(12, 3, 4, seed=2))
    tensors = {k: v.float() for k, v in out.logs.items() if torch.is_tensor(v) and v.numel() > 1}
    assert tensors["neg_pair_weight"].shape == (3, 5, 12)
    torch.testing.assert_close(tensors["neg_pair_weight"].sum(-1), torch.ones(3, 5))
    assert (tensors["neg_pair_weight"].diagonal(dim1=-2, dim2=-1) == 0).all()
    record = {"head": "CACR", "batch": 12, "views": 3, "epochs_done": 0, "tensors": tensors}
    fig = plot_weights([record], 100, np.random.default_rng(0))
    assert len(fig.axes[1].collections) == 1


# -- MoCo: the [B, Q] logits against the queue in blocks of queries ----------------------------


def moco_reference(z, k, queue, temperature):
    """Per query i and key view w: -log e^{q.k/t} / (e^{q.k/t} + sum_j e^{q.n_j/t}), as loops."""
    terms = []
    for i in range(z.shape[0]):
        q = z[i, 0] / z[i, 0].norm()
        negs = sum(math.exp(float(q @ n) / temperature) for n in queue)
        for w in range(k.shape[1]):
            pos = math.exp(float(q @ (k[i, w] / k[i, w].norm())) / temperature)
            terms.append(-math.log(pos / (pos + negs)))
    return sum(terms) / len(terms)


def moco_inputs(batch=7, keys=1, queue=11, dim=5, seed=0, dtype=F64):
    z = rand(batch, 1, dim, seed=seed, scale=0.5, dtype=dtype)
    k = rand(batch, keys, dim, seed=seed + 1, dtype=dtype)
    return z, k, F.normalize(rand(queue, dim, seed=seed + 2, dtype=dtype), dim=-1)


@pytest.mark.parametrize("chunk", [1, 3, 7, 50])
@pytest.mark.parametrize("keys", [1, 2])
def test_chunked_moco_equals_dense_and_a_plain_loop_float64(chunk, keys):
    z, k, queue = moco_inputs(keys=keys, seed=keys)
    dense, chunked = MoCo(temperature=0.2), MoCo(temperature=0.2, chunk_size=chunk)
    assert_matches(lambda x: chunked(x, k=k, queue=queue).loss,
                   lambda x: dense(x, k=k, queue=queue).loss, z, tol=1e-12)
    want = moco_reference(z, k, queue, 0.2)
    assert abs(chunked(z, k=k, queue=queue).loss.item() - want) < 1e-12


def test_chunked_moco_equals_dense_float32_to_1e6():
    z, k, queue = moco_inputs(batch=256, queue=1000, dim=32, seed=3, dtype=torch.float32)
    z1, z2 = z.clone().requires_grad_(), z.clone().requires_grad_()
    l1 = MoCo()(z1, k=k, queue=queue).loss
    l2 = MoCo(chunk_size=100)(z2, k=k, queue=queue).loss
    l1.backward(), l2.backward()
    assert abs(l1.item() - l2.item()) <= 1e-6 * max(1.0, abs(l1.item()))
    assert torch.allclose(z1.grad, z2.grad, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("queue_len", [0, 11])
def test_chunked_moco_logs_equal_dense_logs(queue_len):
    z, k, queue = moco_inputs(batch=9, keys=2, queue=queue_len, seed=4)
    dense = MoCo()(z, k=k, queue=queue).logs
    chunked = MoCo(chunk_size=4)(z, k=k, queue=queue).logs
    assert dense.keys() == chunked.keys() == {"pos_sim", "neg_sim", "acc1"}
    for key in dense:
        assert abs(float(dense[key]) - float(chunked[key])) < 1e-12, key
    if not queue_len:
        assert float(chunked["acc1"]) == 1.0 and float(chunked["neg_sim"]) == 0.0


def test_chunked_moco_with_an_empty_queue_is_zero_like_dense():
    z, k, queue = moco_inputs(queue=0, seed=5)
    z = z.requires_grad_()
    loss = MoCo(chunk_size=3)(z, k=k, queue=queue).loss
    loss.backward()
    assert loss.abs() < 1e-15 and z.grad.abs().max() < 1e-15


def test_chunked_moco_gradcheck_and_gradient_to_queries_only():
    z, k, queue = moco_inputs(batch=5, keys=2, queue=6, dim=4, seed=6)
    head = MoCo(temperature=0.5, chunk_size=2)
    k, queue = k.requires_grad_(), queue.requires_grad_()
    assert torch.autograd.gradcheck(lambda x: head(x, k=k, queue=queue).loss,
                                    (z.requires_grad_(),))
    head(z, k=k, queue=queue).loss.backward()
    assert z.grad is not None and k.grad is None and queue.grad is None


def test_chunked_moco_under_bf16_autocast_computes_in_float32():
    z, k, queue = moco_inputs(batch=64, queue=300, dim=16, seed=7, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = MoCo(chunk_size=10)(z.bfloat16(), k=k.bfloat16(), queue=queue.bfloat16())
    assert out.loss.dtype == torch.float32
    plain = MoCo()(z.bfloat16().float(), k=k.bfloat16().float(), queue=queue.bfloat16().float())
    assert abs(out.loss.item() - plain.loss.item()) < 1e-6


@pytest.mark.parametrize("name", ["moco", "cacr", "cct", "au"])
def test_loss_configs_default_to_dense_and_take_a_chunk_size(name):
    cfg = OmegaConf.load(ROOT / "configs" / "loss" / f"{name}.yaml")
    if "defaults" in cfg:  # cct.yaml composes cacr.yaml
        cfg = OmegaConf.merge(OmegaConf.load(ROOT / "configs" / "loss" / "cacr.yaml"),
                              {k: v for k, v in cfg.items() if k != "defaults"})
    assert cfg.chunk_size is None
    assert hydra.utils.instantiate(cfg, chunk_size=256).chunk_size == 256
