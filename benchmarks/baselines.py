"""``baselines`` section: the full training step of the non-contrastive and clustering baselines
(BYOL, SimSiam, MoCo v3, Barlow Twins, VICReg, SwAV, DINO, NNCLR, SupCon) against InfoNCE, on the
default model and data (a bare Lightning Trainer: augment, encoders, projector and predictor,
head, backward, optimiser step and the EMA updates that follow it), and the peak memory of one
step at a big batch, each head in its own process.

Goals (issue "The baselines every peer has"): a head without a momentum encoder within 1.5x of
InfoNCE's step; a momentum head within InfoNCE's step plus one encoder forward (the momentum
encoder's, no gradient), timed here on the same views.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from collections.abc import Callable

import torch

from benchmarks.common import build_data, build_module, fit_step_times, load_config, run_module_child
from benchmarks.timing import Series, interleave, peak_rss, reset_peak_rss, synchronizer

RATIO_KEY = "time_ratio_to_infonce"
HEADS = ("infonce", "byol", "simsiam", "mocov3", "barlow_twins", "vicreg", "swav", "dino", "nnclr",
         "supcon")
MEMORY_BATCH, QUICK_MEMORY_BATCH = 4096, 128
NON_MOMENTUM_GOAL = 1.5


def encoder_forward(cfg, dm, device: torch.device) -> Callable[[], float]:
    """One no-gradient forward of the default encoder on the two views of a batch: what a
    momentum encoder adds to a step."""
    module = build_module(cfg, device)
    images = dm.split("pretrain").images[: int(cfg.data.batch_size)].to(device)
    sync = synchronizer(device)

    def run() -> float:
        views = module.augment(images)
        sync()
        t0 = time.perf_counter()
        with torch.no_grad():
            module.embed_views(module.online, views)
        sync()
        return time.perf_counter() - t0

    return run


def child(head: str, batch: int, device: str, threads: int, cfg=None, dm=None) -> dict:
    """One training step of the default model with ``loss=head`` at ``batch`` in this process:
    seconds and the growth of peak memory over the process before the step. ``cfg`` and ``dm``
    (the head's config and the data, already built) save composing and loading them again."""
    from omegaconf import OmegaConf

    from benchmarks.common import module_step

    warnings.filterwarnings("ignore")
    torch.set_num_threads(threads)
    dev = torch.device(device)
    if cfg is None:
        cfg = load_config(dev, [f"loss={head}"])
    cfg = OmegaConf.merge(cfg, {"data": {"batch_size": batch}})
    if dm is None:
        dm, _ = build_data(cfg)
    split = dm.split("pretrain")
    images, labels = split.images[:batch].to(dev), split.labels[:batch].to(dev)
    module = build_module(cfg, dev).train()
    opt = torch.optim.AdamW(module.online.parameters(), lr=1e-3)
    step = module_step(module, opt)
    step(images[:64], labels[:64])  # untimed: first-call allocations and dispatch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    else:
        base = reset_peak_rss()
    t0 = time.perf_counter()
    loss = step(images, labels)  # SupCon reads the labels
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        peak = torch.cuda.max_memory_allocated(dev) - base
    else:
        peak = peak_rss() - base
    return {"seconds": time.perf_counter() - t0, "peak_bytes": peak, "loss": float(loss)}


def run_child(head: str, batch: int, device, threads: int) -> dict:
    return run_module_child("benchmarks.baselines", head, batch, device, threads)


def section_baselines(args, device) -> dict:
    from sslkit.launch.run import quiet_lightning

    quiet_lightning()
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*`max_epochs` was not set.*")
    heads = [h for h in HEADS if not getattr(args, "heads", None) or h in {"infonce", *args.heads}]
    # --quick, a smoke test: InfoNCE and BYOL at batch 64, memory measured in this process
    quick = ["data.batch_size=64"] if args.quick else []
    if args.quick and not getattr(args, "heads", None):
        heads = ["infonce", "byol"]
    configs = {head: load_config(device, [f"loss={head}", *quick]) for head in heads}
    base_cfg = configs["infonce"]  # the encoder forward's model
    dm, data_desc = build_data(base_cfg)
    batch = int(base_cfg.data.batch_size)
    series, runners, momentum = [], [], {}
    for head, cfg in configs.items():
        momentum[head] = cfg.loss.get("momentum") is not None
        series.append(Series(head, 0, head=head, batch=batch, momentum_encoder=momentum[head]))
        runners.append(fit_step_times(cfg, dm, device, args.steps, args.warmup_steps))
    forward = Series("encoder forward, 2 views, no gradient", 0, batch=batch)
    forward_run = encoder_forward(base_cfg, dm, device)
    for _ in range(2):  # untimed: the first forwards of a fresh module
        forward_run()
    interleave([*series, forward], [*runners, lambda: [forward_run() for _ in range(args.iters)]],
               args.repeats)
    ref = next(s for s in series if s.name == "infonce")
    extra = forward.median / ref.median  # the momentum goal's allowance, in InfoNCE steps
    rows = []
    threads = torch.get_num_threads()
    memory_batch = QUICK_MEMORY_BATCH if args.quick else MEMORY_BATCH
    for s in series:
        row = s.record(ref, RATIO_KEY)
        goal = 1 + extra if momentum[s.name] else NON_MOMENTUM_GOAL
        row["goal_ratio"] = round(goal, 3)
        row["meets_goal"] = bool(row.get(RATIO_KEY) is not None and row[RATIO_KEY] <= goal)
        mem = (child(s.name, memory_batch, str(device), threads, configs[s.name], dm) if args.quick
               else run_child(s.name, memory_batch, device, threads))
        row["memory_batch"] = memory_batch
        row.update({f"memory_{k}": v for k, v in mem.items()})
        if "peak_bytes" in mem:
            row["memory_peak_mib"] = round(mem["peak_bytes"] / 2**20, 1)
        rows.append(row)
    infonce_peak = rows[0].get("memory_peak_bytes")
    for row in rows:
        if infonce_peak and "memory_peak_bytes" in row:
            row["memory_ratio_to_infonce"] = row["memory_peak_bytes"] / infonce_peak
    rows.append(forward.record(ref, "time_ratio_to_infonce_step"))
    return {
        "title": f"baselines: full train step at B={batch} relative to InfoNCE; peak memory of one "
                 f"step at B={memory_batch}",
        "settings": {"data": data_desc, "batch": batch, "steps_per_fit": args.steps,
                     "timed_steps_per_fit": args.steps - args.warmup_steps, "heads": heads,
                     "memory_batch": memory_batch, "device": str(device), "torch_threads": threads,
                     "note": "time_ratio_to_infonce > 1 is slower; goal: 1.5 without a momentum "
                             "encoder, 1 + (encoder forward / InfoNCE step) with one; memory: growth "
                             "of max RSS (CPU) or max_memory_allocated (CUDA) over the process before "
                             "the step, each head in its own process"},
        "rows": rows,
    }


def table(sec: dict) -> tuple[list[str], list[list[str]]]:
    b, mb = sec["settings"]["batch"], sec["settings"]["memory_batch"]
    cols = ["head", "momentum", f"step ms B={b} (median)", "x InfoNCE (median | best)", "goal",
            f"peak MiB B={mb}", "memory x InfoNCE", "load 1m"]
    cells = []
    for r in sec["rows"]:
        if "head" not in r:  # the encoder forward
            cells.append([r["name"], "", f"{r['seconds_median'] * 1e3:.0f}",
                          f"{r.get('time_ratio_to_infonce_step', float('nan')):.2f} of a step", "", "", "", ""])
            continue
        ratio = r.get(RATIO_KEY)
        cells.append([
            r["head"], "yes" if r["momentum_encoder"] else "no", f"{r['seconds_median'] * 1e3:.0f}",
            "-" if ratio is None else f"{ratio:.2f} | {r[RATIO_KEY + '_best']:.2f}",
            f"<= {r['goal_ratio']:.2f} {'met' if r['meets_goal'] else 'MISSED'}",
            f"{r['memory_peak_mib']:,.0f}" if "memory_peak_mib" in r else r.get("memory_error", "-")[:30],
            f"{r['memory_ratio_to_infonce']:.2f}" if "memory_ratio_to_infonce" in r else "-",
            f"{r['context']['loadavg'][0]:.1f}"])
    return cols, cells


run = section_baselines

if __name__ == "__main__":
    h, b, dev, t = sys.argv[1:5]
    print(json.dumps(child(h, int(b), dev, int(t))))
