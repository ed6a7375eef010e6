"""Batched random image operations with independent parameters per sample.

torchvision.transforms.v2 draws one set of parameters per call, so a batch would share a crop;
the per-sample pipeline (one call per image in DataLoader workers) ran at a few thousand
images/s on 2 cores, slower than the encoder on 28x28 images (see ``make bench``). These ops draw
per-sample parameters and run as a handful of tensor kernels on the training device.

All ops take float images in [0, 1] of shape [B, C, H, W] and an optional ``torch.Generator``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _uniform(n: int, low: float, high: float, like: Tensor, gen: torch.Generator | None) -> Tensor:
    return torch.rand(n, device=like.device, dtype=like.dtype, generator=gen) * (high - low) + low


def _bernoulli(n: int, p: float, like: Tensor, gen: torch.Generator | None) -> Tensor:
    return torch.rand(n, device=like.device, generator=gen) < p


def random_resized_crop(
    x: Tensor,
    size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip_p: float = 0.5,
    gen: torch.Generator | None = None,
) -> Tensor:
    """Crop a random area fraction in ``scale`` with aspect ratio in ``ratio`` (log-uniform), resize
    to ``size`` x ``size`` bilinearly, and mirror horizontally with probability ``flip_p``.

    Unlike torchvision's rejection sampling, the crop is clamped into the image instead of
    redrawn, so one pass serves the whole batch.
    """
    b, _, h, w = x.shape
    area = _uniform(b, scale[0], scale[1], x, gen)
    log_r = _uniform(b, math.log(ratio[0]), math.log(ratio[1]), x, gen)
    r = torch.exp(log_r)
    # crop width/height as fractions of the image side (area fraction = cw * ch for square input)
    cw = torch.sqrt(area * r * h / w).clamp(max=1.0)
    ch = torch.sqrt(area / r * w / h).clamp(max=1.0)
    cx = _uniform(b, 0, 1, x, gen) * (1 - cw) + cw / 2  # centre in [0, 1]
    cy = _uniform(b, 0, 1, x, gen) * (1 - ch) + ch / 2
    flip = torch.where(_bernoulli(b, flip_p, x, gen), -1.0, 1.0).to(x.dtype)
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = cw * flip
    theta[:, 0, 2] = cx * 2 - 1
    theta[:, 1, 1] = ch
    theta[:, 1, 2] = cy * 2 - 1
    grid = F.affine_grid(theta, [b, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _grey(x: Tensor) -> Tensor:
    if x.shape[1] == 1:
        return x
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return 0.299 * r + 0.587 * g + 0.114 * b


def _rgb_to_hsv(x: Tensor) -> Tensor:
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    hr = ((g - b) / safe) % 6
    hg = (b - r) / safe + 2
    hb = (r - g) / safe + 4
    hue = torch.where(maxc == r, hr, torch.where(maxc == g, hg, hb)) / 6
    hue = torch.where(delta > 0, hue, torch.zeros_like(hue))
    sat = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), 0 * maxc)
    return torch.stack([hue % 1.0, sat, maxc], 1)


def _hsv_to_rgb(x: Tensor) -> Tensor:
    h, s, v = x.unbind(1)
    i = torch.floor(h * 6)
    f = h * 6 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = i.long() % 6
    choices = [
        torch.stack(c, 1)
        for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))
    ]
    out = torch.zeros_like(x)
    for k, c in enumerate(choices):
        out = torch.where((i == k).unsqueeze(1), c, out)
    return out


def color_jitter(
    x: Tensor,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
    hue: float = 0.1,
    p: float = 0.8,
    gen: torch.Generator | None = None,
) -> Tensor:
    """SimCLR colour jitter with per-sample factors, applied to a random fraction ``p``.

    Brightness, contrast, saturation and hue are applied in this fixed order (torchvision draws a
    random order per call; the order matters little and a fixed one keeps this batched).
    Saturation and hue are skipped for single-channel images.
    """
    b = x.shape[0]
    apply = _bernoulli(b, p, x, gen).view(b, 1, 1, 1)
    out = x
    if brightness > 0:
        f = _uniform(b, max(0.0, 1 - brightness), 1 + brightness, x, gen).view(b, 1, 1, 1)
        out = (out * f).clamp(0, 1)
    if contrast > 0:
        f = _uniform(b, max(0.0, 1 - contrast), 1 + contrast, x, gen).view(b, 1, 1, 1)
        mean = _grey(out).mean(dim=(1, 2, 3), keepdim=True)
        out = ((out - mean) * f + mean).clamp(0, 1)
    if x.shape[1] == 3 and saturation > 0:
        f = _uniform(b, max(0.0, 1 - saturation), 1 + saturation, x, gen).view(b, 1, 1, 1)
        grey = _grey(out)
        out = ((out - grey) * f + grey).clamp(0, 1)
    if x.shape[1] == 3 and hue > 0:
        shift = _uniform(b, -hue, hue, x, gen).view(b, 1, 1)
        hsv = _rgb_to_hsv(out)
        hsv = torch.stack([(hsv[:, 0] + shift) % 1.0, hsv[:, 1], hsv[:, 2]], 1)
        out = _hsv_to_rgb(hsv).clamp(0, 1)
    return torch.where(apply, out, x)


def random_grayscale(x: Tensor, p: float = 0.2, gen: torch.Generator | None = None) -> Tensor:
    """Replace a random fraction ``p`` of images by their luminance (kept at C channels)."""
    if x.shape[1] == 1 or p <= 0:
        return x
    apply = _bernoulli(x.shape[0], p, x, gen).view(-1, 1, 1, 1)
    return torch.where(apply, _grey(x).expand_as(x), x)


def gaussian_blur(
    x: Tensor,
    p: float = 0.5,
    sigma: tuple[float, float] = (0.1, 2.0),
    kernel_size: int | None = None,
    gen: torch.Generator | None = None,
) -> Tensor:
    """Separable Gaussian blur with a per-sample sigma, applied to a random fraction ``p``.

    The kernel spans about 10% of the image side (SimCLR), odd, at least 3.
    """
    if p <= 0:
        return x
    b, c, h, w = x.shape
    if kernel_size is None:
        kernel_size = max(3, int(0.1 * min(h, w)) // 2 * 2 + 1)
    half = kernel_size // 2
    s = _uniform(b, sigma[0], sigma[1], x, gen)
    t = torch.arange(-half, half + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(t[None, :] ** 2) / (2 * s[:, None] ** 2))
    k = k / k.sum(1, keepdim=True)  # [B, K]
    kernels = k.repeat_interleave(c, 0)  # one kernel per (sample, channel)
    flat = x.reshape(1, b * c, h, w)
    flat = F.pad(flat, (half, half, half, half), mode="reflect")
    flat = F.conv2d(flat, kernels.view(b * c, 1, 1, kernel_size), groups=b * c)
    flat = F.conv2d(flat, kernels.view(b * c, 1, kernel_size, 1), groups=b * c)
    blurred = flat.view(b, c, h, w)
    apply = _bernoulli(b, p, x, gen).view(b, 1, 1, 1)
    return torch.where(apply, blurred, x)


def random_solarize(
    x: Tensor, p: float = 0.0, threshold: float = 0.5, gen: torch.Generator | None = None
) -> Tensor:
    """Invert pixels above ``threshold`` in a random fraction ``p`` of images."""
    if p <= 0:
        return x
    apply = _bernoulli(x.shape[0], p, x, gen).view(-1, 1, 1, 1)
    return torch.where(apply & (x >= threshold), 1 - x, x)


def random_recrop(
    x: Tensor,
    p: float = 0.0,
    scale: tuple[float, float] = (0.2, 0.2),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    gen: torch.Generator | None = None,
) -> Tensor:
    """With probability ``p`` per image, crop again an area fraction in ``scale`` of the (already
    cropped) view and resize it back: the GCA code's "large erase" noisy view (a forced 20% crop
    after the first, ``scale=(0.2, 0.2)``) and its "strong crop" (``RandomCrop`` of 13/32 of the
    side then resize: ``scale`` = 0.165, ``ratio`` = 1)."""
    if p <= 0:
        return x
    again = random_resized_crop(x, x.shape[-1], scale, ratio, flip_p=0.0, gen=gen)
    apply = _bernoulli(x.shape[0], p, x, gen).view(-1, 1, 1, 1)
    return torch.where(apply, again, x)


def random_erasing(
    x: Tensor,
    p: float = 0.0,
    scale: tuple[float, float] = (0.02, 0.33),
    ratio: tuple[float, float] = (0.3, 3.3),
    value: float = 0.0,
    gen: torch.Generator | None = None,
) -> Tensor:
    """Random erasing (Zhong et al. 2020; torchvision ``RandomErasing``): with probability ``p``
    per image, set a rectangle of area fraction in ``scale`` and aspect ratio log-uniform in
    ``ratio`` to ``value``. Applied to normalised images, ``value=0`` is the mean colour.
    The rectangle is clamped into the image instead of redrawn (one pass for the batch)."""
    if p <= 0:
        return x
    b, _, h, w = x.shape
    area = _uniform(b, scale[0], scale[1], x, gen) * h * w
    r = torch.exp(_uniform(b, math.log(ratio[0]), math.log(ratio[1]), x, gen))
    eh = torch.sqrt(area * r).round().clamp(1, h)
    ew = torch.sqrt(area / r).round().clamp(1, w)
    top = (_uniform(b, 0, 1, x, gen) * (h - eh + 1)).floor()
    left = (_uniform(b, 0, 1, x, gen) * (w - ew + 1)).floor()
    rows = torch.arange(h, device=x.device, dtype=x.dtype).view(1, h, 1)
    cols = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, w)
    inside = ((rows >= top.view(b, 1, 1)) & (rows < (top + eh).view(b, 1, 1))
              & (cols >= left.view(b, 1, 1)) & (cols < (left + ew).view(b, 1, 1)))
    apply = _bernoulli(b, p, x, gen).view(b, 1, 1)
    return x.masked_fill((inside & apply).unsqueeze(1), value)


def value_shift(x: Tensor, shift: float = 0.0) -> Tensor:
    """Add ``shift`` to the HSV value channel and clip: the Brightness corruption of CIFAR-10-C
    (Hendrycks & Dietterich 2019; severity 5 is 0.3), the GCA code's "brightness" noisy view.
    For one channel the value is the grey level itself."""
    if shift == 0:
        return x
    if x.shape[1] == 1:
        return (x + shift).clamp(0, 1)
    hsv = _rgb_to_hsv(x)
    hsv = torch.stack([hsv[:, 0], hsv[:, 1], (hsv[:, 2] + shift).clamp(0, 1)], 1)
    return _hsv_to_rgb(hsv).clamp(0, 1)
