"""The Makefile's install rule refuses a disk without room for .venv in one line, before pip."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_install_refuses_a_full_disk_before_creating_the_venv(tmp_path):
    for name in ("Makefile", "pyproject.toml", "setup.py"):
        shutil.copy(ROOT / name, tmp_path / name)
    # BIN points nowhere so that, were the check gone, pip would fail at once instead of installing
    done = subprocess.run(["make", "install", f"PYTHON={sys.executable}", "INSTALL_GIB=1000000",
                           f"BIN={tmp_path / 'no-bin'}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    said = [line for line in done.stderr.splitlines() if line.startswith("make install:")]
    assert len(said) == 1 and "GiB free" in said[0] and "1000000 GiB" in said[0], done.stderr
    assert not (tmp_path / ".venv").exists()  # nothing half-installed
