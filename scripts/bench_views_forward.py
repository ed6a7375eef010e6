"""Per-step cost of `model.views_forward=separate` (one encoder call per view, CACR's official
per-view BatchNorm) against `joint` (all views in one call), on a CACR recipe's real module.

    python scripts/bench_views_forward.py                          # cacr_cifar10, batch 128, CPU
    python scripts/bench_views_forward.py --recipe cacr_stl10 --device cuda
    python scripts/bench_views_forward.py --quick                  # smoke test

Times the module's training step (augment, encoder, head, backward, optimiser step) on
synthetic uint8 images of the recipe's data shape, the two settings interleaved (order rotated
each repeat), and prints images/s and the ratio separate / joint (> 1: separate is faster).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import module_step  # noqa: E402
from benchmarks.timing import Series, context, interleave, synchronizer, timer  # noqa: E402


def compose(recipe: str, device: torch.device, overrides: list[str]):
    from hydra import compose as hydra_compose, initialize_config_dir

    base = [f"experiment={recipe}", "~logger", "trainer=cpu" if device.type == "cpu" else "trainer=gpu",
            "trainer.precision=32-true"]
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        return hydra_compose("train", overrides=base + overrides)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="cacr_cifar10")
    parser.add_argument("--batch", type=int, default=None, help="default: the recipe's data.batch_size")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per repeat")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="batch 8, 1 repeat of 1 step")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures here (json)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.quick:
        args.batch, args.repeats, args.steps = 8, 1, 1

    import lightning as L

    from sslkit.training.build import build_module

    series, runners = [], []
    for mode in ("joint", "separate"):
        cfg = compose(args.recipe, device, [f"model.views_forward={mode}"])
        batch = args.batch or cfg.data.batch_size
        L.seed_everything(0, verbose=False)
        module = build_module(cfg).to(device).train()
        opt = torch.optim.SGD(module.parameters(), lr=1e-3)
        step = module_step(module, opt)
        gen = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (batch, cfg.data.get("in_chans", 3), cfg.augment.crop_size,
                                        cfg.augment.crop_size), dtype=torch.uint8, generator=gen).to(device)
        step(images)  # untimed: first-call allocations
        run = timer(lambda step=step, images=images: [step(images) for _ in range(args.steps)],
                    synchronizer(device))
        series.append(Series(f"views_forward={mode}", work=batch * args.steps, batch=batch))
        runners.append(run)
    interleave(series, runners, args.repeats)
    rows = [series[0].record(), series[1].record(ratio_to=series[0], ratio_name="ratio_to_joint")]
    result = {"recipe": args.recipe, "device": str(device), "context": context(), "rows": rows}
    for row in rows:
        ratio = f"  {row['ratio_to_joint']:.2f}x joint" if "ratio_to_joint" in row else ""
        print(f"{args.recipe} {row['name']:<24} batch {row['batch']:>4}: "
              f"{row['throughput_median']:8.1f} images/s (median of {row['runs']}){ratio}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
