"""Representation metrics logged while pretraining runs, with a collapse warning."""

from __future__ import annotations

import lightning as L

from sslkit.eval.metrics import collapse_warning, first_images, representation_metrics


class MetricsMonitor(L.Callback):
    """Every ``every_n_epochs`` (and at the last epoch), at the end of validation, computes
    ``sslkit.eval.metrics.representation_metrics`` on the first ``num_samples`` images of the
    validation split (held out of the training images; never the test split; its forward passes
    in the training's precision) and logs them as ``val/metrics/SPACE_NAME`` (e.g.
    ``val/metrics/encoder_rankme``). RankMe is at most ``min(num_samples, dim)``. The first time
    RankMe or the std ratio falls below its threshold it prints one warning line to the console
    log, which also goes to summary.json as ``collapse_warning`` (with its epoch)."""

    def __init__(self, every_n_epochs: int = 1, num_samples: int = 1024, min_rank: float = 2.0,
                 min_std_ratio: float = 0.1, alignment_alpha: float = 2.0, uniformity_t: float = 2.0) -> None:
        self.every_n_epochs, self.num_samples = every_n_epochs, num_samples
        self.min_rank, self.min_std_ratio = min_rank, min_std_ratio
        self.alpha, self.t = alignment_alpha, uniformity_t
        self.warning: str | None = None
        self._images = None

    def _active(self, trainer: L.Trainer) -> bool:
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        return self.every_n_epochs > 0 and ((epoch + 1) % self.every_n_epochs == 0 or last)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not self._active(trainer):
            return
        if self._images is None:
            dm = trainer.datamodule
            self._images = first_images(dm, "validation", self.num_samples)
        # the same images and weights on every rank: every rank computes the same numbers. The
        # forward passes run in the training's precision, as validation_step does (bf16 autocast:
        # 0.4 s less per active epoch on the default job); the metric maths is in float64, which
        # autocast leaves alone
        with trainer.precision_plugin.forward_context():
            metrics = representation_metrics(pl_module, self._images, self.alpha, self.t,
                                             seed=trainer.current_epoch)
        for space, values in metrics.items():
            for name, value in values.items():
                if name != "dim":
                    pl_module.log(f"val/metrics/{space}_{name}", float(value), sync_dist=True)
        warning = collapse_warning(metrics, self.min_rank, self.min_std_ratio)
        if warning and self.warning is None:
            self.warning = f"epoch {trainer.current_epoch}: {warning}"
            if trainer.is_global_zero:
                print(f"warning: {self.warning}", flush=True)

    def summary_entries(self) -> dict:
        return {"collapse_warning": self.warning} if self.warning else {}
