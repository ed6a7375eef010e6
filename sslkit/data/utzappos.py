"""UT-Zappos50K (Yu & Grauman 2014) as the decoupled-uniformity paper uses it: 21 shoe
subcategories as labels and 126 binary attributes as weak labels (after Tsai et al. 2022)."""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from sslkit.data.base import ImageDataModule
from sslkit.data.listed import ListedImages
from sslkit.errors import DataError

CLASSES = (
    "Ankle", "Athletic", "Boat Shoes", "Boot", "Clogs and Mules", "Crib Shoes", "Firstwalker",
    "Flat", "Flats", "Heel", "Heels", "Knee High", "Loafers", "Mid-Calf", "Over the Knee",
    "Oxfords", "Prewalker", "Prewalker Boots", "Slipper Flats", "Slipper Heels",
    "Sneakers and Athletic Shoes",
)
NUM_ATTRIBUTES = 126
DATA_URL = "https://vision.cs.utexas.edu/projects/finegrained/utzap50k/"
ATTRIBUTES_URL = ("https://github.com/Duplums/contrastive-decoupled-uniformity/blob/main/data/"
                  "utzappos/meta_data_bin_train.csv")


def cid(path: str) -> str:
    """Image id of a file name: ``100627.72.jpg`` -> ``100627-72`` (meta-data.csv's CID)."""
    return Path(path).name.removesuffix(".jpg").replace(".", "-")


class UTZappos(ImageDataModule):
    """Reads ``root/ut-zap50k-images/**.jpg``, ``root/ut-zap50k-data/meta-data.csv`` (CID,
    SubCategory: the label, one of 21) and ``attributes_file`` (the binarised attributes of the
    training images that the decoupled-uniformity code ships, ``data/utzappos/
    meta_data_bin_train.csv``: a ``path`` column and 126 ``attr_val*`` columns). Its images are
    the training split (35,017); every other image is the test split (15,008). The training split
    carries ``attributes`` (``FloatTensor[N, 126]``, the file's column order) for
    ``prior=attributes``; the test split has none (the file gives none)."""

    name = "utzappos"
    in_chans, num_classes = 3, len(CLASSES)
    class_names = CLASSES
    cacheable = True

    def __init__(self, image_size: int = 32, load_size: int | None = None,
                 attributes_file: str = "meta_data_bin_train.csv", **kwargs) -> None:
        super().__init__(**kwargs)
        self.image_size = image_size
        self.load_size = load_size or image_size
        self.attributes_file = attributes_file

    def _need(self, path: Path, what: str) -> Path:
        if not path.exists():
            raise DataError(f"UT-Zappos50K {what} not found: {path}; {self.how}")
        return path

    @property
    def how(self) -> str:
        return (f"extract ut-zap50k-images.zip and ut-zap50k-data.zip ({DATA_URL}) into "
                f"data.root={self.root} and put {ATTRIBUTES_URL} there")

    def attribute_rows(self) -> dict[str, torch.Tensor]:
        path = Path(self.attributes_file).expanduser()
        if not path.is_absolute():
            candidates = [self.root / path, self.root / "ut-zap50k-data" / path]
            path = next((p for p in candidates if p.exists()), candidates[0])
        with open(self._need(path, "attribute file"), newline="") as fh:
            reader = csv.DictReader(fh)
            cols = [c for c in reader.fieldnames or [] if "attr_val" in c]
            if "path" not in (reader.fieldnames or []) or len(cols) != NUM_ATTRIBUTES:
                raise DataError(
                    f"{path}: expected a 'path' column and {NUM_ATTRIBUTES} 'attr_val' columns, "
                    f"got {len(cols)} attribute columns"
                )
            try:
                return {cid(r["path"]): torch.tensor([float(r[c]) for c in cols]) for r in reader}
            except ValueError as err:
                raise DataError(f"{path}: non-numeric attribute ({err})") from None

    def load_split(self, split: str) -> ListedImages:
        images_dir = self._need(self.root / "ut-zap50k-images", "image folder")
        meta = self._need(self.root / "ut-zap50k-data" / "meta-data.csv", "meta-data.csv")
        with open(meta, newline="") as fh:
            reader = csv.DictReader(fh)
            if not {"CID", "SubCategory"} <= set(reader.fieldnames or []):
                raise DataError(f"{meta}: needs CID and SubCategory columns")
            sub = {r["CID"]: r["SubCategory"] for r in reader}
        attributes = self.attribute_rows()
        files = {cid(p.name): p for p in sorted(images_dir.rglob("*.jpg"))}
        missing = sorted(set(attributes) - set(files))
        if missing:
            raise DataError(f"{images_dir}: no image for {len(missing)} training ids such as {missing[0]}")
        ids = sorted(c for c in files if (c in attributes) == (split == "train"))
        if not ids:
            raise DataError(f"{images_dir}: no {split} images")
        unknown = sorted({sub.get(c) for c in ids} - set(CLASSES), key=str)
        if unknown:
            raise DataError(f"{meta}: SubCategory {unknown[0]!r} of an image is not one of the 21 classes")
        index = {c: i for i, c in enumerate(CLASSES)}
        attr = torch.stack([attributes[c] for c in ids]) if split == "train" else None
        return ListedImages([files[c] for c in ids], [index[sub[c]] for c in ids], self.load_size, attr)
