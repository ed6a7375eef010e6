"""Speed benchmarks of sslkit, side by side in one run: `make bench` (or `python scripts/bench.py`).

    python scripts/bench.py                       # everything; table on stdout, results/bench.json
    python scripts/bench.py --only heads trainer  # some sections
    python scripts/bench.py --quick --out /tmp/b.json   # tiny repeat counts (smoke test)

Sections (``--only``):

* ``trainer``: train-step images/s of the framework's module (``configs/train.yaml`` defaults:
  convnet, grey augment, AU head, AdamW; Fashion-MNIST 28x28 grey, batch 512) fitted by a real
  Lightning Trainer, bare and with train.py's callbacks and CSV logger, against a minimal plain
  PyTorch loop over the same model, data, augment, loss and optimiser. Overhead = 1 - ratio.
* ``augment``: the batched on-device ``ViewAugment`` images/s against the model's training
  images/s (views given) and against torchvision.transforms.v2 applied image by image (in the
  main process, and in a DataLoader with worker processes).
* ``heads``: forward+backward time of every head in configs/loss/ relative to InfoNCE at
  B = 256, 1024, 4096 (D = 128, V = 2); random momentum keys ``k`` and a queue of 4096 keys for
  the heads that need them.
* ``baselines``: the full train step of the non-contrastive and clustering baselines (BYOL, SimSiam,
  MoCo v3, Barlow Twins, VICReg, SwAV, DINO, NNCLR, SupCon) relative to InfoNCE's, and the peak memory
  of one step at B = 4096 per head, each in its own process.
* ``precision``: images/s of the real module's training step in fp32 (NCHW), fp32 channels_last
  (the default config), bf16 autocast, and torch.compile of the encoder.
* ``views``: train-step images/s of the real module (Lightning Trainer, bare) with the MoCo
  heads, computing only the views each head reads (``query_views`` / ``key_views``) against
  computing every view with both encoders (what the module did before heads declared their
  views); also the encoder rows per step of each, counted.
* ``attack``: images/s of torchattacks' PGD-20 (l-inf 8/255, step 2/255, random start; what
  ``eval=robust`` runs) against a plain hand-written PGD loop of the same forward/backward passes,
  on the default encoder + a linear head in eval mode (target: ratio >= 0.9).
* ``adversarial``: a training step with PGD views (``adversarial=pgd``) against a clean step,
  and the attack against a plain loop of the same passes.
* ``embedding``: fit time of umap-learn and openTSNE on the same points (the t-SNE/UMAP picture).
* ``cache``: the pre-decoded image cache (``data.cache=true``) against decoding the JPEGs: images/s
  per core, and one epoch of an ImageNet-100-shaped JPEG tree at 64 and 112 px, cold and warm, on
  1 and 2 DataLoader workers (``--jpeg-root`` gives the tree).
* ``compile``: torch.compile on the default job's CPU step: eager against the encoder compiled
  (``model.compile_encoder=true``) and encoder + projector + loss compiled (``--compile-autotune``
  adds ``mode="max-autotune-no-cudagraphs"``), with the cold compile time (a fresh process, an
  empty inductor cache), the break-even step count and the projected pretraining time of the
  default job (epochs x steps per epoch from the config).

Each section is one module of ``benchmarks/`` (``benchmarks/<section>.py``); the measuring is
``benchmarks/timing.py``, the default model and its real training step ``benchmarks/common.py``.

Every figure is a ratio or a throughput measured in this run, repeated (variants interleaved,
order rotated each repeat); min and median are reported, with torch threads, CPU count and
os.getloadavg() recorded beside each benchmark. Figures from different runs or machines are
not comparable; ratios within one run are.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import SECTIONS, section  # noqa: E402
from benchmarks.report import print_tables  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny repeat counts and sizes (smoke test)")
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME",
                        help=f"sections to run, of: {', '.join(SECTIONS)} (comma or space separated)")
    parser.add_argument("--heads", nargs="+", default=None, metavar="NAME",
                        help="heads section: only these heads of configs/loss (and infonce, the reference)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench.json")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats of every measurement")
    parser.add_argument("--steps", type=int, default=None,
                        help="trainer section: steps per fit (the first 2, or 1 with --quick, untimed)")
    parser.add_argument("--jpeg-root", type=Path, default=None,
                        help="decode and cache sections: a JPEG tree from scripts/make_jpeg_tree.py "
                             "(default: written to a temporary folder: 300 images for decode, 2,000 in "
                             "100 class folders for cache)")
    parser.add_argument("--compile-autotune", action="store_true",
                        help='compile section: also mode="max-autotune-no-cudagraphs" (minutes of compiling)')
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's, one per core)")
    args = parser.parse_args(argv)
    only = [s for item in (args.only or SECTIONS) for s in item.split(",") if s]
    unknown = [s for s in only if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    # torch after these checks: --help and a mistyped section answer in a fraction of a second
    import torch

    from benchmarks.common import warm_process
    from benchmarks.timing import context

    args.heads = [h for item in args.heads for h in item.split(",") if h] if args.heads else None
    if args.heads:
        from benchmarks.heads import head_names

        unknown = sorted(set(args.heads) - set(head_names()))
        if unknown:
            parser.error(f"unknown head(s) {', '.join(unknown)}; choose from {', '.join(head_names())}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    # a train step of the default model at batch 512 takes 1-3 s on 2 CPU cores; ~10 ms on a GPU
    if args.quick:
        args.repeats = args.repeats or 1
        steps, args.warmup_steps, args.iters = 4, 1, 2
        args.head_batches, args.head_repeats = (64, 256), args.repeats
        args.warm_steps = 2
    else:
        args.warm_steps = 12
        args.repeats = args.repeats or 3
        steps, args.warmup_steps, args.iters = 10, 2, 6
        args.head_batches, args.head_repeats = (256, 1024, 4096), max(args.repeats, 5)
    if device.type == "cuda":
        steps, args.iters, args.warmup_steps = steps * 8, args.iters * 8, args.warmup_steps * 4
    args.steps = args.steps or steps
    if args.steps <= args.warmup_steps:
        parser.error(f"--steps must exceed the {args.warmup_steps} untimed warm-up steps")
    warnings.filterwarnings("ignore", category=UserWarning, module="lightning")
    warnings.filterwarnings("ignore", ".*`self.trainer` reference is not registered.*")
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)

    results = {
        "schema": 1,
        "created": dt.datetime.now().isoformat(timespec="seconds"),
        "argv": sys.argv[1:] if argv is None else argv,
        "quick": args.quick,
        "machine": {
            "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "device": str(device) if device.type == "cpu"
            else torch.cuda.get_device_name(device),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        },
        "sections": {},
    }
    if {"trainer", "augment", "precision", "views", "compile"} & set(only):
        print("[bench] warming up ...", file=sys.stderr, flush=True)
        results["machine"]["warmup_step_seconds"] = warm_process(device, args.warm_steps)
    for name in SECTIONS:
        if name not in only:
            continue
        started = time.perf_counter()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        ctx = context()
        result = section(name).run(args, device)
        result["context"] = {"start": ctx, "end": context()}
        result["seconds"] = round(time.perf_counter() - started, 1)
        results["sections"][name] = result
    results["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=float) + "\n")
    print_tables(results)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
