"""Offline linear probe (and kNN) of any sslkit checkpoint.

    python scripts/linear_probe.py checkpoint=runs/.../checkpoints/last.ckpt
    python scripts/linear_probe.py checkpoint=PATH eval.final.linear_probe.epochs=100 out=probe.json

Rebuilds the model and data from the config saved in the checkpoint (``key=value`` pairs
override it, e.g. ``data.root=/data``), extracts frozen encoder features, fits the probe on the
training split, reports top-1 on the test split, prints JSON and writes it to ``out`` (default:
``linear_probe.json`` next to the checkpoint's run dir).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sslkit.cli import fail  # noqa: E402
from sslkit.errors import UserError  # noqa: E402


def main(argv: list[str]) -> None:
    from omegaconf import OmegaConf

    from sslkit.checkpoint import load_checkpoint
    from sslkit.run import build_datamodule, build_module, final_evaluation

    args = dict(a.split("=", 1) for a in argv if "=" in a)
    bad = [a for a in argv if "=" not in a]
    if bad or "checkpoint" not in args:
        fail("usage: python scripts/linear_probe.py checkpoint=PATH [out=FILE] [key=value ...]")
    path = Path(args.pop("checkpoint"))
    out = args.pop("out", None)
    ckpt = load_checkpoint(path)
    cfg = OmegaConf.create(ckpt["sslkit"]["config"])
    cfg.merge_with_dotlist([f"{k}={v}" for k, v in args.items()])
    if cfg.get("threads"):
        import torch

        torch.set_num_threads(int(cfg.threads))
    module = build_module(cfg)
    module.load_state_dict(ckpt["state_dict"])
    dm = build_datamodule(cfg)
    dm.setup("validate")
    results = {"checkpoint": str(path), "epoch": ckpt.get("epoch"), **final_evaluation(cfg, module, dm)}
    text = json.dumps(results, indent=2)
    print(text)
    target = Path(out) if out else path.resolve().parent.parent / "linear_probe.json"
    target.write_text(text + "\n")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except UserError as err:
        fail(str(err))
