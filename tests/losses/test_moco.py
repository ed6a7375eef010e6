"""MoCo v2 head (He et al. 2020; Chen et al. 2020)."""

from __future__ import annotations

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from sslkit.losses.moco import MoCo
from tests.conftest import F64, assert_matches, rand, unit

torch.set_num_threads(1)


def ref_moco(z, k, queue, temperature):
    """Loops: query = view 0, each other view's key a positive, every queue row a negative."""
    b, v, _ = z.shape
    terms = []
    for i in range(b):
        q = unit(z[i, 0])
        negs = [torch.exp(torch.dot(q, n) / temperature) for n in queue]
        for w in range(1, v):
            pos = torch.exp(torch.dot(q, unit(k[i, w].detach())) / temperature)
            terms.append(-torch.log(pos / (pos + sum(negs))))
    return torch.stack(terms).mean()


def moco(head, z, k, **extras):
    """The head called as the training module calls it: the query view ``z[:, query_views]``
    and the key views ``k[:, key_views]`` of all-view tensors."""
    assert (head.query_views, head.key_views) == (slice(0, 1), slice(1, None))
    return head(z[:, head.query_views], k=k[:, head.key_views], **extras)


def rand_queue(q, d, seed):
    return torch.nn.functional.normalize(rand(q, d, seed=seed), dim=-1)


@pytest.mark.parametrize("views", [2, 3])
@pytest.mark.parametrize("queue_len", [0, 1, 2, 17])
def test_matches_reference(views, queue_len):
    head = MoCo(temperature=0.2)
    z, k = rand(5, views, 4, seed=views), rand(5, views, 4, seed=10 + views)
    queue = rand_queue(queue_len, 4, seed=queue_len)
    assert_matches(
        lambda x: moco(head, x, k, queue=queue).loss, lambda x: ref_moco(x, k, queue, 0.2), z
    )


def test_empty_queue_gives_zero_loss_and_gradient():
    z, k = rand(4, 2, 3, seed=1).requires_grad_(), rand(4, 2, 3, seed=2)
    loss = moco(MoCo(), z, k, queue=torch.empty(0, 3, dtype=F64)).loss
    loss.backward()
    assert loss.abs() < 1e-15 and z.grad.abs().max() < 1e-15


def test_official_cross_entropy_form():
    # logits [l_pos, l_neg] / T, cross-entropy with target 0 (moco/builder.py::MoCo.forward)
    z, k = rand(6, 2, 5, seed=3), rand(6, 2, 5, seed=4)
    queue = rand_queue(11, 5, seed=5)
    q = torch.nn.functional.normalize(z[:, 0], dim=1)
    key = torch.nn.functional.normalize(k[:, 1], dim=1)
    logits = torch.cat([(q * key).sum(1, keepdim=True), q @ queue.T], dim=1) / 0.2
    expected = torch.nn.functional.cross_entropy(logits, torch.zeros(6, dtype=torch.long))
    assert torch.allclose(moco(MoCo(temperature=0.2), z, k, queue=queue).loss, expected, atol=1e-12)


def test_no_gradient_to_keys_or_queue():
    z = rand(4, 2, 3, seed=6).requires_grad_()
    k = rand(4, 2, 3, seed=7).requires_grad_()
    queue = rand_queue(5, 3, seed=8).requires_grad_()
    moco(MoCo(), z, k, queue=queue).loss.backward()
    assert k.grad is None and queue.grad is None and torch.isfinite(z.grad).all()
    # only view 0 is a query
    assert z.grad[:, 1].abs().max() == 0 and z.grad[:, 0].abs().max() > 0


