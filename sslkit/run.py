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
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from omegaconf import DictConfig, OmegaConf

from sslkit.checkpoint import last_checkpoint, load_checkpoint
from sslkit.errors import ConfigError, UserError
from sslkit.eval.features import extract
from sslkit.eval.knn import knn_top1
from sslkit.eval.linear_probe import fit_linear_probe


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
    callbacks = [instantiate(c, f"eval.callbacks") for c in cfg.eval.callbacks.values() if c]
    ckpt_dir = run_dir / "checkpoints"
    callbacks += [
        # last.ckpt after every epoch (Lightning's save_last only follows a new best)
        ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1,
                        enable_version_counter=False),
        ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val/online_probe_top1",
                        mode="max", save_top_k=1, enable_version_counter=False),
        LearningRateMonitor(logging_interval="step"),
        TQDMProgressBar(refresh_rate=10),
    ]
    loggers = [instantiate(c, f"logger") for c in cfg.logger.values() if c] if cfg.logger else []
    return instantiate(
        cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False,
        default_root_dir=str(run_dir),
    )


def resume_path(cfg: DictConfig, run_dir: Path) -> Path | None:
    """``resume=PATH`` if given, else ``last.ckpt`` of this run dir if present; vetted."""
    path = Path(hydra.utils.to_absolute_path(cfg.resume)) if cfg.resume else last_checkpoint(run_dir)
    if path is not None:
        load_checkpoint(path)
    return path


def final_evaluation(cfg: DictConfig, module: L.LightningModule, dm: L.LightningDataModule) -> dict:
    """Linear probe and kNN on frozen encoder features: fit on the probe split, test on the
    test split."""
    module.eval()
    device = module.device
    train_x, train_y = extract(module.features, dm.eval_dataloader(dm.probe_split), device)
    test_x, test_y = extract(module.features, dm.eval_dataloader(dm.test_split), device)
    keep = train_y >= 0
    train_x, train_y = train_x[keep], train_y[keep]
    lp, knn = cfg.eval.final.linear_probe, cfg.eval.final.knn
    probe = fit_linear_probe(train_x, train_y, test_x, test_y, dm.num_classes, epochs=lp.epochs,
                             batch_size=lp.batch_size, lr=lp.lr, weight_decay=lp.weight_decay,
                             seed=cfg.seed)
    knn_acc = knn_top1(train_x, train_y, test_x, test_y, dm.num_classes, knn.k, knn.temperature)
    return {
        "linear_probe_top1": probe.top1,
        "linear_probe_top5": probe.top5,
        "linear_probe_train_top1": probe.train_top1,
        "knn_top1": knn_acc,
    }


def quiet_lightning() -> None:
    """Keep the console to the progress bar, warnings that matter and our summary."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("lightning.fabric.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")


def train(cfg: DictConfig) -> dict:
    started = time.perf_counter()
    quiet_lightning()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    ckpt = resume_path(cfg, run_dir)
    dm = build_datamodule(cfg)
    dm.setup("fit")  # missing or broken data fails here, before anything is written
    module = build_module(cfg)
    trainer = build_trainer(cfg, run_dir)
    if ckpt is not None and trainer.is_global_zero:
        print(f"resuming from {ckpt}")
    trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt) if ckpt else None)
    pretrain_seconds = time.perf_counter() - started
    if not trainer.is_global_zero:
        return {}
    results = final_evaluation(cfg, module, dm)
    ckpt_dir = run_dir / "checkpoints"
    summary = {
        **results,
        "online_probe_top1": _metric(trainer, "val/online_probe_top1"),
        "wall_seconds": time.perf_counter() - started,
        "pretrain_seconds": pretrain_seconds,
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "loss": HydraConfig.get().runtime.choices.get("loss"),
        "run_dir": str(run_dir),
        "checkpoint": str(ckpt_dir / "last.ckpt"),
        "best_checkpoint": str(ckpt_dir / "best.ckpt") if (ckpt_dir / "best.ckpt").exists() else None,
        "resumed_from": str(ckpt) if ckpt else None,
        "threads": torch.get_num_threads(),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _metric(trainer: L.Trainer, name: str) -> float | None:
    value = trainer.callback_metrics.get(name)
    return float(value) if value is not None else None
