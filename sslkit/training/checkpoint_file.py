"""Whether a checkpoint argument names a file, checked with nothing heavier than pathlib: the
command lines call it before torch and Lightning load (about 11 s of CPU on a slow 2-core
machine), so a mistyped path is refused in a second. ``load_checkpoint`` starts with it too."""

from __future__ import annotations

from pathlib import Path

from sslkit.errors import CheckpointError


def checkpoint_file(path: str | Path) -> Path:
    """``path`` with ``~`` expanded, refused by name unless it is an existing file."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} refused: no such file")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} refused: it is a directory, expected a .ckpt file")
    return path
