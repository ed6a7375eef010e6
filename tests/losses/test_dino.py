"""DINO head (Caron et al. 2021) against plain float64 loops: centring, sharpening, the
teacher-temperature and momentum schedules, the EMA of the prototypes, checkpoints."""

from __future__ import annotations

import math

import hydra
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from sslkit.losses.dino import DINO
from sslkit.parts.momentum import MomentumCopy
from tests.conftest import assert_matches, rand, unit

torch.set_num_threads(1)


def make_head(k, d, seed=0, **kwargs):
    kwargs = {"freeze_last_layer": 0, **kwargs}
    head = DINO(out_dim=k, **kwargs)
    head.materialize(d)
    head.double()
    with torch.no_grad():
        head.prototypes.weight.copy_(rand(k, d, seed=100 + seed))
        head.prototypes.teacher_weight.copy_(rand(k, d, seed=200 + seed))
        head.center.center.copy_(0.3 * rand(1, k, seed=300 + seed))
    return head


def ref_dino(z, k, w, w_t, center, t_s, t_t, n_global):
    """Loops: student softmax(unit(z) . unit(w_j) / t_s); teacher softmax((unit(k) . unit(w_t_j)
    - c_j) / t_t); cross-entropy for every (global view a, view v != a), mean over instances and
    over those pairs."""
    b, v, _ = z.shape
    ws, wt = [unit(r) for r in w], [unit(r) for r in w_t]
    total, pairs = 0.0, 0
    for a in range(n_global):
        for s in range(v):
            if s == a:
                continue
            pairs += 1
            for i in range(b):
                with torch.no_grad():
                    t_logits = torch.stack([(torch.dot(unit(k[i, a]), c) - center[j]) / t_t
                                            for j, c in enumerate(wt)])
                    p_t = torch.softmax(t_logits, dim=0)
                s_logits = torch.stack([torch.dot(unit(z[i, s]), c) / t_s for c in ws])
                total = total - torch.dot(p_t, torch.log_softmax(s_logits, dim=0)) / b
    return total / pairs


@pytest.mark.parametrize("batch", [2, 5])
@pytest.mark.parametrize("views", [2, 3, 4])
def test_matches_reference(batch, views):
    z, k = rand(batch, views, 4, seed=views), rand(batch, 2, 4, seed=50 + views)
    head = make_head(6, 4, seed=views)
    w = head.prototypes.weight.detach().clone()
    w_t = head.prototypes.teacher_weight.clone()
    c = head.center.center[0].clone()
    t_t = head.teacher_temperature()
    assert_matches(lambda x: head(x, k=k).loss,
                   lambda x: ref_dino(x, k, w, w_t, c, 0.1, t_t, 2), z)


def test_gradcheck():
    head = make_head(5, 3, seed=1)
    z, k = rand(3, 3, 3, seed=2).requires_grad_(), rand(3, 2, 3, seed=3)
    assert torch.autograd.gradcheck(lambda x: head(x, k=k).loss, (z,))


def test_center_update_after_the_step_only():
    head = make_head(6, 4, seed=2)
    z, k = rand(5, 3, 4, seed=4), rand(5, 2, 4, seed=5)
    c0 = head.center.center.clone()
    first = head(z, k=k).loss
    assert torch.equal(head.center.center, c0)  # a forward changes nothing it reads
    assert torch.equal(head(z, k=k).loss, first)
    head.after_step()
    # c <- 0.9 c + 0.1 * mean over instances and global views of the teacher outputs
    w_t = F.normalize(head.prototypes.teacher_weight, dim=1)
    t_out = torch.stack([F.normalize(k[i, a], dim=0) @ w_t.T for i in range(5) for a in range(2)])
    assert torch.allclose(head.center.center, 0.9 * c0 + 0.1 * t_out.mean(0), atol=1e-15)
    c1 = head.center.center.clone()
    head.after_step()  # nothing observed since the last update: no change
    assert torch.equal(head.center.center, c1)
    assert not torch.equal(head(z, k=k).loss, first)  # the next step sees the new centre
    assert "center.center" in head.state_dict()


def test_teacher_temperature_schedule():
    """Official: np.concatenate((np.linspace(warmup_teacher_temp, teacher_temp,
    warmup_teacher_temp_epochs), np.ones(epochs - warmup_teacher_temp_epochs) * teacher_temp))."""
    head = hydra.utils.instantiate(OmegaConf.load("configs/loss/dino.yaml"))
    epochs = 100
    official = np.concatenate((np.linspace(0.04, 0.07, 30), np.ones(epochs - 30) * 0.07))
    for epoch in range(epochs):
        head.set_progress(step=10 * epoch, epoch=epoch)
        assert head.teacher_temperature() == pytest.approx(official[epoch], abs=1e-15)
    assert head.teacher_temperature(0) == 0.04 and head.teacher_temperature(29) == pytest.approx(0.07)
    assert DINO(warmup_teacher_temp_epochs=0).teacher_temperature(0) == 0.07
    # and the loss uses it: the teacher at epoch e is sharpened with official[e]
    small = make_head(4, 3, seed=3, warmup_teacher_temp_epochs=30)
    z, k = rand(4, 2, 3, seed=6), rand(4, 2, 3, seed=7)
    w, w_t = small.prototypes.weight.detach().clone(), small.prototypes.teacher_weight.clone()
    c = small.center.center[0].clone()
    for epoch in (0, 12, 40):
        small.set_progress(epoch=epoch)
        out = small(z, k=k)
        assert out.logs["teacher_temp"] == pytest.approx(official[epoch], abs=1e-15)
        assert torch.allclose(out.loss, ref_dino(z, k, w, w_t, c, 0.1, official[epoch], 2), atol=1e-12)


