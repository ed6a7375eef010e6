"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009) from the python pickle batches."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from sslkit.data.base import ImageDataModule, TensorImages
from sslkit.errors import DataError

# the fine labels in the order of the archive's meta file (alphabetical)
CIFAR100_FINE = tuple("""
apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly
camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup
dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower
leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange
orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit
raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake spider squirrel
streetcar sunflower sweet_pepper table tank telephone television tiger tractor train trout tulip
turtle wardrobe whale willow_tree wolf woman worm""".split())


class CIFAR10(ImageDataModule):
    """Reads ``root/cifar-10-batches-py/{data_batch_1..5,test_batch}`` (the official archive's
    layout); downloads with torchvision if ``download``."""

    name = "cifar10"
    in_chans, image_size, num_classes = 3, 32, 10
    # label order of the archive's batches.meta
    class_names = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    folder = "cifar-10-batches-py"
    files = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    label_key = "labels"

    def _download(self) -> None:
        import torchvision

        cls = torchvision.datasets.CIFAR10 if self.num_classes == 10 else torchvision.datasets.CIFAR100
        cls(str(self.root), train=True, download=True)

    def load_split(self, split: str) -> TensorImages:
        folder = self.root / self.folder
        paths = [folder / f for f in self.files[split]]
        if not all(p.exists() for p in paths) and self.download:
            self._download()
        missing = [p.name for p in paths if not p.exists()]
        if missing:
            raise DataError(
                f"{self.name} not found: {folder} lacks {', '.join(missing)}; extract the official "
                f"python archive into data.root={self.root} or rerun with data.download=true"
            )
        images, labels = [], []
        for p in paths:
            batch = _load_pickle(p)
            for key in ("data", self.label_key):
                if key not in batch:
                    raise DataError(f"{p}: not a {self.name} batch (no '{key}' entry)")
            data = np.asarray(batch["data"], dtype=np.uint8)
            if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
                raise DataError(f"{p}: 'data' must be [N, 3072] uint8, got shape {data.shape}")
            images.append(data.reshape(-1, 3, 32, 32))
            labels.extend(batch[self.label_key])
        labels_t = torch.as_tensor(labels, dtype=torch.long)
        if len(labels_t) != sum(len(i) for i in images):
            raise DataError(f"{folder}: label count differs from image count")
        if labels_t.min() < 0 or labels_t.max() >= self.num_classes:
            raise DataError(f"{folder}: labels out of range 0..{self.num_classes - 1}")
        return TensorImages(torch.from_numpy(np.concatenate(images)), labels_t)


class CIFAR100(CIFAR10):
    """Reads ``root/cifar-100-python/{train,test}`` with the 100 fine labels."""

    name = "cifar100"
    num_classes = 100
    class_names = CIFAR100_FINE
    folder = "cifar-100-python"
    files = {"train": ["train"], "test": ["test"]}
    label_key = "fine_labels"


def _load_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            raw = pickle.load(fh, encoding="latin1")
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a bad file
        raise DataError(f"{path}: cannot unpickle CIFAR batch ({type(err).__name__}: {err})") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: not a CIFAR batch (expected a dict, got {type(raw).__name__})")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}
