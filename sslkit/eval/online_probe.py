"""Online linear probe: a classifier trained on detached features while pretraining runs."""

from __future__ import annotations

import lightning as L
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from sslkit.runtime.distributed import labelled_global_batch


class OnlineLinearProbe(L.Callback):
    """Trains ``BatchNorm1d(affine=False) -> Linear`` on the encoder features of the first view
    of each training batch (detached, so the encoder never sees its gradient), and reports its
    top-1 on the validation split as ``val/online_probe_top1``: training images held out of
    pretraining (``data.val_size``), never the test split; best.ckpt follows this number. Its
    weights and optimiser state are saved in checkpoints. Images without a label (label < 0) are
    skipped.

    Under DDP every rank trains on the gathered global batch from the same (broadcast) initial
    weights, so the classifier is the same on every rank and the same as in one process."""

    def __init__(self, lr: float = 1e-3, weight_decay: float = 0.0) -> None:
        self.lr, self.weight_decay = lr, weight_decay
        self.classifier: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self._pending_state: dict | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.classifier is not None:
            return
        dim = pl_module.online.encoder.num_features
        classes = trainer.datamodule.num_classes
        self.classifier = nn.Sequential(nn.BatchNorm1d(dim, affine=False), nn.Linear(dim, classes))
        self.classifier.to(pl_module.device)
        if dist.is_available() and dist.is_initialized():
            for tensor in self.classifier.state_dict().values():
                dist.broadcast(tensor, src=0)
        self.optimizer = torch.optim.AdamW(
            self.classifier.parameters(), lr=self.lr, weight_decay=self.weight_decay
        )
        self.accuracy = MulticlassAccuracy(classes, average="micro").to(pl_module.device)
        if self._pending_state is not None:
            self._load(self._pending_state)
            self._pending_state = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not outputs:  # a skipped step
            return
        batch_features = labelled_global_batch(outputs)  # the same on every rank
        if batch_features is None:
            return
        feats, labels = batch_features
        self.classifier.train()
        with torch.enable_grad():
            loss = F.cross_entropy(self.classifier(feats), labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        pl_module.log("train/online_probe_loss", loss.detach(), batch_size=len(labels))

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self.accuracy.reset()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        labels = outputs["labels"]
        keep = labels >= 0
        if keep.any():
            self.classifier.eval()
            with torch.no_grad():
                self.accuracy.update(self.classifier(outputs["features"][keep].float()), labels[keep])

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self.accuracy.update_count:
            pl_module.log("val/online_probe_top1", self.accuracy.compute(), prog_bar=True)

    def state_dict(self) -> dict:
        if self.classifier is None:
            return {}
        return {"classifier": self.classifier.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        if not state_dict:
            return
        if self.classifier is None:
            self._pending_state = state_dict
        else:
            self._load(state_dict)

    def _load(self, state: dict) -> None:
        self.classifier.load_state_dict(state["classifier"])
        self.optimizer.load_state_dict(state["optimizer"])
