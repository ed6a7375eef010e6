"""Any folder of images in torchvision's ImageFolder layout: ImageNet, ImageNet-100, your own."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms import v2

from sslkit.data.base import ImageDataModule
from sslkit.data.decode import decoder as get_decoder
from sslkit.errors import DataError


class FolderImages(Dataset):
    """``root/<class>/<image>``; each item decoded in a worker to a ``load_size`` square uint8
    tensor (shorter side resized, centre-cropped); crops and colour run later, batched.
    ``decoder``: ``pil`` or ``torchvision`` (:mod:`sslkit.data.decode`)."""

    def __init__(self, root: Path, load_size: int, classes: list[str] | None = None,
                 decoder: str = "torchvision") -> None:
        self.decode = get_decoder(decoder)
        if not root.is_dir():
            raise DataError(f"image folder not found: {root}")
        found = sorted(d.name for d in root.iterdir() if d.is_dir())
        if classes is not None:
            missing = sorted(set(classes) - set(found))
            if missing:
                raise DataError(f"{root}: class folders missing for {missing[:5]} ({len(missing)} in all)")
            found = list(classes)
        self.classes = found
        self.samples: list[tuple[Path, int]] = []
        for label, cls in enumerate(found):
            for p in sorted((root / cls).rglob("*")):
                if p.suffix.lower() in IMG_EXTENSIONS:
                    self.samples.append((p, label))
        if not self.samples:
            raise DataError(
                f"{root}: no images found (expected {root}/<class>/<image> with extensions "
                f"{', '.join(IMG_EXTENSIONS)})"
            )
        self.labels = torch.tensor([s[1] for s in self.samples], dtype=torch.long)
        self.fields: dict[str, torch.Tensor] = {}
        self.transform = v2.Compose([v2.Resize(load_size, antialias=True), v2.CenterCrop(load_size)])

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        path, label = self.samples[i]
        image = self.transform(self.decode(path))
        return {"image": image, "label": torch.tensor(label), "index": torch.tensor(i),
                **{k: v[i] for k, v in self.fields.items()}}


class ImageFolder(ImageDataModule):
    """``root/{train_dir,test_dir}/<class>/<image>``. ``class_list`` (a text file, one folder
    name per line) restricts both splits to those classes: ImageNet-100 is ImageNet with the
    100-class list shipped in ``sslkit/data/imagenet100_classes.txt``."""

    name = "imagefolder"
    in_chans, num_classes = 3, 0

    def __init__(
        self,
        train_dir: str = "train",
        test_dir: str = "val",
        image_size: int = 224,
        load_size: int | None = None,
        class_list: str | None = None,
        num_classes: int | None = None,
        decoder: str = "torchvision",
        **kwargs,
    ) -> None:
        get_decoder(decoder)  # an unknown name is refused here, before any work
        super().__init__(**kwargs)
        self.decoder = decoder
        self.expected_classes = num_classes
        self.dirs = {"train": train_dir, "test": test_dir}
        self.image_size = image_size
        self.load_size = load_size or image_size
        self.classes = None
        if class_list:
            path = Path(class_list).expanduser()
            if not path.exists() and (Path(__file__).parent / class_list).exists():
                path = Path(__file__).parent / class_list
            if not path.exists():
                raise DataError(f"class list not found: {path}")
            self.classes = path.read_text().split()
            if not self.classes:
                raise DataError(f"{path}: class list is empty")

    def load_split(self, split: str) -> FolderImages:
        data = FolderImages(self.root / self.dirs[split], self.load_size, self.classes, self.decoder)
        if self.expected_classes is not None and len(data.classes) != self.expected_classes:
            raise DataError(
                f"data.num_classes={self.expected_classes} but {self.root / self.dirs[split]} has "
                f"{len(data.classes)} class folders; set data.num_classes={len(data.classes)} "
                "(or null to count them)"
            )
        self.num_classes = len(data.classes)
        return data
