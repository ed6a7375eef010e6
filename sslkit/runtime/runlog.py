"""What a run tells its user: a plain-text log in the run dir (``train.log``) and, when stdout
is not a terminal (a batch job, a pipe), plain progress lines instead of a progress bar that
redraws itself into megabyte-long lines."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar

LOGGERS = ("sslkit", "lightning.pytorch", "lightning.fabric", "py.warnings")


def _format_metrics(metrics) -> str:
    """``name=value`` for each entry that is a number (4 significant digits)."""
    parts = []
    for name, value in metrics:
        try:
            parts.append(f"{name}={float(value):.4g}")
        except (TypeError, ValueError):
            continue
    return " ".join(parts)


def _metrics_line(trainer: L.Trainer) -> str:
    return _format_metrics(sorted(trainer.callback_metrics.items()))


class RunLog(L.Callback):
    """Appends to ``path``: Python warnings and the sslkit/Lightning log records of the run,
    one line per finished epoch with every scalar metric, and the end of training."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.handler: logging.Handler | None = None
        self.started = 0.0

    def write(self, message: str) -> None:
        logging.getLogger("sslkit").info(message)

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.handler is not None or not trainer.is_global_zero:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handler = logging.FileHandler(self.path, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.captureWarnings(True)
        for name in LOGGERS:
            logger = logging.getLogger(name)
            logger.addHandler(self.handler)
            if name == "sslkit":
                logger.setLevel(logging.INFO)

    def on_fit_start(self, trainer, pl_module) -> None:
        self.started = time.perf_counter()

    def on_train_start(self, trainer, pl_module) -> None:
        # not at on_fit_start: Lightning restores a resumed run's epoch and step after that hook
        self.write(f"fit: from epoch {trainer.current_epoch} of {trainer.max_epochs}, step "
                   f"{trainer.global_step}, {trainer.num_training_batches} steps per epoch, "
                   f"world size {trainer.world_size}")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.write(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} step {trainer.global_step} "
                   f"({time.perf_counter() - self.started:.0f} s): {_metrics_line(trainer)}")

    def on_fit_end(self, trainer, pl_module) -> None:
        self.write(f"fit done: {trainer.current_epoch} epochs, step {trainer.global_step}")

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self.close()

    def close(self) -> None:
        if self.handler is None:
            return
        for name in LOGGERS:
            logging.getLogger(name).removeHandler(self.handler)
        logging.captureWarnings(False)
        self.handler.close()
        self.handler = None


class LineProgress(ProgressBar):
    """Plain lines on stdout, for logs and batch jobs: every ``refresh_rate`` training batches
    ``epoch E/N batch b/B`` with the progress-bar metrics, and each epoch's metrics at its end."""

    def __init__(self, refresh_rate: int = 10) -> None:
        super().__init__()
        self.refresh_rate = refresh_rate
        self._enabled = True
        self._started = 0.0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer, pl_module) -> None:
        # a run resumed mid-epoch gets no on_train_epoch_start for that epoch: its "done" line
        # counts from the resume
        self._started = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        done = batch_idx + 1
        if not (self._enabled and trainer.is_global_zero and self.refresh_rate):
            return
        if done % self.refresh_rate and done != self.total_train_batches:
            return
        shown = _format_metrics(self.get_metrics(trainer, pl_module).items())
        print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} batch {done}/"
              f"{self.total_train_batches} {shown}", flush=True)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._enabled and trainer.is_global_zero:
            print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} done, step "
                  f"{trainer.global_step}, {time.perf_counter() - self._started:.1f} s: "
                  f"{_metrics_line(trainer)}", flush=True)


def progress_bar(refresh_rate: int) -> ProgressBar:
    """A tqdm bar on a terminal, else plain lines."""
    return TQDMProgressBar(refresh_rate=refresh_rate) if sys.stdout.isatty() else LineProgress(refresh_rate)


def note(run_dir: Path, *lines: str) -> None:
    """Start-up decisions (threads, precision): printed and appended to ``train.log`` by the
    first process only, before the trainer (and RunLog's handler) exists."""
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank != 0:
        return
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    with (Path(run_dir) / "train.log").open("a", encoding="utf-8") as log:
        for line in lines:
            print(line, flush=True)
            log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} INFO sslkit: {line}\n")
