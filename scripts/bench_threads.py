"""Torch intra-op threads for the default model's train step: one thread, every core, and
``threads=auto`` (sslkit/runtime/threads.py: the cores other processes leave idle), side by side.

    python scripts/bench_threads.py                 # as the machine is now
    python scripts/bench_threads.py --busy 2        # with 2 CPU-bound processes running beside it
    python scripts/bench_threads.py --quick         # smoke test: tiny model and batch

Each repeat times every variant for ``--steps`` train steps (augment, forward, loss, backward,
AdamW step of the real module, default config and batch), in an order rotated every repeat so a
change of load hits all alike; ``auto`` decides afresh at each repeat. Prints images/s (median
and best over repeats), the ratio to torch's default (every core), what ``auto`` chose, and the
load average; ``--out FILE`` writes them as JSON. Run it once idle and once with ``--busy N``
(or beside a real job): ``threads=auto`` is the default because it matched torch's default idle
and beat it under load (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from sslkit.runtime import threads as sslkit_threads  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("overrides", nargs="*", help="train.py overrides (loss=cacr data.batch_size=256 ...)")
    p.add_argument("--steps", type=int, default=8, help="timed train steps per variant and repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--busy", type=int, default=0, help="CPU-bound processes to run beside it")
    p.add_argument("--precision", choices=("32-true", "bf16-mixed"), default="32-true")
    p.add_argument("--quick", action="store_true", help="smoke test: experiment=smoke, 2 steps, 1 repeat")
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    return p.parse_args(argv)


def build(overrides: list[str]):
    from sslkit.launch.api import compose
    from sslkit.training.build import build_datamodule, build_module
    from sslkit.runtime.precision import calibration_images

    cfg, _, _ = compose(["~logger", *overrides], run_dir="/tmp/bench_threads")
    module = build_module(cfg).train()
    dm = build_datamodule(cfg)  # only its image shape is read: random pixels cost what real ones do
    images = calibration_images(dm)
    gen = torch.Generator().manual_seed(1)
    batch = {"image": images, "label": torch.randint(0, dm.num_classes, (dm.batch_size,), generator=gen),
             "index": torch.arange(dm.batch_size)}
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4)
    return module, batch, opt


def train_step(module, batch, opt, bf16: bool, gen: torch.Generator) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        views = module.augment(batch["image"], generator=gen)
        _, _, z, extras, _ = module.head_inputs(batch, views, gen)
        loss = module.head(z, **extras).loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def measure(module, batch, opt, n_threads: int, steps: int, bf16: bool) -> float:
    """Images/s over ``steps`` train steps at ``n_threads`` (after one untimed step)."""
    torch.set_num_threads(n_threads)
    gen = torch.Generator().manual_seed(1)
    train_step(module, batch, opt, bf16, gen)
    started = time.perf_counter()
    for _ in range(steps):
        train_step(module, batch, opt, bf16, gen)
    return steps * batch["image"].shape[0] / (time.perf_counter() - started)


def start_busy(n: int) -> list[subprocess.Popen]:
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    time.sleep(1.0 if n else 0)
    return procs


def main(argv=None) -> dict:
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    overrides = list(args.overrides)
    steps, repeats = args.steps, args.repeats
    if args.quick:
        overrides = ["experiment=smoke", "data.batch_size=32", *overrides]
        steps, repeats = 2, 1
    module, batch, opt = build(overrides)
    all_cores = sslkit_threads.cores()
    fixed = sorted({1, all_cores})
    variants = [str(n) for n in fixed] + ["auto"]
    speeds: dict[str, list[float]] = {v: [] for v in variants}
    auto_choices, loads = [], []
    busy = start_busy(args.busy)
    try:
        for r in range(repeats):
            order = variants[r % len(variants):] + variants[: r % len(variants)]
            for name in order:
                if name == "auto":
                    choice = sslkit_threads.apply("auto")
                    auto_choices.append({"threads": choice.threads, "reason": choice.reason})
                    n = choice.threads
                else:
                    n = int(name)
                speeds[name].append(measure(module, batch, opt, n, steps, args.precision == "bf16-mixed"))
            loads.append(os.getloadavg())
    finally:
        for proc in busy:
            proc.terminate()
        for proc in busy:
            proc.wait()
    default = str(all_cores)
    rows = {}
    for name, values in speeds.items():
        med = sorted(values)[len(values) // 2]
        rows[name] = {"images_per_s_median": med, "images_per_s_best": max(values), "all": values,
                      "ratio_to_default": med / (sorted(speeds[default])[len(speeds[default]) // 2])}
    result = {
        "settings": {"overrides": overrides, "steps": steps, "repeats": repeats, "busy": args.busy,
                     "precision": args.precision, "batch": batch["image"].shape[0]},
        "machine": {"cores": all_cores, "cpu_count": os.cpu_count(), "loadavg_at_repeats": loads},
        "variants": rows,
        "auto_choices": auto_choices,
    }
    print(f"threads: train-step images/s, {batch['image'].shape[0]} images a step, {steps} steps x "
          f"{repeats} repeats, {args.busy} busy processes beside it, {args.precision}")
    print(f"{'threads':>18} {'median':>10} {'best':>10} {'vs default':>11}")
    for name, row in rows.items():
        label = f"{name}{' (torch default)' if name == default else ''}"
        print(f"{label:>18} {row['images_per_s_median']:10.1f} {row['images_per_s_best']:10.1f} "
              f"{row['ratio_to_default']:10.2f}x")
    print("auto chose: " + "; ".join(f"{c['threads']} ({c['reason']})" for c in auto_choices))
    print("load average (1, 5, 15 min) after each repeat: "
          + "; ".join(", ".join(f"{x:.1f}" for x in la) for la in loads))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
