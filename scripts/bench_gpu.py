"""GPU benchmark: ResNet-18 SimCLR-style (InfoNCE) on CIFAR-10-sized synthetic data, batch 512,
bf16-mixed, channels_last, with and without torch.compile: the real sslkit module fitted by a
Lightning Trainer against a plain PyTorch loop of the same model, augment, loss and optimiser.

    make bench-gpu                                   # python scripts/bench_gpu.py
    python scripts/bench_gpu.py --steps 100 --epochs 3 --out results/bench_gpu.json
    python scripts/bench_gpu.py --allow-cpu --batch 16 --steps 2 --epochs 1 --no-compile  # CPU smoke

An epoch is ``--steps`` optimiser steps; the first epoch of every variant (torch.compile, cuDNN
autotuning, allocator warm-up) is reported apart and the rest give seconds per epoch (median),
views/s and peak GPU memory (``torch.cuda.max_memory_allocated``). Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import build_data, build_module, plain_optimizer, plain_step_fn  # noqa: E402

NO_GPU = "no CUDA device; this benchmark needs a GPU (--allow-cpu runs it on the CPU, for testing)"


def overrides(batch: int, steps: int, compile_encoder: bool) -> list[str]:
    return ["data=synthetic", "data.in_chans=3", "data.image_size=32", "data.num_classes=10",
            "data.mean=[0.491,0.482,0.447]", "data.std=[0.247,0.243,0.261]",
            f"data.num_train={batch * steps}", "data.num_test=256", f"data.batch_size={batch}",
            "data.val_size=null",  # every synthetic image is pretrained on: steps x batch per epoch
            "data.num_workers=0", "encoder=resnet18", "augment=simclr", "loss=infonce",
            "trainer.precision=bf16-mixed", "model.channels_last=true",
            f"model.compile_encoder={str(compile_encoder).lower()}"]


def load_config(device: torch.device, extra: list[str]):
    from hydra import compose, initialize_config_dir

    base = ["~logger"] + (["trainer=gpu"] if device.type == "cuda" else [])
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        return compose("train", overrides=base + extra)


def peak_memory(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def lightning_epochs(cfg, device: torch.device, epochs: int) -> list[float]:
    """Seconds of each epoch of the real module fitted by a bare Lightning Trainer."""
    import lightning as L

    times: list[float] = []

    class EpochTimer(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module) -> None:
            sync(device)
            self.t0 = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            sync(device)
            times.append(time.perf_counter() - self.t0)

    dm, _ = build_data(cfg)
    module = build_module(cfg, device)
    trainer = L.Trainer(accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
                        precision=cfg.trainer.precision, max_epochs=epochs, limit_val_batches=0,
                        num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[EpochTimer()], use_distributed_sampler=False)
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.fit(module, datamodule=dm)
    return times


def plain_epochs(cfg, device: torch.device, epochs: int, steps: int) -> list[float]:
    """The same model, augment, loss and optimiser as a minimal PyTorch loop, bf16 autocast."""
    dm, _ = build_data(cfg)
    module = build_module(cfg, device)
    module.train()
    opt, sched = plain_optimizer(cfg, module, steps * epochs)
    step = plain_step_fn(module, opt, sched, cfg.model.channels_last, torch.bfloat16)
    times = []
    for _ in range(epochs):
        sync(device)
        t0 = time.perf_counter()
        for batch in dm.train_dataloader():
            step(batch["image"].to(device, non_blocking=True))
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def measure(name: str, fn, device: torch.device, views_per_epoch: int) -> dict:
    reset_memory(device)
    try:
        times = fn()
    except Exception as err:  # one variant failing (no compiler, OOM) must not end the benchmark
        return {"name": name, "error": f"{type(err).__name__}: {str(err).strip()[:300]}"}
    timed = times[1:] or times
    median = statistics.median(timed)
    peak = peak_memory(device)
    return {"name": name, "first_epoch_seconds": times[0], "epoch_seconds": timed,
            "seconds_per_epoch": median, "views_per_second": views_per_epoch / median,
            "peak_memory_gib": None if peak is None else peak / 2**30}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--steps", type=int, default=100, help="optimiser steps per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per variant; the first is warm-up")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    parser.add_argument("--allow-cpu", action="store_true", help="run on the CPU (tiny sizes, for testing)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench_gpu.json")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available() and not args.allow_cpu:
        print(NO_GPU, file=sys.stderr)
        return 2
    if min(args.batch, args.steps, args.epochs) < 1:
        parser.error("--batch, --steps and --epochs must be >= 1")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    warnings.filterwarnings("ignore", category=UserWarning, module="lightning")
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    torch.backends.cudnn.benchmark = True
    torch.set_float32_matmul_precision("high")
    from sslkit.launch.run import quiet_lightning

    quiet_lightning()
    views_per_epoch = args.steps * args.batch * 2
    rows = []
    for compiled in (False,) if args.no_compile else (False, True):
        cfg = load_config(device, overrides(args.batch, args.steps, compiled))
        tag = "torch.compile(encoder)" if compiled else "eager"
        pair = [measure(f"sslkit module + Lightning Trainer, {tag}",
                        lambda: lightning_epochs(cfg, device, args.epochs), device, views_per_epoch),
                measure(f"plain PyTorch loop, {tag}",
                        lambda: plain_epochs(cfg, device, args.epochs, args.steps), device, views_per_epoch)]
        if "views_per_second" in pair[0] and "views_per_second" in pair[1]:
            pair[0]["ratio_to_plain"] = pair[0]["views_per_second"] / pair[1]["views_per_second"]
        rows += pair
    results = {
        "created": dt.datetime.now().isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.machine()})",
        "torch": torch.__version__, "cpu_count": os.cpu_count(),
        "settings": {"model": "ResNet-18 (CIFAR stem) + 2-layer MLP projector, InfoNCE (T=0.5)",
                     "data": "synthetic 3x32x32 uint8 (CIFAR-10-sized)", "augment": "configs/augment/simclr.yaml",
                     "batch": args.batch, "views": 2, "steps_per_epoch": args.steps, "epochs": args.epochs,
                     "precision": "bf16-mixed", "channels_last": True,
                     "note": "the first epoch of each variant is warm-up (compile, autotune) and left out "
                             "of seconds_per_epoch; ratio_to_plain > 1 is faster than the plain loop"},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{results['device']}  torch {results['torch']}  batch {args.batch}  "
          f"{args.steps} steps/epoch  bf16-mixed  channels_last")
    print(f"{'variant':<50} {'s/epoch':>9} {'views/s':>10} {'peak GiB':>9} {'x plain':>8} {'1st epoch s':>12}")
    for r in rows:
        if "error" in r:
            print(f"{r['name']:<50} error: {r['error']}")
            continue
        peak = "-" if r["peak_memory_gib"] is None else f"{r['peak_memory_gib']:.2f}"
        ratio = f"{r['ratio_to_plain']:.3f}" if "ratio_to_plain" in r else "-"
        print(f"{r['name']:<50} {r['seconds_per_epoch']:>9.3f} {r['views_per_second']:>10,.0f} "
              f"{peak:>9} {ratio:>8} {r['first_epoch_seconds']:>12.2f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
