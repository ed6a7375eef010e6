"""Shared test helpers: tiny datasets written in the real on-disk formats (in a temp dir), and
float64 inputs and reference comparisons for the loss-head tests."""

from __future__ import annotations

import gzip
import pickle
import shutil
import struct
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config) -> None:
    # under pytest-xdist (make test: 2 workers on 2 cores) each worker computes on one thread, and
    # so do the processes its tests start, so that the workers do not oversubscribe the cores (on
    # a loaded machine tests/eval/test_domain.py's projector test took 76 s with torch's default
    # threads and 3 s with one)
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


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


def make_svhn(root: Path, n: int = 20, splits=("train", "test")) -> Path:
    """torchvision's SVHN files: MATLAB v5 ``X`` [32, 32, 3, N] uint8, ``y`` [N, 1] in 1..10."""
    import scipy.io

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for split in splits:
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(-1, 1)
        scipy.io.savemat(root / f"{split}_32x32.mat", {"X": x, "y": y})
    return root


def make_cub(root: Path, classes: int = 3, per_class: int = 4, size=(40, 30)) -> Path:
    """CUB_200_2011/ index files, images and attributes/image_attribute_labels.txt (312 per
    image, is_present = (image id * attribute id) % 3 == 0); every other image is a test one."""
    rng = np.random.default_rng(0)
    d = root / "CUB_200_2011"
    (d / "attributes").mkdir(parents=True, exist_ok=True)
    images, labels, split, attrs = [], [], [], []
    for c in range(classes):
        folder = f"{c + 1:03d}.Bird_{c}"
        (d / "images" / folder).mkdir(parents=True, exist_ok=True)
        for k in range(per_class):
            i = len(images) + 1
            rel = f"{folder}/Bird_{c}_{k}.jpg"
            Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(d / "images" / rel)
            images.append(f"{i} {rel}")
            labels.append(f"{i} {c + 1}")
            split.append(f"{i} {int(i % 2 == 1)}")
            # the real file's fields: image id, attribute id, is_present, certainty id, time
            attrs += [f"{i} {a} {int(i * a % 3 == 0)} 3 {rng.uniform(1, 20):.3f}" for a in range(1, 313)]
    for name, rows in (("images.txt", images), ("image_class_labels.txt", labels),
                       ("train_test_split.txt", split), ("attributes/image_attribute_labels.txt", attrs)):
        (d / name).write_text("\n".join(rows) + "\n")
    return root


UTZAPPOS_SUBCATEGORIES = ("Ankle", "Oxfords", "Sneakers and Athletic Shoes")


def make_utzappos(root: Path, per_class: int = 4, size=(34, 26)) -> Path:
    """ut-zap50k-images/<Category>/<SubCategory>/<Brand>/<CID with '.'>.jpg, ut-zap50k-data/
    meta-data.csv and meta_data_bin_train.csv (path + 126 attr_val columns) listing the even
    images (the training split); attribute k of image i is (i + k) % 2."""
    rng = np.random.default_rng(0)
    meta = ["CID,Category,SubCategory,HeelHeight,Insole,Closure,Gender,Material,ToeStyle"]
    train = ["path," + ",".join(f"attr_val_{k}" for k in range(126))]
    i = 0
    for sub in UTZAPPOS_SUBCATEGORIES:
        for _ in range(per_class):
            cid = f"{7000 + i}-{i % 7}"
            rel = Path("ut-zap50k-images") / "Shoes" / sub / "Brand" / f"{cid.replace('-', '.')}.jpg"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(root / rel)
            meta.append(f'{cid},Shoes,"{sub}",,,,Men,,')
            if i % 2 == 0:
                train.append(f"{rel}," + ",".join(str((i + k) % 2) for k in range(126)))
            i += 1
    (root / "ut-zap50k-data").mkdir(parents=True, exist_ok=True)
    (root / "ut-zap50k-data" / "meta-data.csv").write_text("\n".join(meta) + "\n")
    (root / "meta_data_bin_train.csv").write_text("\n".join(train) + "\n")
    return root


# -- loss heads ----------------------------------------------------------------------------------
F64 = torch.float64


def make_pacs(root: Path) -> Path:
    """PACS-like domain folders: ``root/DOMAIN/CLASS/*.png`` for three domains, two classes."""
    for domain in ("art", "photo", "sketch"):
        make_image_folder(root / "tmp", classes=("dog", "horse"), per_class=2, size=(10, 10))
        (root / "tmp" / "train").rename(root / domain)
        shutil.rmtree(root / "tmp")
    return root


def _imagenet_folder(root: Path) -> Path:
    classes = (ROOT / "sslkit" / "data" / "imagenet100_classes.txt").read_text().split()
    make_image_folder(root / "imagenet", classes=classes, per_class=1, size=(20, 16))
    return root / "imagenet"


