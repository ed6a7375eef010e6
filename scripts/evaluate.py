"""Evaluate sslkit checkpoints with the offline evaluators of configs/eval/.

    python scripts/evaluate.py checkpoint=runs/.../checkpoints/last.ckpt
    python scripts/evaluate.py checkpoint=PATH eval=[linear,knn,metrics] eval.knn.k=[10]
    python scripts/evaluate.py checkpoint=PATH eval=all
    python scripts/evaluate.py checkpoint=[seed0/checkpoints/last.ckpt,seed1/checkpoints/last.ckpt]

Each checkpoint is vetted (a missing, corrupt or foreign file is refused in one line), its model
and data are rebuilt from the config saved in it, and every selected evaluator writes
``eval/NAME.json`` into the checkpoint's run dir (the folder holding ``checkpoints/``); a table
is printed. With several checkpoints, runs that differ only in ``seed`` are also summarised as
mean and 95% interval.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from sslkit.cli import (CONFIG_DIR, check_choices, check_composes, expand_eval_all,  # noqa: E402
                        fail)
from sslkit.errors import UserError  # noqa: E402


def checkpoints(cfg: DictConfig) -> list[Path]:
    value = cfg.checkpoint
    paths = list(value) if OmegaConf.is_list(value) else [value]
    return [Path(hydra.utils.to_absolute_path(str(p))) for p in paths]


def evaluate(cfg: DictConfig) -> list[tuple[dict, dict]]:
    import torch
    from rich.console import Console

    from sslkit.eval.aggregate import aggregate
    from sslkit.eval.loading import load_for_evaluation, run_dir_of
    from sslkit.eval.runner import build_evaluators, eval_device, evaluate_module

    from sslkit.threads import apply as apply_threads

    apply_threads(cfg.threads)  # an int, null (torch's default) or auto
    paths = checkpoints(cfg)
    evaluators = build_evaluators(cfg)  # a bad evaluator config fails before any checkpoint loads
    eval_device(cfg.eval_device)
    if not evaluators:
        raise UserError("no evaluator selected; pass e.g. eval=[linear,knn,metrics] or eval=all")
    data_root = hydra.utils.to_absolute_path(cfg.data_root) if cfg.data_root else None
    console = Console(width=120)
    runs = []
    for path in paths:
        run_cfg, module, dm, ckpt = load_for_evaluation(path, {"data.root": data_root})
        seed = cfg.seed if cfg.seed is not None else int(run_cfg.get("seed") or 0)
        console.print(f"evaluating {path} (epoch {ckpt.get('epoch')}, seed {seed})")
        results = evaluate_module(cfg, module, dm, run_dir_of(path), seed, console, evaluators)
        runs.append((OmegaConf.to_container(run_cfg, resolve=True), results))
    if len(runs) > 1:
        groups = aggregate(runs)
        print_aggregate(groups, console)
        if cfg.aggregate_out:
            out = Path(hydra.utils.to_absolute_path(cfg.aggregate_out))
            out.write_text(json.dumps(groups, indent=2, default=str) + "\n")
    return runs


def print_aggregate(groups: list[dict], console) -> None:
    from rich.table import Table

    for i, group in enumerate(groups):
        table = Table(title=f"group {i + 1}: {group['n']} run(s), seeds {group['seeds']}")
        table.add_column("metric")
        table.add_column("mean")
        table.add_column("95% interval")
        for name, s in group["metrics"].items():
            interval = "-" if math.isnan(s["ci95"]) else f"± {s['ci95']:.4f}"
            table.add_row(name, f"{s['mean']:.4f}", interval)
        console.print(table)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="evaluate")
def main(cfg: DictConfig) -> None:
    try:
        evaluate(cfg)
    except UserError as err:
        fail(str(err))


if __name__ == "__main__":
    sys.argv[1:] = expand_eval_all(sys.argv[1:])
    check_choices(sys.argv[1:])
    check_composes(sys.argv[1:], "evaluate")
    main()
