"""Fine-tuning protocol: the whole encoder and a linear head trained on labelled images.

A copy of the pretrained encoder (BatchNorm in training mode) and a linear head are trained with
cross-entropy on random resized crops and flips of the labelled training images (the pretraining
augmentation's ``crop_size``, ``scale``, ``ratio`` and ``flip_p``; no colour ops: SimCLR's
fine-tuning preprocessing), by SGD with Nesterov momentum or AdamW under a cosine schedule. One
training per learning rate of ``lr_grid``; after every epoch the model is scored on the
selection split and the (learning rate, epoch) with the best top-1 there is kept. Only that
model is scored on the test split: the test labels choose nothing.

The selection split is the validation split (``data.val_size`` labelled training images, held
out of pretraining and of the training set here); with ``data.val_size=null`` a seeded
``holdout_fraction`` of the labelled training images is held out instead.

A plain loop rather than a Lightning Trainer: each learning rate trains a fresh copy in the
evaluator's own process and device, on data the evaluator already holds, with per-epoch
selection and no checkpoints, loggers or progress bars; a Trainer per candidate would add all of
those to switch off again and nothing this loop lacks (``linear_sgd`` and ``robust`` do the same).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sslkit.data.base import SubsetImages
from sslkit.errors import ConfigError
from sslkit.eval.linear import classification_report, holdout_split, top1

OPTIMIZERS = ("sgd", "adamw")


@dataclass
class Selection:
    """Where a protocol trains and where it selects: ``train``, positions of the labelled
    training images in the probe split; ``val``, positions of the selection images in
    ``val_split`` (``validation``, or the probe split itself with ``data.val_size=null``)."""

    train: Tensor
    val_split: str
    val: Tensor
    described: str


def selection_split(dm, seed: int, holdout_fraction: float) -> Selection:
    """The validation split when the data has one; else a seeded ``holdout_fraction`` of the
    labelled probe images, which then leave the training set. Never the test split."""
    labels = torch.as_tensor(dm.split(dm.probe_split).labels)
    labelled = torch.nonzero(labels >= 0).flatten()
    if getattr(dm, "has_validation", False):
        val_labels = torch.as_tensor(dm.split("validation").labels)
        val = torch.nonzero(val_labels >= 0).flatten()
        return Selection(labelled, "validation", val,
                         f"validation split ({len(val)} training images held out, data.val_size)")
    fit, held = holdout_split(len(labelled), holdout_fraction, seed)
    return Selection(labelled[fit.sort().values], dm.probe_split, labelled[held.sort().values],
                     f"seeded held-out {holdout_fraction:g} of the training split (data.val_size=null)")


def take(data, index: Tensor):
    """The samples of a split at ``index``, as the split's own kind of dataset when it has one."""
    return data.subset(index) if hasattr(data, "subset") else SubsetImages(data, index)


