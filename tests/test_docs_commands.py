"""Every command in a code block of README.md and docs/*.md runs: each at smoke scale (the same
command, tiny data files in the real formats, one short epoch appended), or is skipped for a
stated reason. A new command in the docs is picked up by this test. README commands run in a
fresh interpreter, as a user types them; the other pages' run through the same entry points in
this process (``run_entry``), which saves the interpreter's start-up and imports per command."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.jpeg_tree import write_tree
from tests.conftest import make_cifar, make_fashion_mnist, make_stl10, run_entry

ROOT = Path(__file__).resolve().parent.parent
# pages whose commands a test of their own runs at smoke scale (with the sizes they need)
OWN_TESTS = {"evaluation.md": "tests/test_docs_evaluation.py", "pictures.md": "tests/test_docs_pictures.py",
             "priors.md": "tests/test_priors_train.py",
             "robust.md": "tests/test_robust.py, tests/test_robust_eval.py"}
DOCS = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").glob("*.md") if p.name not in OWN_TESTS)]


def documented_commands() -> list[tuple[str, str]]:
    """(file, command) for every ``python train.py``, ``python scripts/...`` or ``make`` line of a
    fenced code block (continuation lines joined, comments dropped)."""
    found = []
    for path in DOCS:
        for block in re.findall(r"```[\w-]*\n(.*?)```", path.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                cmd = re.split(r"\s+#", line)[0].strip().removeprefix("$ ").strip()
                if re.match(r"^((srun|torchrun)\s.*)?(python (train\.py|scripts/)|make\b)", cmd):
                    found.append((path.name, " ".join(cmd.split())))
    return found


def skip_reason(cmd: str) -> str | None:
    if cmd.startswith("make"):
        return "make targets create and install .venv first (make train/test/bench are the full jobs)"
    if cmd.startswith(("srun", "torchrun")) or "trainer=slurm" in cmd or "hydra/launcher=slurm" in cmd:
        return "SLURM: needs a cluster"
    recipe = re.search(r"experiment=(\w+)", cmd)
    recipe_text = (ROOT / "configs" / "experiment" / f"{recipe.group(1)}.yaml").read_text() if recipe else ""
    if "trainer=ddp" in cmd or "trainer=gpu" in cmd or re.search(r"/trainer: (gpu|ddp)", recipe_text):
        return ("needs GPUs (recipes build on stand-in files in tests/test_experiments.py; DDP on "
                "CPU with 2 processes runs in tests/test_distributed.py)")
    if " -m " in f"{cmd} ":
        return "multirun of many jobs (the sweep configs compose in tests/test_sweep.py)"
    if "scripts/sweep_report.py" in cmd or "multirun/" in cmd:
        return "needs a finished sweep directory (tests/test_sweep.py reports on one)"
    return None


COMMANDS = documented_commands()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_fashion_mnist(root)
    # 8 images per CIFAR file (40 to train): the documented ResNet-18 commands spend their time in
    # convolutions over every image (pretraining, then the probes' features)
    make_cifar(root, 10, n=8)
    make_cifar(root, 100, n=8)
    make_stl10(root)
    # docs/data.md's /tmp/jpegs: 20 training JPEGs per class, so that what the validation split
    # (half of them) leaves to pretrain on holds the smoke batch of 16
    write_tree(root / "jpegs", 40, classes=2, val=2, quality=90)
    return root


def smoke_scale(data_root: Path, run_dir: Path) -> list[str]:
    return ["threads=1", "trainer.max_epochs=1", "data.batch_size=16", "data.eval_batch_size=64",
            "monitor.knn.every_n_epochs=0", "monitor.metrics.every_n_epochs=0",
            f"data.root={data_root}", f"hydra.run.dir={run_dir}"]


def run(argv: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def checkpoint(data_root, tmp_path_factory) -> Path:
    """last.ckpt of the default job at smoke scale: what ``runs/.../checkpoints/last.ckpt`` means."""
    run_dir = tmp_path_factory.mktemp("default")
    proc = run_entry(["train.py", *smoke_scale(data_root, run_dir)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir / "checkpoints" / "last.ckpt"


def test_the_docs_have_commands():
    assert len(COMMANDS) > 10 and any(c == "python train.py" for _, c in COMMANDS)


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    """Where ``runs/...`` of the docs points: shared, so a command can use an earlier one's run."""
    return tmp_path_factory.mktemp("runs")