def _unlabelled_folder(root: Path) -> Path:
    make_image_folder(root / "photos" / "labelled", classes=("a", "b"), per_class=4, size=(20, 16))
    for i in range(6):  # images without a class: flat and one folder down
        folder = root / "photos" / ("trip" if i % 2 else "")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((16, 20, 3), 40 * i, dtype=np.uint8)).save(folder / f"photo{i}.png")
    return root / "photos"


# data module class -> writer of tiny files in its real format under a temp dir; returns the
# data.root to use. Every dataset config's class needs one (tests/test_extending.py,
# tests/test_experiments.py say so when one is missing).
STAND_INS = {
    "FashionMNIST": lambda root: make_fashion_mnist(root / "fmnist", n_train=32, n_test=16),
    "CIFAR10": lambda root: make_cifar(root, 10, n=8),
    "CIFAR100": lambda root: make_cifar(root, 100, n=8),
    "STL10": lambda root: make_stl10(root, n=6),
    "SVHN": lambda root: make_svhn(root / "svhn", n=16),
    "ImageFolder": _imagenet_folder,
    "CUB200": lambda root: make_cub(root, classes=2, per_class=8),
    "UTZappos": lambda root: make_utzappos(root, per_class=6),
    "DomainFolder": lambda root: make_pacs(root / "pacs"),
    # photos without classes, and inside them the labelled folders the probes read
    # (data.probe_root=ROOT/labelled/train, data.test_root=ROOT/labelled/val)
    "UnlabelledFolder": _unlabelled_folder,
    "Synthetic": lambda root: root,
}


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm()


def positive_pairs(z: torch.Tensor, temperature: float):
    """Plain loops for the InfoNCE-family references: for every anchor view (i, a) and every
    other view p of the same instance, ``(exp(u_ia . u_ip / t), sum over views of the other
    instances of exp(u_ia . u_jw / t))`` with unit vectors u."""
    b, v, _ = z.shape
    u = [[unit(z[i, a]) for a in range(v)] for i in range(b)]
    for i in range(b):
        for a in range(v):
            neg = sum(torch.exp(torch.dot(u[i][a], u[j][w]) / temperature)
                      for j in range(b) for w in range(v) if j != i)
            for p in range(v):
                if p != a:
                    yield torch.exp(torch.dot(u[i][a], u[i][p]) / temperature), neg


def rand(*shape: int, seed: int = 0, scale: float = 1.5, dtype=F64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype) * scale


def rand_z(b: int = 5, v: int = 2, d: int = 4, seed: int = 0, scale: float = 1.5) -> torch.Tensor:
    return rand(b, v, d, seed=seed, scale=scale)


def orthogonal(d: int, seed: int = 0, dtype=F64) -> torch.Tensor:
    q, _ = torch.linalg.qr(rand(d, d, seed=seed, scale=1.0, dtype=dtype))
    return q


