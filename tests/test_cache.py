"""The pre-decoded image cache (``data.cache=true``, sslkit/data/cache.py) against the JPEG path:
the same images bit for bit, a stale cache rebuilt with a one-line message, a killed build that
leaves nothing that looks complete, the disk-space refusal, and 2 DDP processes (gloo) that build
it once and both read it. Real JPEG files, real readers, real DataLoaders."""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sslkit.data.cub import CUB200
from sslkit.data.domainfolder import DomainFolder
from sslkit.data.imagefolder import ImageFolder
from sslkit.data.stl10 import STL10
from sslkit.data.utzappos import UTZappos
from sslkit.errors import ConfigError, DataError
from tests.conftest import make_cub, make_stl10, make_utzappos

SIZE = 20  # load size of the tests' pipelines


def jpeg(path: Path, seed: int, size: tuple[int, int]) -> None:
    """A smooth photo-like JPEG (gradient + noise) of ``size`` (width, height)."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    colour = rng.uniform(0, 255, (2, 3)).astype(np.float32)
    img = (x / w)[..., None] * colour[0] + (y / h)[..., None] * colour[1] + rng.normal(0, 20, (h, w, 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path, quality=90)


def jpeg_tree(root: Path, classes: int = 3, per_class: int = 4, val: int = 2) -> Path:
    """root/{train,val}/class_k/*.jpg, sizes varied (portrait and landscape) so that the resize
    and the centre crop both do work."""
    n = 0
    for c in range(classes):
        for split, count in (("train", per_class), ("val", val)):
            for i in range(count):
                size = (30 + 7 * (n % 5), 26 + 5 * (n % 3)) if n % 4 else (24, 41)
                jpeg(root / split / f"class_{c}" / f"{split}_{i}.jpg", n, size)
                n += 1
    return root


def folder_dm(root: Path, cache_dir: Path | None, **kw) -> ImageFolder:
    args = dict(root=str(root), image_size=16, load_size=SIZE, val_size=2, batch_size=4, num_workers=0)
    if cache_dir is not None:
        args.update(cache=True, cache_dir=str(cache_dir))
    return ImageFolder(**{**args, **kw})


def every_image(dm, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The split's images and labels through the data module's own loader (unshuffled)."""
    batches = list(dm.loader(dm.split(split), 5, False, False))
    return torch.cat([b["image"] for b in batches]), torch.cat([b["label"] for b in batches])


def setup_quietly(dm) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        dm.setup("fit")
    return out.getvalue()


@pytest.fixture
def tree(tmp_path) -> Path:
    return jpeg_tree(tmp_path / "jpegs")


# -- the same images ------------------------------------------------------------------------------
@pytest.mark.parametrize("decoder", ["torchvision", "pil"])
def test_cache_gives_the_jpeg_paths_images_bit_for_bit(tree, tmp_path, decoder):
    plain, cached = folder_dm(tree, None, decoder=decoder), folder_dm(tree, tmp_path / "cache", decoder=decoder)
    plain.setup("fit")
    log = setup_quietly(cached)
    assert log.count("data cache: decoding") == 2 and log.count("data cache built") == 2  # train, val
    for split in ("train", "test", "pretrain", "validation", "probe"):
        x, y = every_image(plain, split)
        cx, cy = every_image(cached, split)
        assert torch.equal(cx, x) and torch.equal(cy, y), split
        assert type(cached.split(split)).__name__ == "CachedImages"
    # the files: numpy's own format, readable without sslkit, and an index of the source files
    folder = next(p for p in (tmp_path / "cache").iterdir()
                  if p.is_dir() and p.name.startswith(f"imagefolder-train-{SIZE}px-{decoder}"))
    array = np.load(folder / "images.npy", mmap_mode="r")
    assert array.dtype == np.uint8 and array.shape == (12, 3, SIZE, SIZE)
    assert torch.equal(torch.from_numpy(np.array(array)), every_image(plain, "train")[0])
    assert np.load(folder / "labels.npy").tolist() == plain.split("train").labels.tolist()
    index = json.loads((folder / "index.json").read_text())
    assert [f[0] for f in index["files"]] == [str(p.relative_to(tree)) for p, _ in plain.split("train").samples]
    assert index["decoder"]["name"] == decoder and index["shape"] == [12, 3, SIZE, SIZE]
    # a second run reads the cache: no decoding, the same images
    again = folder_dm(tree, tmp_path / "cache", decoder=decoder)
    assert setup_quietly(again) == ""
    assert torch.equal(every_image(again, "pretrain")[0], every_image(plain, "pretrain")[0])


def test_cached_split_keeps_the_readers_attributes_and_fields(tmp_path):
    """CUB (a listed reader: attributes for prior=attributes), UT-Zappos, a domain folder (the
    ``domain`` batch field) and STL-10's binary: cached and plain splits agree."""
    make_cub(tmp_path / "cub", classes=2, per_class=4)
    make_utzappos(tmp_path / "utz", per_class=4)
    make_stl10(tmp_path / "stl", n=6)
    for split_root in ("train", "val"):
        for domain in ("art", "photo"):
            for c in ("dog", "horse"):
                for i in range(2):
                    jpeg(tmp_path / "pacs" / domain / c / f"{split_root}{i}.jpg", i + len(domain), (33, 27))
    cases = [
        (CUB200, dict(root=str(tmp_path / "cub"), image_size=16, load_size=SIZE, val_size=1), "attributes"),
        (UTZappos, dict(root=str(tmp_path / "utz"), image_size=16, load_size=SIZE, val_size=1), "attributes"),
        (DomainFolder, dict(root=str(tmp_path / "pacs"), image_size=16, load_size=SIZE, val_size=1,
                            num_classes=2, test_domains=["photo"]), "domains"),
        (STL10, dict(root=str(tmp_path / "stl"), val_size=1), None),
    ]
    for cls, kw, attr in cases:
        plain, cached = cls(**kw, num_workers=0), cls(**kw, num_workers=0, cache=True, cache_dir=str(tmp_path / "c"))
        plain.setup("fit")
        setup_quietly(cached)
        for split in ("pretrain", "test", "validation"):
            x, y = every_image(plain, split)
            cx, cy = every_image(cached, split)
            assert torch.equal(cx, x) and torch.equal(cy, y), (cls.name, split)
            batch = cached.split(split).__getitems__([0, len(cached.split(split)) - 1])
            assert set(batch) == set(plain.split(split)[0]), (cls.name, split)
        if attr:
            assert torch.equal(getattr(cached.split(cached.train_split), attr),
                               getattr(plain.split(plain.train_split), attr)), cls.name


def test_cache_is_refused_for_in_memory_datasets():
    from sslkit.data.cifar import CIFAR10

    with pytest.raises(ConfigError, match="data.cache=true: cifar10 is not read from image files") as err:
        CIFAR10(cache=True)
    assert "\n" not in str(err.value)


# -- stale, short of disk, killed -----------------------------------------------------------------
def test_a_changed_listing_is_rebuilt_with_a_one_line_message(tree, tmp_path):
    setup_quietly(folder_dm(tree, tmp_path / "cache"))
    train = tree / "train"
    jpeg(train / "class_0" / "train_0.jpg", 99, (50, 40))          # changed
    (train / "class_1" / "train_3.jpg").unlink()                   # removed
    jpeg(train / "class_2" / "added.jpg", 98, (40, 40))            # added
    log = setup_quietly(cached := folder_dm(tree, tmp_path / "cache"))
    stale = [line for line in log.splitlines() if "stale" in line]
    assert len(stale) == 1 and stale[0].endswith(
        "is stale (1 file(s) added, 1 file(s) removed, 1 file(s) changed); rebuilding it")
    assert log.count("data cache built") == 1  # only train/ changed; val/ is read as it was
    plain = folder_dm(tree, None)
    plain.setup("fit")
    for split in ("train", "test"):
        assert torch.equal(every_image(cached, split)[0], every_image(plain, split)[0])
    # a changed file of the same size and listing is caught by its mtime
    path = train / "class_0" / "train_1.jpg"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert "1 file(s) changed" in setup_quietly(folder_dm(tree, tmp_path / "cache"))


def test_too_little_disk_space_is_refused_before_the_build(tree, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    dm = folder_dm(tree, tmp_path / "cache")
    out = io.StringIO()
    with redirect_stdout(out), pytest.raises(DataError) as err:
        dm.setup("fit")
    message = str(err.value)
    assert "\n" not in message and message.startswith("data cache needs 14.4 KB (+50.0 MB kept free) in ")
    assert "but 1.0 KB is free; free some space, set data.cache_dir to a disk with room, or data.cache=false" in message
    # what it needs was stated before: 12 images of 3 x 20 x 20 bytes
    assert "decoding 12 images once to 20x20 uint8 (14.4 KB)" in out.getvalue()
    assert [p for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == []


def stall_build(root: Path, cache_dir: Path, stalled) -> None:
    """The child of the kill test: a real build whose decoding stalls at image 5."""
    from sslkit.data import imagefolder

    real = imagefolder.FolderImages.decoded

    def decoded(self, i):
        if i == 5:
            stalled.set()
            time.sleep(600)
        return real(self, i)

    torch.set_num_threads(1)
    imagefolder.FolderImages.decoded = decoded
    with redirect_stdout(io.StringIO()):
        folder_dm(root, cache_dir).setup("fit")


def forked(target, *args):
    """A process forked from this one (its imports already done: a fresh interpreter would spend
    most of the test importing torch and Lightning)."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    proc = ctx.Process(target=target, args=args)  # not a daemon: a rank starts DataLoader workers
    proc.start()
    return proc


def test_a_killed_build_leaves_no_complete_cache_and_the_next_build_is_right(tree, tmp_path):
    import multiprocessing

    cache = tmp_path / "cache"
    stalled = multiprocessing.get_context("fork").Event()
    proc = forked(stall_build, tree, cache, stalled)
    try:
        assert stalled.wait(timeout=120), f"the build did not start (exit code {proc.exitcode})"
        building = [p for p in cache.iterdir() if ".tmp-" in p.name]
        assert len(building) == 1 and (building[0] / "images.npy").exists()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(timeout=60)
    assert proc.exitcode == -signal.SIGKILL
    # nothing that looks like a cache: only the temporary folder of the killed build
    assert sorted(p.name.startswith(".") for p in cache.iterdir() if not p.name.endswith(".lock")) == [True]
    cached = folder_dm(tree, cache)
    log = setup_quietly(cached)
    assert log.count("data cache built") == 2 and "stale" not in log
    assert not [p for p in cache.iterdir() if ".tmp-" in p.name]  # the remains are gone
    plain = folder_dm(tree, None)
    plain.setup("fit")
    for split in ("pretrain", "test"):
        assert torch.equal(every_image(cached, split)[0], every_image(plain, split)[0])


# -- 2 DDP processes ------------------------------------------------------------------------------
def ddp_worker(rank: int, port: int, root: Path, cache_dir: Path, out: Path) -> None:
    """One of 2 gloo ranks: set the data up at the same moment as the other rank, then read this
    rank's shard of the pretraining split through the data module's loader."""
    import traceback

    import torch.distributed as dist

    try:
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
        dm = folder_dm(root, cache_dir, num_workers=1)
        log = io.StringIO()
        dist.barrier()
        with redirect_stdout(log):
            dm.setup("fit")
        batches = list(dm.loader(dm.split("pretrain"), 2, True, True, rank, 2))
        torch.save({"log": log.getvalue(), "index": torch.cat([b["index"] for b in batches]),
                    "image": torch.cat([b["image"] for b in batches]),
                    "folder": str(dm.split("pretrain").folder)}, out / f"rank{rank}.pt")
        dist.destroy_process_group()
    except BaseException:
        (out / f"rank{rank}.err").write_text(traceback.format_exc())
        os._exit(1)
    os._exit(0)


def test_two_ddp_processes_build_once_and_both_read_the_cache(tree, tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = [forked(ddp_worker, rank, port, tree, tmp_path / "cache", tmp_path) for rank in range(2)]
    try:
        for proc in procs:
            proc.join(timeout=300)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join()
    errors = "".join(p.read_text() for p in tmp_path.glob("rank*.err"))
    assert [p.exitcode for p in procs] == [0, 0], errors
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    logs = "".join(r["log"] for r in ranks)
    # train/ and val/ each decoded once, by whichever rank took the lock first
    assert logs.count("data cache: decoding") == 2 and logs.count("data cache built") == 2, logs
    assert ranks[0]["folder"] == ranks[1]["folder"]
    plain = folder_dm(tree, None)
    plain.setup("fit")
    reference = plain.split("pretrain")
    for r in ranks:
        expected = torch.stack([reference[int(i)]["image"] for i in r["index"]])
        assert len(r["index"]) > 0 and torch.equal(r["image"], expected)
    # the two ranks read different images of the same epoch
    assert not set(ranks[0]["index"].tolist()) & set(ranks[1]["index"].tolist())
