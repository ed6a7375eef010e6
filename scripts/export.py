"""Export the trained encoder of a checkpoint for use outside sslkit.

    python scripts/export.py checkpoint=runs/.../checkpoints/last.ckpt [out=DIR]

Writes encoder.safetensors, encoder.pt (plain state dict) and encoder.json (how to build the
network that loads them with strict=True) to DIR (default: export/ in the run dir).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sslkit.launch.train_cli import fail  # noqa: E402
from sslkit.errors import UserError  # noqa: E402

KEYS = ("checkpoint", "out")


def parse(argv: list[str]) -> dict[str, str]:
    args = {}
    for arg in argv:
        key, eq, value = arg.partition("=")
        if not eq or key not in KEYS:
            fail(f"unknown argument {arg!r}; usage: python scripts/export.py checkpoint=PATH "
                 "[out=DIR]")
        args[key] = value
    if not args.get("checkpoint"):
        fail("checkpoint=PATH is required (a .ckpt file written by train.py)")
    return args


def main() -> None:
    args = parse(sys.argv[1:])
    from sslkit.training.export import export_encoder

    try:
        files = export_encoder(args["checkpoint"], args.get("out"))
    except UserError as err:
        fail(str(err))
    for what, path in files.items():
        print(f"{what:12s} {path}")


if __name__ == "__main__":
    main()
