"""The learning rate the official GCA CIFAR run trains with, measured under Lightning.

nerdslab/gca ssl_pretrain.py builds SGD(lr=0.2) and a LambdaLR whose factor is a cosine from
``learning_rate`` (0.6) to 1e-3 over ``max_epochs * len_train_loader`` (500 x 97) *steps*, and
returns it from ``configure_optimizers`` as ``{"optimizer": ..., "lr_scheduler": scheduler}``,
without ``"interval": "step"``. Lightning's default interval is "epoch", so it steps the
scheduler once per epoch and the lambda's argument is the epoch number. This script builds the
same construction (a real Lightning Trainer, a LightningModule whose ``configure_optimizers``
returns the same dict), trains a few steps per epoch and prints the lr of every epoch as the
optimiser saw it, next to the lambda evaluated at the epoch and at the step:

    python scripts/gca_official_lr.py                       # 500 epochs (about a minute on CPU)
    python scripts/gca_official_lr.py --epochs 5 --every 1  # a quick look

The lambda is written here from the official formula (``lr_min + (lr_max - lr_min) * 0.5 *
(1 + cos(pi * step / total))``); configs/experiment/gca_cifar10.yaml cites the lines.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

OFFICIAL = {"sgd_lr": 0.2, "learning_rate": 0.6, "lr_min": 1e-3, "max_epochs": 500,
            # len(DataLoader(50000 CIFAR images, batch_size=512, drop_last=True)), computed in
            # ssl_pretrain.py before Lightning's DDP sampler halves the epoch on 2 GPUs
            "len_train_loader": 97}


def official_factor(step: int, total_steps: int, lr_max: float, lr_min: float) -> float:
    """The official lambda: a cosine from ``lr_max`` to ``lr_min`` over ``total_steps``."""
    return lr_min + (lr_max - lr_min) * 0.5 * (1 + math.cos(step / total_steps * math.pi))


def measure(epochs: int, steps_per_epoch: int = 2) -> list[float]:
    """The lr of each epoch's optimiser steps under a real Lightning Trainer running the official
    construction (checks that it is the same for every step of an epoch)."""
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    total = OFFICIAL["max_epochs"] * OFFICIAL["len_train_loader"]

    class Official(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)
            self.seen: dict[int, list[float]] = {}

        def training_step(self, batch, batch_idx):
            lr = self.trainer.optimizers[0].param_groups[0]["lr"]
            self.seen.setdefault(self.current_epoch, []).append(lr)
            return self.layer(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), OFFICIAL["sgd_lr"], momentum=0.9,
                                  weight_decay=1e-6, nesterov=True)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: official_factor(
                step, total, OFFICIAL["learning_rate"], OFFICIAL["lr_min"]))
            return {"optimizer": opt, "lr_scheduler": sched}  # as returned officially: no interval

    data = DataLoader(TensorDataset(torch.zeros(steps_per_epoch, 2)), batch_size=1)
    module = Official()
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, data)
    lrs = []
    for epoch in range(epochs):
        steps = module.seen[epoch]
        assert len(set(steps)) == 1, f"epoch {epoch}: the lr changed within the epoch: {steps}"
        lrs.append(steps[0])
    return lrs


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=OFFICIAL["max_epochs"])
    parser.add_argument("--every", type=int, default=50, help="print every N-th epoch (and the last)")
    parser.add_argument("--out", type=Path, default=None, help="also write the lrs here (json)")
    args = parser.parse_args(argv)
    import logging

    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    lrs = measure(args.epochs)
    total = OFFICIAL["max_epochs"] * OFFICIAL["len_train_loader"]
    sgd = OFFICIAL["sgd_lr"]
    print("epoch  lr (Lightning, as run)  lambda(epoch) x 0.2  per-step cosine at the epoch's first step")
    for epoch, lr in enumerate(lrs):
        if epoch % args.every == 0 or epoch == len(lrs) - 1:
            by_epoch = sgd * official_factor(epoch, total, OFFICIAL["learning_rate"], OFFICIAL["lr_min"])
            by_step = sgd * official_factor(epoch * OFFICIAL["len_train_loader"], total,
                                            OFFICIAL["learning_rate"], OFFICIAL["lr_min"])
            print(f"{epoch:5d}  {lr:.8f}              {by_epoch:.8f}           {by_step:.8f}")
    result = {"lrs": lrs, "first": lrs[0], "last": lrs[-1], "epochs": len(lrs),
              "relative_change": (lrs[0] - lrs[-1]) / lrs[0]}
    print(f"lr from {lrs[0]:.5f} to {lrs[-1]:.5f} over {len(lrs)} epochs "
          f"({100 * result['relative_change']:.3f}% lower)")
    if args.out:
        args.out.write_text(json.dumps(result) + "\n")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