def loss_and_grad(fn, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    z = z.detach().clone().requires_grad_()
    loss = fn(z)
    (grad,) = torch.autograd.grad(loss, z)
    return loss.detach(), grad


def assert_matches(head_fn, ref_fn, z: torch.Tensor, tol: float = 1e-10) -> None:
    l1, g1 = loss_and_grad(head_fn, z)
    l2, g2 = loss_and_grad(ref_fn, z)
    assert torch.allclose(l1, l2, atol=tol, rtol=0), (l1.item(), l2.item())
    assert torch.allclose(g1, g2, atol=tol, rtol=0), (g1 - g2).abs().max().item()


def assert_reads_the_axes(head, z: torch.Tensor) -> None:
    """For heads that read the embedding axes (Barlow Twins, VICReg): instance order and signed
    permutations of the dimensions of ``z [B, V, 5]`` leave the loss unchanged; a general rotation
    changes it (why the contract's rotation clause cannot hold for them)."""
    base = head(z).loss
    perm = torch.randperm(len(z), generator=torch.Generator().manual_seed(0))
    axes = torch.tensor([3, 0, 4, 1, 2])
    signs = torch.tensor([1.0, -1.0, -1.0, 1.0, -1.0], dtype=z.dtype)
    assert torch.allclose(head(z[perm]).loss, base, atol=1e-12)
    assert torch.allclose(head(z[..., axes] * signs).loss, base, atol=1e-12)
    rot, _ = torch.linalg.qr(rand(5, 5, seed=6))
    assert not torch.allclose(head(z @ rot).loss, base, atol=1e-6)


# -- entry points in this process --------------------------------------------------------------
def run_entry(argv: Sequence[str], cwd: Path = ROOT, env: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess:
    """Run ``python ARGV`` (``train.py ...``, ``scripts/evaluate.py ...``) in this process and
    return what ``subprocess.run(..., capture_output=True, text=True)`` would: the exit code
    (``sys.exit``'s, 1 and a traceback on stderr for an uncaught exception), stdout and stderr.

    The script runs as ``__main__`` through the same code path as on the command line
    (argument parsing, one-line refusals, Hydra), without paying Python's, torch's and
    Lightning's import again (about 6 s a run on 2 cores; docs/testing.md says where the time
    goes). What a run changes in the process is put back: environment, argv, cwd, sys.path,
    torch's thread count, determinism flag and default dtype, logging, warning filters,
    Hydra's global state, a process group an in-process DDP run left open and a wandb run
    Lightning's logger left open. Tests whose subject is the process itself (signals, DDP spawns, the
    installed console scripts, README commands) keep ``subprocess``.
    """
    import contextlib
    import io
    import logging
    import os
    import runpy
    import sys
    import traceback
    import warnings

    from hydra.core.global_hydra import GlobalHydra

    argv = [str(a) for a in argv]
    script = Path(argv[0]) if Path(argv[0]).is_absolute() else Path(cwd) / argv[0]
    saved_env, saved_argv, saved_path, saved_cwd = dict(os.environ), sys.argv[:], sys.path[:], os.getcwd()
    threads, deterministic, dtype = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(), \
        torch.get_default_dtype()
    root_logger = logging.getLogger()
    handlers, level = root_logger.handlers[:], root_logger.level
    out, err, code = io.StringIO(), io.StringIO(), 0
    os.environ.update({"WANDB_MODE": "offline", "WANDB_SILENT": "true", **(env or {})})
    sys.argv = [str(script), *argv[1:]]
    sys.path.insert(0, str(script.parent))
    os.chdir(cwd)
    GlobalHydra.instance().clear()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            try:
                runpy.run_path(str(script), run_name="__main__")
            except SystemExit as exit_:
                if isinstance(exit_.code, str):
                    print(exit_.code, file=sys.stderr)
                code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            except Exception:  # noqa: BLE001 - what the interpreter would print, and its exit code
                traceback.print_exc()
                code = 1
    finally:
        GlobalHydra.instance().clear()
        wandb = sys.modules.get("wandb")
        if wandb is not None and getattr(wandb, "run", None) is not None:
            # Lightning's WandbLogger leaves its run open: the next logger would join it
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                wandb.finish()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()  # an in-process DDP run leaves its group open
        os.chdir(saved_cwd)
        sys.argv, sys.path[:] = saved_argv, saved_path
        os.environ.clear()
        os.environ.update(saved_env)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        torch.set_default_dtype(dtype)
        for handler in root_logger.handlers[:]:
            if handler not in handlers:
                root_logger.removeHandler(handler)
                handler.close()
        root_logger.setLevel(level)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


# -- trained smoke runs shared by the session ----------------------------------------------------
def train_run(run_dir: Path, *overrides: str) -> Path:
    """``python train.py OVERRIDES hydra.run.dir=RUN_DIR`` in this process (``run_entry``); a
    non-zero exit fails the calling test or fixture with the end of stderr."""
    proc = run_entry(["train.py", *overrides, f"hydra.run.dir={run_dir}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def copy_run(run_dir: Path, dest: Path) -> Path:
    """A copy of a shared run dir for a test that writes into it (evaluations, exports, plots):
    the session's run stays as trained for the other tests."""
    shutil.copytree(run_dir, dest)
    return dest


@pytest.fixture(scope="session")
def smoke_session_run(tmp_path_factory) -> Path:
    """``train.py experiment=smoke threads=1 eval=[linear,knn,metrics]`` (seed 0, 2 epochs of 8
    steps). Read-only: tests that write into a run dir take a ``copy_run`` of it."""
    return train_run(tmp_path_factory.mktemp("smoke_session"), "experiment=smoke", "threads=1",
                     "eval=[linear,knn,metrics]")


@pytest.fixture(scope="session")
def cacr_session_run(tmp_path_factory) -> Path:
    """``train.py experiment=smoke threads=1 loss=cacr monitor.recorder.every_n_epochs=1``: the
    head recorder's records at epochs 0, 1 and 2. Read-only, as ``smoke_session_run``."""
    return train_run(tmp_path_factory.mktemp("cacr_session"), "experiment=smoke", "threads=1",
                     "loss=cacr", "monitor.recorder.every_n_epochs=1")


@pytest.fixture(autouse=True)
def _torch_threads_restored():
    """A test that sets torch's thread count (to time or to match a subprocess) leaves the next
    test the count it found."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
