"""A tiny learnable synthetic dataset for smoke tests: no files, seconds to train."""

from __future__ import annotations

import torch

from sslkit.data.base import ImageDataModule, TensorImages


class Synthetic(ImageDataModule):
    """``num_classes`` smooth random prototypes; each image is its class prototype, randomly
    shifted, with pixel noise. Same seed, same data.

    ``attributes`` (for ``prior=attributes``) are per class: the bits of the class id and
    whether the class prototype is brighter than the average prototype."""

    name = "synthetic"

    def __init__(
        self,
        num_train: int = 512,
        num_test: int = 256,
        image_size: int = 16,
        in_chans: int = 1,
        num_classes: int = 4,
        **kwargs,
    ) -> None:
        # set before the base class checks mean/std against in_chans
        self.image_size, self.in_chans, self.num_classes = image_size, in_chans, num_classes
        super().__init__(**kwargs)
        self.sizes = {"train": num_train, "test": num_test}

    def load_split(self, split: str) -> TensorImages:
        gen = torch.Generator().manual_seed(self.seed)
        s = self.image_size
        protos = torch.rand(self.num_classes, self.in_chans, s // 4, s // 4, generator=gen)
        protos = torch.nn.functional.interpolate(protos, size=(s, s), mode="bilinear")
        gen.manual_seed(self.seed + (1 if split == "train" else 2))
        n = self.sizes[split]
        labels = torch.arange(n) % self.num_classes
        shifts = torch.randint(-2, 3, (n, 2), generator=gen)
        images = protos[labels]
        images = torch.stack(
            [torch.roll(img, tuple(sh.tolist()), dims=(1, 2)) for img, sh in zip(images, shifts)]
        )
        images = (images + 0.15 * torch.randn(images.shape, generator=gen)).clamp(0, 1)
        data = TensorImages((images * 255).round().to(torch.uint8), labels)
        bits = max(1, (self.num_classes - 1).bit_length())
        code = (torch.arange(self.num_classes)[:, None] >> torch.arange(bits)) & 1
        bright = protos.mean(dim=(1, 2, 3)) > protos.mean()
        data.attributes = torch.cat([code, bright[:, None]], dim=1).float()[labels]
        return data
