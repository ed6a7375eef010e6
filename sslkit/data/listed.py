"""Image files given as a list (path, label), decoded in workers: the readers of datasets whose
split and labels come from index files (CUB-200-2011, UT-Zappos50K) rather than folders."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.transforms import v2

from sslkit.data.decode import decoder_info
from sslkit.errors import DataError


class ListedImages(Dataset):
    """Each item decoded to a ``load_size`` square uint8 tensor (shorter side resized, centre
    crop), as :class:`sslkit.data.imagefolder.FolderImages`; crops and colour run later, batched.
    ``attributes`` (``FloatTensor[N, P]`` in the list's order) is read by ``prior=attributes``."""

    def __init__(self, paths: list[Path], labels: list[int], load_size: int,
                 attributes: torch.Tensor | None = None) -> None:
        if not paths:
            raise DataError("no images listed")
        self.paths = list(paths)
        self.labels = torch.tensor(labels, dtype=torch.long)
        if attributes is not None:
            self.attributes = attributes
        # per-sample batch fields attached later (a prior, domains): {name: Tensor[N, ...]}
        self.fields: dict[str, torch.Tensor] = {}
        self.transform = v2.Compose(
            [v2.PILToTensor(), v2.Resize(load_size, antialias=True), v2.CenterCrop(load_size)]
        )
        self.load_size, self.decoder_info = load_size, decoder_info("pil")

    @property
    def files(self) -> list[Path]:
        return self.paths

    def decoded(self, i: int) -> torch.Tensor:
        """Image ``i`` decoded, resized and centre-cropped: uint8 ``[3, load_size, load_size]``."""
        path = self.paths[i]
        try:
            with Image.open(path) as img:
                return self.transform(img.convert("RGB"))
        except (OSError, UnidentifiedImageError) as err:
            raise DataError(f"{path}: unreadable image ({err})") from None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.decoded(i), "label": self.labels[i], "index": torch.tensor(i),
                **{k: v[i] for k, v in self.fields.items()}}


def read_table(path: Path, columns: int, what: str) -> list[list[str]]:
    """Whitespace-separated rows of at least ``columns`` fields (extra fields ignored)."""
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) < columns:
            raise DataError(f"{path}:{n}: expected {columns} fields ({what}), got {line!r}")
        rows.append(fields[:columns])
    return rows
