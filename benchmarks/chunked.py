"""``chunked`` section: one forward+backward of the InfoNCE head at large batches (B = 8192 and
16384, V = 2, D = 128), dense N x N logits against the chunked log-sum-exp
(``loss.chunk_size``, :mod:`sslkit.losses.chunked`): seconds and peak memory.

Each variant runs in its own process, so peak memory is that variant's alone: on CPU the growth
of the process's peak resident set (``getrusage`` max RSS) over its size before the step; on
CUDA ``torch.cuda.max_memory_allocated``. A dense variant whose estimated peak exceeds the
memory available is skipped with a line saying so, rather than pushing the machine into swap.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

import torch

from benchmarks.common import ROOT

RATIO_KEY = "time_ratio_to_dense"
BATCHES, QUICK_BATCHES = (8192, 16384), (512, 1024)
DIM, VIEWS, CHUNK = 128, 2, 1024
DENSE_COPIES = 6  # N x N fp32 buffers at the dense peak: 5.3 measured at B = 8192 (5,419 MiB)


def available_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def child(batch: int, chunk: int | None, device: str, threads: int) -> dict:
    """One forward+backward in this process; seconds and peak bytes."""
    from sslkit.losses import InfoNCE

    torch.set_num_threads(threads)
    dev = torch.device(device)
    z = torch.randn(batch, VIEWS, DIM, generator=torch.Generator().manual_seed(0)).to(dev)
    z.requires_grad_(True)
    head = InfoNCE(temperature=0.5, chunk_size=chunk)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    loss = head(z).loss
    loss.backward()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - t0
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev) - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"seconds": seconds, "peak_bytes": peak, "loss": loss.item(),
            "grad_norm": z.grad.norm().item()}


def run_child(batch: int, chunk: int | None, device, threads: int) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.chunked", str(batch), str(chunk), str(device), str(threads)]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        return {"error": tail[:300]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def section_chunked(args, device) -> dict:
    batches = QUICK_BATCHES if args.quick else BATCHES
    chunk = 128 if args.quick else CHUNK
    threads = torch.get_num_threads()
    rows = []
    for batch in batches:
        n = batch * VIEWS
        dense_estimate = DENSE_COPIES * 4 * n * n
        free = available_bytes() if device.type == "cpu" else torch.cuda.mem_get_info(device)[0]
        results = {}
        for name, size in (("dense", None), (f"chunked, chunk_size={chunk}", chunk)):
            if size is None and free is not None and dense_estimate > 0.7 * free:
                results[name] = {"skipped": f"needs about {dense_estimate / 2**30:.1f} GiB, "
                                            f"{free / 2**30:.1f} GiB available"}
                continue
            results[name] = run_child(batch, size, device, threads)
        dense = results["dense"]
        for name, res in results.items():
            row = {"name": f"B={batch}: {name}", "batch": batch, "rows": n, "dim": DIM,
                   "views": VIEWS, "chunk_size": None if name == "dense" else chunk,
                   "dense_estimate_gib": round(dense_estimate / 2**30, 2), **res}
            if "peak_bytes" in res:
                row["peak_mib"] = round(res["peak_bytes"] / 2**20, 1)
            if name != "dense" and "seconds" in res and "seconds" in dense:
                row[RATIO_KEY] = res["seconds"] / dense["seconds"]
                row["memory_ratio_to_dense"] = res["peak_bytes"] / max(1, dense["peak_bytes"])
                row["loss_difference"] = abs(res["loss"] - dense["loss"])
                row["grad_norm_difference"] = abs(res["grad_norm"] - dense["grad_norm"])
            rows.append(row)
    return {
        "title": f"chunked log-sum-exp: InfoNCE forward+backward, dense vs chunked (V={VIEWS}, D={DIM})",
        "settings": {"batches": list(batches), "chunk_size": chunk, "dim": DIM, "views": VIEWS,
                     "device": str(device), "torch_threads": threads,
                     "note": "one forward+backward per variant, each in its own process; peak = "
                             "growth of max RSS (CPU) or max_memory_allocated (CUDA) over the "
                             "process before the step; a dense variant that would not fit in "
                             "available memory is skipped"},
        "rows": rows,
    }


def table(sec: dict) -> tuple[list[str], list[list[str]]]:
    cols = ["variant", "seconds", "peak MiB", "time x dense", "memory x dense", "|loss - dense|"]
    cells = []
    for r in sec["rows"]:
        if "seconds" not in r:
            cells.append([r["name"], r.get("skipped") or r.get("error", ""), "", "", "", ""])
            continue
        ratio = r.get(RATIO_KEY)
        cells.append([r["name"], f"{r['seconds']:.2f}", f"{r['peak_mib']:,.0f}",
                      "-" if ratio is None else f"{ratio:.2f}",
                      "-" if ratio is None else f"{r['memory_ratio_to_dense']:.3f}",
                      "-" if ratio is None else f"{r['loss_difference']:.1e}"])
    return cols, cells


run = section_chunked

if __name__ == "__main__":
    b, c, dev, t = sys.argv[1:5]
    print(json.dumps(child(int(b), None if c == "None" else int(c), dev, int(t))))
