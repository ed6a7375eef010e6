"""Pre-flight checks of a run's config against its data, before any work: batch size against
dataset size and device count, queue size, crop sizes against image size."""

from __future__ import annotations

import lightning as L
from omegaconf import DictConfig, OmegaConf

from sslkit.errors import ConfigError
from sslkit.parts.queue import check_queue_fits


def planned_world_size(trainer_cfg: DictConfig) -> int | None:
    devices, nodes = trainer_cfg.get("devices", 1), trainer_cfg.get("num_nodes", 1) or 1
    if isinstance(devices, int) and devices > 0:
        return devices * nodes
    if OmegaConf.is_list(devices):
        return len(devices) * nodes
    return None  # "auto" / -1: known once the trainer starts


def check_sizes(cfg: DictConfig, dm: L.LightningDataModule) -> None:
    """Batch size against dataset size and device count, crop sizes against image size, and
    labelled images for whatever needs them (:func:`check_labelled`)."""
    check_labelled(cfg, dm)
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


def official_scope_note(cfg: DictConfig) -> str | None:
    """One line saying how this run's batch per process differs from the official run's, for a
    recipe that states the official process count (``official.devices``); None when they match,
    when the count is "auto", or when neither the loss nor BatchNorm depends on it."""
    official = cfg.get("official") or {}
    n, world = official.get("devices"), planned_world_size(cfg.trainer)
    if not n or not world or world == n:
        return None
    batch = cfg.data.batch_size
    ours, theirs = batch // world, batch // n
    differs = []
    if cfg.model.get("loss_scope", "global") == "local":
        differs.append(f"the loss sees {ours} images per process (official {theirs})")
    if not cfg.trainer.get("sync_batchnorm", False):
        differs.append(f"BatchNorm normalises {ours} per process (official {theirs})")
    if not differs:
        return None
    return (f"official run ({official.get('source', 'the recipe header')}): {n} processes x "
            f"{theirs} images; this run: {world} x {ours}, so {' and '.join(differs)}; "
            f"trainer.devices={n} runs it as the official code does")


def check_labelled(cfg: DictConfig, dm: L.LightningDataModule) -> None:
    """Refuse, in one line, evaluators and online monitors on data without labelled images
    (``data=unlabelled`` without ``probe_root``/``test_root``), instead of failing inside a probe
    after training."""
    if getattr(dm, "labelled", True):
        return
    from sslkit.data.unlabelled import NO_LABELS

    monitor = cfg.get("monitor") or {}
    needs = [f"eval=[{','.join(cfg.eval)}]"] if cfg.get("eval") else []
    needs += [f"monitor.{name}" for name in ("online_probe", "knn") if monitor.get(name)]
    if needs:
        raise ConfigError(NO_LABELS.format(what=", ".join(needs)))
