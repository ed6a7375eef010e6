"""`model.views_forward`: joint (every view of a step in one encoder call) or separate (one call
per view, per-view BatchNorm statistics, as CACR's official code runs its 5 views)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from sslkit.errors import ConfigError
from tests.test_moco_parts import compose_cfg, count_rows

torch.set_num_threads(1)


def build(*overrides: str):
    from sslkit.training.build import build_module

    torch.manual_seed(0)
    return build_module(compose_cfg(*overrides)).double().train()


def views_of(batch: int, n: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    # views with different statistics, so that per-view and joint normalisation differ
    return [torch.randn(batch, 1, 16, 16, generator=gen, dtype=torch.float64) * (1 + v) + v
            for v in range(n)]


def running_stats(net) -> list[torch.Tensor]:
    return [t.clone() for m in net.modules() if isinstance(m, _BatchNorm)
            for t in (m.running_mean, m.running_var)]


def test_separate_runs_one_encoder_call_per_view():
    module = build("model.views_forward=separate", "augment.views=5", "loss=cacr")
    rows = count_rows(module.online.encoder)
    h, z = module.embed_views(module.online, views_of(6, 5))
    assert rows == [6] * 5 and h.shape[:2] == z.shape[:2] == (6, 5)


def test_separate_normalises_each_view_with_its_own_statistics():
    """Outputs and the running statistics after one step equal those of the official loop (each
    view through the network on its own, in order); joint differs from both."""
    module = build("model.views_forward=separate", "augment.views=5", "loss=cacr")
    reference = copy.deepcopy(module.online)
    assert running_stats(reference), "the smoke encoder has BatchNorm layers"
    views = views_of(6, 5)
    h, z = module.embed_views(module.online, views)
    for v, view in enumerate(views):
        hv, zv = reference(module._layout(view))
        torch.testing.assert_close(h[:, v], hv, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(z[:, v], zv, rtol=1e-12, atol=1e-12)
    for got, want in zip(running_stats(module.online), running_stats(reference)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)

    joint = build("augment.views=5", "loss=cacr")
    h_joint, _ = joint.embed_views(joint.online, views)
    assert not torch.allclose(h, h_joint, atol=1e-3)
    assert not all(torch.allclose(a, b) for a, b in zip(running_stats(joint.online),
                                                          running_stats(module.online)))


def test_separate_trains_a_step_of_the_cacr_recipe_head():
    module = build("model.views_forward=separate", "augment.views=5", "loss=cacr")
    images = torch.randint(0, 256, (6, 1, 16, 16), dtype=torch.uint8)
    batch = {"image": images, "label": torch.zeros(6, dtype=torch.long)}
    module.augment.double()
    views = [v.double() for v in module.augment(images, generator=torch.Generator().manual_seed(0))]
    _, _, z, extras, _ = module.head_inputs(batch, views)
    out = module.head(z, **extras)
    out.loss.backward()
    assert torch.isfinite(out.loss)


def test_a_bad_views_forward_is_refused_in_one_line():
    from sslkit.training.build import build_module
    from sslkit.training.schema import validate

    cfg = compose_cfg()
    cfg.model.views_forward = "per_view"
    with pytest.raises(ConfigError, match=r"model.views_forward='per_view': expected one of 'joint', 'separate'") as err:
        validate(cfg)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"joint, separate"):
        build_module(cfg)
