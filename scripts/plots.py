"""Draw the pictures of a trained run (the plots evaluator alone).

    python scripts/plots.py checkpoint=runs/.../checkpoints/last.ckpt [method=umap max_points=2000 ...]

Any key of configs/eval/plots.yaml can be overridden. PNGs go to plots/ in the run dir (the
folder holding checkpoints/) and the evaluator's result to eval/plots.json there.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sslkit.cli import fail  # noqa: E402
from sslkit.errors import UserError  # noqa: E402


def main() -> None:
    import hydra
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    cfg = OmegaConf.load(ROOT / "configs" / "eval" / "plots.yaml")
    args = [a for a in sys.argv[1:] if not a.startswith("checkpoint=")]
    checkpoint = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("checkpoint=")), "")
    if not checkpoint:
        fail("checkpoint=PATH is required (a .ckpt file written by train.py)")
    for arg in args:
        key = arg.split("=", 1)[0]
        if "=" not in arg or key not in cfg or key == "_target_":
            keys = ", ".join(k for k in cfg if k != "_target_")
            fail(f"unknown argument {arg!r}; give checkpoint=PATH and any of: {keys}")
    try:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(args))
        evaluator = hydra.utils.instantiate(cfg)
    except (OmegaConfBaseException, hydra.errors.InstantiationException) as err:
        fail(str(err.__cause__ or err).strip().splitlines()[0])
    from sslkit.eval.loading import context_from_checkpoint

    try:
        ctx = context_from_checkpoint(checkpoint)
    except UserError as err:
        fail(str(err))
    result = evaluator(ctx)
    out = ctx.run_dir / "eval" / "plots.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for name, rel in result["files"].items():
        print(f"{name:10s} {ctx.run_dir / rel}")
    for name, why in result["skipped"].items():
        print(f"{name:10s} skipped: {why}")


if __name__ == "__main__":
    main()
