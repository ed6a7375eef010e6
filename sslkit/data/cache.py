"""Pre-decoded image cache (``data.cache=true``): every image of a file-based split decoded and
resized once to the pipeline's load size, kept as one uint8 array file that later epochs and runs
memory-map instead of decoding the image files again (what FFCV's pre-processed files give).

A split's cache is a folder in ``data.cache_dir`` named after its slot (dataset, split, load size,
decoder and a digest of the source root): ``images.npy`` (``uint8 [N, C, S, S]``, numpy's own
format, so ``np.load(..., mmap_mode="r")`` reads it without sslkit), ``labels.npy`` and
``index.json`` (the source files with their sizes and mtimes, the decoder and its versions, and
the fingerprint of all that). A listing whose fingerprint differs (files added, removed or
changed, other labels, another decoder version) makes the cache stale: it is rebuilt, with a
one-line message saying what changed.

The build is atomic: it writes into a temporary folder beside the cache, fsyncs every file and
renames the folder last, so a killed build leaves no folder that looks complete (the next build
removes its remains). The disk space needed is stated before the build, and refused in one line
when the disk lacks it. A file lock per slot (``filelock``, a dependency of torch) lets one
process build while the others (DDP ranks, concurrent runs of a sweep) wait and then read the
same files: a lock rather than Lightning's rank-0 ``prepare_data`` because train.py sets the data
up before the process group exists, and jobs of a sweep share a cache without sharing a group.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock, Timeout
from torch.utils.data import DataLoader, Dataset

from sslkit.errors import DataError

FORMAT = 1  # bump when the folder's layout or the meaning of its files changes
# space kept free beyond the array (index, labels, file-system slack)
MARGIN_BYTES = 50_000_000
PROGRESS_SECONDS = 30.0


@dataclass
class Source:
    """What a split's cache is built from: the source files (one per image, in item order, or a
    few that hold them all), one label per image, the shape of one decoded image and the decoder
    (name and versions: a new version may decode differently)."""

    slot: str
    root: Path
    files: Sequence[Path]
    labels: torch.Tensor
    shape: tuple[int, int, int]
    decoder: dict = field(default_factory=dict)

    def listing(self) -> list[list]:
        """``[path relative to root, size, mtime_ns]`` of every file, in item order."""
        rows = []
        for path in self.files:
            try:
                st = os.stat(path)
            except OSError as err:
                raise DataError(f"{path}: cannot read the file for the data cache ({err.strerror})") from None
            rows.append([_relative(Path(path), self.root), st.st_size, st.st_mtime_ns])
        return rows


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _fingerprint(meta: dict, files: list[list], labels: list[int]) -> str:
    h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    h.update(json.dumps(files).encode())
    h.update(json.dumps(labels).encode())
    return h.hexdigest()


def human(n: float) -> str:
    """Bytes for people: 1.2 GB, 340.0 MB."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"


def slot_folder(cache_dir: Path, source: Source) -> Path:
    digest = hashlib.sha256(str(Path(source.root).resolve()).encode()).hexdigest()[:10]
    return Path(cache_dir).expanduser() / f"{source.slot}-{digest}"


