"""``compile`` section: does ``torch.compile`` pay for itself on the default job's CPU step, its
compile time included?

The real module of ``configs/train.yaml`` (Fashion-MNIST-shaped input, the default encoder, batch,
views and head) at the precision ``trainer.precision=auto`` gives this CPU (bf16 autocast where it
has native bf16, else float32), three ways: eager; ``model.compile_encoder=true`` (the encoder
compiled in place); and the whole forward of the step compiled (encoder + projector, and the loss
head: ``module.online`` and ``module.head`` in place), optionally also with
``mode="max-autotune-no-cudagraphs"`` (``--compile-autotune``). Train-step times are interleaved
repeats in this process. The compile time is each variant's first steps in a fresh process with an
empty inductor cache (what a first run on a machine pays; warm caches make later runs cheaper)
beyond its later steps, less an eager fresh process's excess, plus the encoder's compiles for the eval
path (the online monitors' and final probes' feature extraction at ``data.eval_batch_size``, then
the dynamic-shape compile a partial batch triggers). From these: the break-even step count and the
projected pretraining time of the default job (``trainer.max_epochs`` x pretraining batches per
epoch) eager and compiled.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time

import torch

from benchmarks.common import build_data, build_module, load_config, module_step, plain_optimizer, run_module_child
from benchmarks.timing import Series, interleave

RATIO_KEY = "ratio_to_eager"
# name -> (what is compiled, torch.compile mode); None: eager
VARIANTS = {
    "eager": None,
    "compile encoder (model.compile_encoder=true)": ("encoder", "default"),
    "compile encoder + projector + loss": ("step", "default"),
    "compile encoder + projector + loss, max-autotune-no-cudagraphs": ("step", "max-autotune-no-cudagraphs"),
}
AUTOTUNE = "compile encoder + projector + loss, max-autotune-no-cudagraphs"
FIRST_STEPS = 2  # the first call compiles forward and backward; the second finds the graphs cached


def autocast_dtype() -> torch.dtype | None:
    """bf16 where ``trainer.precision=auto`` may choose it on this CPU (native bf16), else None
    (float32): the precision the default job trains in here."""
    from sslkit.runtime.precision import cpu_bf16_flags

    return torch.bfloat16 if cpu_bf16_flags() else None


def prepare(module, variant: str, backend: str = "inductor") -> None:
    """Compile ``module`` in place as ``variant`` does (parameter names stay the plain module's)."""
    spec = VARIANTS[variant]
    if spec is None:
        return
    what, mode = spec
    kwargs = {"backend": backend} if backend != "inductor" else {"mode": mode}
    if what == "encoder":
        module.online.encoder.compile(**kwargs)  # what model.compile_encoder=true does
    else:
        module.online.compile(**kwargs)
        module.head.compile(**kwargs)


def first_calls(variant: str, batch: int, cache_dir: str, threads: int, backend: str = "inductor",
                keep: dict | None = None) -> dict:
    """Seconds of a fresh module's first train steps, a few steps after them, and its first and
    second eval-mode feature extractions at ``data.eval_batch_size`` and at a partial batch, with
    ``cache_dir`` as the inductor cache (empty: a cold compile). Run in a fresh process for a
    cold figure (``python -m benchmarks.compile``). ``keep`` (in this process) receives the
    module's step function, compiled and back in training mode, for timing on."""
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache_dir  # read when inductor first writes its cache
    torch.set_num_threads(threads)
    device = torch.device("cpu")
    cfg = load_config(device)
    module = build_module(cfg, device)
    prepare(module, variant, backend)
    module.train()
    opt, sched = plain_optimizer(cfg, module, 10**6)
    dtype = autocast_dtype()
    step = module_step(module, opt, sched, dtype)
    gen = torch.Generator().manual_seed(0)
    shape = (cfg.data.in_chans, cfg.data.image_size, cfg.data.image_size)
    images = torch.randint(0, 256, (batch, *shape), dtype=torch.uint8, generator=gen)

    def timed(fn) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    first = [timed(lambda: step(images)) for _ in range(FIRST_STEPS)]
    after = [timed(lambda: step(images)) for _ in range(2)]
    module.eval()
    eval_batch = min(int(cfg.data.eval_batch_size), 4 * batch)
    partial = int(cfg.data.val_size or 0) % eval_batch or eval_batch // 2
    evals = {}
    with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
        for size in (eval_batch, partial):
            x = torch.randint(0, 256, (size, *shape), dtype=torch.uint8, generator=gen)
            evals[size] = [timed(lambda: module.features(x)) for _ in range(2)]
    if keep is not None:
        module.train()
        keep.update(step=step, first_seconds=sum(first))
    return {"first_steps": first, "steps_after": after, "eval_sizes": list(evals),
            "eval_first": [v[0] for v in evals.values()], "eval_second": [v[1] for v in evals.values()]}


def compile_cost(eager: dict, compiled: dict) -> dict:
    """Compile seconds from fresh-process first calls: what a compiled process's first calls took
    beyond its own later ones, less the same excess of an eager process (a fresh process's first
    steps are slower anyway; taken as 0 where noise makes it negative). For the training step
    (its first steps against its later ones) and for the eval path (each eval size's first
    feature extraction against its second)."""
    def excess(calls: dict, first: str, later: str) -> float:
        if first == "first_steps":
            return sum(calls[first]) - len(calls[first]) * statistics.median(calls[later])
        return sum(calls[first]) - sum(calls[later])

    train = excess(compiled, "first_steps", "steps_after") - max(0.0, excess(eager, "first_steps", "steps_after"))
    evals = excess(compiled, "eval_first", "eval_second") - max(0.0, excess(eager, "eval_first", "eval_second"))
    return {"compile_seconds_train": max(0.0, train), "compile_seconds_eval": max(0.0, evals),
            "compile_seconds": max(0.0, train) + max(0.0, evals)}


def projection(eager_step: float, step: float, compile_seconds: float, steps: int) -> dict:
    """Pretraining seconds of ``steps`` steps eager and compiled, and the break-even step count
    (None: the compiled step is not faster, so compiling never pays)."""
    saved = eager_step - step
    return {"eager_total_seconds": steps * eager_step, "compiled_total_seconds": compile_seconds + steps * step,
            "break_even_steps": compile_seconds / saved if saved > 0 else None}


def section_compile(args, device) -> dict:
    if device.type != "cpu":
        return {"title": "torch.compile on the default job's CPU step", "rows": [],
                "settings": {"note": "CPU only (the GPU's compile figures are scripts/bench_gpu.py's)"}}
    cfg = load_config(device)
    dm, data_desc = build_data(cfg)
    batch = int(cfg.data.batch_size) if not args.quick else 32
    images = dm.split("pretrain").images[:batch]
    steps_per_epoch = len(dm.split("pretrain")) // int(cfg.data.batch_size)  # drop_last
    total_steps = int(cfg.trainer.max_epochs) * steps_per_epoch
    threads = torch.get_num_threads()
    dtype = autocast_dtype()
    # --quick: dynamo's tracing without inductor's code generation (seconds, not minutes), in this process
    backend = "eager" if args.quick else "inductor"
    names = [n for n in VARIANTS if n != AUTOTUNE or getattr(args, "compile_autotune", False)]
    caches = {n: tempfile.mkdtemp(prefix="sslkit-bench-inductor-") for n in names}
    first: dict[str, dict] = {}
    try:
        states: list[dict] = [{} for _ in names]
        for name, state in zip(names, states):  # cold compiles first, each in a fresh process, empty cache
            print(f"[bench] compile: first calls of {name} ...", file=sys.stderr, flush=True)
            if args.quick:  # in this process, timed on (compiling twice would double the test's time)
                first[name] = first_calls(name, batch, caches[name], threads, backend, keep=state)
            else:
                first[name] = run_module_child("benchmarks.compile", name, batch, caches[name], threads)
        iters = max(1, args.iters // 3)
        series, runners = [], []
        for name, state in zip(names, states):

            def run(name=name, state=state) -> list[float]:
                if "step" not in state:
                    os.environ["TORCHINDUCTOR_CACHE_DIR"] = caches[name]  # the child's: a warm compile
                    module = build_module(cfg, device)
                    prepare(module, name, backend)
                    module.train()
                    opt, sched = plain_optimizer(cfg, module, 10**6)
                    state["step"] = module_step(module, opt, sched, dtype)
                    t0 = time.perf_counter()
                    for _ in range(FIRST_STEPS):
                        state["step"](images)
                    state["first_seconds"] = time.perf_counter() - t0
                times = []
                for _ in range(iters):
                    t0, c0 = time.perf_counter(), time.process_time()
                    state["step"](images)
                    times.append(time.perf_counter() - t0)
                    state.setdefault("cpu", []).append(time.process_time() - c0)
                return times

            series.append(Series(name, batch))
            runners.append(run)
        interleave(series, runners, args.repeats)
    finally:
        os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
        for path in caches.values():
            shutil.rmtree(path, ignore_errors=True)
    rows = []
    eager = series[0]
    for s, state, name in zip(series, states, names):
        row = s.record(eager, RATIO_KEY)
        # CPU seconds per step (all threads): on a shared machine, less disturbed by other jobs
        # than wall time (a one-thread run's equals its wall time on an idle core)
        for key, cpu in (("cpu_seconds", state.get("cpu")), ("eager_cpu_seconds", states[0].get("cpu"))):
            if cpu:
                row[key + "_median"], row[key + "_min"] = statistics.median(cpu), min(cpu)
        calls = first.get(name, {})
        row["first_calls"] = calls
        if "error" in calls:
            row["error"] = calls["error"]
        if s is not eager and s.seconds and "first_steps" in calls and "first_steps" in first["eager"]:
            cost = compile_cost(first["eager"], calls)
            row.update(cost)
            row["compile_seconds_warm_cache"] = max(0.0, state["first_seconds"] - FIRST_STEPS * s.median)
            row["cpu_ratio_to_eager"] = row["eager_cpu_seconds_median"] / row["cpu_seconds_median"]
            for stat, eager_step, step in (("median", eager.median, s.median), ("best", eager.best, s.best),
                                           ("cpu", row["eager_cpu_seconds_median"], row["cpu_seconds_median"])):
                proj = projection(eager_step, step, cost["compile_seconds"], total_steps)
                row.update({f"{k}_{stat}": v for k, v in proj.items()})
            row["faster_including_compile"] = row["compiled_total_seconds_median"] < row["eager_total_seconds_median"]
        rows.append(row)
    from sslkit.runtime.precision import cpu_bf16_flags

    return {
        "title": "torch.compile on the default job's CPU step (real module: augment + model + loss + AdamW step)",
        "settings": {
            "data": data_desc, "batch": batch, "steps_per_run": iters, "torch_threads": threads,
            "precision": "bf16-mixed" if dtype is not None else "32-true",
            "cpu": cpu_model(), "native_bf16_flags": cpu_bf16_flags(), "backend": backend,
            "steps_per_epoch": steps_per_epoch, "max_epochs": int(cfg.trainer.max_epochs),
            "default_job_steps": total_steps,
            "note": ("--quick: dynamo without inductor, in this process (a smoke test, not a measurement); "
                     if args.quick else "") +
                    "compile = the first calls' excess over later ones in a fresh process with an empty "
                    "inductor cache (train step and eval path), less an eager process's; projected totals: "
                    "compile + pretraining steps (wall median, wall best, CPU median); the eval path's own "
                    "speed-up is in first_calls (eval_second), not in the totals"},
        "rows": rows,
    }


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "unknown")
    except OSError:
        return "unknown"


def table(sec: dict) -> tuple[list[str], list[list[str]]]:
    steps = sec["settings"].get("default_job_steps")
    cols = ["variant", "step s (median | best)", "x eager (median | best | CPU s)", "compile s (train + eval)",
            "break-even steps", f"{steps} steps: s (median | best)", "faster with compile", "load 1m"]
    cells = []
    for r in sec["rows"]:
        if r.get("error") or not r.get("seconds"):
            cells.append([r["name"], "error", str(r.get("error", ""))[:40], "", "", "", "", ""])
            continue
        step = f"{r['seconds_median']:.3f} | {r['seconds_min']:.3f}"
        loads = r["context"]["loadavg_1m_at_repeats"]
        load = f"{min(loads):.1f}-{max(loads):.1f}" if loads else "-"
        if RATIO_KEY not in r or "compile_seconds" not in r:
            total = (f"{steps * r['seconds_median']:,.0f} | {steps * r['seconds_min']:,.0f}" if steps else "-")
            cells.append([r["name"], step, "(reference)", "-", "-", total, "-", load])
            continue
        even = r["break_even_steps_median"]
        cells.append([
            r["name"], step, f"{r[RATIO_KEY]:.3f} | {r[RATIO_KEY + '_best']:.3f} | {r['cpu_ratio_to_eager']:.3f}",
            f"{r['compile_seconds']:.0f} ({r['compile_seconds_train']:.0f} + {r['compile_seconds_eval']:.0f})",
            "never" if even is None else f"{even:,.0f}",
            f"{r['compiled_total_seconds_median']:,.0f} | {r['compiled_total_seconds_best']:,.0f}",
            "yes" if r["faster_including_compile"] else "no", load])
    return cols, cells


run = section_compile

if __name__ == "__main__":
    variant, batch, cache, threads = sys.argv[1:5]
    print(json.dumps(first_calls(variant, int(batch), cache, int(threads))))
