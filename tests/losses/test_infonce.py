"""InfoNCE / NT-Xent against a plain float64 reference written from the SimCLR formula."""

import math

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from sslkit.losses.infonce import InfoNCE


def reference_ntxent(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """Loops over anchors: row a = view v of instance i; positives are the other views of i;
    the denominator sums over every other row."""
    b, v, _ = z.shape
    rows = [(i, j) for j in range(v) for i in range(b)]
    u = [z[i, j] / z[i, j].norm() for i, j in rows]
    total = 0.0
    for a, (ia, _) in enumerate(rows):
        denom = sum(torch.exp(u[a] @ u[c] / temperature) for c in range(len(rows)) if c != a)
        positives = [c for c, (ic, _) in enumerate(rows) if ic == ia and c != a]
        for p in positives:
            total = total - torch.log(torch.exp(u[a] @ u[p] / temperature) / denom) / len(positives)
    return total / len(rows)


@pytest.mark.parametrize("views", [2, 3])
def test_matches_reference_value_and_gradient(views):
    torch.manual_seed(0)
    z = torch.randn(5, views, 7, dtype=torch.float64, requires_grad=True)
    head = InfoNCE(temperature=0.3)
    loss = head(z).loss
    (grad,) = torch.autograd.grad(loss, z)
    z_ref = z.detach().clone().requires_grad_(True)
    ref = reference_ntxent(z_ref, 0.3)
    (grad_ref,) = torch.autograd.grad(ref, z_ref)
    assert loss.item() == pytest.approx(ref.item(), abs=1e-10)
    assert torch.allclose(grad, grad_ref, atol=1e-10, rtol=0)


def test_simclr_two_view_form():
    """V = 2: the classic NT-Xent with logits over 2B - 1 candidates, via cross-entropy."""
    torch.manual_seed(1)
    z = torch.randn(6, 2, 4, dtype=torch.float64)
    u = torch.nn.functional.normalize(torch.cat([z[:, 0], z[:, 1]]), dim=1)
    logits = u @ u.T / 0.5
    logits.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(6, 12), torch.arange(0, 6)])
    expected = torch.nn.functional.cross_entropy(logits, target)
    assert InfoNCE(0.5)(z).loss.item() == pytest.approx(expected.item(), abs=1e-12)


def test_gradcheck():
    torch.manual_seed(2)
    z = torch.randn(3, 2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: InfoNCE(0.2)(x).loss, (z,))


def test_invariances():
    torch.manual_seed(3)
    z = torch.randn(8, 2, 6, dtype=torch.float64)
    head = InfoNCE(0.2)
    base = head(z).loss
    perm = torch.randperm(8)
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64))
    assert head(z[perm]).loss.item() == pytest.approx(base.item(), abs=1e-12)
    assert head(z @ q).loss.item() == pytest.approx(base.item(), abs=1e-12)
    assert head(3.0 * z).loss.item() == pytest.approx(base.item(), abs=1e-12)  # normalised


def test_perfect_alignment_closed_form():
    """Identical views, orthogonal instances: every anchor sees its positive at similarity 1
    and 2B-2 negatives at 0, so loss = -log(e^{1/t} / (e^{1/t} + 2B - 2))."""
    b, t = 4, 0.5
    z = torch.eye(b, dtype=torch.float64).unsqueeze(1).repeat(1, 2, 1)
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2 * b - 2))
    assert InfoNCE(t)(z).loss.item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_stable_low_temperature_large_batch(dtype):
    torch.manual_seed(4)
    z = torch.randn(4096, 2, 128, requires_grad=True)
    head = InfoNCE(0.05)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
        loss = head(z).loss
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()


def test_builds_from_config_and_rejects_bad_temperature():
    head = instantiate(OmegaConf.load("configs/loss/infonce.yaml"))
    assert isinstance(head, InfoNCE) and head.temperature == 0.5 and head.normalize
    with pytest.raises(ValueError, match="temperature"):
        InfoNCE(temperature=0)


def test_logged_similarities():
    torch.manual_seed(5)
    z = torch.randn(6, 3, 5, dtype=torch.float64)
    logs = InfoNCE(0.5)(z).logs
    u = torch.nn.functional.normalize(z, dim=-1)
    pos = [u[i, a] @ u[i, b] for i in range(6) for a in range(3) for b in range(3) if a != b]
    neg = [u[i, a] @ u[j, b] for i in range(6) for j in range(6) if i != j for a in range(3) for b in range(3)]
    assert logs["pos_sim"].item() == pytest.approx(torch.stack(pos).mean().item(), abs=1e-12)
    assert logs["neg_sim"].item() == pytest.approx(torch.stack(neg).mean().item(), abs=1e-12)
