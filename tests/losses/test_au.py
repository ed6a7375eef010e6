"""AlignUniform (Wang & Isola 2020)."""

from __future__ import annotations

import math

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from sslkit.losses.au import AlignUniform
from tests.conftest import F64, assert_matches, rand_z, unit

torch.set_num_threads(1)


def ref_au(z, alpha, t, align_w, unif_w):
    """Loops: alignment over view pairs v < w, uniformity per view over unordered pairs i < j."""
    b, v, _ = z.shape
    u = [[unit(z[i, a]) for a in range(v)] for i in range(b)]
    align = []
    for a in range(v):
        for w in range(a + 1, v):
            for i in range(b):
                align.append(torch.sqrt(((u[i][a] - u[i][w]) ** 2).sum()) ** alpha)
    unif = []
    for a in range(v):
        pots = []
        for i in range(b):
            for j in range(i + 1, b):
                pots.append(torch.exp(-t * ((u[i][a] - u[j][a]) ** 2).sum()))
        unif.append(torch.log(torch.stack(pots).mean()))
    return align_w * torch.stack(align).mean() + unif_w * torch.stack(unif).mean()


@pytest.mark.parametrize("views", [2, 3])
@pytest.mark.parametrize("alpha,t,align_w,unif_w", [(2.0, 2.0, 1.0, 1.0), (1.0, 3.0, 0.5, 2.0)])
def test_matches_reference(views, alpha, t, align_w, unif_w):
    head = AlignUniform(alpha=alpha, t=t, align_w=align_w, unif_w=unif_w)
    z = rand_z(v=views, seed=views)
    assert_matches(lambda x: head(x).loss, lambda x: ref_au(x, alpha, t, align_w, unif_w), z)


def test_alignment_closed_form():
    # for unit vectors ||x - y||^2 = 2 - 2 cos(x, y); identical views align perfectly
    z = rand_z(b=7, seed=1)
    cos = torch.nn.functional.cosine_similarity(z[:, 0], z[:, 1], dim=-1)
    assert torch.allclose(AlignUniform()(z).logs["align"], (2 - 2 * cos).mean(), atol=1e-12)
    same = z[:, :1].expand(-1, 2, -1)
    assert AlignUniform()(same).logs["align"].abs() < 1e-12


def test_uniformity_closed_forms():
    t = 2.0
    # antipodal pair: log exp(-4t)
    x = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]], dtype=F64)
    z = torch.stack([x, x], dim=1)
    assert torch.allclose(AlignUniform(t=t)(z).logs["unif"], torch.tensor(-4 * t, dtype=F64))
    # regular simplex of n points: every squared distance is 2n / (n - 1)
    n = 5
    simplex = torch.eye(n, dtype=F64) - 1.0 / n
    z = torch.stack([simplex, simplex], dim=1)
    expected = -t * 2 * n / (n - 1)
    assert torch.allclose(AlignUniform(t=t)(z).logs["unif"], torch.tensor(expected, dtype=F64))
    # collapse: all points equal, uniformity is at its maximum 0
    z = torch.ones(4, 2, 3, dtype=F64)
    assert AlignUniform(t=t)(z).logs["unif"].abs() < 1e-12


def test_gradcheck():
    z = rand_z(b=3, v=2, d=3, seed=2).requires_grad_()
    head = AlignUniform()
    assert torch.autograd.gradcheck(lambda x: head(x).loss, (z,))


def test_permutation_and_rotation_invariance():
    head = AlignUniform()
    z = rand_z(b=9, v=3, d=6, seed=3)
    base = head(z).loss
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(0))
    q, _ = torch.linalg.qr(rand_z(b=6, v=1, d=6, seed=4)[:, 0])
    assert torch.allclose(head(z[perm]).loss, base, atol=1e-12)
    assert torch.allclose(head(z @ q).loss, base, atol=1e-12)
    assert not torch.allclose(head(z + 0.3 * rand_z(b=9, v=3, d=6, seed=5)).loss, base, atol=1e-6)


def test_sharp_potential_finite():
    # t = 50 drives every pair potential far below float32's smallest normal number
    head = AlignUniform(t=50.0)
    z = rand_z(b=64, v=2, d=16, seed=6).float().requires_grad_()
    out = head(z)
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(z.grad).all()


def test_yaml_defaults():
    head = hydra.utils.instantiate(OmegaConf.load("configs/loss/au.yaml"))
    assert isinstance(head, AlignUniform)
    # SsnL/align_uniform examples/stl10/main.py defaults
    assert (head.alpha, head.t, head.align_w, head.unif_w, head.normalize) == (2, 2, 1, 1, True)
    out = head(rand_z(b=4, seed=9), queue=None)
    assert torch.isfinite(out.loss)
    assert math.isclose(
        out.loss.item(), (out.logs["align"] + out.logs["unif"]).item(), abs_tol=1e-12
    )


@pytest.mark.parametrize("kwargs", [{"alpha": 0.0}, {"t": -1.0}], ids=str)
def test_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        AlignUniform(**kwargs)
