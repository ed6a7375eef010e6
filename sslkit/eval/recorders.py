"""Record what a loss head does to one fixed batch, at several points of training.

Heads log scalars every step; pictures of the weights against distance (CACR/CCT) or of the
transport plan (GCA) need the per-pair tensors a head returns in its ``logs``. This callback
runs the head on the same batch (same images, same augmentation draw) every N epochs and saves
those tensors to ``<run_dir>/records/stepNNNNNNN.pt``; :mod:`sslkit.eval.plots` draws them.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import default_collate

RECORDS_DIR = "records"


class HeadRecorder(L.Callback):
    """Every ``every_n_epochs`` epochs (and before the first and after the last; 0: off) runs the loss
    head on the projections of one fixed batch of ``batch_size`` pretraining images (a seeded
    draw; the views come from a fixed augmentation seed) and saves every non-scalar tensor of
    its ``logs`` with the batch labels. The networks run in eval mode (BatchNorm running
    statistics are not touched) without gradient; only rank 0 records."""

    def __init__(self, every_n_epochs: int = 0, batch_size: int = 256, seed: int = 0) -> None:
        if every_n_epochs < 0:
            raise ValueError(f"every_n_epochs must be >= 0 (0: off), got {every_n_epochs}")
        if batch_size < 2:
            raise ValueError(f"batch_size must be >= 2, got {batch_size}")
        self.every_n_epochs, self.batch_size, self.seed = every_n_epochs, batch_size, seed
        self._batch: dict[str, Tensor] | None = None
        self._warned = False

    def _fixed_batch(self, trainer: L.Trainer) -> dict[str, Tensor]:
        if self._batch is None:
            data = trainer.datamodule.split("pretrain")
            n = min(self.batch_size, len(data))
            gen = torch.Generator().manual_seed(self.seed)
            index = torch.randperm(len(data), generator=gen)[:n].sort().values
            self._batch = default_collate([data[int(i)] for i in index])
        return self._batch

    @torch.no_grad()
    def record(self, trainer: L.Trainer, module: L.LightningModule,
               epochs_done: int) -> Path | None:
        """Run the head on the fixed batch now and save its tensors; returns the file written."""
        batch = {k: v.to(module.device) for k, v in self._fixed_batch(trainer).items()
                 if isinstance(v, Tensor)}
        was_training = module.training
        module.eval()
        try:
            gen = torch.Generator(device=module.device).manual_seed(self.seed)
            views = module.augment(batch["image"], generator=gen)
            _, _, z, extras, _ = module.head_inputs(batch, views, gen, one_rank=True)
            out = module.head(z, **extras)
        finally:
            module.train(was_training)
        tensors = {k: v.detach().float().cpu().contiguous() for k, v in out.logs.items()
                   if isinstance(v, Tensor) and v.numel() != 1}
        if not tensors:
            if not self._warned:
                rank_zero_warn(f"HeadRecorder: loss head {type(module.head).__name__} returns no "
                               "per-pair tensors in its logs; nothing to record")
                self._warned = True
            return None
        scalars = {k: float(v) for k, v in out.logs.items()
                   if not (isinstance(v, Tensor) and v.numel() != 1)}
        folder = Path(trainer.default_root_dir) / RECORDS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"step{trainer.global_step:07d}.pt"
        torch.save({
            "head": type(module.head).__name__,
            "epochs_done": epochs_done,
            "step": trainer.global_step,
            "batch": z.shape[0],
            "views": z.shape[1],
            "labels": batch["label"].cpu(),
            "loss": float(out.loss),
            "scalars": scalars,
            "tensors": tensors,
        }, path)
        return path

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.every_n_epochs:
            self.record(trainer, pl_module, trainer.current_epoch)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        done = trainer.current_epoch + 1
        last = trainer.max_epochs is not None and done >= trainer.max_epochs
        if trainer.is_global_zero and self.every_n_epochs and (done % self.every_n_epochs == 0 or last):
            self.record(trainer, pl_module, done)


def load_records(run_dir: str | Path) -> list[dict]:
    """Every record of a run, oldest first (empty if the recorder was off)."""
    folder = Path(run_dir) / RECORDS_DIR
    paths = sorted(folder.glob("step*.pt")) if folder.is_dir() else []
    return [torch.load(p, map_location="cpu", weights_only=True) for p in paths]
