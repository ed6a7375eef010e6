"""Linear probe, standard protocol: SGD on the frozen encoder with random crops and flips.

The protocol of the SimCLR, CACR, GCA and solo-learn tables: each step draws random resized
crops (the pretraining augmentation's ``crop_size``, ``scale``, ``ratio``) and horizontal flips
of a batch of training images, encodes them with the frozen encoder (eval mode: BatchNorm
statistics stay fixed) and trains ``BatchNorm1d(affine=False) -> Linear`` (the MAE linear-probe
head: per-feature standardisation learnt on the fly) by SGD with Nesterov momentum and a cosine
schedule. It is tested on the un-augmented test features.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from sslkit.eval.linear import classification_report


class LinearSGD:
    """Offline evaluator ``linear_sgd``; see the module docstring. ``lr`` is for a batch of 256
    and is scaled linearly with ``batch_size``."""

    # top-level keys of every result (checked by tests/eval/test_evaluator_contract.py)
    result_keys = ("protocol", "top1", "per_class_top1", "epochs", "batch_size", "lr",
                   "train_loss_per_epoch", "seconds")

    def __init__(self, epochs: int = 30, batch_size: int = 256, lr: float = 0.1,
                 momentum: float = 0.9, weight_decay: float = 0.0) -> None:
        self.epochs, self.batch_size, self.lr = epochs, batch_size, lr
        self.momentum, self.weight_decay = momentum, weight_decay

    def __call__(self, ctx) -> dict:
        started = time.perf_counter()
        module, dm, device = ctx.module, ctx.datamodule, ctx.device
        aug = module.augment
        encoder = module.online.encoder.eval()
        dim = ctx.features("test")[0].shape[1]
        with torch.random.fork_rng(devices=[]):  # a seeded initialisation, global RNG untouched
            torch.manual_seed(ctx.seed)
            head = nn.Sequential(nn.BatchNorm1d(dim, affine=False), nn.Linear(dim, ctx.num_classes))
        head.to(device)
        opt = torch.optim.SGD(head.parameters(), lr=self.lr * self.batch_size / 256,
                              momentum=self.momentum, nesterov=self.momentum > 0,
                              weight_decay=self.weight_decay)
        loader = dm.loader(dm.split(dm.probe_split), self.batch_size, shuffle=True, drop_last=False)
        steps = max(1, self.epochs * len(loader))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        gen = torch.Generator(device=device).manual_seed(ctx.seed)
        losses = []
        for epoch in range(self.epochs):
            loader.batch_sampler.set_epoch(epoch)
            head.train()
            total, count = 0.0, 0
            for batch in loader:
                keep = batch["label"] >= 0
                if not keep.any():
                    continue
                images = batch["image"][keep].to(device, non_blocking=True)
                labels = batch["label"][keep].to(device, non_blocking=True)
                with torch.no_grad():
                    feats = encoder(module._layout(aug.crop_flip(images, gen))).float()
                with torch.enable_grad():
                    loss = F.cross_entropy(head(feats), labels)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                sched.step()
                total, count = total + loss.item() * len(labels), count + len(labels)
            losses.append(total / max(count, 1))
        head.eval()
        test_x, test_y = ctx.labelled("test")
        with torch.no_grad():
            report = classification_report(head(test_x.to(device)), test_y, ctx.num_classes)
        return {
            "protocol": "standard: SGD on the frozen encoder with random resized crops and flips",
            **report,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "train_loss_per_epoch": losses,
            "seconds": time.perf_counter() - started,
        }
