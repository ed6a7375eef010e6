"""`model.micro_batch`: the training views go through the encoder in calls of at most that many
rows, each with its own BatchNorm statistics."""

from __future__ import annotations

import pytest
import torch

from sslkit.errors import ConfigError
from tests.test_moco_parts import compose_cfg, count_rows

torch.set_num_threads(1)


def build(*overrides: str):
    from sslkit.training.build import build_module

    torch.manual_seed(0)
    return build_module(compose_cfg(*overrides)).double().train()


def views_of(batch: int, n: int = 2) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(batch, 1, 16, 16, generator=gen, dtype=torch.float64) for _ in range(n)]


@pytest.mark.parametrize("micro_batch,calls", [(None, [12]), (6, [6, 6]), (4, [4, 4, 4]),
                                               (5, [5, 5, 2]), (12, [12]), (100, [12])])
def test_encoder_calls_have_at_most_micro_batch_rows(micro_batch, calls):
    module = build(f"model.micro_batch={'null' if micro_batch is None else micro_batch}")
    rows = count_rows(module.online.encoder)
    h, z = module.embed_views(module.online, views_of(6))
    assert rows == calls and h.shape[:2] == z.shape[:2] == (6, 2)


def test_one_call_per_view_normalises_each_view_with_its_own_statistics():
    """micro_batch = B equals running each view alone (train-mode BatchNorm), and differs from
    the joint call, whose statistics mix the two views."""
    module = build("model.micro_batch=6")
    views = views_of(6)
    views[1] = views[1] * 3 + 2  # views with different statistics
    h, z = module.embed_views(module.online, views)
    for v, view in enumerate(views):
        hv, zv = module.online(module._layout(view))
        torch.testing.assert_close(h[:, v], hv, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(z[:, v], zv, rtol=1e-12, atol=1e-12)
    module.micro_batch = None
    h_joint, _ = module.embed_views(module.online, views)
    assert not torch.allclose(h, h_joint, atol=1e-3)


def test_eval_mode_outputs_do_not_depend_on_the_micro_batch():
    module = build("model.micro_batch=4").eval()
    views = views_of(6)
    h, z = module.embed_views(module.online, views)
    module.micro_batch = None
    h_joint, z_joint = module.embed_views(module.online, views)
    torch.testing.assert_close(h, h_joint, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(z, z_joint, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("value", [0, -3, 1.5, True, "4"])
def test_a_bad_micro_batch_is_refused_in_one_line(value):
    from sslkit.training.build import build_module

    cfg = compose_cfg()
    cfg.model.micro_batch = value
    with pytest.raises(ConfigError, match=r"model.micro_batch=.*positive number of rows") as err:
        build_module(cfg)
    assert "\n" not in str(err.value)
