"""Finding and vetting checkpoints before a run resumes from one."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from sslkit.errors import CheckpointError
from sslkit.module import FORMAT_VERSION


def last_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint of a run dir: ``checkpoints/last.ckpt`` or, if later, the
    ``hpc_ckpt_N.ckpt`` Lightning writes when SLURM signals a preemption (mid-epoch)."""
    candidates = [p for p in [run_dir / "checkpoints" / "last.ckpt", *run_dir.glob("hpc_ckpt_*.ckpt")]
                  if p.exists()]
    if len(candidates) <= 1:
        return candidates[0] if candidates else None

    def step(path: Path) -> int:
        try:
            return int(torch.load(path, map_location="cpu", weights_only=True).get("global_step", -1))
        except Exception:  # noqa: BLE001 - an unreadable candidate is simply not the newest
            return -1

    return max(candidates, key=step)


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
    # a file that is no checkpoint at all (a CSV, a text file) makes the unpickler fail with
    # IndexError or KeyError
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, OSError, ValueError,
            IndexError, KeyError) as err:
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
