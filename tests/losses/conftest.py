"""Helpers shared by the loss-head tests: float64 inputs, loss and gradient of a function,
comparison of a head against a plain reference."""

from __future__ import annotations

import torch

F64 = torch.float64


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm()


def rand(*shape: int, seed: int = 0, scale: float = 1.5, dtype=F64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype) * scale


def rand_z(b: int = 5, v: int = 2, d: int = 4, seed: int = 0, scale: float = 1.5) -> torch.Tensor:
    return rand(b, v, d, seed=seed, scale=scale)


def orthogonal(d: int, seed: int = 0, dtype=F64) -> torch.Tensor:
    q, _ = torch.linalg.qr(rand(d, d, seed=seed, scale=1.0, dtype=dtype))
    return q


def loss_and_grad(fn, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    z = z.detach().clone().requires_grad_()
    loss = fn(z)
    (grad,) = torch.autograd.grad(loss, z)
    return loss.detach(), grad


def assert_matches(head_fn, ref_fn, z: torch.Tensor, tol: float = 1e-10) -> None:
    l1, g1 = loss_and_grad(head_fn, z)
    l2, g2 = loss_and_grad(ref_fn, z)
    assert torch.allclose(l1, l2, atol=tol, rtol=0), (l1.item(), l2.item())
    assert torch.allclose(g1, g2, atol=tol, rtol=0), (g1 - g2).abs().max().item()
