"""Image file decoders for folder datasets: ``pil`` (Pillow) or ``torchvision``
(``torchvision.io.decode_image``, libjpeg-turbo straight into a uint8 tensor).

Both return an RGB ``uint8`` tensor ``[3, H, W]``. The torchvision decoder was measured 1.3-1.8x
the images/s of Pillow per core on ImageNet-sized JPEGs, decode + resize to 256 (docs/benchmarks.md,
``decode`` section); files it cannot read (rare formats, odd colour spaces) go through Pillow.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.io import ImageReadMode, decode_image, read_file

from sslkit.errors import ConfigError, DataError

# torchvision 0.29 deprecates its image decoders for TorchCodec, which the pinned torch does not
# ship; they were measured faster than Pillow here, and a warning per decoded image says nothing
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)


def decode_pil(path: Path) -> torch.Tensor:
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    except (OSError, UnidentifiedImageError) as err:
        raise DataError(f"{path}: unreadable image ({err})") from None
    return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1)


def decode_torchvision(path: Path) -> torch.Tensor:
    try:
        return decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
    except RuntimeError:
        return decode_pil(path)


DECODERS: dict[str, Callable[[Path], torch.Tensor]] = {"pil": decode_pil, "torchvision": decode_torchvision}


def decoder(name: str) -> Callable[[Path], torch.Tensor]:
    """The decoder called ``name`` (``pil`` or ``torchvision``); another name is refused."""
    if name not in DECODERS:
        raise ConfigError(f"data.decoder={name!r} is not a decoder; choose one of {', '.join(DECODERS)}")
    return DECODERS[name]


def decoder_info(name: str) -> dict:
    """What decides a decoded and resized image's bytes: the decoder and the library versions
    (Pillow decodes what torchvision cannot; torchvision resizes). Part of a data cache's key."""
    import PIL
    import torchvision

    return {"name": name, "torchvision": torchvision.__version__, "pillow": PIL.__version__}


DEVICES = ("cpu", "cuda")


def check_decode_device(device: str, cache: bool) -> None:
    """Refuse, in one line, a decode device that is not ``cpu``/``cuda``, ``cuda`` on a machine
    without one, or ``cuda`` beside a cache (whose images are decoded once already)."""
    if device not in DEVICES:
        raise ConfigError(f"data.decode_device={device!r}; choose one of {', '.join(DEVICES)}")
    if device == "cuda" and cache:
        raise ConfigError("data.decode_device=cuda decodes the JPEGs of runs without a cache; with "
                          "data.cache=true they are decoded once already: set data.decode_device=cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("data.decode_device=cuda: no CUDA device here; decode on the CPU "
                          "(data.decode_device=cpu) or decode once into a cache (data.cache=true)")


class DeviceDecoded(torch.utils.data.Dataset):
    """A per-item reader of image files (:class:`sslkit.data.imagefolder.FolderImages`) whose
    batches are decoded on the GPU: the files are read in this process, decoded together by
    ``torchvision.io.decode_jpeg(device="cuda")`` (nvJPEG), resized and centre-cropped there by the
    reader's own transform; batches arrive on the device as uint8 ``[B, 3, S, S]``. Files that are
    not JPEGs (or that nvJPEG refuses) are decoded on the CPU, one by one. nvJPEG and libjpeg-turbo
    may differ by a level or two in some pixels. ``rows``: the reader's items this view holds;
    ``device="cpu"`` runs the same batched path with libjpeg-turbo (its test without a GPU)."""

    def __init__(self, data, device: str = "cuda", rows: torch.Tensor | None = None,
                 fields: dict | None = None, origin: torch.Tensor | None = None) -> None:
        self.__dict__.update({k: v for k, v in vars(data).items() if k not in ("labels", "fields")})
        self.data, self.device = data, device
        self.rows = rows if rows is not None else torch.arange(len(data))
        self.labels = data.labels[self.rows]
        self.fields = dict(fields if fields is not None else data.fields)
        self.origin = origin if origin is not None else self.rows.clone()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        batch = self.__getitems__([i])
        return {k: v[0] for k, v in batch.items()}

    def __getitems__(self, idx: list[int]) -> dict[str, torch.Tensor]:
        from torchvision.io import decode_jpeg

        index = torch.as_tensor(idx)
        paths = [self.data.samples[int(r)][0] for r in self.rows[index]]
        raw = [read_file(str(p)) for p in paths]
        jpeg = [i for i, r in enumerate(raw) if len(r) > 2 and int(r[0]) == 0xFF and int(r[1]) == 0xD8]
        images: list[torch.Tensor | None] = [None] * len(raw)
        if jpeg:
            try:
                decoded = decode_jpeg([raw[i] for i in jpeg], mode=ImageReadMode.RGB, device=self.device)
                for i, img in zip(jpeg, decoded):
                    images[i] = img
            except RuntimeError:  # a file nvJPEG cannot read (CMYK, progressive on old drivers)
                pass
        for i, img in enumerate(images):
            if img is None:
                images[i] = self.data.decode(paths[i]).to(self.device)
        out = torch.stack([self.data.transform(img) for img in images])
        return {"image": out, "label": self.labels[index], "index": index,
                **{k: v[index] for k, v in self.fields.items()}}

    def subset(self, index: torch.Tensor) -> "DeviceDecoded":
        return DeviceDecoded(self.data, self.device, self.rows[index],
                             {k: v[index] for k, v in self.fields.items()}, self.origin[index])

    @staticmethod
    def collate(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return batch