def test_enqueue_rows():
    k = rand(4, 3, 5, seed=9)
    rows = MoCo().enqueue(k[:, MoCo.key_views])  # the keys the module passes: views 1 and 2
    expected = torch.nn.functional.normalize(torch.cat([k[:, 1], k[:, 2]]), dim=-1)
    assert rows.shape == (8, 5) and torch.allclose(rows, expected, atol=1e-15)
    two = MoCo().enqueue(k[:, 1:2])
    assert torch.allclose(two, torch.nn.functional.normalize(k[:, 1], dim=-1), atol=1e-15)


def test_gradcheck():
    z, k = rand(3, 2, 3, seed=10).requires_grad_(), rand(3, 2, 3, seed=11)
    queue = rand_queue(4, 3, seed=12)
    head = MoCo(temperature=0.5)
    assert torch.autograd.gradcheck(lambda x: moco(head, x, k, queue=queue).loss, (z,))


def test_permutation_and_rotation_invariance():
    head = MoCo()
    z, k, queue = rand(9, 3, 6, seed=13), rand(9, 3, 6, seed=14), rand_queue(20, 6, seed=15)
    base = moco(head, z, k, queue=queue).loss
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(0))
    rot, _ = torch.linalg.qr(rand(6, 6, seed=16))
    assert torch.allclose(moco(head, z[perm], k[perm], queue=queue).loss, base, atol=1e-12)
    assert torch.allclose(moco(head, z @ rot, k @ rot, queue=queue @ rot).loss, base, atol=1e-12)
    assert not torch.allclose(moco(head, z, k, queue=queue[:10]).loss, base, atol=1e-6)


def test_low_temperature_finite():
    head = MoCo(temperature=0.05)
    z = rand(64, 2, 16, seed=17).float().requires_grad_()
    out = moco(head, z, rand(64, 2, 16, seed=18).float(), queue=rand_queue(256, 16, seed=19).float())
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(z.grad).all()


def test_yaml_defaults_and_contract():
    head = hydra.utils.instantiate(OmegaConf.load("configs/loss/moco.yaml"))
    assert isinstance(head, MoCo)
    # MoCo v2 recipe: --moco-t 0.2, m = 0.999; K = 4096 as MoCo's CIFAR-10 demo (65536 is
    # ImageNet's and exceeds the data of Fashion-MNIST / CIFAR)
    assert (head.temperature, head.momentum, head.queue_size, head.normalize) == (
        0.2,
        0.999,
        4096,
        True,
    )
    assert head.requires == frozenset({"k", "queue"}) and not head.uses_predictor
    assert head.shuffle_bn is True  # the official builder shuffles the key batch
    assert not list(head.parameters()) and not list(head.buffers())
    z = rand(4, 2, 3)
    out = moco(head, z, rand(4, 2, 3, seed=1), queue=rand_queue(8, 3, seed=2), prior=None)
    assert torch.isfinite(out.loss) and 0 <= out.logs["acc1"] <= 1


def test_missing_or_misshapen_extras():
    z = rand(4, 2, 3)
    q, k = z[:, :1], z[:, 1:]
    with pytest.raises(ValueError, match="queue"):
        MoCo()(q, k=k)
    with pytest.raises(ValueError, match="keys k must be"):
        MoCo()(q, k=rand(4, 3, 4), queue=rand_queue(2, 3, seed=0))
    with pytest.raises(ValueError, match="keys k must be"):
        MoCo()(q, k=rand(3, 1, 3), queue=rand_queue(2, 3, seed=0))
    with pytest.raises(ValueError, match="queue"):
        MoCo()(q, k=k, queue=rand_queue(2, 4, seed=0))
    # all views given where the query view alone is expected: refused, not silently misread
    with pytest.raises(ValueError, match=r"one query view.*\[B, 1, D\]"):
        MoCo()(z, k=z, queue=rand_queue(2, 3, seed=0))


@pytest.mark.parametrize(
    "kwargs",
    [{"temperature": 0.0}, {"momentum": 1.5}, {"queue_size": 0}, {"queue_size": 2.5}],
    ids=str,
)
def test_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        MoCo(**kwargs)
