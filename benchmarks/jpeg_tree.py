"""Photo-like JPEG trees in ImageFolder layout (``scripts/make_jpeg_tree.py`` is the command):
ImageNet-like in size and in what a JPEG decoder has to do with them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def photo(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """Gradients + soft shapes + noise: JPEG blocks with both smooth and detailed content."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    corners = rng.uniform(0, 255, size=(4, 3)).astype(np.float32)
    fx, fy = (x / width)[..., None], (y / height)[..., None]
    img = ((1 - fx) * (1 - fy) * corners[0] + fx * (1 - fy) * corners[1]
           + (1 - fx) * fy * corners[2] + fx * fy * corners[3])
    base = Image.fromarray(img.clip(0, 255).astype(np.uint8))
    shapes = Image.new("RGB", (width, height))
    mask = Image.new("L", (width, height))
    draw, draw_mask = ImageDraw.Draw(shapes), ImageDraw.Draw(mask)
    for _ in range(rng.integers(3, 9)):
        x0, y0 = rng.uniform(-0.2, 0.9, 2) * (width, height)
        w, h = rng.uniform(0.1, 0.6, 2) * (width, height)
        box = [float(x0), float(y0), float(x0 + w), float(y0 + h)]
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
        (draw_mask.ellipse if rng.random() < 0.5 else draw_mask.rectangle)(box, fill=255)
    mask = mask.filter(ImageFilter.GaussianBlur(rng.uniform(1, 6)))
    base = Image.composite(shapes, base, mask)
    arr = np.asarray(base, dtype=np.float32) + rng.normal(0, rng.uniform(3, 12), (height, width, 3))
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def write_tree(out: Path, n: int, classes: int, val: int, quality: int, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    written = 0
    per_class = max(1, n // classes)
    for c in range(classes):
        for split, count in (("train", per_class), ("val", val)):
            folder = out / split / f"class_{c:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                w, h = (int(rng.integers(440, 560)), int(rng.integers(330, 420)))
                if rng.random() < 0.25:
                    w, h = h, w
                photo(rng, w, h).save(folder / f"{split}_{c:03d}_{i:05d}.jpg", quality=quality,
                                      subsampling=2)
                written += 1
    return written
