"""Fashion-MNIST (Xiao et al. 2017): 60k/10k grey 28x28 images, 10 classes, IDX files."""

from __future__ import annotations

from pathlib import Path

import torch

from sslkit.data.base import ImageDataModule, TensorImages, first_existing
from sslkit.data.idx import read_idx
from sslkit.errors import DataError

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# Coarse attributes of each class for ``prior=attributes`` (the weakly supervised setting on
# the default data): a hand-made table in the spirit of UTZappos/CUB attributes, one row per
# class (0 T-shirt/top, 1 Trouser, 2 Pullover, 3 Dress, 4 Coat, 5 Sandal, 6 Shirt, 7 Sneaker,
# 8 Bag, 9 Ankle boot). Deliberately weak: it does not tell every class apart (a T-shirt and a
# dress differ by one attribute, a pullover and a shirt by one).
ATTRIBUTE_NAMES = ("upper_body", "lower_body", "footwear", "bag", "long_sleeves",
                   "front_opening", "outerwear", "covers_ankle", "open_toe")
CLASS_ATTRIBUTES = torch.tensor([
    # up low foot bag sleeve open outer ankle toe
    [1, 0, 0, 0, 0, 0, 0, 0, 0],  # T-shirt/top
    [0, 1, 0, 0, 0, 0, 0, 1, 0],  # Trouser
    [1, 0, 0, 0, 1, 0, 0, 0, 0],  # Pullover
    [1, 1, 0, 0, 0, 0, 0, 0, 0],  # Dress
    [1, 0, 0, 0, 1, 1, 1, 0, 0],  # Coat
    [0, 0, 1, 0, 0, 0, 0, 0, 1],  # Sandal
    [1, 0, 0, 0, 1, 1, 0, 0, 0],  # Shirt
    [0, 0, 1, 0, 0, 0, 0, 0, 0],  # Sneaker
    [0, 0, 0, 1, 0, 0, 0, 0, 0],  # Bag
    [0, 0, 1, 0, 0, 0, 0, 1, 0],  # Ankle boot
], dtype=torch.float32)


class FashionMNIST(ImageDataModule):
    """Reads the IDX files (``.gz`` or not) from ``root``, ``root/FashionMNIST/raw``
    (torchvision's layout), ``root/fashion-mnist``, then where Debian's
    ``dataset-fashion-mnist`` package puts them; downloads with torchvision if ``download``."""

    name = "fashion_mnist"
    in_chans, image_size, num_classes = 1, 28, 10
    # label order of the dataset's README (Xiao et al. 2017)
    class_names = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")

    def candidates(self) -> list[Path]:
        return [self.root, self.root / "FashionMNIST" / "raw", self.root / "fashion-mnist", DEBIAN_DIR]

    def find(self) -> tuple[Path | None, str]:
        for folder in self.candidates():
            for suffix in (".gz", ""):
                names = [n + suffix for pair in FILES.values() for n in pair]
                if first_existing([folder], names) is not None:
                    return folder, suffix
        return None, ""

    def load_split(self, split: str) -> TensorImages:
        folder, suffix = self.find()
        if folder is None and self.download:
            import torchvision

            torchvision.datasets.FashionMNIST(str(self.root), train=True, download=True)
            folder, suffix = self.find()
        if folder is None:
            looked = ", ".join(str(p) for p in self.candidates())
            raise DataError(
                f"Fashion-MNIST not found (looked in {looked}); install it with "
                "`apt-get install dataset-fashion-mnist` (Debian/Ubuntu) or rerun with "
                "data.download=true to fetch it with torchvision into data.root"
            )
        images_file, labels_file = (folder / (n + suffix) for n in FILES[split])
        images, labels = read_idx(images_file), read_idx(labels_file)
        if images.dim() != 3 or labels.dim() != 1 or len(images) != len(labels):
            raise DataError(
                f"{images_file}: expected [N, 28, 28] images matching {len(labels)} labels in "
                f"{labels_file}, got shape {tuple(images.shape)}"
            )
        if int(labels.max()) >= self.num_classes:
            raise DataError(f"{labels_file}: label {int(labels.max())} out of range 0..9")
        data = TensorImages(images.unsqueeze(1).contiguous(), labels)
        data.attributes = CLASS_ATTRIBUTES[data.labels]
        return data