def test_momentum_schedule_first_and_last_step():
    """Official utils.cosine_scheduler(momentum_teacher, 1, epochs, niter_per_ep): m_i = 1 +
    (m0 - 1)(1 + cos(pi i / N)) / 2, i.e. m0 at step 0 and 1 at i = N, as MomentumCopy."""
    head = hydra.utils.instantiate(OmegaConf.load("configs/loss/dino.yaml"))
    ema = MomentumCopy(torch.nn.Linear(2, 2), head.momentum, head.momentum_schedule)
    n = 500
    official = [1 + 0.5 * (head.momentum - 1) * (1 + math.cos(math.pi * i / n)) for i in range(n)]
    assert ema.momentum_at(0) == pytest.approx(0.996, abs=1e-15) == official[0]
    assert ema.momentum_at((n - 1) / n) == pytest.approx(official[-1], abs=1e-15)
    assert ema.momentum_at(1.0) == pytest.approx(1.0, abs=1e-15)


def test_teacher_prototypes_follow_the_student_by_ema():
    head = make_head(5, 3, seed=4)
    before = head.prototypes.teacher_weight.clone()
    student = head.prototypes.weight.detach().clone()
    head.after_step(momentum=0.9)
    assert torch.allclose(head.prototypes.teacher_weight, 0.9 * before + 0.1 * student, atol=1e-15)
    fresh = DINO(out_dim=5)
    fresh.materialize(3)  # the teacher starts as a copy of the student
    assert torch.equal(fresh.prototypes.teacher_weight, fresh.prototypes.weight.detach())


def test_last_layer_frozen_during_the_first_epoch():
    head = DINO(out_dim=8)  # freeze_last_layer = 1
    z, k = rand(4, 2, 3, seed=8).float().requires_grad_(), rand(4, 2, 3, seed=9).float()
    head.set_progress(epoch=0)
    head(z, k=k).loss.backward()
    # computed (DDP all-reduces it) and dropped by the module: cancel_gradients_last_layer
    assert head.prototypes.weight.grad.abs().sum() > 0 and z.grad.abs().sum() > 0
    assert head.frozen_parameters() == [head.prototypes.weight]
    head.set_progress(epoch=1)
    assert head.frozen_parameters() == []


def test_checkpoint_round_trip_into_a_fresh_head():
    head = DINO(out_dim=8)
    z, k = rand(4, 3, 3, seed=10).float(), rand(4, 2, 3, seed=11).float()
    head.set_progress(step=70, epoch=7)
    head(z, k=k)
    head.after_step(momentum=0.99)
    state = {name: v.clone() for name, v in head.state_dict().items()}
    assert {"center.center", "prototypes.weight", "prototypes.teacher_weight", "epoch"} <= set(state)
    fresh = DINO(out_dim=8)
    fresh.load_state_dict(state)
    assert int(fresh.epoch) == 7 and torch.equal(fresh.center.center, head.center.center)
    assert torch.equal(fresh(z, k=k).loss, head(z, k=k).loss)


def test_entropy_logs():
    head = make_head(6, 4, seed=5)
    z, k = rand(5, 2, 4, seed=12), rand(5, 2, 4, seed=13)
    out = head(z, k=k)
    assert 0 <= out.logs["teacher_entropy"] <= math.log(6) + 1e-12
    assert 0 <= out.logs["student_entropy"] <= math.log(6) + 1e-12
    assert out.logs["kl"] >= -1e-12  # cross-entropy >= teacher entropy


def test_yaml_defaults_and_contract():
    head = hydra.utils.instantiate(OmegaConf.load("configs/loss/dino.yaml"))
    assert isinstance(head, DINO) and head.prototypes.num_prototypes == 4096
    assert (head.student_temp, head.teacher_temp, head.warmup_teacher_temp) == (0.1, 0.07, 0.04)
    assert (head.warmup_teacher_temp_epochs, head.center.momentum, head.momentum) == (30, 0.9, 0.996)
    assert (head.freeze_last_layer, head.n_global, head.key_views) == (1, 2, slice(0, 2))
    assert head.requires == frozenset({"k"}) and not head.uses_predictor
    assert head.momentum_schedule == "cosine"
    assert torch.equal(head.center.center, torch.zeros(1, 4096))
    with pytest.raises(ValueError, match=r"dino: k must be \[4, 2, 3\]"):
        head(rand(4, 3, 3).float(), k=rand(4, 3, 3).float())
    with pytest.raises(ValueError, match="n_global=3"):
        DINO(out_dim=4, n_global=3)(rand(4, 2, 3).float(), k=rand(4, 3, 3).float())


def test_invariant_to_rotating_embeddings_and_prototypes_together():
    """Rotating student and teacher inputs alone changes the loss (the prototypes do not
    rotate: the contract's rotation clause cannot hold); rotating the prototypes with them
    does not; nor does the order of the instances."""
    head = make_head(6, 4, seed=6)
    z, k = rand(5, 3, 4, seed=14), rand(5, 2, 4, seed=15)
    base = head(z, k=k).loss
    perm = torch.randperm(5, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(head(z[perm], k=k[perm]).loss, base, atol=1e-12)
    rot, _ = torch.linalg.qr(rand(4, 4, seed=16))
    assert not torch.allclose(head(z @ rot, k=k @ rot).loss, base, atol=1e-6)
    with torch.no_grad():
        head.prototypes.weight.copy_(head.prototypes.weight @ rot)
        head.prototypes.teacher_weight.copy_(head.prototypes.teacher_weight @ rot)
    assert torch.allclose(head(z @ rot, k=k @ rot).loss, base, atol=1e-12)
