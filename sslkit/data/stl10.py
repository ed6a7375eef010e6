"""STL-10 (Coates et al. 2011): 96x96 colour, 5k labelled train, 8k test, 100k unlabelled."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

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
    # label order of the release's class_names.txt
    class_names = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
    probe_source = "train"
    cacheable = True

    def __init__(self, train_split: str = "train+unlabeled", **kwargs) -> None:
        super().__init__(**kwargs)
        valid = {"train", "unlabeled", "train+unlabeled"}
        if train_split not in valid:
            raise DataError(f"data.train_split={train_split!r}; choose one of {sorted(valid)}")
        self.train_split = train_split

    def load_split(self, split: str) -> Dataset:
        parts = split.split("+")
        xs = [self._x_path(part) for part in parts]
        counts = [self._count(x) for x in xs]
        labels = torch.cat([self._labels(part, n) for part, n in zip(parts, counts)])
        if self.cache:
            return self._cached(split, xs, counts, labels)
        # the binary stores each channel column-major
        images = torch.cat([torch.from_numpy(_read(x).transpose(0, 1, 3, 2).copy()) for x in xs])
        return TensorImages(images, labels)

    def _x_path(self, part: str) -> Path:
        x_path = self.root / "stl10_binary" / f"{part}_X.bin"
        if not x_path.exists() and self.download:
            import torchvision

            torchvision.datasets.STL10(str(self.root), split="train", download=True)
        if not x_path.exists():
            raise DataError(
                f"STL-10 not found: missing {x_path}; extract stl10_binary.tar.gz into "
                f"data.root={self.root} or rerun with data.download=true"
            )
        return x_path

    @staticmethod
    def _count(x_path: Path) -> int:
        size = x_path.stat().st_size
        if size == 0 or size % _BYTES:
            raise DataError(f"{x_path}: size {size} is not a multiple of {_BYTES} bytes (truncated?)")
        return size // _BYTES

    def _labels(self, part: str, n: int) -> torch.Tensor:
        if part == "unlabeled":
            return torch.full((n,), -1, dtype=torch.long)
        y_path = self.root / "stl10_binary" / f"{part}_y.bin"
        if not y_path.exists():
            raise DataError(f"STL-10 labels not found: missing {y_path}")
        y = torch.from_numpy(np.fromfile(y_path, dtype=np.uint8).astype(np.int64)) - 1
        if len(y) != n:
            raise DataError(f"{y_path}: {len(y)} labels for {n} images")
        if y.min() < 0 or y.max() >= self.num_classes:
            raise DataError(f"{y_path}: labels out of range 1..10")
        return y

    def _cached(self, split: str, xs: list[Path], counts: list[int], labels: torch.Tensor) -> Dataset:
        """The split's images transposed once into a memory-mapped cache (``data.cache=true``):
        no copy of the binary in each process's memory (2.9 GB for train+unlabeled)."""
        from sslkit.data.cache import CachedImages, Source, open_cache

        def fill(array, progress) -> None:
            done = 0
            for x in xs:
                raw = np.memmap(x, dtype=np.uint8, mode="r").reshape(-1, 3, _SIDE, _SIDE)
                for start in range(0, len(raw), 4096):
                    chunk = raw[start:start + 4096]
                    array[done:done + len(chunk)] = chunk.transpose(0, 1, 3, 2)
                    done += len(chunk)
                    progress(done)

        source = Source(slot=f"stl10-{split}-96px-binary", root=self.root, files=xs, labels=labels,
                        shape=(3, _SIDE, _SIDE), decoder={"name": "stl10-binary"})
        return CachedImages(open_cache(source, self.cache_dir, fill), labels)


def _read(x_path: Path) -> np.ndarray:
    return np.fromfile(x_path, dtype=np.uint8).reshape(-1, 3, _SIDE, _SIDE)
