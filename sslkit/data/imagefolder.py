"""Any folder of images in torchvision's ImageFolder layout: ImageNet, ImageNet-100, your own."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms import v2

from sslkit.data.base import ImageDataModule
from sslkit.data.decode import decoder as get_decoder
from sslkit.data.decode import DeviceDecoded, check_decode_device, decoder_info
from sslkit.errors import DataError


def class_folders(root: Path) -> list[str]:
    """The class folder names under ``root``, sorted."""
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    return sorted(d.name for d in root.iterdir() if d.is_dir())


class FolderImages(Dataset):
    """``root/<class>/<image>``; each item decoded in a worker to a ``load_size`` square uint8
    tensor (shorter side resized, centre-cropped); crops and colour run later, batched.
    ``classes``: the class names in label order, shared by every split of a dataset (default:
    this folder's own, sorted); folders not named there are left out, and a named class without
    a folder is refused when ``require_classes``. ``decoder``: ``pil`` or ``torchvision``
    (:mod:`sslkit.data.decode`)."""

    def __init__(self, root: Path, load_size: int, classes: list[str] | None = None,
                 decoder: str = "torchvision", require_classes: bool = True) -> None:
        self.decode = get_decoder(decoder)
        self.load_size, self.decoder_info = load_size, decoder_info(decoder)
        found = class_folders(root)
        if classes is None:
            classes = found
        elif require_classes:
            missing = sorted(set(classes) - set(found))
            if missing:
                raise DataError(f"{root}: class folders missing for {missing[:5]} ({len(missing)} in all)")
        self.classes = list(classes)
        label_of = {c: i for i, c in enumerate(self.classes)}
        self.samples: list[tuple[Path, int]] = []
        for cls in found:
            if cls not in label_of:
                continue
            for p in sorted((root / cls).rglob("*")):
                if p.suffix.lower() in IMG_EXTENSIONS:
                    self.samples.append((p, label_of[cls]))
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

    @property
    def files(self) -> list[Path]:
        return [p for p, _ in self.samples]

    def decoded(self, i: int) -> torch.Tensor:
        """Image ``i`` decoded, resized and centre-cropped: uint8 ``[3, load_size, load_size]``."""
        return self.transform(self.decode(self.samples[i][0]))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.decoded(i), "label": self.labels[i], "index": torch.tensor(i),
                **{k: v[i] for k, v in self.fields.items()}}


class ImageFolder(ImageDataModule):
    """``root/{train_dir,test_dir}/<class>/<image>``. Classes are numbered by name over the union
    of the two splits' class folders (a class missing from one split shifts no label of the
    other); a class with test images but no training image is refused in one line, since no probe
    can learn it. ``class_list`` (a text file, one folder name per line) restricts both splits to
    those classes, numbered in the list's order: ImageNet-100 is ImageNet with the 100-class list
    shipped in ``sslkit/data/imagenet100_classes.txt``."""

    name = "imagefolder"
    in_chans, num_classes = 3, 0
    cacheable = True

    def __init__(
        self,
        train_dir: str = "train",
        test_dir: str = "val",
        image_size: int = 224,
        load_size: int | None = None,
        class_list: str | None = None,
        num_classes: int | None = None,
        decoder: str = "torchvision",
        decode_device: str = "cpu",
        **kwargs,
    ) -> None:
        get_decoder(decoder)  # an unknown name is refused here, before any work
        check_decode_device(decode_device, kwargs.get("cache", False))
        super().__init__(**kwargs)
        self.decoder, self.decode_device = decoder, decode_device
        if decode_device == "cuda":  # batches are decoded in this process: workers cannot use CUDA
            self.num_workers, self.pin_memory = 0, False
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

    def reader(self, data, split: str):
        """The split's batches decoded on the GPU (``data.decode_device=cuda``), else as the base
        reads them (from the cache when ``data.cache`` is on)."""
        if self.decode_device == "cuda" and hasattr(data, "decoded"):
            return DeviceDecoded(data, "cuda")
        return super().reader(data, split)

    def class_names(self) -> list[str]:
        """Every split's class names in label order: the class list, else the union of the
        split folders' class folders, sorted by name."""
        if self.classes is not None:
            return list(self.classes)
        # a missing split folder is refused when that split is read
        return sorted({c for d in self.dirs.values() if (self.root / d).is_dir()
                       for c in class_folders(self.root / d)})

    def load_split(self, split: str) -> FolderImages:
        classes = self.class_names()
        if self.expected_classes is not None and len(classes) != self.expected_classes:
            dirs = " and ".join(f"{d}/" for d in self.dirs.values())
            raise DataError(
                f"data.num_classes={self.expected_classes} but {self.root} ({dirs} together) has "
                f"{len(classes)} class folders; set data.num_classes={len(classes)} (or null to "
                "count them)"
            )
        data = FolderImages(self.root / self.dirs[split], self.load_size, classes, self.decoder,
                            require_classes=self.classes is not None)
        self.num_classes = len(classes)
        if split != self.probe_source:
            check_seen(data, self.split(self.probe_source), self.root / self.dirs[split],
                       self.root / self.dirs[self.probe_source])
        return data


def check_seen(data: FolderImages, train, where: Path | str, train_where: Path | str) -> None:
    """Refuse, in one line, classes that ``data`` has images of and ``train`` has none of."""
    unseen = sorted(set(data.labels.tolist()) - set(torch.as_tensor(train.labels).tolist()))
    if unseen:
        names = [data.classes[i] for i in unseen]
        raise DataError(
            f"{where}: class(es) {names[:5]} ({len(names)} in all) have images here but none in "
            f"{train_where}; no probe can learn a class it never sees: remove them from this split "
            "or add training images of them"
        )
