"""Finding and vetting checkpoints before a run resumes from one."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from sslkit.errors import CheckpointError
from sslkit.module import FORMAT_VERSION


def last_checkpoint(run_dir: Path) -> Path | None:
    path = run_dir / "checkpoints" / "last.ckpt"
    return path if path.exists() else None


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint (``weights_only``) and check it is an sslkit one we can read; refuse it
    by name otherwise."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} refused: no such file")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} refused: it is a directory, expected a .ckpt file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"checkpoint {path} refused: not a readable checkpoint (truncated or corrupt?): {reason}"
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"checkpoint {path} refused: no model state_dict in it")
    meta = ckpt.get("sslkit")
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {path} refused: not written by sslkit (no 'sslkit' entry)")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} refused: format version {version} is newer than this sslkit "
            f"reads ({FORMAT_VERSION}); upgrade sslkit"
        )
    return ckpt
