"""``chunked`` section: one forward+backward of a head at large batches (B = 8192 and 16384
instances, D = 128), dense against ``loss.chunk_size`` (:mod:`sslkit.losses.chunked`): seconds
and peak memory. Heads: InfoNCE (V = 2, N x N logits, N = 2B), MoCo (B queries against a queue
of Q = 65536 keys, the official ImageNet size: B x Q logits), CACR (V = 2: the B x B repulsion)
and AU (V = 2: each view's B x B uniformity).

Each variant runs in its own process, so peak memory is that variant's alone: on CPU the growth
of the process's peak resident set (``getrusage`` max RSS) over its size before the step; on
CUDA ``torch.cuda.max_memory_allocated``. A dense variant whose estimated peak exceeds the
memory available is skipped with a line saying so, rather than pushing the machine into swap.
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch

from benchmarks.common import run_module_child
from benchmarks.timing import peak_rss, reset_peak_rss

RATIO_KEY = "time_ratio_to_dense"
BATCHES, QUICK_BATCHES = (8192, 16384), (512, 1024)
DIM, VIEWS, CHUNK = 128, 2, 1024
QUEUE, QUICK_QUEUE = 65536, 4096
HEADS = ("InfoNCE", "MoCo", "CACR", "AU")
# fp32 copies of the head's big matrix at the dense peak, measured at B = 8192: InfoNCE 5.3 of
# N x N, MoCo 4.0 of B x Q, CACR 5.3 of B x B, AU 5.2 of B x B per view
DENSE_COPIES = {"InfoNCE": 6, "MoCo": 5, "CACR": 6, "AU": 6}


def big_matrix_elements(head: str, batch: int, queue: int) -> int:
    """Elements of the matrix the dense head builds (and the chunked one builds in blocks)."""
    if head == "InfoNCE":
        return (batch * VIEWS) ** 2
    if head == "MoCo":
        return batch * queue
    return VIEWS * batch * batch if head == "AU" else batch * batch  # CACR: one view pair


def available_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def child(head_name: str, batch: int, queue: int, chunk: int | None, device: str,
          threads: int) -> dict:
    """One forward+backward in this process; seconds and peak bytes."""
    import warnings

    import torch.nn.functional as F

    from sslkit.losses import CACR, AlignUniform, InfoNCE, MoCo

    warnings.filterwarnings("ignore", "cacr with 2 views")
    torch.set_num_threads(threads)
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(0)

    def inputs(b: int, q: int) -> tuple[torch.Tensor, dict]:
        if head_name == "MoCo":
            z = torch.randn(b, 1, DIM, generator=gen).to(dev)
            return z.requires_grad_(True), {
                "k": torch.randn(b, 1, DIM, generator=gen).to(dev),
                "queue": F.normalize(torch.randn(q, DIM, generator=gen), dim=-1).to(dev)}
        return torch.randn(b, VIEWS, DIM, generator=gen).to(dev).requires_grad_(True), {}

    def make(size: int | None):
        return {"InfoNCE": lambda: InfoNCE(temperature=0.5, chunk_size=size),
                "MoCo": lambda: MoCo(temperature=0.2, chunk_size=size),
                "CACR": lambda: CACR(chunk_size=size),
                "AU": lambda: AlignUniform(chunk_size=size)}[head_name]()

    # untimed warm-up on a tiny batch, in blocks if chunked: the first checkpointed block
    # imports torch._dynamo (about 1 s and 150 MiB once; a Lightning process has it already)
    z, extras = inputs(64, 256)
    make(chunk and 16)(z, **extras).loss.backward()
    z, extras = inputs(batch, queue)
    head = make(chunk)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    else:
        base = reset_peak_rss()
    t0 = time.perf_counter()
    loss = head(z, **extras).loss
    loss.backward()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - t0
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev) - base
    else:
        peak = peak_rss() - base
    return {"seconds": seconds, "peak_bytes": peak, "loss": loss.item(),
            "grad_norm": z.grad.norm().item()}


def run_child(head: str, batch: int, queue: int, chunk: int | None, device, threads: int) -> dict:
    return run_module_child("benchmarks.chunked", head, batch, queue, chunk, device, threads)


def section_chunked(args, device) -> dict:
    batches = QUICK_BATCHES if args.quick else BATCHES
    chunk = 128 if args.quick else CHUNK
    queue = QUICK_QUEUE if args.quick else QUEUE
    threads = torch.get_num_threads()
    rows = []
    for head in HEADS:
        # --quick is a smoke test: one batch per head after the first, each child costs an import
        for batch in batches if not args.quick or head == HEADS[0] else batches[:1]:
            elements = big_matrix_elements(head, batch, queue)
            dense_estimate = DENSE_COPIES[head] * 4 * elements
            free = available_bytes() if device.type == "cpu" else torch.cuda.mem_get_info(device)[0]
            results = {}
            for name, size in (("dense", None), (f"chunked, chunk_size={chunk}", chunk)):
                if size is None and free is not None and dense_estimate > 0.7 * free:
                    results[name] = {"skipped": f"needs about {dense_estimate / 2**30:.1f} GiB, "
                                                f"{free / 2**30:.1f} GiB available"}
                    continue
                results[name] = run_child(head, batch, queue, size, device, threads)
                results[name]["loadavg_1m"] = round(os.getloadavg()[0], 2)
            dense = results["dense"]
            for name, res in results.items():
                row = {"name": f"{head} B={batch}: {name}", "head": head, "batch": batch,
                       "rows": batch * VIEWS if head == "InfoNCE" else batch,
                       "queue": queue if head == "MoCo" else None, "dim": DIM,
                       "views": 2 if head == "MoCo" else VIEWS,
                       "chunk_size": None if name == "dense" else chunk,
                       "matrix_mib": round(4 * elements / 2**20, 1),
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
        "title": f"chunked heads: forward+backward, dense vs chunk_size={chunk} (D={DIM}; "
                 f"V={VIEWS}; MoCo: queue {queue})",
        "settings": {"batches": list(batches), "chunk_size": chunk, "dim": DIM, "views": VIEWS,
                     "heads": list(HEADS), "moco_queue": queue,
                     "device": str(device), "torch_threads": threads,
                     "note": "one forward+backward per variant, each in its own process; peak = "
                             "growth of max RSS (CPU) or max_memory_allocated (CUDA) over the "
                             "process before the step; a dense variant that would not fit in "
                             "available memory is skipped"},
        "rows": rows,
    }


def table(sec: dict) -> tuple[list[str], list[list[str]]]:
    cols = ["variant", "seconds", "peak MiB", "time x dense", "memory x dense", "|loss - dense|",
            "load 1m"]
    cells = []
    for r in sec["rows"]:
        if "seconds" not in r:
            cells.append([r["name"], r.get("skipped") or r.get("error", ""), "", "", "", "", ""])
            continue
        ratio = r.get(RATIO_KEY)
        cells.append([r["name"], f"{r['seconds']:.2f}", f"{r['peak_mib']:,.0f}",
                      "-" if ratio is None else f"{ratio:.2f}",
                      "-" if ratio is None else f"{r['memory_ratio_to_dense']:.3f}",
                      "-" if ratio is None else f"{r['loss_difference']:.1e}",
                      f"{r.get('loadavg_1m', float('nan')):.1f}"])
    return cols, cells


run = section_chunked

if __name__ == "__main__":
    h, b, q, c, dev, t = sys.argv[1:7]
    print(json.dumps(child(h, int(b), int(q), None if c == "None" else int(c), dev, int(t))))
