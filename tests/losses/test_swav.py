"""SwAV head (Caron et al. 2020) against plain float64 loops: Sinkhorn-Knopp codes (doubly
stochastic), swapped prediction, prototype normalisation, freezing, checkpoints, and the queue of
earlier embeddings (against a transcription of main_swav.py's loop)."""

from __future__ import annotations

import math

import hydra
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from sslkit.errors import ConfigError
from sslkit.losses.swav import SwAV
from sslkit.parts.queue import KeyQueue
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


def ref_swav(z, protos, t, eps, iters, n_global, queue=None):
    """Loops: codes of each global view (no gradient), cross-entropy of every other view's
    softmax(scores / t) against them; mean over instances, the other views, the global views.
    ``queue``: per global view a, L earlier unit embeddings whose scores are stacked above the
    batch's before Sinkhorn-Knopp; the batch's B rows of the codes are kept."""
    b, v, _ = z.shape
    c = [unit(row) for row in protos]
    scores = [[torch.stack([torch.dot(unit(z[i, a]), cj) for cj in c]) for a in range(v)] for i in range(b)]
    total = 0.0
    for a in range(n_global):
        rows = [scores[i][a].detach() for i in range(b)]
        if queue is not None:
            rows = [torch.stack([torch.dot(u, cj) for cj in c]) for u in queue[a]] + rows
        codes = ref_sinkhorn(torch.stack(rows), eps, iters)[-b:]
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
    assert (head.queue_length, head.epoch_queue_starts) == (0, 15)  # main_swav.py: no queue
    assert head.requires == frozenset() and not head.uses_predictor
    assert "queue_in_use" not in head(rand(4, 2, 3).float()).logs
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


# -- the queue ------------------------------------------------------------------------------------
def interleave(per_view):
    """The module's queue rows from per-view queues ``[n_global][L, D]``: row n * j + a is view
    a's j-th entry (what SwAV.enqueue hands the module's KeyQueue)."""
    return torch.stack(per_view, 1).reshape(-1, per_view[0].shape[-1])


def unit_rows(n, d, seed):
    return F.normalize(rand(n, d, seed=seed), dim=-1)


@pytest.mark.parametrize("batch", [3, 6])
@pytest.mark.parametrize("views", [2, 4])
@pytest.mark.parametrize("length_in_batches", [1, 3])
def test_queue_codes_match_reference(batch, views, length_in_batches):
    """Codes from Sinkhorn-Knopp over the queue's scores stacked above the batch's, the batch's
    rows kept; loss and gradient equal the loop reference."""
    length = batch * length_in_batches
    head = make_head(5, 4, seed=views, queue_length=length, epoch_queue_starts=0)
    per_view = [unit_rows(length, 4, seed=40 + a) for a in range(2)]
    queue = interleave(per_view)
    z = rand(batch, views, 4, seed=batch + views)
    protos = head.prototypes.weight.detach().clone()
    assert_matches(lambda x: head(x, queue=queue).loss,
                   lambda x: ref_swav(x, protos, 0.1, 0.05, 3, 2, queue=per_view), z)
    out = head(z, queue=queue)
    assert out.logs["queue_in_use"] == 1.0
    # the queue changes the codes, so the loss
    plain = make_head(5, 4, seed=views)
    assert not torch.allclose(plain(z).loss, out.loss, atol=1e-6)
    # the batch's codes are distributions; the L + B rows share the prototypes' mass
    seen = []
    sinkhorn = head.sinkhorn
    head.sinkhorn = lambda s: seen.append(sinkhorn(s)) or seen[-1]
    head(z, queue=queue)
    assert [tuple(q.shape) for q in seen] == [(length + batch, 5)] * 2
    for q in seen:
        assert torch.allclose(q[-batch:].sum(1), torch.ones(batch, dtype=F64), atol=1e-12)


