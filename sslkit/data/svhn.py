"""SVHN (Netzer et al. 2011): 32x32 colour house-number digits, torchvision's ``.mat`` files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sslkit.data.base import ImageDataModule, TensorImages
from sslkit.errors import DataError

SPLITS = ("train", "test", "extra")


class SVHN(ImageDataModule):
    """Reads the cropped-digit release ``{train,test,extra}_32x32.mat`` (MATLAB v5 files: ``X``
    ``[32, 32, 3, N]`` uint8, ``y`` ``[N, 1]`` with 10 for the digit 0) from ``root`` or
    ``root/svhn``; downloads with torchvision if ``download``. ``train_split`` is the
    pretraining split: ``train`` (73,257 images) or ``train+extra`` (604,388)."""

    name = "svhn"
    in_chans, image_size, num_classes = 3, 32, 10
    class_names = tuple("0123456789")  # the digit (the files' 10 is read as 0)

    def __init__(self, train_split: str = "train", **kwargs) -> None:
        super().__init__(**kwargs)
        valid = ("train", "train+extra")
        if train_split not in valid:
            raise DataError(f"data.train_split={train_split!r}; choose one of {list(valid)}")
        self.train_split = train_split

    def candidates(self) -> list[Path]:
        return [self.root, self.root / "svhn"]

    def load_split(self, split: str) -> TensorImages:
        if "+" in split:
            parts = [self.load_split(s) for s in split.split("+")]
            return TensorImages(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]))
        name = f"{split}_32x32.mat"
        path = next((d / name for d in self.candidates() if (d / name).exists()), None)
        if path is None and self.download:
            import torchvision

            torchvision.datasets.SVHN(str(self.root), split=split, download=True)
            path = next((d / name for d in self.candidates() if (d / name).exists()), None)
        if path is None:
            looked = " and ".join(str(d) for d in self.candidates())
            raise DataError(
                f"SVHN not found: no {name} in {looked}; download it from "
                f"http://ufldl.stanford.edu/housenumbers/{name} into data.root={self.root} or "
                "rerun with data.download=true"
            )
        import scipy.io

        try:
            mat = scipy.io.loadmat(str(path))
        except Exception as err:  # noqa: BLE001 - any parse failure means a bad file
            raise DataError(f"{path}: not a readable SVHN .mat file ({type(err).__name__}: {err})") from None
        x, y = mat.get("X"), mat.get("y")
        if x is None or y is None:
            raise DataError(f"{path}: not an SVHN file (needs 'X' and 'y' arrays)")
        if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8:
            raise DataError(f"{path}: 'X' must be uint8 [32, 32, 3, N], got {x.dtype} {x.shape}")
        labels = torch.from_numpy(y.reshape(-1).astype(np.int64))
        if len(labels) != x.shape[3]:
            raise DataError(f"{path}: {len(labels)} labels for {x.shape[3]} images")
        if labels.min() < 1 or labels.max() > 10:
            raise DataError(f"{path}: labels out of range 1..10")
        images = torch.from_numpy(np.ascontiguousarray(x.transpose(3, 2, 0, 1)))
        return TensorImages(images, labels % 10)
