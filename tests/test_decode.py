"""JPEG decoding for folder datasets (sslkit/data/decode.py, ``data.decoder``) and the tree
writer scripts/make_jpeg_tree.py: both decoders read the same pixels, bad files and bad names
are refused in one line."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from sslkit.data.decode import DECODERS, decoder
from sslkit.data.imagefolder import FolderImages, ImageFolder
from sslkit.errors import ConfigError, DataError
from tests.conftest import ROOT, make_image_folder


@pytest.fixture(scope="module")
def jpeg_tree(tmp_path_factory):
    out = tmp_path_factory.mktemp("jpegs")
    proc = subprocess.run([sys.executable, "scripts/make_jpeg_tree.py", "--out", str(out), "--n", "4",
                           "--classes", "2", "--val", "1"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "wrote 6 JPEGs" in proc.stdout
    return out


def test_tree_has_imagefolder_layout_and_imagenet_sized_jpegs(jpeg_tree):
    from PIL import Image

    files = sorted((jpeg_tree / "train").rglob("*.jpg"))
    assert len(files) == 4 and len(list((jpeg_tree / "val").rglob("*.jpg"))) == 2
    assert {f.parent.name for f in files} == {"class_000", "class_001"}
    for f in files:
        with Image.open(f) as img:
            assert img.format == "JPEG" and img.mode == "RGB"
            assert 330 <= min(img.size) <= 440 and 440 <= max(img.size) <= 560


def test_decoders_read_the_same_pixels(jpeg_tree):
    path = sorted((jpeg_tree / "train").rglob("*.jpg"))[0]
    pil, tv = decoder("pil")(path), decoder("torchvision")(path)
    assert pil.dtype == tv.dtype == torch.uint8 and pil.shape == tv.shape and pil.shape[0] == 3
    # two builds of libjpeg may round the inverse DCT differently, by a level or two
    assert (pil.int() - tv.int()).abs().float().mean() < 1.0


@pytest.mark.parametrize("name", DECODERS)
def test_folder_images_with_each_decoder(jpeg_tree, name):
    data = FolderImages(jpeg_tree / "train", 64, decoder=name)
    item = data[0]
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.uint8


@pytest.mark.parametrize("name", DECODERS)
def test_png_and_unreadable_files(tmp_path, name):
    root = make_image_folder(tmp_path / "png", classes=("a", "b"), per_class=1)
    assert FolderImages(root / "train", 16, decoder=name)[0]["image"].shape == (3, 16, 16)
    bad = root / "train" / "a" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not a jpeg")
    data = FolderImages(root / "train", 16, decoder=name)
    i = [p for p, _ in data.samples].index(bad)
    with pytest.raises(DataError, match="broken.jpg: unreadable image"):
        data[i]


def test_unknown_decoder_is_refused_with_the_choices(tmp_path):
    with pytest.raises(ConfigError, match=r"data.decoder='nope'.*pil, torchvision"):
        ImageFolder(root=str(tmp_path), decoder="nope")
