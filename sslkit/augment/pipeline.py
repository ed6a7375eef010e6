"""Multi-view augmentation pipelines that run batched on the training device."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslkit.augment import ops


class ViewAugment(nn.Module):
    """SimCLR-style augmentation producing V views per image, with optional multi-crop.

    ``forward(images)`` takes uint8 (or float in [0, 1]) images ``[B, C, H, W]`` and returns a list
    of ``views + local_views`` normalised float tensors: first the global crops
    (``crop_size``), then the local ones (``local_crop_size``). Each op draws its parameters
    independently per image and per view. ``eval_transform`` is the deterministic path used to
    extract features for probes: resize the shorter side and centre-crop to ``crop_size``.
    """

    def __init__(
        self,
        views: int = 2,
        crop_size: int = 32,
        scale: Sequence[float] = (0.08, 1.0),
        ratio: Sequence[float] = (3 / 4, 4 / 3),
        flip_p: float = 0.5,
        jitter_p: float = 0.8,
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.4,
        hue: float = 0.1,
        grayscale_p: float = 0.2,
        blur_p: float = 0.0,
        blur_sigma: Sequence[float] = (0.1, 2.0),
        solarize_p: float = 0.0,
        recrop_p: float = 0.0,
        recrop_scale: Sequence[float] = (0.2, 0.2),
        recrop_ratio: Sequence[float] = (3 / 4, 4 / 3),
        value_shift: float = 0.0,
        erase_p: float = 0.0,
        erase_scale: Sequence[float] = (0.02, 0.33),
        erase_ratio: Sequence[float] = (0.3, 3.3),
        local_views: int = 0,
        local_crop_size: int = 16,
        local_scale: Sequence[float] = (0.05, 0.4),
        mean: Sequence[float] = (0.5,),
        std: Sequence[float] = (0.5,),
    ) -> None:
        super().__init__()
        if views < 1 or views + local_views < 2:
            raise ValueError(
                f"augment needs at least 2 views in all (views + local_views), got views={views}, "
                f"local_views={local_views}"
            )
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"augment.scale must satisfy 0 < min <= max <= 1, got {list(scale)}")
        self.views, self.local_views = views, local_views
        self.crop_size, self.local_crop_size = crop_size, local_crop_size
        self.scale, self.local_scale = tuple(scale), tuple(local_scale)
        self.ratio = tuple(ratio)
        self.flip_p = flip_p
        self.jitter = dict(
            p=jitter_p, brightness=brightness, contrast=contrast, saturation=saturation, hue=hue
        )
        self.grayscale_p = grayscale_p
        self.blur_p, self.blur_sigma = blur_p, tuple(blur_sigma)
        self.solarize_p = solarize_p
        # noisy-view ops (off unless set): a second crop, a brightness shift, random erasing
        self.recrop = dict(p=recrop_p, scale=tuple(recrop_scale), ratio=tuple(recrop_ratio))
        self.value_shift = value_shift
        self.erase = dict(p=erase_p, scale=tuple(erase_scale), ratio=tuple(erase_ratio))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    @property
    def num_views(self) -> int:
        return self.views + self.local_views

    @staticmethod
    def to_float(images: Tensor) -> Tensor:
        if images.dtype == torch.uint8:
            return images.float().div_(255)
        return images if images.is_floating_point() else images.float()

    def normalize(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def one_view(
        self, x: Tensor, size: int, scale: tuple[float, float], gen: torch.Generator | None
    ) -> Tensor:
        x = ops.random_resized_crop(x, size, scale, self.ratio, self.flip_p, gen)
        x = ops.random_recrop(x, gen=gen, **self.recrop)
        x = ops.color_jitter(x, gen=gen, **self.jitter)
        x = ops.random_grayscale(x, self.grayscale_p, gen)
        x = ops.gaussian_blur(x, self.blur_p, self.blur_sigma, gen=gen)
        x = ops.random_solarize(x, self.solarize_p, gen=gen)
        x = ops.value_shift(x, self.value_shift)
        # after normalisation, as torchvision's RandomErasing: 0 is the mean colour
        return ops.random_erasing(self.normalize(x), gen=gen, **self.erase)

    @torch.no_grad()
    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> list[Tensor]:
        x = self.to_float(images)
        out = [self.one_view(x, self.crop_size, self.scale, generator) for _ in range(self.views)]
        out += [
            self.one_view(x, self.local_crop_size, self.local_scale, generator)
            for _ in range(self.local_views)
        ]
        return out

    @torch.no_grad()
    def crop_flip(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The supervised probes' training view: the global crop and flip of the pretraining
        views, normalised, without their colour and blur augmentations."""
        x = ops.random_resized_crop(self.to_float(images), self.crop_size, self.scale, self.ratio,
                                    self.flip_p, generator)
        return self.normalize(x)

    # differentiable (no no_grad): adversarial attacks need the gradient through it
    def eval_transform(self, images: Tensor) -> Tensor:
        x = self.to_float(images)
        h, w = x.shape[-2:]
        if (h, w) != (self.crop_size, self.crop_size):
            short = min(h, w)
            top, left = (h - short) // 2, (w - short) // 2
            x = x[..., top : top + short, left : left + short]
            x = F.interpolate(x, size=self.crop_size, mode="bilinear", antialias=True)
        return self.normalize(x)