class Classifier(nn.Module):
    """Encoder and linear head: ``head(encoder(x))``, the head ``BatchNorm1d(affine=False) ->
    Linear`` as in ``linear_sgd``: the features are standardised on the fly, so one learning-rate
    grid suits encoders whose features differ in scale by orders of magnitude."""

    def __init__(self, encoder: nn.Module, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Sequential(nn.BatchNorm1d(num_features, affine=False),
                                  nn.Linear(num_features, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))


@dataclass
class Fitted:
    """The model chosen on the selection split and how it was chosen."""

    model: Classifier
    lr: float
    epoch: int  # 1-based: the epochs trained
    val_top1: float
    val_top1_per_epoch: dict[str, list[float]]
    train_loss_per_epoch: dict[str, list[float]]


class FineTune:
    """Offline evaluator ``finetune``; see the module docstring. Learning rates are for a batch
    of 256 and scaled linearly with the batch (``min(batch_size, training images)``)."""

    # top-level keys of every result (checked by tests/eval/test_evaluator_contract.py)
    result_keys = ("protocol", "top1", "per_class_top1", "val_top1", "selected", "selection",
                   "val_top1_per_epoch", "train_loss_per_epoch", "n_train", "n_val", "n_test", "seconds")

    def __init__(self, epochs: int = 10, batch_size: int = 256, optimizer: Literal["sgd", "adamw"] = "sgd",
                 lr_grid: Sequence[float] = (0.01, 0.05), momentum: float = 0.9,
                 weight_decay: float = 0.0, select_epoch: bool = True,
                 holdout_fraction: float = 0.1) -> None:
        if optimizer not in OPTIMIZERS:
            raise ConfigError(f"eval.finetune.optimizer={optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if not lr_grid or any(float(lr) <= 0 for lr in lr_grid):
            raise ConfigError(f"eval.finetune.lr_grid={list(lr_grid)}: give one or more learning rates > 0")
        if epochs < 1 or batch_size < 2:
            raise ConfigError(f"eval.finetune.epochs={epochs}, batch_size={batch_size}: need epochs >= 1 "
                              "and batch_size >= 2 (BatchNorm trains on the batch)")
        self.epochs, self.batch_size, self.optimizer = int(epochs), int(batch_size), optimizer
        self.lr_grid = sorted(float(lr) for lr in lr_grid)
        self.momentum, self.weight_decay = momentum, weight_decay
        self.select_epoch, self.holdout_fraction = select_epoch, holdout_fraction

    # -- training ------------------------------------------------------------------------------
    def _optimizer(self, params, lr: float) -> torch.optim.Optimizer:
        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=self.momentum,
                                   nesterov=self.momentum > 0, weight_decay=self.weight_decay)
        return torch.optim.AdamW(params, lr=lr, weight_decay=self.weight_decay)

    def fit(self, ctx, train_index: Tensor, selection: Selection) -> Fitted:
        """Train one model per learning rate on the probe-split images at ``train_index`` and
        return the (learning rate, epoch) with the best top-1 on the selection images (ties:
        the smaller learning rate, the earlier epoch)."""
        dm = ctx.datamodule
        train = take(dm.split(dm.probe_split), train_index)
        val = take(dm.split(selection.val_split), selection.val)
        best: Fitted | None = None
        curves: dict[str, list[float]] = {}
        losses: dict[str, list[float]] = {}
        for lr in self.lr_grid:
            model, epoch, score, curves[repr(lr)], losses[repr(lr)] = self._train_one(ctx, lr, train, val)
            if best is None or score > best.val_top1:
                best = Fitted(model, lr, epoch, score, curves, losses)
        assert best is not None
        return best

    def _train_one(self, ctx, lr: float, train, val) -> tuple[Classifier, int, float, list, list]:
        module, dm, device = ctx.module, ctx.datamodule, ctx.device
        aug = module.augment
        encoder = module.online.encoder
        with torch.random.fork_rng(devices=[]):  # a seeded head, global RNG untouched
            torch.manual_seed(ctx.seed)
            model = Classifier(copy.deepcopy(encoder), encoder.num_features, ctx.num_classes)
        model.to(device)
        batch = min(self.batch_size, len(train))
        if batch < 2:
            raise ConfigError(f"eval.finetune: {len(train)} labelled training image(s); fine-tuning "
                              "needs at least 2 (BatchNorm trains on the batch)")
        opt = self._optimizer(model.parameters(), lr * batch / 256)
        # drop_last: every batch is full (no 1-image BatchNorm batch); reshuffled each epoch
        loader = dm.loader(train, batch, shuffle=True, drop_last=True)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, self.epochs * len(loader))
        gen = torch.Generator(device=device).manual_seed(ctx.seed)
        best_state, best_epoch, best_score = None, 0, -1.0
        curve, losses = [], []
        for epoch in range(self.epochs):
            loader.batch_sampler.set_epoch(epoch)
            model.train()
            total, count = 0.0, 0
            for item in loader:
                images = item["image"].to(device, non_blocking=True)
                labels = item["label"].to(device, non_blocking=True)
                x = module._layout(aug.crop_flip(images, gen))
                with torch.enable_grad(), self._autocast(ctx):
                    loss = F.cross_entropy(model(x).float(), labels)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total, count = total + loss.item() * len(labels), count + len(labels)
            losses.append(total / max(count, 1))
            logits, y = self.predict(ctx, model, val)
            curve.append(top1(logits, y))
            last = epoch == self.epochs - 1
            if (self.select_epoch and curve[-1] > best_score) or (not self.select_epoch and last):
                best_score, best_epoch = curve[-1], epoch + 1
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(best_state)
        return model.eval(), best_epoch, best_score, curve, losses

    @staticmethod
    def _autocast(ctx):
        return torch.autocast(ctx.device.type, dtype=ctx.autocast, enabled=ctx.autocast is not None)

    @torch.no_grad()
    def predict(self, ctx, model: Classifier, data) -> tuple[Tensor, Tensor]:
        """Logits (float32, CPU) of the un-augmented images of ``data`` (the deterministic
        resize and centre crop features are extracted with) and their labels."""
        module, dm = ctx.module, ctx.datamodule
        model.eval()
        logits, labels = [], []
        for item in dm.loader(data, dm.eval_batch_size, False, False):
            x = module._layout(module.augment.eval_transform(item["image"].to(ctx.device)))
            with self._autocast(ctx):
                logits.append(model(x).float().cpu())
            labels.append(item["label"].cpu())
        return torch.cat(logits), torch.cat(labels)

    def test_report(self, ctx, model: Classifier) -> dict:
        """top-1, top-5 (more than 5 classes) and per-class top-1 on the labelled test images."""
        dm = ctx.datamodule
        logits, y = self.predict(ctx, model, dm.split(dm.test_split))
        keep = y >= 0
        return {**classification_report(logits[keep], y[keep], ctx.num_classes), "n_test": int(keep.sum())}

    def settings(self) -> dict:
        return {"epochs": self.epochs, "batch_size": self.batch_size, "optimizer": self.optimizer,
                "lr_grid": self.lr_grid, "momentum": self.momentum,
                "weight_decay": self.weight_decay, "select_epoch": self.select_epoch}

    def __call__(self, ctx) -> dict:
        started = time.perf_counter()
        selection = selection_split(ctx.datamodule, ctx.seed, self.holdout_fraction)
        fitted = self.fit(ctx, selection.train, selection)
        report = self.test_report(ctx, fitted.model)
        return {
            "protocol": f"fine-tuning of the encoder and a linear head ({self.optimizer}, cosine, "
                        "random resized crops and flips); learning rate and epoch chosen on the "
                        f"{selection.described}",
            **report,
            "val_top1": fitted.val_top1,
            "selected": {"lr": fitted.lr, "epoch": fitted.epoch},
            "selection": selection.described,
            "val_top1_per_epoch": fitted.val_top1_per_epoch,
            "train_loss_per_epoch": fitted.train_loss_per_epoch,
            "settings": self.settings(),
            "n_train": len(selection.train),
            "n_val": len(selection.val),
            "seconds": time.perf_counter() - started,
        }
