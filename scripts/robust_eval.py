"""Robust evaluation (SLF / ALF / AFF under PGD, FGSM, AutoAttack) of any sslkit checkpoint.

    python scripts/robust_eval.py checkpoint=runs/.../checkpoints/last.ckpt
    python scripts/robust_eval.py checkpoint=PATH eval.robust.modes=[slf] eval.robust.test_size=500

Rebuilds the model and data from the config saved in the checkpoint (``key=value`` pairs
override it, e.g. ``data.root=/data``; ``eval.robust.*`` overrides configs/eval/robust.yaml),
runs the ``robust`` evaluator on ``device`` (default: the GPU if there is one) and writes its
result to ``eval/robust.json`` of the checkpoint's run dir (or to ``out=FILE``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sslkit.cli import fail  # noqa: E402
from sslkit.errors import UserError  # noqa: E402


def main(argv: list[str]) -> dict:
    import torch
    import yaml
    from omegaconf import OmegaConf

    from sslkit.eval.context import EvalContext
    from sslkit.eval.loading import load_for_evaluation, run_dir_of
    from sslkit.run import instantiate

    args = dict(a.split("=", 1) for a in argv if "=" in a)
    bad = [a for a in argv if "=" not in a]
    if bad or "checkpoint" not in args:
        fail("usage: python scripts/robust_eval.py checkpoint=PATH [out=FILE] [device=cpu|cuda] "
             "[eval.robust.KEY=VALUE ...] [key=value ...]")
    path = Path(args.pop("checkpoint"))
    out = args.pop("out", None)
    device = args.pop("device", "cuda" if torch.cuda.is_available() else "cpu")
    prefix = "eval.robust."
    robust_cfg = OmegaConf.load(ROOT / "configs" / "eval" / "robust.yaml")
    try:
        robust_cfg.merge_with_dotlist(
            [f"{k[len(prefix):]}={v}" for k, v in args.items() if k.startswith(prefix)])
    except Exception as err:  # noqa: BLE001 - a malformed override is the user's to fix
        raise UserError(f"bad override: {str(err).splitlines()[0]}") from None
    evaluator = instantiate(robust_cfg, "eval.robust")  # bad settings fail before any work
    # the run's own settings (threads, data.root, ...) as typed values, like a command-line override
    overrides = {k: yaml.safe_load(v) for k, v in args.items() if not k.startswith(prefix)}
    cfg, module, dm, ckpt = load_for_evaluation(path, overrides)
    from sslkit.threads import apply as apply_threads

    apply_threads(cfg.get("threads"))  # an int, null (torch's default) or auto
    module.to(device).eval()
    run_dir = run_dir_of(path)
    ctx = EvalContext(module=module, datamodule=dm, run_dir=run_dir, seed=int(cfg.get("seed") or 0))
    results = evaluator(ctx)
    results["settings"].update(checkpoint=str(path), epoch=ckpt.get("epoch"))
    text = json.dumps(results, indent=2)
    print(text)
    target = Path(out) if out else run_dir / "eval" / "robust.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text + "\n")
    return results


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except UserError as err:
        fail(str(err))
