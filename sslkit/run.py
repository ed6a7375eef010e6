"""What ``python train.py`` does: build the parts from the config, pretrain, probe, summarise."""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from sslkit.checkpoint import last_checkpoint, load_checkpoint
from sslkit.data.fields import check_head_inputs
from sslkit.errors import CheckpointError, ConfigError, UserError
from sslkit.eval.runner import build_evaluators, eval_device, evaluate_module, summary_entries
from sslkit.parts.queue import check_queue_fits
from sslkit.precision import choose as choose_precision
from sslkit.preemption import Preemption
from sslkit.prior.base import absolute_paths, setup_prior
from sslkit.runlog import RunLog, note, progress_bar
from sslkit.schema import validate
from sslkit.threads import apply as apply_threads
from sslkit.throughput import Throughput


def instantiate(cfg: DictConfig, what: str, *args, **kwargs):
    """``hydra.utils.instantiate`` that turns a constructor's complaint into a one-line
    ConfigError naming the config group."""
    try:
        return hydra.utils.instantiate(cfg, *args, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__ or err
        if isinstance(cause, UserError):
            raise cause from None
        msg = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise ConfigError(f"{what}: {msg}") from None


def build_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    data_cfg = cfg.data.copy()
    root = data_cfg.get("root")
    if isinstance(root, str) and root != "???" and not os.path.isabs(root):
        data_cfg.root = hydra.utils.to_absolute_path(root)
    return instantiate(data_cfg, "data")


def build_module(cfg: DictConfig) -> L.LightningModule:
    factory = instantiate(cfg.model, "model")
    return factory(
        encoder=instantiate(cfg.encoder, "encoder"),
        head=instantiate(cfg.loss, "loss"),
        augment=instantiate(cfg.augment, "augment"),
        optimizer=instantiate(cfg.optim.optimizer, "optim.optimizer"),
        weight_decay=cfg.optim.weight_decay,
        warmup_epochs=cfg.optim.warmup_epochs,
        final_lr_ratio=cfg.optim.final_lr_ratio,
        config=OmegaConf.to_container(cfg, resolve=True),
    )


def build_trainer(cfg: DictConfig, run_dir: Path) -> L.Trainer:
    monitors = cfg.get("monitor") or {}
    callbacks = [instantiate(c, f"monitor.{name}") for name, c in monitors.items() if c]
    ckpt_dir = run_dir / "checkpoints"
    ck = cfg.checkpoint
    callbacks += [
        # last.ckpt after every epoch (Lightning's save_last only follows a new best)
        ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1,
                        save_on_train_epoch_end=True, enable_version_counter=False),
        # and every N steps if asked: a second callback, as one given steps stops saving at
        # epoch ends (Lightning makes the two triggers mutually exclusive)
        *([ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1,
                           every_n_train_steps=ck.every_n_train_steps,
                           enable_version_counter=False)]
          if ck.every_n_train_steps else []),
        ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val/online_probe_top1",
                        mode="max", save_top_k=1, enable_version_counter=False),
        LearningRateMonitor(logging_interval="step"),
        *([ModelCheckpoint(dirpath=ckpt_dir, filename="epoch{epoch:03d}", monitor="epoch",
                           mode="max", save_top_k=ck.keep_last, auto_insert_metric_name=False,
                           save_on_train_epoch_end=True, enable_version_counter=False)]
          if ck.keep_last else []),
        progress_bar(cfg.progress_bar_refresh_rate),
        Throughput(),
        RunLog(run_dir / "train.log"),
        Preemption(ckpt_dir / "last.ckpt"),
    ]
    loggers = [instantiate(c, f"logger") for c in cfg.logger.values() if c] if cfg.logger else []
    return instantiate(
        cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False,
        default_root_dir=str(run_dir),
    )


# config sections whose change alters what a run means; anything else (max_epochs, loggers,
# evaluation, paths, worker counts) may differ on resume
MEANING_KEYS = ("loss", "encoder", "augment", "model", "optim", "seed", "data._target_",
                "data.batch_size", "data.imbalance_ratio", "data.imbalance_profile",
                "data.train_split", "prior", "data.domain_shift")


def config_differences(saved: dict, current: dict) -> list[str]:
    saved_cfg, current_cfg = OmegaConf.create(saved), OmegaConf.create(current)
    differing = []
    for key in MEANING_KEYS:
        a = OmegaConf.select(saved_cfg, key, default=None)
        b = OmegaConf.select(current_cfg, key, default=None)
        a = OmegaConf.to_container(a) if OmegaConf.is_config(a) else a
        b = OmegaConf.to_container(b) if OmegaConf.is_config(b) else b
        if a != b:
            differing += _leaf_differences(key, a, b)
    return differing


def _leaf_differences(prefix: str, a, b) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                out += _leaf_differences(f"{prefix}.{k}", a.get(k), b.get(k))
        return out
    return [f"{prefix} ({a!r} -> {b!r})"]


