"""CUB-200-2011 (Wah et al. 2011): 11,788 bird photos, 200 species, 312 binary attributes."""

from __future__ import annotations

from pathlib import Path

import torch

from sslkit.data.base import ImageDataModule
from sslkit.data.listed import ListedImages, read_table
from sslkit.errors import DataError

URL = "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz"
MD5 = "97eceeb196236b17998738112f37df78"
NUM_ATTRIBUTES = 312
FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt",
         "attributes/image_attribute_labels.txt")


class CUB200(ImageDataModule):
    """Reads the official release ``root/CUB_200_2011/``: ``images.txt`` (id, path under
    ``images/``), ``image_class_labels.txt`` (id, class 1..200), ``train_test_split.txt`` (id,
    1 = train: 5,994 train / 5,794 test) and ``attributes/image_attribute_labels.txt`` (image id,
    attribute id 1..312, is_present, ...). Each split carries ``attributes``, ``FloatTensor[N,
    312]``: the is_present bits in attribute-id order, the weak labels of the decoupled-uniformity
    paper's CUB experiments (``prior=attributes``)."""

    name = "cub200"
    in_chans, num_classes = 3, 200
    cacheable = True

    def __init__(self, image_size: int = 224, load_size: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.image_size = image_size
        self.load_size = load_size or image_size

    def folder(self) -> Path:
        candidates = (self.root / "CUB_200_2011", self.root)
        found = next((d for d in candidates if all((d / f).exists() for f in FILES)), None)
        if found is None and self.download:
            from torchvision.datasets.utils import download_and_extract_archive

            download_and_extract_archive(URL, str(self.root), md5=MD5)
            found = next((d for d in candidates if all((d / f).exists() for f in FILES)), None)
        if found is None:
            missing = [f for f in FILES if not (candidates[0] / f).exists()]
            raise DataError(
                f"CUB-200-2011 not found: {candidates[0]} lacks {', '.join(missing)} (also looked "
                f"in {self.root}); extract {URL} into data.root={self.root} or rerun with "
                "data.download=true"
            )
        return found

    def load_split(self, split: str) -> ListedImages:
        d = self.folder()
        paths = {r[0]: r[1] for r in read_table(d / "images.txt", 2, "image id, path")}
        labels = {r[0]: int(r[1]) - 1 for r in read_table(d / "image_class_labels.txt", 2, "image id, class")}
        is_train = {r[0]: r[1] == "1" for r in read_table(d / "train_test_split.txt", 2, "image id, is_training")}
        if not paths.keys() == labels.keys() == is_train.keys():
            raise DataError(f"{d}: images.txt, image_class_labels.txt and train_test_split.txt list different image ids")
        ids = sorted((i for i in paths if is_train[i] == (split == "train")), key=int)
        if not ids:
            raise DataError(f"{d}/train_test_split.txt: no {split} images")
        bad = [labels[i] for i in ids if not 0 <= labels[i] < self.num_classes]
        if bad:
            raise DataError(f"{d}/image_class_labels.txt: class {bad[0] + 1} out of range 1..200")
        row = {i: n for n, i in enumerate(ids)}
        attributes = torch.zeros(len(ids), NUM_ATTRIBUTES)
        attr_file = d / "attributes" / "image_attribute_labels.txt"
        for image_id, attr_id, present in read_table(attr_file, 3, "image id, attribute id, is_present"):
            if image_id in row:
                a = int(attr_id)
                if not 1 <= a <= NUM_ATTRIBUTES:
                    raise DataError(f"{attr_file}: attribute id {a} out of range 1..{NUM_ATTRIBUTES}")
                attributes[row[image_id], a - 1] = float(present == "1")
        return ListedImages([d / "images" / paths[i] for i in ids], [labels[i] for i in ids],
                            self.load_size, attributes)
