"""Export the trained encoder of a checkpoint for use outside sslkit.

    python scripts/export.py checkpoint=runs/.../checkpoints/last.ckpt [out=DIR]
    python scripts/export.py checkpoint=PATH format=hf [out=DIR] [license=ID]
                             [push=true repo_id=OWNER/NAME [private=true]]

format=files (default): encoder.safetensors, encoder.pt (plain state dict) and encoder.json (how
to build the network that loads them with strict=True) in DIR (default: export/ in the run dir).
format=hf: a model folder, config.json, model.safetensors and a README.md model card, in DIR
(default: hf/ in the run dir), loaded by ``sslkit.from_pretrained(DIR)`` (and by timm for
encoder=timm); push=true uploads it to the Hugging Face Hub (huggingface_hub and a token needed).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sslkit.launch.train_cli import fail  # noqa: E402
from sslkit.errors import UserError  # noqa: E402
from sslkit.training.checkpoint_file import checkpoint_file  # noqa: E402

KEYS = ("checkpoint", "out", "format", "license", "push", "repo_id", "private")
FORMATS = ("files", "hf")
USAGE = ("usage: python scripts/export.py checkpoint=PATH [out=DIR] [format=files|hf] "
         "[license=ID] [push=true repo_id=OWNER/NAME [private=true]]")
HF_ONLY = ("license", "push", "repo_id", "private")


def parse(argv: list[str]) -> dict[str, str]:
    if any(arg in ("-h", "--help") for arg in argv):
        print(f"{__doc__.strip()}\n\n{USAGE}")
        sys.exit(0)
    args = {}
    for arg in argv:
        key, eq, value = arg.partition("=")
        if not eq or key not in KEYS:
            fail(f"unknown argument {arg!r}; {USAGE}")
        args[key] = value
    if not args.get("checkpoint"):
        fail("checkpoint=PATH is required (a .ckpt file written by train.py)")
    fmt = args.setdefault("format", "files")
    if fmt not in FORMATS:
        fail(f"format={fmt!r}: expected one of {', '.join(FORMATS)}")
    for key in ("push", "private"):
        if args.get(key, "false").lower() not in ("true", "false"):
            fail(f"{key}={args[key]!r}: expected true or false")
    given = [k for k in HF_ONLY if k in args]
    if fmt != "hf" and given:
        fail(f"{', '.join(given)} apply to format=hf only; add format=hf")
    try:
        checkpoint_file(args["checkpoint"])  # a mistyped path, before torch loads
    except UserError as err:
        fail(str(err))
    return args


def main() -> None:
    args = parse(sys.argv[1:])
    try:
        if args["format"] == "hf":
            files = export_hf(args)
        else:
            from sslkit.training.export import export_encoder

            files = export_encoder(args["checkpoint"], args.get("out"))
    except UserError as err:
        fail(str(err))
    for what, path in files.items():
        print(f"{what:12s} {path}")


def export_hf(args: dict[str, str]) -> dict:
    from sslkit.training.hf_export import check_push, export_model_folder, push_folder

    push = args.get("push", "false").lower() == "true"
    if push:
        check_push(args.get("repo_id"))  # before anything is written
    elif "private" in args:
        fail("private goes with push=true")
    files = export_model_folder(args["checkpoint"], args.get("out"), args.get("license", "other"),
                                args.get("repo_id"))
    if push:
        files["pushed"] = push_folder(files["config"].parent, args["repo_id"],
                                      args.get("private", "false").lower() == "true")
    return files


if __name__ == "__main__":
    main()
