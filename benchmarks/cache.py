"""``cache`` section: the pre-decoded image cache (``data.cache=true``, sslkit/data/cache.py)
against decoding the JPEGs, on an ImageNet-100-shaped tree (100 class folders of ~500x375
photo-like JPEGs from ``scripts/make_jpeg_tree.py``; ``--jpeg-root``, or written to a temporary
folder: 2,000 images; 24 in 4 classes, one size and one worker count with ``--quick``).

* images/s per core: what a worker does per image on the JPEG path (decode + resize + centre crop
  to the load size, ``data.decoder=torchvision``) against reading the same images from the cache
  (shuffled batches of 256 rows of the memory map), one thread each, at 64 and 112 px;
* one epoch of the data module's pretraining loader (global batch 64, shuffled) at 64 and 112 px,
  on 1 and 2 DataLoader workers: the JPEG path, the cache cold (its build, on the same workers,
  then the epoch) and warm (a later run: the listing checked against the cache, then the epoch).
  Each includes the data module's setup of the split, as a run pays it.

The JPEG files sit in the page cache after the first pass, so the JPEG rows measure decoding,
not the disk: the cache's advantage on a cold disk is larger, not smaller.
"""

from __future__ import annotations

import io
import shutil
import tempfile
import warnings
from contextlib import redirect_stdout
from pathlib import Path

import torch

from benchmarks.jpeg_tree import write_tree
from benchmarks.timing import Series, interleave, synchronizer, timer

RATIO_KEY = "ratio_to_jpeg"
SIZES = (64, 112)
WORKERS = (1, 2)
TREE, QUICK_TREE, CLASSES, QUICK_CLASSES = 2000, 24, 100, 4
BATCH = 64


def datamodule(root: Path, size: int, workers: int, cache_dir: Path | None):
    from sslkit.data.imagefolder import ImageFolder

    kw = dict(cache=True, cache_dir=str(cache_dir)) if cache_dir is not None else {}
    return ImageFolder(root=str(root), image_size=size, load_size=size, val_size=None, batch_size=BATCH,
                       num_workers=workers, decoder="torchvision", **kw)


def epoch(root: Path, size: int, workers: int, cache_dir: Path | None) -> None:
    """What a run pays for its first epoch: the split set up (listing; the cache checked or
    built), then one pass of the shuffled pretraining loader."""
    dm = datamodule(root, size, workers, cache_dir)
    with redirect_stdout(io.StringIO()):  # the cache's build lines
        data = dm.split("pretrain")
    for _ in dm.loader(data, BATCH, True, True):
        pass


def section_cache(args, device) -> dict:
    warnings.filterwarnings("ignore", message="The image decoding", category=DeprecationWarning)
    tmp = Path(tempfile.mkdtemp(prefix="sslkit-bench-cache-"))
    root = getattr(args, "jpeg_root", None)
    if root is None:
        n, classes = (QUICK_TREE, QUICK_CLASSES) if args.quick else (TREE, CLASSES)
        root = tmp / "jpegs"
        write_tree(root, n, classes=classes, val=0, quality=90)
        origin = f"{n} JPEGs in {classes} class folders written by benchmarks/jpeg_tree.py (~500x375, quality 90)"
    else:
        root, origin = Path(root), f"the tree at {root}"
    sync = synchronizer(torch.device("cpu"))
    threads = torch.get_num_threads()
    # --quick (the test of this section): one size, one worker count
    sizes, worker_counts = (SIZES[:1], WORKERS[:1]) if args.quick else (SIZES, WORKERS)
    rows: list[dict] = []
    try:
        images = len(datamodule(root, SIZES[0], 0, None).split("train"))
        # -- images/s per core -------------------------------------------------------------------
        for size in sizes:
            plain = datamodule(root, size, 0, None).split("train")
            cached_dm = datamodule(root, size, 0, tmp / "percore")
            with redirect_stdout(io.StringIO()):
                cached = cached_dm.split("train")
            order = torch.randperm(len(cached), generator=torch.Generator().manual_seed(0)).tolist()

            def decode_all(data=plain) -> None:
                for i in range(len(data)):
                    data.decoded(i)

            def read_all(data=cached) -> None:
                for start in range(0, len(order), 256):
                    data.__getitems__(order[start:start + 256])

            series = [Series(f"{size} px: decode JPEG + resize, one thread (the JPEG path's worker)", images,
                             size=size, kind="per core"),
                      Series(f"{size} px: read the cache, one thread", images, size=size, kind="per core")]
            torch.set_num_threads(1)
            try:
                runners = [timer(decode_all, sync), timer(read_all, sync)]
                for run in runners:
                    run()  # warm-up: page cache, the memory map
                interleave(series, runners, max(args.repeats, 2))
            finally:
                torch.set_num_threads(threads)
            rows += [series[0].record(), series[1].record(series[0], RATIO_KEY)]
        # -- one epoch through the data module ------------------------------------------------------
        for size in sizes:
            for workers in worker_counts:
                warm_dir, cold_dir = tmp / f"warm{size}-{workers}", tmp / f"cold{size}-{workers}"
                epoch(root, size, workers, warm_dir)  # builds the warm variant's cache

                def cold(size=size, workers=workers, cold_dir=cold_dir) -> None:
                    shutil.rmtree(cold_dir, ignore_errors=True)
                    epoch(root, size, workers, cold_dir)

                variants = [
                    ("JPEG path", lambda size=size, workers=workers: epoch(root, size, workers, None)),
                    ("cache cold (build + epoch)", cold),
                    ("cache warm (a later run)",
                     lambda size=size, workers=workers, d=warm_dir: epoch(root, size, workers, d)),
                ]
                series = [Series(f"{size} px, {workers} worker{'s' if workers > 1 else ''}: {name}", images,
                                 size=size, workers=workers, kind="epoch") for name, _ in variants]
                interleave(series, [timer(fn, sync) for _, fn in variants], args.repeats)
                rows += [series[0].record()] + [s.record(series[0], RATIO_KEY) for s in series[1:]]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "title": "Pre-decoded image cache (data.cache=true) against decoding the JPEGs",
        "settings": {"data": origin, "images": images, "sizes": list(sizes), "workers": list(worker_counts),
                     "batch": BATCH, "decoder": "torchvision",
                     "note": "per core: one thread each; epoch: data module setup + one shuffled pass of "
                             "the pretraining loader; ratio_to_jpeg > 1 is faster than the JPEG path"},
        "rows": rows,
    }


run = section_cache
