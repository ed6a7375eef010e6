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
