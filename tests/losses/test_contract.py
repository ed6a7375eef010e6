"""What every head in configs/loss/ must do, built from its YAML (the official defaults): run on
the inputs it declares in ``requires``, pass a float64 gradcheck, ignore the order of instances
and rotations of the embedding space, stay finite for a large float32 batch, and return a float32
loss under bf16 autocast close to the float32 one (the exemptions, each with its reason, are
``SURROGATE_GRADIENT`` and ``ROTATION_VARIANT``). A new configs/loss/NAME.yaml is tested here
as soon as it exists; its maths against a plain reference goes in tests/losses/test_NAME.py."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

import sslkit
from sslkit.training.config import config_dir
from tests.conftest import F64, orthogonal, rand

HEADS = sorted(p.stem for p in (config_dir() / "loss").glob("*.yaml"))
QUEUE = 24
# heads whose backward is by design not the derivative of their loss
SURROGATE_GRADIENT = {
    "cacr_moco": "queue and positive weights are stop-gradient, as in the official code "
                 "(test_cacr_moco.py gradchecks the in-batch part)",
    "swav": "the Sinkhorn codes are stop-gradient targets, as in main_swav.py (test_swav.py "
            "gradchecks the swapped prediction with the codes held fixed)",
}
# heads whose loss is by design not invariant to rotating the embedding space (alone): permutation
# invariance is still checked for them
ROTATION_VARIANT = {
    "barlow_twins": "standardises each embedding axis and drives their cross-correlation to the "
                    "identity: the axes are the method's units (test_barlow_twins.py checks the "
                    "invariances that hold)",
    "vicreg": "variance and covariance terms read each embedding axis (test_vicreg.py checks the "
              "invariances that hold)",
    "swav": "scores against learnt prototypes, which a rotation of the embeddings alone does not "
            "turn (test_swav.py rotates embeddings and prototypes together)",
    "dino": "scores against learnt prototypes, which a rotation of the embeddings alone does not "
            "turn (test_dino.py rotates embeddings and prototypes together)",
}


@functools.lru_cache(maxsize=None)
def loss_config(name: str):
    """``configs/loss/NAME.yaml`` composed as ``loss=NAME`` (its defaults list applied)."""
    return sslkit.compose([f"loss={name}"], run_dir="/nowhere")[0].loss


def build(name: str) -> torch.nn.Module:
    return instantiate(loss_config(name))


def inputs(head, b: int, v: int, d: int, seed: int = 0, dtype=F64) -> tuple[torch.Tensor, dict]:
    """``z`` (the head's query views of ``[B, V, D]`` projections) and the extras it declares,
    as the training module passes them (keys: the head's key views)."""
    z_all = rand(b, v, d, seed=seed, dtype=dtype)
    z = z_all[:, getattr(head, "query_views", slice(None))].contiguous()
    extras: dict[str, torch.Tensor] = {}
    for name in sorted(getattr(head, "requires", frozenset())):
        if name == "k":
            k = z_all.detach() + 0.3 * rand(b, v, d, seed=seed + 100, dtype=dtype)
            extras["k"] = k[:, getattr(head, "key_views", slice(None))].contiguous()
        elif name == "domains":
            extras["domains"] = torch.arange(b) % 2
        elif name == "queue":
            extras["queue"] = F.normalize(rand(QUEUE, d, seed=seed + 200, dtype=dtype), dim=-1)
        elif name == "labels":
            extras["labels"] = torch.arange(b) % 3
        elif name == "prior":
            extras["prior"] = rand(b, 3, seed=seed + 300, dtype=dtype)
        else:
            pytest.fail(f"the contract test does not know how to make head input '{name}'; add it here")
    return z, extras


@pytest.mark.parametrize("name", HEADS)
def test_builds_from_yaml_and_runs_on_what_it_requires(name):
    head = build(name)
    z, extras = inputs(head, 8, 2, 16, dtype=torch.float32)
    out = head(z.requires_grad_(), **extras)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    for key, value in out.logs.items():
        assert not torch.as_tensor(value).requires_grad, f"log {key} holds a graph"


@pytest.mark.parametrize("name", HEADS)
def test_gradcheck(name):
    if name in SURROGATE_GRADIENT:
        pytest.skip(SURROGATE_GRADIENT[name])
    head = build(name)
    z, extras = inputs(head, 4, 2, 5, seed=1)
    assert torch.autograd.gradcheck(lambda x: head(x, **extras).loss, (z.requires_grad_(),))


@pytest.mark.parametrize("name", HEADS)
def test_instance_permutation_and_rotation_invariance(name):
    head = build(name)
    z, extras = inputs(head, 6, 2, 5, seed=2)
    loss = head(z, **extras).loss
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(0))
    per_instance = {"k", "labels", "prior", "domains"}
    permuted = {n: (t[perm] if n in per_instance else t) for n, t in extras.items()}
    torch.testing.assert_close(head(z[perm], **permuted).loss, loss, rtol=1e-9, atol=1e-10)
    if name in ROTATION_VARIANT:
        return
    rot = orthogonal(5, seed=3)
    rotated = {n: (t @ rot if n in ("k", "queue") else t) for n, t in extras.items()}
    torch.testing.assert_close(head(z @ rot, **rotated).loss, loss, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name", HEADS)
def test_large_batch_float32_is_finite(name):
    head = build(name)
    # the batch is what is large (SimCLR's 4096: each anchor sums over 8,191 others); the width is
    # a small projector's (32: the similarity matmuls are a quarter of 128's, their spread wider)
    z, extras = inputs(head, 4096, 2, 32, seed=4, dtype=torch.float32)
    z = (z + z[:, :1]).requires_grad_()  # correlated views, as after training
    out = head(z, **extras)
    out.loss.backward()
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    assert torch.isfinite(z.grad).all()
    assert all(torch.isfinite(torch.as_tensor(v)).all() for v in out.logs.values())


@pytest.mark.parametrize("name", HEADS)
def test_bf16_autocast_gives_a_float32_loss_close_to_float32(name):
    head = build(name)
    x, extras = inputs(head, 32, 2, 12, seed=5, dtype=torch.float32)
    layer = torch.nn.Linear(12, 12)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(12) + 0.1 * rand(12, 12, seed=6, dtype=torch.float32))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = layer(x)
        assert z.dtype == torch.bfloat16
        out = head(z, **extras)
    out.loss.backward()
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    assert torch.isfinite(layer.weight.grad).all()
    reference = head(layer(x).detach(), **extras).loss
    torch.testing.assert_close(out.loss.detach(), reference, rtol=0.05, atol=0.05)
    zb = layer(x).detach().bfloat16().requires_grad_()  # bf16 inputs are upcast
    loss_b = head(zb, **extras).loss
    loss_b.backward()
    assert loss_b.dtype == torch.float32 and torch.isfinite(zb.grad.float()).all()
