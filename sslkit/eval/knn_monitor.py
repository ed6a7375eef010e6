"""Weighted kNN accuracy on the validation split every N epochs."""

from __future__ import annotations

import lightning as L
import torch

from sslkit.eval.features import extract
from sslkit.eval.knn import knn_predict


class KNNMonitor(L.Callback):
    """Every ``every_n_epochs`` (and at the last epoch) builds a feature bank from the labelled
    training split (un-augmented; at most ``bank_size`` images, a fixed seeded subset) and
    classifies the validation features by weighted kNN; logs ``val/knn_top1``."""

    def __init__(self, every_n_epochs: int = 1, k: int = 200, temperature: float = 0.1,
                 bank_size: int | None = None) -> None:
        self.every_n_epochs, self.k, self.temperature = every_n_epochs, k, temperature
        self.bank_size = bank_size
        self._bank: tuple[torch.Tensor, torch.Tensor] | None = None

    def _active(self, trainer: L.Trainer) -> bool:
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        return self.every_n_epochs > 0 and ((epoch + 1) % self.every_n_epochs == 0 or last)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._bank, self._correct, self._total = None, 0, 0
        if trainer.sanity_checking or not self._active(trainer):
            return
        dm = trainer.datamodule
        loader = dm.eval_dataloader(dm.probe_split)
        feats, labels = extract(pl_module.features, loader, pl_module.device)
        keep = labels >= 0
        feats, labels = feats[keep], labels[keep]
        if self.bank_size is not None and len(feats) > self.bank_size:
            idx = torch.randperm(len(feats), generator=torch.Generator().manual_seed(0))[: self.bank_size]
            feats, labels = feats[idx], labels[idx]
        self._bank = (feats.to(pl_module.device), labels.to(pl_module.device))

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self._bank is None:
            return
        labels = outputs["labels"]
        keep = labels >= 0
        scores = knn_predict(*self._bank, outputs["features"][keep], trainer.datamodule.num_classes,
                             self.k, self.temperature)
        self._correct += int((scores.argmax(1) == labels[keep]).sum())
        self._total += int(keep.sum())

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self._bank is None:
            return
        # each rank classified its shard of the validation split: sum the counts over ranks
        counts = torch.tensor([self._correct, self._total], dtype=torch.float64, device=pl_module.device)
        counts = trainer.strategy.reduce(counts, reduce_op="sum")
        if counts[1] > 0:
            # the same value on every rank (sync_dist averages equal numbers; it keeps
            # callback_metrics, e.g. a checkpoint monitor, the same on all ranks)
            pl_module.log("val/knn_top1", (counts[0] / counts[1]).item(), prog_bar=True, sync_dist=True)
        self._bank = None
