"""SupCon head (Khosla et al. 2020) against plain float64 loops; with every instance its own
class it is the NT-Xent (InfoNCE) formula exactly."""

from __future__ import annotations

import math

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from sslkit.losses.infonce import InfoNCE
from sslkit.losses.supcon import SupCon
from tests.conftest import assert_matches, rand, unit

torch.set_num_threads(1)


def ref_supcon(z, labels, t, base_t):
    """Loops over anchors (every view of every instance): positives are the other rows with
    the anchor's label, the denominator every other row."""
    b, v, _ = z.shape
    rows = [(i, a) for a in range(v) for i in range(b)]
    u = [unit(z[i, a]) for i, a in rows]
    total = 0.0
    for r, (i, _) in enumerate(rows):
        denom = sum(torch.exp(torch.dot(u[r], u[c]) / t) for c in range(len(rows)) if c != r)
        pos = [c for c, (j, _) in enumerate(rows) if c != r and labels[j] == labels[i]]
        total = total - sum(torch.log(torch.exp(torch.dot(u[r], u[p]) / t) / denom) for p in pos) / len(pos)
    return (t / base_t) * total / len(rows)


@pytest.mark.parametrize("batch", [3, 6])
@pytest.mark.parametrize("views", [2, 3])
def test_matches_reference(batch, views):
    z = rand(batch, views, 4, seed=batch + views)
    labels = torch.tensor([0, 1, 0, 2, 1, 0][:batch])
    head = SupCon(temperature=0.1, base_temperature=0.07)
    assert_matches(lambda x: head(x, labels=labels).loss,
                   lambda x: ref_supcon(x, labels, 0.1, 0.07), z)


def ntxent(z, t):
    """The SimCLR/NT-Xent formula, written out: for each anchor row, -log of its positive's
    share of the sum over every other row, averaged over its positives and over anchors."""
    b, v, _ = z.shape
    u = [[unit(z[i, a]) for a in range(v)] for i in range(b)]
    total, n = 0.0, 0
    for i in range(b):
        for a in range(v):
            denom = sum(math.exp(float(torch.dot(u[i][a], u[j][w])) / t)
                        for j in range(b) for w in range(v) if (j, w) != (i, a))
            total += sum(-math.log(math.exp(float(torch.dot(u[i][a], u[i][w])) / t) / denom)
                         for w in range(v) if w != a) / (v - 1)
            n += 1
    return total / n


@pytest.mark.parametrize("views", [2, 3])
def test_every_instance_its_own_class_is_ntxent(views):
    z = rand(5, views, 4, seed=views)
    ids = torch.arange(5)
    loss = SupCon(temperature=0.3, base_temperature=0.3)(z, labels=ids).loss
    assert loss.item() == pytest.approx(ntxent(z, 0.3), abs=1e-12)
    assert torch.allclose(loss, InfoNCE(temperature=0.3)(z).loss, atol=1e-13, rtol=0)
    # the official base temperature only rescales it
    scaled = SupCon(temperature=0.3, base_temperature=0.07)(z, labels=ids).loss
    assert scaled.item() == pytest.approx(0.3 / 0.07 * ntxent(z, 0.3), abs=1e-11)


def test_official_form():
    # SupContrast losses.py SupConLoss(contrast_mode='all') on normalised features
    z, labels, t, base = rand(8, 2, 5, seed=1), torch.tensor([0, 1, 1, 2, 0, 2, 2, 1]), 0.1, 0.07
    f = torch.nn.functional.normalize(z, dim=-1)
    feat = torch.cat(torch.unbind(f, dim=1), dim=0)
    mask = torch.eq(labels[:, None], labels[None, :]).double().repeat(2, 2)
    logits = feat @ feat.T / t
    logits = logits - logits.max(dim=1, keepdim=True)[0].detach()
    logits_mask = 1 - torch.eye(16, dtype=logits.dtype)
    mask = mask * logits_mask
    log_prob = logits - torch.log((torch.exp(logits) * logits_mask).sum(1, keepdim=True))
    expected = (-(t / base) * (mask * log_prob).sum(1) / mask.sum(1)).view(2, 8).mean()
    out = SupCon(temperature=t, base_temperature=base)(z, labels=labels)
    assert torch.allclose(out.loss, expected, atol=1e-12, rtol=0)
    assert out.logs["positives"].item() == pytest.approx(mask.sum(1).mean().item())


def test_refuses_a_batch_without_labels_in_one_line():
    z = rand(4, 2, 3)
    for bad, match in ((None, "supcon needs labels"), (torch.tensor([0, 1, -1, 0]), "unlabelled"),
                       (torch.tensor([0, 1]), r"labels must be \[4\]")):
        with pytest.raises(ValueError, match=match) as err:
            SupCon()(z, labels=bad)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="supcon needs labels"):
        SupCon()(z)


def test_gradcheck():
    z = rand(4, 2, 3, seed=2).requires_grad_()
    labels = torch.tensor([0, 1, 0, 1])
    assert torch.autograd.gradcheck(lambda x: SupCon(0.5)(x, labels=labels).loss, (z,))


def test_yaml_defaults():
    head = hydra.utils.instantiate(OmegaConf.load("configs/loss/supcon.yaml"))
    assert isinstance(head, SupCon)
    assert (head.temperature, head.base_temperature, head.normalize) == (0.1, 0.07, True)
    assert head.requires == frozenset({"labels"}) and not head.uses_predictor
