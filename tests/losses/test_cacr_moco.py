"""Tests of the MoCo-v2-style CACR head with momentum keys and a queue (cacr_moco.py)."""

from __future__ import annotations

import math
from pathlib import Path

import hydra.utils
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from sslkit.losses.cacr_moco import CACRMoCo
from tests.conftest import F64, loss_and_grad

ROOT = Path(__file__).resolve().parents[2]


def reference_cacr_moco(z, k, queue, alpha=3.0, beta=3.0, tau_pos=1.0, tau_neg=1.0,
                        intra_batch=True, normalize=True):
    """Loop form of the official MoCo-v2 CACR loss, with each view's own queue distances."""
    batch, views, _ = z.shape

    def unit(t):
        return t / t.norm() if normalize else t

    q = [[unit(z[i, v]) for v in range(views)] for i in range(batch)]
    key = [[unit(k[i, v]).detach() for v in range(views)] for i in range(batch)]

    def dist(a, b):
        return ((a - b) ** 2).sum()

    def queue_dist(a, m):
        return 2 - 2 * (a * queue[m]).sum() if normalize else dist(a, queue[m])

    def softmax(logits):
        exps = [torch.exp(t) for t in logits]
        total = sum(exps)
        return [e / total for e in exps]

    attraction, repulsion = 0.0, 0.0
    for x in range(views):
        for i in range(batch):
            costs = [dist(q[i][x], key[i][y]) for y in range(views) if y != x]
            weights = softmax([tau_pos * c.detach() for c in costs])  # stop-gradient
            attraction = attraction + alpha * sum(w * c for w, c in zip(weights, costs))

            costs = [queue_dist(q[i][x], m) for m in range(queue.shape[0])]
            logits = [-tau_neg * c.detach() for c in costs]  # queue weights: stop-gradient
            if intra_batch:
                intra = [dist(q[i][x], q[j][x]) for j in range(batch) if j != i]
                costs += intra
                logits += [-tau_neg * c for c in intra]  # in-batch weights: with gradient
            weights = softmax(logits)
            repulsion = repulsion + beta * sum(w * (-c) for w, c in zip(weights, costs))
    return (attraction + repulsion) / (views * batch)


def make_inputs(batch, views, dim, n_queue, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, views, dim, generator=g, dtype=dtype)
    k = z + 0.5 * torch.randn(batch, views, dim, generator=g, dtype=dtype)
    queue = F.normalize(torch.randn(n_queue, dim, generator=g, dtype=dtype), dim=-1)
    return z, k, queue


def random_rotation(dim, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=F64))
    return q * torch.sign(torch.diagonal(r))


CASES = [
    dict(),
    dict(alpha=1.3, beta=0.7, tau_pos=1.7, tau_neg=2.2),
    dict(intra_batch=False, tau_neg=2.0),
    dict(normalize=False, tau_pos=0.3, tau_neg=0.2),
    dict(normalize=False, intra_batch=False, tau_neg=0.2),
]


