"""GCA heads compute their similarity matrix in float32 under autocast, as the other heads do."""

from __future__ import annotations

import pytest
import torch

from sslkit.losses.gca import GCAINCE, GCARINCE, GCAUOT, HSINCE, HSRINCE

HEADS = {"hs_ince": HSINCE, "gca_ince": GCAINCE, "hs_rince": HSRINCE, "gca_rince": GCARINCE,
         "gca_uot": GCAUOT}


def _z(batch=64, views=2, dim=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, views, dim, generator=g)
    return z + 0.8 * z[:, :1]


def _loss_grad(head, z, autocast):
    z = z.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = head(z).loss
    (grad,) = torch.autograd.grad(loss, z)
    return loss.detach(), grad


@pytest.mark.parametrize("name", list(HEADS))
def test_bf16_autocast_matches_fp32(name):
    # a bf16 similarity matmul moved the loss by ~1e-4 and gradients by ~0.4%; in fp32 the two
    # runs do the same float32 arithmetic
    head, z = HEADS[name](), _z()
    ref_loss, ref_grad = _loss_grad(head, z, autocast=False)
    loss, grad = _loss_grad(head, z, autocast=True)
    assert loss.dtype == torch.float32 and grad.dtype == torch.float32
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("name", list(HEADS))
def test_bf16_input_is_upcast_before_the_similarities(name):
    head, z = HEADS[name](), _z(seed=1).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = head(z).loss
    torch.testing.assert_close(loss, head(z.float()).loss, rtol=1e-6, atol=1e-7)
