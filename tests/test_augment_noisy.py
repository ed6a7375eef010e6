"""Noisy-view augmentation ops (GCA's strong augmentation): second crop, brightness shift, erasing."""

import colorsys

import pytest
import torch

from sslkit.augment import ops
from sslkit.augment.pipeline import ViewAugment


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_erasing_sets_one_rectangle_of_the_drawn_size_to_value():
    x = torch.rand(64, 3, 32, 32, generator=_gen(1)) + 1.0  # > 1 everywhere: erased pixels are 0
    out = ops.random_erasing(x, p=1.0, scale=(0.1, 0.1), ratio=(1.0, 1.0), value=0.0, gen=_gen(2))
    erased = out == 0
    assert torch.equal(erased[:, :1].expand_as(erased), erased)  # all channels alike
    mask = erased[:, 0]
    for m in mask:
        rows, cols = m.any(1).nonzero().flatten(), m.any(0).nonzero().flatten()
        # one filled axis-aligned rectangle, side round(sqrt(0.1 * 1024)) = 10
        assert len(rows) == len(cols) == 10
        assert m[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all() and m.sum() == 100
    torch.testing.assert_close(out[~erased], x[~erased])


def test_erasing_probability_and_off_switch():
    x = torch.rand(400, 1, 16, 16, generator=_gen(3)) + 1.0
    out = ops.random_erasing(x, p=0.3, scale=(0.05, 0.2), gen=_gen(4))
    frac = (out == 0).flatten(1).any(1).float().mean().item()
    assert 0.2 < frac < 0.4
    assert ops.random_erasing(x, p=0.0) is x


def test_recrop_of_the_whole_view_is_the_identity_and_a_small_one_zooms_in():
    x = torch.rand(8, 3, 16, 16, generator=_gen(5))
    same = ops.random_recrop(x, p=1.0, scale=(1.0, 1.0), ratio=(1.0, 1.0), gen=_gen(6))
    torch.testing.assert_close(same, x, rtol=0, atol=1e-5)
    # a horizontal ramp: a crop of a quarter of the area (half the side) spans half the range
    ramp = torch.linspace(0, 1, 32).expand(4, 1, 32, 32).contiguous()
    zoom = ops.random_recrop(ramp, p=1.0, scale=(0.25, 0.25), ratio=(1.0, 1.0), gen=_gen(7))
    span = zoom[:, 0, 0, -1] - zoom[:, 0, 0, 0]
    torch.testing.assert_close(span, torch.full_like(span, 0.5), rtol=0, atol=0.04)
    assert ops.random_recrop(x, p=0.0) is x


def test_value_shift_matches_a_per_pixel_hsv_reference():
    x = torch.rand(2, 3, 4, 5, generator=_gen(8))
    out = ops.value_shift(x, 0.3)
    ref = torch.empty_like(x)
    for b in range(2):
        for i in range(4):
            for j in range(5):
                h, s, v = colorsys.rgb_to_hsv(*x[b, :, i, j].tolist())
                ref[b, :, i, j] = torch.tensor(colorsys.hsv_to_rgb(h, s, min(v + 0.3, 1.0)))
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    grey = torch.rand(2, 1, 4, 4, generator=_gen(9))
    torch.testing.assert_close(ops.value_shift(grey, 0.3), (grey + 0.3).clamp(max=1))
    assert ops.value_shift(x, 0.0) is x


def test_pipeline_draws_are_unchanged_when_the_noisy_ops_are_off():
    # default configs must give the views they gave before these ops existed
    x = torch.randint(0, 256, (8, 3, 32, 32), generator=_gen(10), dtype=torch.uint8)
    base = ViewAugment(views=2, crop_size=32)
    g = _gen(11)
    manual = []
    for _ in range(2):
        v = ops.random_resized_crop(x.float() / 255, 32, base.scale, base.ratio, base.flip_p, g)
        v = ops.color_jitter(v, gen=g, **base.jitter)
        v = ops.random_grayscale(v, base.grayscale_p, g)
        manual.append(base.normalize(v))
    for a, b in zip(base(x, generator=_gen(11)), manual):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("key", ["recrop_p", "erase_p", "value_shift"])
def test_pipeline_applies_each_noisy_op(key):
    x = torch.randint(0, 256, (8, 3, 32, 32), generator=_gen(12), dtype=torch.uint8)
    plain = ViewAugment(views=2, crop_size=32)(x, generator=_gen(13))
    noisy = ViewAugment(views=2, crop_size=32, **{key: 0.3 if key == "value_shift" else 1.0})
    assert not torch.allclose(noisy(x, generator=_gen(13))[0], plain[0])
