"""SwAV head (Caron et al. 2020) against plain float64 loops: Sinkhorn-Knopp codes (doubly
stochastic), swapped prediction, prototype normalisation, freezing and checkpoints."""

from __future__ import annotations

import math

import hydra
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from sslkit.losses.swav import SwAV
from tests.conftest import F64, assert_matches, rand, unit

torch.set_num_threads(1)


def make_head(k, d, seed=0, **kwargs):
    head = SwAV(num_prototypes=k, freeze_prototypes_iters=0, **kwargs)
    head.materialize(d)
    head.double()
    with torch.no_grad():
        head.prototypes.weight.copy_(rand(k, d, seed=100 + seed))  # not unit: renormalised
    return head


def ref_sinkhorn(scores, eps, iters):
    """main_swav.py distributed_sinkhorn, in loops: Q = exp(s / eps)^T [K, B] with total mass
    1; each iteration scales every row to 1/K, then every column to 1/B; codes = B Q^T."""
    b, k = scores.shape
    q = [[math.exp(float(scores[n, j]) / eps) for n in range(b)] for j in range(k)]
    total = sum(map(sum, q))
    q = [[x / total for x in row] for row in q]
    for _ in range(iters):
        q = [[x / sum(row) / k for x in row] for row in q]
        cols = [sum(q[j][n] for j in range(k)) for n in range(b)]
        q = [[q[j][n] / cols[n] / b for n in range(b)] for j in range(k)]
    return torch.tensor([[b * q[j][n] for j in range(k)] for n in range(b)], dtype=F64)


def ref_swav(z, protos, t, eps, iters, n_global):
    """Loops: codes of each global view (no gradient), cross-entropy of every other view's
    softmax(scores / t) against them; mean over instances, the other views, the global views."""
    b, v, _ = z.shape
    c = [unit(row) for row in protos]
    scores = [[torch.stack([torch.dot(unit(z[i, a]), cj) for cj in c]) for a in range(v)] for i in range(b)]
    total = 0.0
    for a in range(n_global):
        codes = ref_sinkhorn(torch.stack([scores[i][a].detach() for i in range(b)]), eps, iters)
        sub = 0.0
        for w in range(v):
            if w == a:
                continue
            for i in range(b):
                log_p = torch.log_softmax(scores[i][w] / t, dim=0)
                sub = sub - torch.dot(codes[i], log_p) / b
        total = total + sub / (v - 1)
    return total / n_global


@pytest.mark.parametrize("batch", [3, 6])
@pytest.mark.parametrize("views", [2, 4])
@pytest.mark.parametrize("iters", [1, 3])
def test_matches_reference(batch, views, iters):
    z = rand(batch, views, 4, seed=batch + views)
    head = make_head(5, 4, seed=views, sinkhorn_iterations=iters, temperature=0.1, epsilon=0.05)
    protos = head.prototypes.weight.detach().clone()
    assert_matches(lambda x: head(x).loss, lambda x: ref_swav(x, protos, 0.1, 0.05, iters, 2), z)


def test_sinkhorn_matches_loops_and_is_doubly_stochastic():
    head = SwAV(num_prototypes=6, epsilon=0.05)
    scores = F.normalize(rand(5, 6, seed=1), dim=-1) * 0.9
    codes = head.sinkhorn(scores)
    assert torch.allclose(codes, ref_sinkhorn(scores, 0.05, 3), atol=1e-12, rtol=0)
    # every code is a distribution over prototypes, exactly after the final column step
    assert torch.allclose(codes.sum(1), torch.ones(5, dtype=F64), atol=1e-12)
    assert (codes >= 0).all()
    # with enough iterations every prototype receives B/K: doubly stochastic to tolerance
    many = SwAV(num_prototypes=6, epsilon=0.05, sinkhorn_iterations=500).sinkhorn(scores)
    assert torch.allclose(many.sum(1), torch.ones(5, dtype=F64), atol=1e-12)
    assert torch.allclose(many.sum(0), torch.full((6,), 5 / 6, dtype=F64), atol=1e-8)
    # each iteration brings the prototypes' mass closer to B/K
    scores = F.normalize(rand(256, 6, seed=2), dim=-1)
    gaps = [(SwAV(num_prototypes=6, sinkhorn_iterations=n).sinkhorn(scores).sum(0) - 256 / 6)
            .abs().max().item() for n in (1, 3, 10, 100)]
    assert gaps == sorted(gaps, reverse=True) and gaps[-1] < 1e-4


def test_official_vectorised_sinkhorn():
    # main_swav.py (single process): Q = exp(out / eps).t(); Q /= sum; for it: Q /= rowsum;
    # Q /= K; Q /= colsum; Q /= B; return (Q * B).t()
    scores = F.normalize(rand(7, 4, seed=3), dim=-1)
    q = torch.exp(scores / 0.05).t()
    q /= q.sum()
    for _ in range(3):
        q /= q.sum(dim=1, keepdim=True)
        q /= 4
        q /= q.sum(dim=0, keepdim=True)
        q /= 7
    assert torch.allclose(SwAV(num_prototypes=4).sinkhorn(scores), (q * 7).t(), atol=1e-13)


def test_gradcheck_of_the_prediction_with_codes_held():
    """The codes are stop-gradient by design; with them held fixed the head's gradient is
    exact (gradcheck of the swapped prediction)."""
    head = make_head(4, 3, seed=1)
    z = rand(3, 2, 3, seed=4).requires_grad_()
    codes = [head.sinkhorn(head.prototypes(z.detach())[:, a]) for a in range(2)]
    it = iter(codes * 1000)
    head.sinkhorn = lambda scores: next(it)
    assert torch.autograd.gradcheck(lambda x: head(x).loss, (z,))