def official_loop(batches, protos, start, per_epoch, length, n_global, t=0.1, eps=0.05, iters=3):
    """main_swav.py's train loop (single process) transcribed: the queue is created at the first
    epoch >= epoch_queue_starts; use_the_queue resets each epoch and is set once the last row of
    queue[i] is non-zero; the queue's scores with the current prototypes go above the batch's;
    the queue is shifted by bs and its first rows set to the batch's embeddings; codes are
    distributed_sinkhorn(out)[-bs:]. Returns per step (loss, used, queue)."""
    queue, steps = None, []
    for it, z in enumerate(batches):
        epoch = it // per_epoch
        if it % per_epoch == 0:
            use_the_queue = False
            if epoch >= start and queue is None:
                queue = torch.zeros(n_global, length, z.shape[-1], dtype=F64)
        c = F.normalize(protos[it], dim=1)
        bs, views = z.shape[0], z.shape[1]
        embedding = F.normalize(z, dim=-1)  # [B, V, D]
        output = embedding @ c.T
        loss = 0
        for i in range(n_global):
            out = output[:, i]
            if queue is not None:
                if use_the_queue or not torch.all(queue[i, -1, :] == 0):
                    use_the_queue = True
                    out = torch.cat((torch.mm(queue[i], c.t()), out))
                queue[i, bs:] = queue[i, :-bs].clone()
                queue[i, :bs] = embedding[:, i]
            q = torch.exp(out / eps).t()
            q /= q.sum()
            for _ in range(iters):
                q /= q.sum(dim=1, keepdim=True)
                q /= q.shape[0]
                q /= q.sum(dim=0, keepdim=True)
                q /= q.shape[1]
            q = (q * q.shape[1]).t()[-bs:]
            subloss = 0
            for v in range(views):
                if v != i:
                    subloss -= torch.mean(torch.sum(q * F.log_softmax(output[:, v] / t, dim=1), dim=1))
            loss += subloss / (views - 1)
        steps.append((loss / n_global, queue is not None and use_the_queue,
                      None if queue is None else queue.clone()))
    return steps