def open_cache(source: Source, cache_dir: str | Path, fill: Callable, log: Callable[[str], None] = print
               ) -> Path:
    """The folder of ``source``'s cache in ``cache_dir``, built first when absent or stale.
    ``fill(array, progress)`` writes image i of the source into ``array[i]`` for every i and may
    call ``progress(done)``. One process per slot builds at a time (file lock)."""
    cache_dir = Path(cache_dir).expanduser()
    cache_dir.mkdir(parents=True, exist_ok=True)
    folder = slot_folder(cache_dir, source)
    lock = FileLock(str(folder) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log(f"data cache {folder.name}: another process is building it; waiting (lock {lock.lock_file})")
        lock.acquire()
    try:
        files = source.listing()
        labels = torch.as_tensor(source.labels).tolist()
        meta = {"format": FORMAT, "shape": [len(labels), *source.shape], "decoder": source.decoder}
        fingerprint = _fingerprint(meta, files, labels)
        stale = _stale(folder, fingerprint, meta, files, labels)
        if stale == "":
            return folder
        if stale is not None:
            log(f"data cache {folder} is stale ({stale}); rebuilding it")
            shutil.rmtree(folder)
        for leftover in cache_dir.glob(f".{folder.name}.tmp-*"):  # killed builds
            shutil.rmtree(leftover, ignore_errors=True)
        _build(folder, source, meta, files, labels, fingerprint, fill, log)
        return folder
    finally:
        lock.release()


def _stale(folder: Path, fingerprint: str, meta: dict, files: list[list], labels: list[int]) -> str | None:
    """None: no cache; "": up to date; else what changed, in a few words."""
    if not folder.exists():
        return None
    try:
        index = json.loads((folder / "index.json").read_text())
    except (OSError, ValueError):
        return "its index.json is unreadable"
    if index.get("fingerprint") == fingerprint and (folder / "images.npy").exists():
        return ""
    if index.get("format") != meta["format"]:
        return f"format {index.get('format')} -> {meta['format']}"
    old = {row[0]: row[1:] for row in index.get("files", [])}
    new = {row[0]: row[1:] for row in files}
    added, removed = len(new.keys() - old.keys()), len(old.keys() - new.keys())
    changed = sum(1 for k in new.keys() & old.keys() if new[k] != old[k])
    parts = [f"{n} file(s) {what}" for n, what in ((added, "added"), (removed, "removed"),
                                                   (changed, "changed")) if n]
    if index.get("decoder") != meta["decoder"]:
        parts.append(f"decoder {index.get('decoder')} -> {meta['decoder']}")
    if not parts and index.get("labels_digest") != _digest(labels):
        parts.append("labels changed")
    return ", ".join(parts) or "listing order changed"


def _digest(labels: list[int]) -> str:
    return hashlib.sha256(json.dumps(labels).encode()).hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _build(folder: Path, source: Source, meta: dict, files: list[list], labels: list[int],
           fingerprint: str, fill: Callable, log: Callable[[str], None]) -> None:
    shape = tuple(meta["shape"])
    need = int(np.prod(shape)) + MARGIN_BYTES
    free = shutil.disk_usage(folder.parent).free
    log(f"data cache: decoding {shape[0]:,} images once to {shape[2]}x{shape[3]} uint8 "
        f"({human(need - MARGIN_BYTES)}) into {folder} ({human(free)} free)")
    if free < need:
        raise DataError(f"data cache needs {human(need - MARGIN_BYTES)} (+{human(MARGIN_BYTES)} kept free) in "
                        f"{folder.parent} but {human(free)} is free; "
                        "free some space, set data.cache_dir to a disk with room, or data.cache=false")
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    started = time.perf_counter()
    try:
        tmp.mkdir()
        images = tmp / "images.npy"
        array = np.lib.format.open_memmap(images, mode="w+", dtype=np.uint8, shape=shape)
        _reserve(images)
        last = [started]

        def progress(done: int) -> None:
            now = time.perf_counter()
            if now - last[0] >= PROGRESS_SECONDS:
                last[0] = now
                log(f"data cache: {done:,}/{shape[0]:,} images ({done / (now - started):.0f} images/s)")

        fill(array, progress)
        array.flush()
        del array
        _fsync(images)
        np.save(tmp / "labels.npy", np.asarray(labels, dtype=np.int64))
        _fsync(tmp / "labels.npy")
        seconds = time.perf_counter() - started
        index = {**meta, "fingerprint": fingerprint, "labels_digest": _digest(labels),
                 "root": str(Path(source.root).resolve()), "slot": source.slot,
                 "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "build_seconds": round(seconds, 2),
                 "files": files}
        (tmp / "index.json").write_text(json.dumps(index) + "\n")
        _fsync(tmp / "index.json")
        _fsync(tmp)
        os.rename(tmp, folder)  # the last step: only now does a complete cache exist
        _fsync(folder.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"data cache built: {shape[0]:,} images in {seconds:.1f} s ({shape[0] / max(seconds, 1e-9):.0f} "
        f"images/s) -> {folder}")


def _reserve(path: Path) -> None:
    """Allocate the array's blocks now: a disk that fills up during the build then fails here
    with an error, not later with a SIGBUS on a write into the memory map."""
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        try:
            os.posix_fallocate(fh.fileno(), 0, size)
        except (AttributeError, OSError):  # not every file system (or OS) supports it
            pass


# -- filling a cache from a per-item reader -------------------------------------------------------
class _Decoded(Dataset):
    def __init__(self, data) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.data.decoded(i)


def fill_from(data, workers: int, batch_size: int = 64) -> Callable:
    """A ``fill`` that decodes ``data.decoded(i)`` for every item, in ``workers`` DataLoader
    processes (0: in this one), in order."""

    def fill(array: np.ndarray, progress: Callable[[int], None]) -> None:
        loader = DataLoader(_Decoded(data), batch_size=batch_size, num_workers=workers,
                            collate_fn=torch.stack)
        done = 0
        for batch in loader:
            array[done:done + len(batch)] = batch.numpy()
            done += len(batch)
            progress(done)
        if done != len(array):
            raise DataError(f"data cache: decoded {done} images of {len(array)}")

    return fill


# -- reading a cache -------------------------------------------------------------------------------
class CachedImages(Dataset):
    """A split read from its cache folder: batches are rows of the memory-mapped ``images.npy``
    (fetched a whole batch at a time, as :class:`sslkit.data.base.TensorImages`). ``attrs``: the
    source reader's attributes (``classes``, ``samples``, ``attributes``, ``domains``, ...) in
    stored-split order; ``origin`` maps positions to the stored split as everywhere."""

    def __init__(self, folder: Path, labels: torch.Tensor, attrs: dict | None = None,
                 rows: torch.Tensor | None = None, fields: dict[str, torch.Tensor] | None = None,
                 origin: torch.Tensor | None = None) -> None:
        self.__dict__.update(attrs or {})
        self.folder = Path(folder)
        self.rows = rows if rows is not None else torch.arange(len(labels))
        self.labels = torch.as_tensor(labels).long()
        self.fields = dict(fields or {})
        self.origin = origin if origin is not None else self.rows.clone()
        self._array = None

    @property
    def array(self) -> np.ndarray:
        if self._array is None:  # opened lazily, so a worker process opens its own map
            self._array = np.load(self.folder / "images.npy", mmap_mode="r")
        return self._array

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_array": None}  # never pickle the mapped array's bytes

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": torch.from_numpy(np.array(self.array[int(self.rows[i])])), "label": self.labels[i],
                "index": torch.tensor(i), **{k: v[i] for k, v in self.fields.items()}}

    def __getitems__(self, idx: list[int]) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(idx)
        images = torch.from_numpy(self.array[self.rows[index].numpy()])  # fancy indexing copies
        return {"image": images, "label": self.labels[index], "index": index,
                **{k: v[index] for k, v in self.fields.items()}}

    def subset(self, index: torch.Tensor) -> "CachedImages":
        attrs = {k: v for k, v in self.__dict__.items()
                 if k not in ("folder", "rows", "labels", "fields", "origin", "_array")}
        return CachedImages(self.folder, self.labels[index], attrs, self.rows[index],
                            {k: v[index] for k, v in self.fields.items()}, self.origin[index])

    @staticmethod
    def collate(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return batch


# the reader attributes that are machinery, not data: left out of a cached split
_MACHINERY = ("decode", "transform", "labels", "fields")


def cached_split(data, slot: str, root: Path, cache_dir: str | Path, workers: int,
                 log: Callable[[str], None] = print) -> CachedImages:
    """``data`` (a reader with ``files``, ``labels``, ``load_size``, ``decoder_info`` and
    ``decoded(i)``) read from its cache in ``cache_dir``, built first when absent or stale."""
    size = data.load_size
    source = Source(slot=f"{slot}-{size}px-{data.decoder_info['name']}", root=Path(root),
                    files=data.files, labels=data.labels, shape=(3, size, size), decoder=data.decoder_info)
    folder = open_cache(source, cache_dir, fill_from(data, workers), log)
    attrs = {k: v for k, v in vars(data).items() if k not in _MACHINERY}
    cached = CachedImages(folder, data.labels, attrs)
    if cached.array.shape != (len(data), 3, size, size):
        raise DataError(f"data cache {folder}: images.npy has shape {cached.array.shape}, expected "
                        f"{(len(data), 3, size, size)}; delete the folder to rebuild it")
    return cached
