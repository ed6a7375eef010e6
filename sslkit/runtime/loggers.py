"""What reaches a run's experiment loggers besides the scalars Lightning logs itself: the
evaluators' pictures, and the config beside the run's final numbers.

Lightning's loggers share ``log_metrics`` and ``log_hyperparams`` but have no common call for an
image, so each logger that shows pictures gets them its own way (wandb: ``log_image``;
TensorBoard: ``add_image`` on its SummaryWriter); loggers without pictures (CSV) are skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np


def log_pictures(loggers: Iterable, files: Mapping[str, Path], step: int | None = None) -> list[str]:
    """Log each PNG of ``files`` (key -> path) as the image ``plots/KEY`` to every logger that
    shows images; returns the names of the loggers that got them."""
    if not files:
        return []
    from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

    done = []
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            for key, path in files.items():
                logger.log_image(key=f"plots/{key}", images=[str(path)], step=step)
            done.append("wandb")
        elif isinstance(logger, TensorBoardLogger):
            writer = logger.experiment
            for key, path in files.items():
                writer.add_image(f"plots/{key}", _rgb(path), global_step=step, dataformats="HWC")
            # Lightning closed the writer at the end of fit; close the file this call reopened
            writer.close()
            done.append("tensorboard")
    return done


def log_results(loggers: Iterable, params: Mapping, metrics: Mapping[str, float], step: int) -> None:
    """TensorBoard's hparams view: the resolved config beside the run's final numbers
    (``metrics``, e.g. ``val/linear_probe_top1``). Other loggers got the config at the start of
    the run (hparams.yaml, wandb's config) and summary.json holds the numbers."""
    from lightning.pytorch.loggers import TensorBoardLogger

    metrics = {k: float(v) for k, v in metrics.items()}
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger) and metrics:
            logger.log_hyperparams(dict(params), metrics=metrics, step=step)
            logger.experiment.close()


def _rgb(path: Path) -> np.ndarray:
    """The picture at ``path`` as an ``[H, W, 3]`` uint8 array."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))
