"""Training throughput in augmented views per second, logged as ``train/views_per_s``.

Lightning's ThroughputMonitor reports samples (not views) per second over a window, under its
own metric names; the docs and benchmarks quote views/s of each step, so this stays."""

from __future__ import annotations

import time

import lightning as L


class Throughput(L.Callback):
    def __init__(self) -> None:
        self._started = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        seconds = time.perf_counter() - self._started
        per_rank = batch["image"].shape[0]
        views = per_rank * pl_module.augment.num_views * trainer.world_size
        pl_module.log("train/views_per_s", views / max(seconds, 1e-9), prog_bar=True,
                      batch_size=per_rank)
