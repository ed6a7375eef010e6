"""STL-10 (Coates et al. 2011): 96x96 colour, 5k labelled train, 8k test, 100k unlabelled."""

from __future__ import annotations

import numpy as np
import torch

from sslkit.data.base import ImageDataModule, TensorImages
from sslkit.errors import DataError

_SIDE = 96
_BYTES = 3 * _SIDE * _SIDE


class STL10(ImageDataModule):
    """Reads the binary release ``root/stl10_binary/{train,test,unlabeled}_X.bin`` (+ ``_y.bin``).

    Pretraining uses ``train_split`` (default ``train+unlabeled``, as in SimCLR/CACR on
    STL-10); probes train on the 5k labelled ``train`` images and test on ``test``.
    """

    name = "stl10"
    in_chans, image_size, num_classes = 3, _SIDE, 10
    probe_source = "train"

    def __init__(self, train_split: str = "train+unlabeled", **kwargs) -> None:
        super().__init__(**kwargs)
        valid = {"train", "unlabeled", "train+unlabeled"}
        if train_split not in valid:
            raise DataError(f"data.train_split={train_split!r}; choose one of {sorted(valid)}")
        self.train_split = train_split

    def load_split(self, split: str) -> TensorImages:
        if "+" in split:
            parts = [self.load_split(s) for s in split.split("+")]
            return TensorImages(
                torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts])
            )
        folder = self.root / "stl10_binary"
        x_path = folder / f"{split}_X.bin"
        if not x_path.exists() and self.download:
            import torchvision

            torchvision.datasets.STL10(str(self.root), split="train", download=True)
        if not x_path.exists():
            raise DataError(
                f"STL-10 not found: missing {x_path}; extract stl10_binary.tar.gz into "
                f"data.root={self.root} or rerun with data.download=true"
            )
        raw = np.fromfile(x_path, dtype=np.uint8)
        if raw.size == 0 or raw.size % _BYTES:
            raise DataError(f"{x_path}: size {raw.size} is not a multiple of {_BYTES} bytes (truncated?)")
        # the binary stores each channel column-major
        images = torch.from_numpy(raw.reshape(-1, 3, _SIDE, _SIDE).transpose(0, 1, 3, 2).copy())
        labels = torch.full((len(images),), -1, dtype=torch.long)
        y_path = folder / f"{split}_y.bin"
        if split != "unlabeled":
            if not y_path.exists():
                raise DataError(f"STL-10 labels not found: missing {y_path}")
            y = torch.from_numpy(np.fromfile(y_path, dtype=np.uint8).astype(np.int64)) - 1
            if len(y) != len(images):
                raise DataError(f"{y_path}: {len(y)} labels for {len(images)} images")
            if y.min() < 0 or y.max() >= self.num_classes:
                raise DataError(f"{y_path}: labels out of range 1..10")
            labels = y
        return TensorImages(images, labels)
