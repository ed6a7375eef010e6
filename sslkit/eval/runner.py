"""Run the offline evaluators selected in ``cfg.eval`` on a trained module and write
``<run_dir>/eval/NAME.json``; shared by the end of ``train.py`` (``final_evaluation``) and
``scripts/evaluate.py``."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig

from sslkit.errors import ConfigError
from sslkit.eval.context import EvalContext, feature_dtype
from sslkit.runtime.loggers import log_pictures
from sslkit.stats.summary import summary_entries


def eval_device(setting: str | None) -> torch.device:
    """``auto`` (or null): the GPU when there is one, else the CPU; otherwise a torch device."""
    if setting in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(setting)
    except RuntimeError:
        raise ConfigError(f"eval_device={setting!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"eval_device={setting} but no GPU is visible; use eval_device=auto or cpu")
    return device


def build_evaluators(cfg: DictConfig) -> dict:
    """Instantiate every entry of ``cfg.eval`` that names a ``_target_`` (in config order)."""
    from sslkit.training.build import instantiate

    if "_group_" in cfg:
        raise ConfigError(
            "an evaluator config uses '# @package _group_.NAME', which Hydra 1.3 does not read; "
            "start configs/eval/NAME.yaml with '# @package eval.NAME'"
        )
    selected = cfg.get("eval") or {}
    return {name: instantiate(sub, f"eval.{name}") for name, sub in selected.items()
            if isinstance(sub, Mapping) and "_target_" in sub}


def check_inputs(evaluators: dict, datamodule) -> None:
    """Let every evaluator that needs something of the data (``check(datamodule)``, e.g. the
    domain of each image) refuse it in one line, before any work."""
    for evaluator in evaluators.values():
        check = getattr(evaluator, "check", None)
        if callable(check):
            check(datamodule)


def jsonable(value):
    if isinstance(value, torch.Tensor):
        return jsonable(value.tolist())
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


def run_evaluators(evaluators: dict, ctx: EvalContext, console=None, write: bool = True) -> dict[str, dict]:
    """Call each evaluator on ``ctx``; write ``<run_dir>/eval/NAME.json`` as each finishes
    (with its ``seconds``; unless ``write`` is false) and return every result by name."""
    out_dir = Path(ctx.run_dir) / "eval"
    if write:
        out_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, evaluator in evaluators.items():
        started = time.perf_counter()
        pictures = _pictures(ctx.run_dir)
        result = jsonable(evaluator(ctx))
        _log_new_pictures(ctx, pictures)
        result.setdefault("seconds", time.perf_counter() - started)
        if write:
            (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        results[name] = result
        if console is not None:
            console.print(f"eval/{name}{'.json written' if write else ' done'} ({result['seconds']:.1f} s)")
    return results


PICTURES = "plots"  # where evaluators write their pictures (plots.PLOTS_DIR)


def _pictures(run_dir: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in (Path(run_dir) / PICTURES).glob("*.png")}


def _log_new_pictures(ctx: EvalContext, before: dict[Path, int]) -> None:
    """The pictures an evaluator wrote into ``<run_dir>/plots/`` go to the run's loggers that
    show images (wandb, TensorBoard), whichever evaluator drew them; offline evaluations
    (scripts/evaluate.py) have no trainer and no loggers."""
    trainer = getattr(ctx.module, "_trainer", None)
    if trainer is None:
        return
    new = {p.stem: p for p, stamp in sorted(_pictures(ctx.run_dir).items()) if before.get(p) != stamp}
    log_pictures(trainer.loggers, new, step=trainer.global_step)


def flatten(result: Mapping, prefix: str = "") -> list[tuple[str, object]]:
    rows = []
    for key, value in result.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            rows += flatten(value, f"{name}.")
        elif isinstance(value, list) and value and all(isinstance(v, (int, float)) or v is None for v in value):
            rows.append((name, "[" + ", ".join("-" if v is None else f"{v:.3g}" for v in value) + "]"))
        else:
            rows.append((name, value))
    return rows


def results_table(results: dict[str, dict], title: str = "sslkit evaluation"):
    from rich.table import Table

    table = Table(title=title)
    table.add_column("evaluator")
    table.add_column("metric")
    table.add_column("value", overflow="fold")
    for name, result in results.items():
        for i, (key, value) in enumerate(flatten(result)):
            text = f"{value:.4f}" if isinstance(value, float) else ("-" if value is None else str(value))
            table.add_row(name if i == 0 else "", key, text)
        table.add_section()
    return table


def evaluate_module(cfg: DictConfig, module, datamodule, run_dir: Path, seed: int,
                    console=None, evaluators: dict | None = None, write: bool = True,
                    run_precision: str | None = None) -> dict[str, dict]:
    """Run ``evaluators`` (default: built from ``cfg.eval``) with ``module`` moved to
    ``cfg.eval_device`` in eval mode, features extracted in the precision ``cfg.eval_precision``
    names (auto: ``run_precision``, the one pretraining ran in), print the table; returns results
    by name (empty when no evaluator is selected). ``write``: also write
    ``<run_dir>/eval/NAME.json``."""
    evaluators = build_evaluators(cfg) if evaluators is None else evaluators
    if not evaluators:
        return {}
    check_inputs(evaluators, datamodule)
    device = eval_device(cfg.get("eval_device"))
    module.to(device).eval()
    ctx = EvalContext(module=module, datamodule=datamodule, run_dir=Path(run_dir), seed=seed,
                      autocast=feature_dtype(cfg.get("eval_precision"), run_precision))
    results = run_evaluators(evaluators, ctx, console, write)
    if console is not None:
        console.print(results_table(results, f"sslkit evaluation: {run_dir}"))
    return results


def final_evaluation(cfg: DictConfig, module: L.LightningModule, dm: L.LightningDataModule,
                     run_dir: Path, evaluators: dict | None = None) -> dict:
    """The offline evaluators of ``cfg.eval`` on the module at the end of training; returns what
    summary.json keeps of them."""
    from rich.console import Console

    results = evaluate_module(cfg, module, dm, run_dir, cfg.seed, Console(), evaluators,
                              run_precision=cfg.trainer.precision)
    return summary_entries(results)
