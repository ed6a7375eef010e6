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
