"""A folder of images without labels (``data=unlabelled``): every image under ``root``, flat or in
sub-folders of any depth, pretrains; the probes read labelled folders given beside it."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms import v2

from sslkit.data.decode import decoder as get_decoder
from sslkit.data.decode import decoder_info
from sslkit.data.imagefolder import FolderImages, ImageFolder, check_seen, class_folders
from sslkit.errors import ConfigError, DataError


class UnlabelledImages(FolderImages):
    """Every image file under ``root`` (sorted by path; sub-folders are not classes), label -1;
    decoded in workers as :class:`FolderImages`."""

    def __init__(self, root: Path, load_size: int, decoder: str = "torchvision") -> None:
        if not root.is_dir():
            raise DataError(f"image folder not found: {root}")
        self.decode = get_decoder(decoder)
        self.load_size, self.decoder_info = load_size, decoder_info(decoder)
        self.classes: list[str] = []
        self.samples = [(p, -1) for p in sorted(root.rglob("*"))
                        if p.suffix.lower() in IMG_EXTENSIONS and p.is_file()]
        if not self.samples:
            raise DataError(f"{root}: no images found (extensions {', '.join(IMG_EXTENSIONS)}, in "
                            "the folder or any sub-folder)")
        self.labels = torch.full((len(self.samples),), -1, dtype=torch.long)
        self.fields: dict[str, torch.Tensor] = {}
        self.transform = v2.Compose([v2.Resize(load_size, antialias=True), v2.CenterCrop(load_size)])


class UnlabelledFolder(ImageFolder):
    """Pretrains on every image under ``root`` (no labels). The probes, the validation split and
    the online monitors need labelled images: ``probe_root`` (``<class>/<image>``: the probes
    train on it and the validation split is carved from it) and ``test_root`` (``<class>/<image>``:
    the test split), classes numbered by name over both. Without them the run pretrains only
    (``eval=[]`` and the online probe and kNN monitor off); asking for an evaluation without them
    is refused in one line before training (sslkit/training/preflight.py)."""

    name = "unlabelled"
    pretrain_labelled = False  # no best.ckpt: the online probe never sees a label
    train_split, probe_source, test_split = "images", "train", "test"

    def __init__(self, probe_root: str | None = None, test_root: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.probe_root = Path(probe_root).expanduser() if probe_root else None
        self.test_root = Path(test_root).expanduser() if test_root else None
        if self.imbalance_ratio != 1:
            raise ConfigError(f"data.imbalance_ratio={self.imbalance_ratio}: an unlabelled folder has no "
                              "classes to make long-tailed; set data.imbalance_ratio=1")
        if (self.probe_root is None) != (self.test_root is None):
            given, missing = ("probe_root", "test_root") if self.probe_root else ("test_root", "probe_root")
            raise ConfigError(f"data.{given} is set but data.{missing} is not: the probes need both a "
                              f"labelled training folder and a labelled test folder; set data.{missing}=DIR")

    @property
    def labelled(self) -> bool:
        """Whether labelled folders are given for the probes (else: pretraining only)."""
        return self.probe_root is not None

    @property
    def has_validation(self) -> bool:
        return self.labelled and super().has_validation

    def validation_index(self) -> torch.Tensor | None:
        return super().validation_index() if self.labelled else None

    def class_names(self) -> list[str]:
        if self.classes is not None:
            return list(self.classes)
        return sorted({c for d in (self.probe_root, self.test_root) if d is not None and d.is_dir()
                       for c in class_folders(d)})

    def load_split(self, split: str) -> FolderImages:
        if split == self.train_split:
            return UnlabelledImages(self.root, self.load_size, self.decoder)
        if not self.labelled:
            raise ConfigError(NO_LABELS.format(what=f"the probes' {split} split"))
        root = self.probe_root if split == self.probe_source else self.test_root
        classes = self.class_names()
        if self.expected_classes is not None and len(classes) != self.expected_classes:
            raise DataError(f"data.num_classes={self.expected_classes} but {self.probe_root} and "
                            f"{self.test_root} together have {len(classes)} class folders; set "
                            f"data.num_classes={len(classes)} (or null to count them)")
        data = FolderImages(root, self.load_size, classes, self.decoder,
                            require_classes=self.classes is not None)
        self.num_classes = len(classes)
        if split != self.probe_source:
            check_seen(data, self.split(self.probe_source), root, self.probe_root)
        return data

    def setup(self, stage: str | None = None) -> None:
        self.split("pretrain")
        if self.labelled:
            self.split(self.test_split)
            if self.has_validation:
                self.split("validation")


NO_LABELS = ("data=unlabelled has no labelled images (needed by {what}); set data.probe_root=DIR and "
             "data.test_root=DIR (labelled folders of <class>/<image>), or pretrain only: eval=[] "
             "monitor.online_probe=null monitor.knn=null")