def smoke_argv(cmd: str, data_root: Path, runs: Path, tmp_path: Path, request) -> list[str]:
    argv = shlex.split(cmd)
    if "runs/.../" in cmd:
        ckpt = str(request.getfixturevalue("checkpoint"))
        argv = [re.sub(r"runs/\.\.\./checkpoints/last\.ckpt", ckpt, a) for a in argv]
    argv = [re.sub(r"(?<![\w/.])runs/", f"{runs}/", a) for a in argv]
    argv[0] = sys.executable
    if argv[1] in ("train.py", "scripts/evaluate.py"):  # docs/data.md's tree is in data_root
        argv = [a.replace("/tmp/jpegs", str(data_root / "jpegs")) for a in argv]
    if argv[1] == "train.py":
        own_dir = any(a.startswith("hydra.run.dir=") for a in argv)
        extra = smoke_scale(data_root, tmp_path / "run")[: -1 if own_dir else None]
        if any(a.startswith(f"data.root={data_root}/") for a in argv):  # a folder of data_root's
            extra = [a for a in extra if not a.startswith("data.root=")]
        nulled = [a.removesuffix("=null") + "." for a in argv if a.endswith("=null")]
        extra = [a for a in extra if not a.startswith(tuple(nulled))] if nulled else extra  # monitor.knn=null
        if "data.cache=true" in argv:  # not the user's ~/.cache
            extra.append(f"data.cache_dir={tmp_path / 'cache'}")
        argv += extra
    elif argv[1] == "scripts/bench.py":
        argv = [a if a != "/tmp/b.json" else str(tmp_path / "b.json") for a in argv]
        argv += ["--quick"] + ([] if "--out" in argv else ["--out", str(tmp_path / "bench.json")])
        argv += [] if "--threads" in argv else ["--threads", "1"]
        if "--jpeg-root" in argv:  # --quick writes a small tree of its own
            i = argv.index("--jpeg-root")
            argv = argv[:i] + argv[i + 2:]
    elif argv[1] == "scripts/make_jpeg_tree.py":
        argv = [str(tmp_path / Path(a).name) if a.startswith("/tmp/") else a for a in argv]
        argv += ["--n", "4", "--classes", "2", "--val", "1"]
    elif argv[1] == "scripts/bench_gpu.py":
        argv += ["--allow-cpu", "--batch", "8", "--steps", "1", "--epochs", "1", "--no-compile",
                 "--out", str(tmp_path / "g.json")]
    elif argv[1] == "scripts/bench_threads.py":
        argv += ["--quick"]
    elif argv[1] == "scripts/probe_floors.py":  # one seed of the documented floors, into the test's folder
        argv = [str(tmp_path / "floors") if prev == "--out" else "0" if prev == "--seeds" else a
                for prev, a in zip(["", *argv], argv)]
        argv += [f"data.root={data_root}", "threads=1", "data.val_size=16", "data.eval_batch_size=64",
                 "eval.metrics.num_samples=32"]
    elif argv[1] == "scripts/train_prior.py":
        argv += ["experiment=smoke", "threads=1", "prior.epochs=1", f"prior.cache_dir={tmp_path}"]
    return argv


# benchmark commands take minutes even with --quick: the default run covers each of their
# sections with tests/test_bench.py and tests/test_bench_threads.py (their fast twins), and
# `make test-all` runs every documented one
BENCHMARKS = ("scripts/bench.py", "scripts/bench_threads.py", "scripts/bench_gpu.py")


def documented(where: str, cmd: str):
    slow = any(f"python {script}" in cmd for script in BENCHMARKS)
    return pytest.param(where, cmd, id=f"{where}: {cmd}", marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("where,cmd", [documented(w, c) for w, c in COMMANDS])
def test_documented_command_runs(where, cmd, data_root, runs_dir, tmp_path, request):
    reason = skip_reason(cmd)
    if reason:
        pytest.skip(reason)
    argv = smoke_argv(cmd, data_root, runs_dir, tmp_path, request)
    proc = run(argv) if where == "README.md" else run_entry(argv[1:])
    assert proc.returncode == 0, f"{where}: {cmd}\n{proc.stderr[-3000:]}"


def documented_python() -> list[tuple[str, str]]:
    """Python blocks that call the API (``sslkit.train``/``sslkit.compose``)."""
    return [(path.name, block) for path in DOCS
            for block in re.findall(r"```python\n(.*?)```", path.read_text(), re.S)
            if "sslkit.train(" in block or "sslkit.compose(" in block]


PYTHON = documented_python()


@pytest.mark.parametrize("where,code", PYTHON, ids=[w for w, _ in PYTHON])
def test_documented_python_runs(where, code, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0, f"{where}:\n{code}\n{proc.stderr[-3000:]}"
    assert list(tmp_path.glob("runs/*/*/summary.json")), "the example wrote no run"