def test_queue_follows_the_official_loop_through_its_start_and_fifo():
    """Nine steps, three per epoch, the queue from epoch 1 and two batches long: the module's
    KeyQueue fed by SwAV.enqueue holds the official queue's rows (in ring order), the codes use
    it from the step after it fills (the official use_the_queue), and each step's loss is the
    official one, with the prototypes moving between steps."""
    b, v, d, k, length, per_epoch, start = 4, 3, 5, 6, 8, 3, 1
    batches = [rand(b, v, d, seed=60 + s) for s in range(9)]
    protos = [rand(k, d, seed=80 + s) for s in range(9)]  # as if the optimiser moved them
    expected = official_loop(batches, protos, start, per_epoch, length, 2)
    head = make_head(k, d, queue_length=length, epoch_queue_starts=start)
    part = KeyQueue(head.queue_size, d).double()
    used = []
    for step, z in enumerate(batches):
        with torch.no_grad():
            head.prototypes.weight.copy_(protos[step])
        head.set_progress(step=step, epoch=step // per_epoch)
        out = head(z, queue=part.entries())
        part.push(head.enqueue(z[:, head.key_views]))  # after the step, as the module does
        loss, official_used, official_queue = expected[step]
        torch.testing.assert_close(out.loss, loss, rtol=0, atol=1e-12)
        used.append(out.logs["queue_in_use"])
        assert out.logs["queue_in_use"] == float(official_used), step
        held = part.entries().reshape(-1, 2, d)
        if official_queue is None:
            assert held.shape[0] == 0  # nothing enqueued before epoch_queue_starts
            continue
        for a in range(2):
            rows = official_queue[a][~(official_queue[a] == 0).all(1)]
            assert torch.allclose(held[:, a][torch.argsort(held[:, a, 0])],
                                  rows[torch.argsort(rows[:, 0])], atol=1e-15, rtol=0)
    assert used == [0, 0, 0, 0, 0, 1, 1, 1, 1]
    assert int(part.filled) == head.queue_size and int(part.ptr) == (4 * b * 2) % head.queue_size


def test_queue_off_before_epoch_queue_starts():
    """Before epoch_queue_starts the queue takes nothing and is not read, even full; from it, a
    queue not yet full is still not read (official: only once its last row is non-zero)."""
    head = make_head(5, 4, queue_length=6)
    plain = make_head(5, 4)
    per_view = [unit_rows(6, 4, seed=50 + a) for a in range(2)]
    full, z = interleave(per_view), rand(3, 2, 4, seed=11)
    protos = head.prototypes.weight.detach().clone()
    head.set_progress(step=100, epoch=14)
    out = head(z, queue=full)
    assert torch.equal(out.loss, plain(z).loss) and out.logs["queue_in_use"] == 0
    assert head.enqueue(z[:, :2]).shape == (0, 4)
    head.set_progress(step=101, epoch=15)
    rows = head.enqueue(z[:, :2])
    assert torch.allclose(rows, interleave([F.normalize(z[:, a], dim=-1) for a in range(2)]), atol=0)
    out = head(z, queue=full)
    assert out.logs["queue_in_use"] == 1
    assert torch.allclose(out.loss, ref_swav(z, protos, 0.1, 0.05, 3, 2, queue=per_view), atol=1e-12)
    part = head(z, queue=full[:6])
    assert torch.equal(part.loss, plain(z).loss) and part.logs["queue_in_use"] == 0


def test_gradcheck_with_the_queue_and_codes_held():
    """The queue enters the codes only: with them held fixed the gradient is exact, and the
    queue gets none."""
    head = make_head(4, 3, seed=1, queue_length=6, epoch_queue_starts=0)
    queue = interleave([unit_rows(6, 3, seed=70 + a) for a in range(2)]).requires_grad_()
    z = rand(3, 2, 3, seed=4).requires_grad_()
    codes = []
    sinkhorn = head.sinkhorn
    head.sinkhorn = lambda s: codes.append(sinkhorn(s)) or codes[-1]
    head(z.detach(), queue=queue.detach())
    assert [c.shape[0] for c in codes] == [9, 9]
    it = iter(codes * 1000)
    head.sinkhorn = lambda scores: next(it)
    assert torch.autograd.gradcheck(lambda x: head(x, queue=queue).loss, (z,))
    head(z, queue=queue).loss.backward()
    assert queue.grad is None


def test_queue_module_contract():
    """With a queue the head asks the module for one (requires), of n_global * L rows filled from
    the global views, taken from the online projections (momentum None: no key network)."""
    head = SwAV(num_prototypes=4, n_global=2, queue_length=32)
    assert head.requires == frozenset({"queue"}) and head.momentum is None
    assert head.queue_size == 64 and list(range(5))[head.key_views] == [0, 1]
    assert SwAV(num_prototypes=4).requires == frozenset()


@pytest.mark.parametrize("kwargs,error,match", [
    ({"queue_length": -1}, ValueError, r"^queue_length must be an integer >= 0, got -1$"),
    ({"queue_length": 2.5}, ValueError, r"^queue_length must be an integer >= 0, got 2.5$"),
    ({"epoch_queue_starts": -1}, ValueError, r"^epoch_queue_starts must be an integer >= 0, got -1$"),
])
def test_bad_queue_settings_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        SwAV(num_prototypes=4, **kwargs)


@pytest.mark.parametrize("length,fix", [(10, 8), (2, 4)])
def test_queue_length_must_be_a_multiple_of_the_batch(length, fix):
    """main_swav.py rounds queue_length down to a multiple of batch_size * world_size (the global
    batch; to 0, no queue, below it); the head refuses at its first batch, in one line, before
    epoch_queue_starts too (a run fails at its first step, not epochs later)."""
    head = SwAV(num_prototypes=4, queue_length=length)
    with pytest.raises(ConfigError, match=rf"loss.queue_length={length} is not a multiple of the "
                                          rf"batch of 4 .*set loss.queue_length={fix} or 0$") as err:
        head(rand(4, 2, 3).float(), queue=torch.zeros(0, 3))
    assert "\n" not in str(err.value)


def test_queue_missing_or_misshapen_refused():
    head = SwAV(num_prototypes=4, queue_length=4)
    z = rand(4, 2, 3).float()
    for queue in (None, torch.zeros(4, 3, 1), torch.zeros(10, 3), torch.zeros(3, 3), torch.zeros(2, 5)):
        with pytest.raises(ValueError, match=r"swav with queue_length=4 needs queue=Tensor\[<= 8, 3\]"):
            head(z, queue=queue)
