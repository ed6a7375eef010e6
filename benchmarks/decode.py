"""``decode`` section: images/s per core of the ``data=imagefolder`` input path on ImageNet-sized
JPEGs (a tree from ``scripts/make_jpeg_tree.py``; ``--jpeg-root``, or 300 images generated in a
temporary folder): what a DataLoader worker does per image (decode, resize the shorter side to
``load_size`` 256, centre crop) with ``data.decoder=pil`` and ``data.decoder=torchvision``,
in this process on one thread and through a DataLoader with one worker (one core, with the
inter-process transfer); torchvision's batched list ``decode_jpeg``; and on CUDA the batched
``decode_jpeg(device="cuda")`` with the resize on the device.

Dividing the GPU's training images/s by a decoder's images/s per core gives the workers (cores)
an ImageNet run needs to keep that GPU fed.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torchvision.transforms import v2

from benchmarks.jpeg_tree import write_tree
from benchmarks.timing import Series, interleave, synchronizer, timer

RATIO_KEY = "ratio_to_pil"
LOAD_SIZE = 256
TREE, QUICK_TREE = 300, 24


def section_decode(args, device) -> dict:
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    from sslkit.data.imagefolder import FolderImages

    warnings.filterwarnings("ignore", message="The image decoding", category=DeprecationWarning)
    tmp = None
    root = getattr(args, "jpeg_root", None)
    if root is None:
        tmp = Path(tempfile.mkdtemp(prefix="sslkit-bench-jpegs-"))
        n = QUICK_TREE if args.quick else TREE
        write_tree(tmp, n, classes=4, val=0, quality=90)
        root, origin = tmp, f"{n} JPEGs written by benchmarks/jpeg_tree.py (~500x375, quality 90)"
    else:
        root, origin = Path(root), f"the tree at {root}"
    train = Path(root) / "train" if (Path(root) / "train").is_dir() else Path(root)
    datasets = {name: FolderImages(train, LOAD_SIZE, decoder=name) for name in ("pil", "torchvision")}
    paths = [p for p, _ in datasets["pil"].samples]
    n = len(paths)
    resize = v2.Compose([v2.Resize(LOAD_SIZE, antialias=True), v2.CenterCrop(LOAD_SIZE)])
    threads = torch.get_num_threads()

    def in_process(data) -> Callable[[], None]:
        def run() -> None:
            torch.set_num_threads(1)  # one core: what one worker has
            try:
                for i in range(len(data)):
                    data[i]
            finally:
                torch.set_num_threads(threads)
        return run

    def loaders(data) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(data, batch_size=32, num_workers=1,
                                           persistent_workers=True)

    def through(loader) -> Callable[[], None]:
        def run() -> None:
            for _ in loader:
                pass
        return run

    def batched_list() -> None:
        torch.set_num_threads(1)
        try:
            raw = [read_file(str(p)) for p in paths]
            torch.stack([resize(img) for img in decode_jpeg(raw, mode=ImageReadMode.RGB)])
        finally:
            torch.set_num_threads(threads)

    sync = synchronizer(device)
    variants = [
        ("pil: decode + resize, one thread (data.decoder=pil)", in_process(datasets["pil"]), "cpu"),
        ("torchvision: decode_image + resize, one thread (data.decoder=torchvision)",
         in_process(datasets["torchvision"]), "cpu"),
        ("torchvision: batched list decode_jpeg + resize, one thread", batched_list, "cpu"),
    ]
    held = []
    for name in ("pil", "torchvision"):
        loader = loaders(datasets[name])
        held.append(loader)
        variants.append((f"{name}: DataLoader, 1 worker process", through(loader), "cpu"))
    gpu_note = "no CUDA device: decode_jpeg(device='cuda') not measured"
    if device.type == "cuda":
        def on_gpu() -> None:
            raw = [read_file(str(p)) for p in paths]
            images = decode_jpeg(raw, mode=ImageReadMode.RGB, device=device)
            torch.stack([resize(img) for img in images])
        variants.append(("torchvision: decode_jpeg(device='cuda') + resize on the GPU", on_gpu, "cuda"))
        gpu_note = "the GPU row is images/s per GPU (file reading on the CPU included)"
    series = [Series(name, n, device=where, images=n) for name, _, where in variants]
    runners = [timer(fn, sync) for _, fn, _ in variants]
    try:
        for run in runners:  # warm-up: page cache, worker start, CUDA context
            run()
        interleave(series, runners, max(args.repeats, 2))
    finally:
        del held
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    rows = [series[0].record()] + [s.record(series[0], RATIO_KEY) for s in series[1:]]
    print(f"[bench] decode: {gpu_note}", flush=True)
    return {
        "title": f"JPEG input path: images/s per core, decode + resize to {LOAD_SIZE} (what a worker does)",
        "settings": {"data": origin, "images": n, "load_size": LOAD_SIZE, "device": str(device),
                     "gpu": gpu_note,
                     "note": "one thread per variant (one core); ratio_to_pil > 1 is faster than "
                             "today's Pillow path; workers to feed a GPU = its training images/s "
                             "divided by images/s per core"},
        "rows": rows,
    }


run = section_decode