def planned_world_size(trainer_cfg: DictConfig) -> int | None:
    devices, nodes = trainer_cfg.get("devices", 1), trainer_cfg.get("num_nodes", 1) or 1
    if isinstance(devices, int) and devices > 0:
        return devices * nodes
    if OmegaConf.is_list(devices):
        return len(devices) * nodes
    return None  # "auto" / -1: known once the trainer starts


def check_sizes(cfg: DictConfig, dm: L.LightningDataModule) -> None:
    """Batch size against dataset size and device count, crop sizes against image size."""
    world = planned_world_size(cfg.trainer)
    if world:
        dm.per_rank_batch(world)
    n = len(dm.split("pretrain"))
    if dm.batch_size > n:
        raise ConfigError(
            f"data.batch_size={dm.batch_size} exceeds the {n} pretraining images of {dm.name}; "
            "lower data.batch_size"
        )
    check_queue_fits(cfg.loss.get("queue_size"), n, dm.name)
    aug = cfg.augment
    for key in ("crop_size", "local_crop_size"):
        size = aug.get(key)
        if size is not None and not 1 <= size <= dm.image_size:
            if key == "local_crop_size" and not aug.get("local_views"):
                continue
            raise ConfigError(
                f"augment.{key}={size} must be between 1 and the image size {dm.image_size} of "
                f"{dm.name}"
            )


def check_same_model(path: Path, saved: dict, module: L.LightningModule) -> None:
    """Refuse, by name, a checkpoint whose weights (``saved`` state dict) do not fit this model."""
    own = module.state_dict()
    missing = sorted(set(own) - set(saved))
    unexpected = sorted(set(saved) - set(own))
    shapes = sorted(k for k in set(own) & set(saved) if own[k].shape != saved[k].shape)
    if missing or unexpected or shapes:
        detail = "; ".join(
            f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape differs", shapes))
            if keys
        )
        raise CheckpointError(f"checkpoint {path} refused: it holds another model ({detail})")


def resume_checkpoint(cfg: DictConfig, run_dir: Path) -> tuple[Path, dict] | None:
    """``resume=PATH`` if given, else ``last.ckpt`` of this run dir if present: its path and
    contents, vetted, and refused if its config differs in what changes the run's meaning."""
    path = Path(hydra.utils.to_absolute_path(cfg.resume)) if cfg.resume else last_checkpoint(run_dir)
    if path is None:
        return None
    ckpt = load_checkpoint(path)
    current = OmegaConf.to_container(cfg, resolve=True)
    differing = config_differences(ckpt["sslkit"].get("config", {}), current)
    if differing and not cfg.get("resume_allow_config_change", False):
        raise ConfigError(
            f"checkpoint {path} refused: its config differs in {', '.join(differing[:6])}"
            f"{' ...' if len(differing) > 6 else ''}; resume with the same settings or add "
            "resume_allow_config_change=true"
        )
    return path, ckpt


def final_evaluation(cfg: DictConfig, module: L.LightningModule, dm: L.LightningDataModule,
                     run_dir: Path, evaluators: dict | None = None) -> dict:
    """The offline evaluators of ``cfg.eval`` (sslkit/eval/runner.py) on the trained module;
    returns what summary.json keeps of them."""
    from rich.console import Console

    results = evaluate_module(cfg, module, dm, run_dir, cfg.seed, Console(), evaluators)
    return summary_entries(results)


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
    module = build_module(cfg)
    # the head's inputs beyond z: a prior attached to the data, every field present
    prior = instantiate(absolute_paths(cfg.prior), "prior") if cfg.get("prior") else None
    setup_prior(prior, dm, module.head)
    check_head_inputs(module.head, dm)
    evaluators = build_evaluators(cfg)  # a bad evaluator config fails here, before training
    eval_device(cfg.get("eval_device"))
    if resume is not None:
        check_same_model(ckpt, resume[1]["state_dict"], module)
        del resume  # Lightning loads the file again itself; do not hold a second copy
    precision = choose_precision(cfg, module, dm, planned_world_size(cfg.trainer))
    cfg.trainer.precision = precision.precision
    note(run_dir, f"threads {torch.get_num_threads()}: {threads.reason}", precision.line())
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
    results = final_evaluation(cfg, module, dm, run_dir, evaluators)
    for callback in trainer.callbacks:  # e.g. the metrics monitor's collapse warning
        results.update(getattr(callback, "summary_entries", dict)())
    ckpt_dir = run_dir / "checkpoints"
    summary = {
        **results,
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
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    with (run_dir / "train.log").open("a") as log:
        log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} summary: {json.dumps(summary)}\n")
    return summary


def _metric(trainer: L.Trainer, name: str) -> float | None:
    value = trainer.callback_metrics.get(name)
    return float(value) if value is not None else None