def test_prototypes_renormalised_after_each_update():
    head = make_head(5, 4)
    z = rand(6, 2, 4, seed=5)
    head(z)
    w = head.prototypes.weight
    assert torch.allclose(w.norm(dim=1), torch.ones(5, dtype=F64), atol=1e-14)
    with torch.no_grad():  # an optimiser step moves them off the sphere
        w.add_(0.3 * rand(5, 4, seed=6))
    moved = w.detach().clone()
    loss = head(z).loss
    assert torch.allclose(w, F.normalize(moved, dim=1), atol=1e-15)
    assert torch.allclose(loss, ref_swav(z, moved, 0.1, 0.05, 3, 2), atol=1e-12)
    # the gradient is that of the plain linear map (official: in-place normalisation)
    head.zero_grad()
    head(z).loss.backward()
    assert w.grad is not None and w.grad.abs().sum() > 0


def test_renormalisation_is_idempotent_bit_for_bit():
    """What makes a resumed run bit-exact: once on the sphere, the rows are not rewritten by a
    later forward, whatever happened to the tensor in between (a checkpoint load, DDP's
    broadcast): renormalising is a function of the weight's bits alone."""
    for dtype in (torch.float32, F64):
        head = make_head(50, 128).to(dtype)
        z = rand(6, 2, 128, seed=5).to(dtype)
        head(z)
        w = head.prototypes.weight
        unit_rows, version = w.detach().clone(), w._version
        head(z)
        assert w._version == version  # nothing written: a second forward may share the graph
        fresh = SwAV(num_prototypes=50, freeze_prototypes_iters=0, dim=128).to(dtype)
        fresh.load_state_dict(head.state_dict())
        fresh(z)
        assert torch.equal(fresh.prototypes.weight, unit_rows)


def test_prototypes_frozen_for_the_first_iterations():
    """As main_swav.py: the gradient reaches the prototypes (so DDP all-reduces it every step),
    and for the first freeze_prototypes_iters steps it is dropped (the head lists them in
    frozen_parameters; the training module sets their .grad to None after the backward)."""
    head = SwAV(num_prototypes=5)  # freeze_prototypes_iters = 313 by default
    w = head.prototypes
    z = rand(6, 2, 4, seed=7).float().requires_grad_()
    head.set_progress(step=0)
    out = head(z)
    out.loss.backward()
    assert w.weight.grad.abs().sum() > 0 and z.grad.abs().sum() > 0 and out.logs["frozen"] == 1
    assert head.frozen_parameters() == [w.weight]
    head.set_progress(step=312)
    assert head.frozen_parameters() == [w.weight]
    head.set_progress(step=313)
    out = head(z)
    assert head.frozen_parameters() == [] and out.logs["frozen"] == 0


def test_checkpoint_round_trip_into_a_fresh_head():
    """A checkpoint written after an optimiser step resumes bit-exactly in a head that does not
    know its input size yet."""
    head = SwAV(num_prototypes=7)
    z = rand(5, 2, 3, seed=8).float()
    head.set_progress(step=400)
    head(z).loss.backward()
    with torch.no_grad():
        head.prototypes.weight.sub_(0.1 * head.prototypes.weight.grad)
    state = {k: v.clone() for k, v in head.state_dict().items()}
    loss = head(z).loss
    fresh = SwAV(num_prototypes=7)
    assert fresh.prototypes.dim is None
    fresh.load_state_dict(state)
    assert fresh.prototypes.dim == 3 and int(fresh.step) == 400 and not fresh.frozen
    assert torch.equal(fresh(z).loss, loss)
    with pytest.raises(ValueError, match="built for 3-dim"):
        fresh(rand(5, 2, 4).float())


def test_yaml_defaults():
    head = hydra.utils.instantiate(OmegaConf.load("configs/loss/swav.yaml"))
    assert isinstance(head, SwAV)
    assert head.prototypes.num_prototypes == 3000
    assert (head.temperature, head.epsilon, head.sinkhorn_iterations) == (0.1, 0.05, 3)
    assert (head.n_global, head.freeze_prototypes_iters) == (2, 313)
    assert head.requires == frozenset() and not head.uses_predictor
    with pytest.raises(ValueError, match="n_global=3"):
        SwAV(num_prototypes=4, n_global=3)(rand(4, 2, 3).float())


def test_invariant_to_rotating_embeddings_and_prototypes_together():
    """The loss reads inner products with the prototypes: rotating the projections alone
    changes it (the contract's rotation clause cannot hold), rotating both does not; the
    order of the instances does not matter either."""
    head = make_head(5, 4, seed=2)
    z = rand(6, 3, 4, seed=9)
    base = head(z).loss
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(head(z[perm]).loss, base, atol=1e-12)
    rot, _ = torch.linalg.qr(rand(4, 4, seed=10))
    assert not torch.allclose(head(z @ rot).loss, base, atol=1e-6)
    with torch.no_grad():
        head.prototypes.weight.copy_(head.prototypes.weight @ rot)
    assert torch.allclose(head(z @ rot).loss, base, atol=1e-12)


def test_unsized_prototypes_survive_module_conversions():
    """The training module turns itself channels-last at construction, before any batch has
    sized the prototypes; device, dtype and memory-format moves must not fail on them."""
    for head in (SwAV(num_prototypes=4), hydra.utils.instantiate(OmegaConf.load("configs/loss/dino.yaml"))):
        head.to(memory_format=torch.channels_last)
        head.to("cpu").float()
        assert head.prototypes.dim is None
        z = rand(4, 2, 3).float()
        extras = {"k": rand(4, 2, 3, seed=1).float()} if "k" in head.requires else {}
        assert torch.isfinite(head(z, **extras).loss) and head.prototypes.dim == 3
