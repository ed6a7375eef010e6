"""Tiny datasets written in the real on-disk formats, in a temp dir."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> Path:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(path, "wb") as fh:
            fh.write(payload)
    else:
        path.write_bytes(payload)
    return path


def make_fashion_mnist(root: Path, n_train: int = 64, n_test: int = 32, gz: bool = True) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    sfx = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{prefix}-images-idx3-ubyte{sfx}", rng.integers(0, 256, (n, 28, 28)), gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{sfx}", np.arange(n) % 10, gz)
    return root


def make_cifar(root: Path, classes: int = 10, n: int = 20) -> Path:
    rng = np.random.default_rng(0)
    if classes == 10:
        folder = root / "cifar-10-batches-py"
        files, key = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], b"labels"
    else:
        folder = root / "cifar-100-python"
        files, key = ["train", "test"], b"fine_labels"
    folder.mkdir(parents=True, exist_ok=True)
    for name in files:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), key: list(np.arange(n) % classes)}
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)
    return root


def make_stl10(root: Path, n: int = 6) -> Path:
    rng = np.random.default_rng(0)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test", "unlabeled"):
        rng.integers(0, 256, n * 3 * 96 * 96, dtype=np.uint8).tofile(folder / f"{split}_X.bin")
        if split != "unlabeled":
            (np.arange(n, dtype=np.uint8) % 10 + 1).tofile(folder / f"{split}_y.bin")
    return root


def make_image_folder(root: Path, classes=("cat", "dog", "eel"), per_class: int = 3, size=(40, 30)) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


@pytest.fixture
def repo_root() -> Path:
    return ROOT
