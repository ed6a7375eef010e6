"""Build the parts of a run from its config: data module, Lightning module, Trainer (with the
run's callbacks and loggers)."""

from __future__ import annotations

import os
from pathlib import Path

import hydra
import lightning as L
from hydra.errors import InstantiationException
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from sslkit.errors import ConfigError, UserError
from sslkit.training.lr_scaling import effective_lr
from sslkit.runtime.preemption import Preemption
from sslkit.runtime.runlog import RunLog, progress_bar
from sslkit.runtime.throughput import Throughput


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
    # the lr scaled with the global batch by optim.lr_scaling (sslkit/training/lr_scaling.py)
    lr = effective_lr(cfg).lr
    return factory(
        encoder=instantiate(cfg.encoder, "encoder"),
        head=instantiate(cfg.loss, "loss"),
        augment=instantiate(cfg.augment, "augment"),
        optimizer=instantiate(cfg.optim.optimizer, "optim.optimizer",
                              **({} if lr is None else {"lr": lr})),
        weight_decay=cfg.optim.weight_decay,
        warmup_epochs=cfg.optim.warmup_epochs,
        final_lr_ratio=cfg.optim.final_lr_ratio,
        config=OmegaConf.to_container(cfg, resolve=True),
    )


# what best.ckpt follows: the online probe's top-1 on the validation split
BEST_MONITOR = "val/online_probe_top1"


def pretrain_labelled(cfg: DictConfig) -> bool:
    """Whether the data's pretraining batches carry labels (an unlabelled folder's do not)."""
    target = cfg.data.get("_target_")
    return getattr(hydra.utils.get_class(target), "pretrain_labelled", True) if target else True


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
        # best.ckpt: the epoch whose online probe scored best on the validation split (training
        # images held out by data.val_size; never the test split). No validation split, or no
        # labels in the pretraining batches for the probe to learn from: no best
        *([ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=BEST_MONITOR,
                           mode="max", save_top_k=1, enable_version_counter=False)]
          if cfg.data.get("val_size") is not None and monitors.get("online_probe")
          and pretrain_labelled(cfg) else []),
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
    loggers = [instantiate(c, "logger") for c in cfg.logger.values() if c] if cfg.logger else []
    return instantiate(
        cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False,
        default_root_dir=str(run_dir),
    )
