"""``pip install .`` (not editable) gives a working package: configs shipped inside it, the
``sslkit-train`` and ``sslkit-eval`` console scripts, ``sslkit.train`` from Python, all away from the checkout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def sh(*argv, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)
    assert proc.returncode == 0, f"{argv}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh venv whose only other packages are this environment's dependencies (a .pth to
    its site-packages, so torch is not installed again), with sslkit installed from a wheel."""
    tmp = tmp_path_factory.mktemp("pkg")
    wheels = tmp / "wheels"
    sh(sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
       "-w", wheels, cwd=tmp)
    env = tmp / "venv"
    # no pip inside it (ensurepip costs ~11 s of CPU): this environment's pip installs into it
    sh(sys.executable, "-m", "venv", "--without-pip", env, cwd=tmp)
    purelib = Path(sh(env / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                      cwd=tmp).stdout.strip())
    (purelib / "shared_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    sh(sys.executable, "-m", "pip", "--python", env / "bin" / "python", "install", "--no-deps", "--no-index",
       *sorted(wheels.glob("sslkit-*.whl")), cwd=tmp)
    return env


def test_installed_package_runs_away_from_the_checkout(venv, tmp_path):
    py = venv / "bin" / "python"
    api = tmp_path / "api"
    # one interpreter for the module's location and the Python API (each start imports torch)
    where = sh(py, "-c", "import sslkit.training.config as c; print(c.__file__); print(c.config_dir()); "
               "import sslkit; s = sslkit.train(overrides=['experiment=smoke', 'trainer.max_epochs=1', "
               f"'threads=1'], run_dir='{api}'); print(s['global_step'])", cwd=tmp_path)
    module_file, configs = where.stdout.split()[:2]
    assert str(venv) in module_file and not module_file.startswith(str(ROOT))
    assert Path(configs) == Path(module_file).parent.parent / "configs"  # sslkit/configs
    assert sorted(p.name for p in (Path(configs) / "loss").glob("*.yaml")) == sorted(
        p.name for p in (ROOT / "configs" / "loss").glob("*.yaml"))
    run = tmp_path / "cli"
    sh(venv / "bin" / "sslkit-train", "experiment=smoke", "trainer.max_epochs=1", "threads=1",
       "loss=cacr", f"hydra.run.dir={run}", cwd=tmp_path)
    assert json.loads((run / "summary.json").read_text())["loss"] == "cacr"
    out = tmp_path / "knn.json"
    sh(venv / "bin" / "sslkit-eval", f"checkpoint={run / 'checkpoints' / 'last.ckpt'}", "eval=[knn]",
       "threads=1", f"out={out}", cwd=tmp_path)
    assert json.loads(out.read_text())["results"]["knn"]["top1"] == json.loads(
        (run / "eval" / "knn.json").read_text())["top1"]
    assert json.loads((api / "summary.json").read_text())["global_step"] == 8
