"""Stop cleanly when the job is told to: SIGTERM, or SIGUSR1 as SLURM sends before preemption."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import lightning as L
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities.exceptions import SIGTERMException


class Preemption(L.Callback):
    """On SIGTERM Lightning finishes the running step and raises ``SIGTERMException``; this
    callback then writes ``last.ckpt`` (mid-epoch: the loop counters say which batch comes next,
    and the data module resumes there) so that rerunning the same command continues the run.

    SIGUSR1 is turned into the same path, except under SLURM with auto-requeue, where
    Lightning's own handler saves and requeues the job.
    """

    def __init__(self, checkpoint_path: str | Path) -> None:
        self.checkpoint_path = Path(checkpoint_path)
        self.saved: Path | None = None
        self.stopped_at: tuple[int, int] | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        env = trainer._accelerator_connector.cluster_environment
        slurm_requeue = isinstance(env, SLURMEnvironment) and env.auto_requeue
        if hasattr(signal, "SIGUSR1") and not slurm_requeue:
            signal.signal(signal.SIGUSR1, lambda *_: os.kill(os.getpid(), signal.SIGTERM))

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            if trainer.validating or trainer.sanity_checking:
                # mid-validation the loops cannot be restored to this exact point: keep the
                # checkpoint of the last finished epoch (or step), which resumes exactly
                self.saved = self.checkpoint_path if self.checkpoint_path.exists() else None
                self.stopped_at = (trainer.current_epoch, trainer.global_step)
                return
            trainer.save_checkpoint(self.checkpoint_path)
            self.saved = self.checkpoint_path
            self.stopped_at = (trainer.current_epoch, trainer.global_step)