@pytest.mark.parametrize("views", [2, 3, 5])
@pytest.mark.parametrize("kwargs", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_matches_plain_reference(views, kwargs):
    z, k, queue = make_inputs(4, views, 4, 6, seed=views)
    head = CACRMoCo(**kwargs)
    loss, grad = loss_and_grad(lambda t: head(t, k=k, queue=queue).loss, z)
    ref_loss, ref_grad = loss_and_grad(lambda t: reference_cacr_moco(t, k, queue, **kwargs), z)
    assert loss.dtype == F64
    torch.testing.assert_close(loss, ref_loss, rtol=0, atol=1e-10)
    torch.testing.assert_close(grad, ref_grad, rtol=0, atol=1e-10)


def test_every_view_is_repelled_from_the_queue():
    # the official forward reuses view 0's queue similarities for every view (a caching bug);
    # here the queue term of view x depends on view x's queries
    z, k, queue = make_inputs(4, 3, 4, 8, seed=1)
    head = CACRMoCo(intra_batch=False, alpha=0.0)
    _, grad = loss_and_grad(lambda t: head(t, k=k, queue=queue).loss, z)
    assert (grad.abs().sum(dim=(0, 2)) > 1e-6).all()
    # what the bug computes instead: view 0's queue repulsion counted for every view
    q0 = F.normalize(z[:, 0], dim=-1)
    s = 2 - 2 * q0 @ queue.T
    buggy = -3.0 * (torch.softmax(-s, dim=-1) * s).sum(-1).mean()
    assert (head(z, k=k, queue=queue).loss - buggy).abs() > 1e-3


def test_intra_batch_off_decouples_instances_and_on_couples_them():
    z, k, queue = make_inputs(8, 3, 4, 5, seed=2)
    for intra_batch in (False, True):
        head = CACRMoCo(intra_batch=intra_batch)
        whole = head(z, k=k, queue=queue).loss
        halves = (head(z[:4], k=k[:4], queue=queue).loss + head(z[4:], k=k[4:], queue=queue).loss)
        if intra_batch:
            assert (whole - halves / 2).abs() > 1e-4
        else:  # queue-only negatives: the loss is a mean of per-instance terms
            torch.testing.assert_close(whole, halves / 2, rtol=0, atol=1e-12)
    # the in-batch weights take mass from the queue
    on = CACRMoCo()(z, k=k, queue=queue).logs
    off = CACRMoCo(intra_batch=False)(z, k=k, queue=queue).logs
    assert off["neg_w_intra"] == 0 and 0 < on["neg_w_intra"] < 1


def test_intra_batch_only_with_an_empty_queue():
    z, k, queue = make_inputs(5, 2, 4, 0, seed=3)
    head = CACRMoCo()
    loss, grad = loss_and_grad(lambda t: head(t, k=k, queue=queue).loss, z)
    ref, ref_grad = loss_and_grad(lambda t: reference_cacr_moco(t, k, queue), z)
    torch.testing.assert_close(loss, ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(grad, ref_grad, rtol=0, atol=1e-10)
    # no queue yet and no in-batch negatives: attraction only, no NaN
    z.requires_grad_(True)
    out = CACRMoCo(intra_batch=False)(z, k=k, queue=queue)
    (grad,) = torch.autograd.grad(out.loss, z)
    assert out.logs["repulsion"] == 0 and torch.isfinite(grad).all()
    torch.testing.assert_close(out.loss, out.logs["attraction"], rtol=0, atol=0)


def test_two_views_attraction_is_alignment_to_the_other_views_key():
    z, k, queue = make_inputs(16, 2, 8, 4, seed=4)
    q, key = F.normalize(z, dim=-1), F.normalize(k, dim=-1)
    align = ((q[:, 0] - key[:, 1]).pow(2).sum(-1) + (q[:, 1] - key[:, 0]).pow(2).sum(-1)).mean() / 2
    out = CACRMoCo(alpha=2.0, tau_pos=20.0)(z, k=k, queue=queue)
    torch.testing.assert_close(out.logs["attraction"], 2.0 * align, rtol=0, atol=1e-12)
    assert out.logs["pos_w_max"] == pytest.approx(1.0)


def test_stop_gradient_on_keys_and_queue():
    z, k, queue = make_inputs(4, 3, 4, 6, seed=5)
    z.requires_grad_(True), k.requires_grad_(True), queue.requires_grad_(True)
    CACRMoCo()(z, k=k, queue=queue).loss.backward()
    assert z.grad is not None and k.grad is None and queue.grad is None


def test_gradcheck_in_batch_part():
    # the queue and positive weights are stop-gradient (a surrogate gradient, no gradcheck);
    # with alpha = 0 and an empty queue only the in-batch part (with gradient) is left
    z, k, queue = make_inputs(3, 2, 3, 0, seed=6)
    head = CACRMoCo(alpha=0.0, tau_neg=1.5)
    assert torch.autograd.gradcheck(
        lambda t: head(t, k=k, queue=queue).loss, (z.requires_grad_(True),), eps=1e-6, atol=1e-8
    )


def test_instance_permutation_and_rotation_invariance():
    z, k, queue = make_inputs(8, 3, 6, 10, seed=7)
    head = CACRMoCo(tau_neg=2.0)
    loss, grad = loss_and_grad(lambda t: head(t, k=k, queue=queue).loss, z)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(0))
    p_loss, p_grad = loss_and_grad(lambda t: head(t, k=k[perm], queue=queue).loss, z[perm])
    torch.testing.assert_close(p_loss, loss, rtol=0, atol=1e-12)
    torch.testing.assert_close(p_grad, grad[perm], rtol=0, atol=1e-12)
    rot = random_rotation(6)
    r_loss, r_grad = loss_and_grad(lambda t: head(t, k=k @ rot, queue=queue @ rot).loss, z @ rot)
    torch.testing.assert_close(r_loss, loss, rtol=0, atol=1e-12)
    torch.testing.assert_close(r_grad, grad @ rot, rtol=0, atol=1e-12)


def test_logs_match_explicit_weights():
    z, k, queue = make_inputs(6, 2, 4, 7, seed=8)
    out = CACRMoCo(tau_neg=2.0)(z, k=k, queue=queue)
    q = F.normalize(z, dim=-1).transpose(0, 1)  # [V, B, D]
    s_queue = 2 - 2 * q @ queue.T
    s_intra = torch.cdist(q, q).pow(2)
    eye = torch.eye(6, dtype=torch.bool)
    logits = torch.cat([-2.0 * s_queue, (-2.0 * s_intra).masked_fill(eye, -math.inf)], dim=-1)
    w = torch.softmax(logits, dim=-1)
    ent = -torch.special.xlogy(w, w).sum(-1).mean()
    torch.testing.assert_close(out.logs["neg_w_entropy"], ent, rtol=0, atol=1e-10)
    torch.testing.assert_close(out.logs["neg_w_max"], w.amax(-1).mean(), rtol=0, atol=1e-12)
    torch.testing.assert_close(out.logs["neg_w_intra"], w[..., 7:].sum(-1).mean(), rtol=0,
                               atol=1e-12)
    torch.testing.assert_close(out.logs["queue_sqdist"], (q[..., None, :] - queue).pow(2).sum(-1)
                               .mean(), rtol=0, atol=1e-12)
    torch.testing.assert_close(out.logs["attraction"] + out.logs["repulsion"], out.loss)
    assert all(not torch.is_tensor(v) or not v.requires_grad for v in out.logs.values())


def test_enqueue_returns_the_last_views_normalised_keys():
    _, k, _ = make_inputs(5, 3, 4, 0, seed=9)
    rows = CACRMoCo().enqueue(k)
    torch.testing.assert_close(rows, F.normalize(k[:, -1], dim=-1))
    torch.testing.assert_close(CACRMoCo(normalize=False).enqueue(k), k[:, -1])


def test_low_temperature_is_finite():
    z, k, queue = make_inputs(256, 3, 32, 512, seed=10, dtype=torch.float32)
    z.requires_grad_(True)
    for tau in (20.0, 200.0):
        out = CACRMoCo(tau_pos=tau, tau_neg=tau)(z, k=k, queue=queue)
        (grad,) = torch.autograd.grad(out.loss, z)
        assert torch.isfinite(out.loss) and torch.isfinite(grad).all()


def test_needs_keys_and_queue():
    z, k, queue = make_inputs(4, 2, 4, 3, seed=13)
    head = CACRMoCo()
    assert head.requires == frozenset({"k", "queue"})
    assert not getattr(head, "uses_predictor", False)
    with pytest.raises(ValueError):
        head(z, k=k)
    with pytest.raises(ValueError):
        head(z, k=k[:, :1], queue=queue)
    head(z, k=k, queue=queue, prior=None)  # unknown extras are ignored


@pytest.mark.parametrize(
    "kwargs",
    [dict(tau_pos=0.0), dict(tau_neg=-1.0), dict(beta=-1.0), dict(momentum=1.5),
     dict(queue_size=0), dict(queue_size=10.5)],
)
def test_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        CACRMoCo(**kwargs)


def test_builds_from_yaml_with_official_defaults():
    path = ROOT / "configs" / "loss" / "cacr_moco.yaml"
    assert path.read_text().startswith("# ")
    head = hydra.utils.instantiate(OmegaConf.load(path))
    assert type(head) is CACRMoCo
    # large_scale_shift_experiments/imagenet/main_ours.py argparse defaults, but a queue that
    # fits Fashion-MNIST / CIFAR (official K = 65536 is sized for ImageNet)
    defaults = dict(alpha=3.0, beta=3.0, tau_pos=1.0, tau_neg=1.0, intra_batch=True,
                    momentum=0.999, queue_size=4096, normalize=True)
    for key, value in defaults.items():
        assert getattr(head, key) == value, key
    z, k, queue = make_inputs(4, 3, 4, 5, seed=14)
    torch.testing.assert_close(head(z, k=k, queue=queue).loss,
                               reference_cacr_moco(z, k, queue), rtol=0, atol=1e-10)
