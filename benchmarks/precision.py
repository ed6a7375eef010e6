"""``precision`` section: images/s of the real module's training step (``training_step``,
backward, optimiser step) in fp32 (NCHW), fp32 channels_last (the default config), bf16 autocast,
the encoder in micro-batches (``model.micro_batch``), torch.compile of the encoder, and the
other torch thread count."""

from __future__ import annotations

import os
import time

import torch

from benchmarks.common import BATCH, build_data, build_module, load_config, module_step, plain_optimizer
from benchmarks.timing import Series, interleave, synchronizer

RATIO_KEY = "ratio_to_fp32"


def section_precision(args, device) -> dict:
    cfg = load_config(device)
    dm, data_desc = build_data(cfg)
    images = dm.split("pretrain").images[:BATCH].to(device)
    sync = synchronizer(device)
    bf16_ok = device.type == "cuda" and torch.cuda.is_bf16_supported() or device.type == "cpu"
    iters = max(1, args.iters // 2)

    def make(channels_last: bool, autocast_dtype=None, compile_encoder: bool = False,
             threads: int | None = None, micro_batch: int | None = None):
        state: dict = {}
        default_threads = torch.get_num_threads()

        def setup() -> None:
            module = build_module(cfg, device)
            if not channels_last:
                module.channels_last = False
                module.to(memory_format=torch.contiguous_format)
            if compile_encoder:
                module.online.encoder.compile()  # what model.compile_encoder=true does
            module.micro_batch = micro_batch  # what model.micro_batch=N does
            module.train()
            opt, sched = plain_optimizer(cfg, module, 10**6)
            state["step"] = module_step(module, opt, sched, autocast_dtype)
            sync()
            t0 = time.perf_counter()
            for _ in range(2):  # compile (if any) and warm-up
                state["step"](images)
            sync()
            state["warmup_seconds"] = time.perf_counter() - t0

        def run() -> list[float]:
            torch.set_num_threads(threads or default_threads)
            try:
                if "step" not in state:
                    setup()
                times = []
                for _ in range(iters):
                    sync()
                    t0 = time.perf_counter()
                    state["step"](images)
                    sync()
                    times.append(time.perf_counter() - t0)
                return times
            finally:
                torch.set_num_threads(default_threads)

        return run, state

    work = BATCH  # per step: every step is one measurement
    threads = torch.get_num_threads()
    other_threads = 1 if threads > 1 else (os.cpu_count() or 1)
    specs = [
        ("fp32, NCHW", dict(channels_last=False)),
        ("fp32, channels_last (default config)", dict(channels_last=True)),
        ("bf16 autocast, channels_last", dict(channels_last=True, autocast_dtype=torch.bfloat16)),
        ("bf16 autocast, NCHW", dict(channels_last=False, autocast_dtype=torch.bfloat16)),
        (f"bf16 autocast, channels_last, model.micro_batch={BATCH} (one encoder call per view)",
         dict(channels_last=True, autocast_dtype=torch.bfloat16, micro_batch=BATCH)),
        (f"bf16 autocast, channels_last, model.micro_batch={BATCH // 2}",
         dict(channels_last=True, autocast_dtype=torch.bfloat16, micro_batch=BATCH // 2)),
        (f"fp32, channels_last, model.micro_batch={BATCH} (one encoder call per view)",
         dict(channels_last=True, micro_batch=BATCH)),
        ("torch.compile(encoder), fp32, channels_last", dict(channels_last=True, compile_encoder=True)),
        ("torch.compile(encoder), fp32, NCHW", dict(channels_last=False, compile_encoder=True)),
    ]
    if other_threads != threads:
        specs.append((f"fp32, channels_last, torch threads {other_threads} (others: {threads})",
                      dict(channels_last=True, threads=other_threads)))
    series, runners, states = [], [], []
    for name, spec in specs:
        if spec.get("autocast_dtype") is torch.bfloat16 and not bf16_ok:
            continue
        run, state = make(**spec)
        series.append(Series(name, work))
        runners.append(run)
        states.append(state)
    interleave(series, runners, args.repeats)
    rows = []
    for s, state in zip(series, states):
        row = s.record(series[0], "ratio_to_fp32")
        row["warmup_seconds"] = state.get("warmup_seconds")
        rows.append(row)
    return {
        "title": "precision and compile: train-step images/s of the default model (augment + model + loss + step)",
        "settings": {"data": data_desc, "batch": BATCH, "steps_per_run": iters, "device": str(device),
                     "encoder": cfg.encoder._target_, "loss": cfg.loss._target_,
                     "torch_threads": threads,
                     "note": "one measurement = one train step on a fixed batch; compile and warm-up "
                             "excluded (warmup_seconds); heads compute in fp32 under autocast"},
        "rows": rows,
    }


run = section_precision
