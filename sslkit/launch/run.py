"""What ``python train.py`` does: build the parts from the config (sslkit/training/build.py), check them
before any work (sslkit/training/preflight.py, sslkit/training/checkpoint.py), pretrain, evaluate, summarise."""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from sslkit.training.build import build_datamodule, build_module, build_trainer, instantiate
from sslkit.training.checkpoint import check_same_model, resume_checkpoint
from sslkit.training.lr_scaling import effective_lr
from sslkit.data.fields import check_head_inputs
from sslkit.eval.linear import LinearProbe, top1
from sslkit.eval.runner import build_evaluators, check_inputs, eval_device, final_evaluation
from sslkit.runtime.precision import choose as choose_precision
from sslkit.runtime.preemption import Preemption
from sslkit.training.preflight import check_sizes, official_scope_note, planned_world_size
from sslkit.prior.base import absolute_paths, setup_prior
from sslkit.runtime.loggers import log_results
from sslkit.runtime.runlog import note
from sslkit.training.schema import validate
from sslkit.runtime.threads import apply as apply_threads


def quiet_lightning() -> None:
    """Keep the console to the progress bar, warnings that matter and our summary."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
    # the non-finite guard returns None on purpose to skip a step
    warnings.filterwarnings("ignore", message=".*`training_step` returned `None`.*")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")


def train(cfg: DictConfig, run_dir: Path | str | None = None, choices: dict | None = None) -> dict:
    """Pretrain, probe and summarise the run of ``cfg`` into ``run_dir`` (default: the Hydra
    job's output dir); ``choices`` (group -> option, e.g. ``{"loss": "cacr"}``) labels the
    summary. ``sslkit.train`` composes ``cfg`` from overrides outside the Hydra CLI."""
    started = time.perf_counter()
    quiet_lightning()
    if run_dir is None or choices is None:
        runtime = HydraConfig.get().runtime
        run_dir = runtime.output_dir if run_dir is None else run_dir
        choices = dict(runtime.choices) if choices is None else choices
    run_dir = Path(run_dir)
    validate(cfg)
    threads = apply_threads(cfg.threads)
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision(cfg.matmul_precision)
        torch.backends.cudnn.benchmark = not cfg.trainer.get("deterministic", False)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    resume = resume_checkpoint(cfg, run_dir)
    ckpt = resume[0] if resume else None
    dm = build_datamodule(cfg)
    dm.setup("fit")  # missing or broken data fails here, before anything is written
    check_sizes(cfg, dm)
    scope = official_scope_note(cfg)  # a recipe run on another process count than its paper's
    if scope:
        note(run_dir, scope)
    module = build_module(cfg)
    # the head's inputs beyond z: a prior attached to the data, every field present
    prior = instantiate(absolute_paths(cfg.prior), "prior") if cfg.get("prior") else None
    setup_prior(prior, dm, module.head)
    check_head_inputs(module.head, dm)
    evaluators = build_evaluators(cfg)  # a bad evaluator config fails here, before training
    check_inputs(evaluators, dm)  # e.g. eval=[domain] on data without domains
    eval_device(cfg.get("eval_device"))
    if resume is not None:
        check_same_model(ckpt, resume[1]["state_dict"], module)
        del resume  # Lightning loads the file again itself; do not hold a second copy
    precision = choose_precision(cfg, module, dm, planned_world_size(cfg.trainer))
    cfg.trainer.precision = precision.precision
    module.config["trainer"]["precision"] = precision.precision  # what checkpoints record
    lr = effective_lr(cfg)  # what build_module gave the optimiser, and how it was computed
    note(run_dir, f"threads {torch.get_num_threads()}: {threads.reason}", precision.line(),
         lr.line())
    trainer = build_trainer(cfg, run_dir)
    for logger in trainer.loggers:  # the resolved config: hparams.yaml (csv), wandb's config
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    if ckpt is not None and trainer.is_global_zero:
        print(f"resuming from {ckpt}")
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt) if ckpt else None,
                    weights_only=True)
    except SIGTERMException:
        stop = next(c for c in trainer.callbacks if isinstance(c, Preemption))
        if trainer.is_global_zero:
            epoch, step = stop.stopped_at or (trainer.current_epoch, trainer.global_step)
            print(f"stopped by signal at epoch {epoch} step {step}; checkpoint {stop.saved}; "
                  f"run the same command again (same hydra.run.dir) or add resume={stop.saved} "
                  "to continue", flush=True)
        return {}
    pretrain_seconds = time.perf_counter() - started
    if not trainer.is_global_zero:
        return {}
    scored = with_validation_scores(evaluators, dm)
    results = final_evaluation(cfg, module, dm, run_dir, scored)
    for callback in trainer.callbacks:  # e.g. the metrics monitor's collapse warning
        results.update(getattr(callback, "summary_entries", dict)())
    ckpt_dir = run_dir / "checkpoints"
    summary = {
        **split_names(results),
        "val/images": len(dm.validation_index()) if getattr(dm, "has_validation", False) else 0,
        # the online monitors' last values on the validation split (their metrics.csv names);
        # online_probe_top1: the same number under its earlier name
        "val/online_probe_top1": _metric(trainer, "val/online_probe_top1"),
        "val/knn_top1": _metric(trainer, "val/knn_top1"),
        "online_probe_top1": _metric(trainer, "val/online_probe_top1"),
        "wall_seconds": time.perf_counter() - started,
        "pretrain_seconds": pretrain_seconds,
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "loss": choices.get("loss"),
        "run_dir": str(run_dir),
        "checkpoint": str(ckpt_dir / "last.ckpt"),
        "best_checkpoint": str(ckpt_dir / "best.ckpt") if (ckpt_dir / "best.ckpt").exists() else None,
        "resumed_from": str(ckpt) if ckpt else None,
        "threads": torch.get_num_threads(),
        "threads_reason": threads.reason,
        "precision": precision.precision,
        "precision_reason": precision.reason,
        "precision_calibration": precision.timings or None,
        **lr.summary(),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    # TensorBoard's hparams view: the config beside the final validation and test numbers (not
    # the monitors' curves, which the loggers already have)
    final = {k: v for k, v in summary.items() if k.startswith(("val/", "test/"))
             and isinstance(v, float) and k not in trainer.callback_metrics}
    log_results(trainer.loggers, OmegaConf.to_container(cfg, resolve=True), final, trainer.global_step)
    with (run_dir / "train.log").open("a") as log:
        log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} summary: {json.dumps(summary)}\n")
    return summary


class ValidationScore:
    """The final linear probe (the ``linear`` evaluator's own fit on the probe split, shared
    through the context's memo: no second fit) scored on the validation split. Runs after the
    test evaluators, so what they report is unchanged."""

    def __init__(self, linear: LinearProbe) -> None:
        self.linear = linear

    def __call__(self, ctx) -> dict:
        probe, _, _ = self.linear.fit(ctx)
        x, y = ctx.labelled("validation")
        with torch.no_grad():
            score = top1(probe.logits(x.to(ctx.device)).cpu(), y)
        return {"linear_probe_top1": score, "n_val": len(y)}


def with_validation_scores(evaluators: dict, dm) -> dict:
    """``evaluators`` and, when the data has a validation split and ``linear`` is among them,
    the final probe's score on that split (summary.json: ``val/linear_probe_top1``)."""
    linear = evaluators.get("linear")
    if not isinstance(linear, LinearProbe) or not getattr(dm, "has_validation", False):
        return evaluators
    return {**evaluators, VALIDATION: ValidationScore(linear)}


VALIDATION = "validation"  # eval/validation.json


def split_names(results: dict) -> dict:
    """summary.json's evaluation numbers with the split in their names: the headline test
    accuracies keep their names and are also ``test/...``; the validation scores are
    ``val/...`` (not ``eval/validation/...``, which would read as a test number)."""
    out = {k: v for k, v in results.items() if not k.startswith(f"eval/{VALIDATION}/")}
    for key in ("linear_probe_top1", "linear_probe_top5", "knn_top1"):
        if key in out:
            out[f"test/{key}"] = out[key]
    if f"eval/{VALIDATION}/linear_probe_top1" in results:
        out["val/linear_probe_top1"] = results[f"eval/{VALIDATION}/linear_probe_top1"]
    return out


def _metric(trainer: L.Trainer, name: str) -> float | None:
    value = trainer.callback_metrics.get(name)
    return float(value) if value is not None else None
