"""Parameter groups and the learning-rate schedule."""

import math

import pytest
import torch
from torch import nn

from sslkit.optim import param_groups, warmup_cosine


def test_no_weight_decay_on_biases_and_norms():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    decay, no_decay = param_groups([model], weight_decay=0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[3].weight)}
    assert len(no_decay["params"]) == 4  # conv bias, bn weight+bias, linear bias


def test_warmup_then_cosine():
    f = warmup_cosine(total_steps=100, warmup_steps=10, final_lr_ratio=0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(100) == pytest.approx(0.1) and f(200) == pytest.approx(0.1)
    assert all(f(s) >= f(s + 1) for s in range(10, 100))


def test_lars_from_timm_skips_adaptation_without_weight_decay():
    from timm.optim import Lars

    w = nn.Parameter(torch.ones(3, 3))
    b = nn.Parameter(torch.ones(3))
    opt = Lars([{"params": [w], "weight_decay": 1e-6}, {"params": [b], "weight_decay": 0.0}], lr=1.0)
    w.grad, b.grad = torch.ones_like(w), torch.ones_like(b)
    opt.step()
    assert torch.allclose(b.detach(), torch.zeros(3))  # plain SGD step on the bias
    assert (w.detach() > 0.99).all()  # trust ratio shrinks the weight step
