"""``trainer`` section: train-step images/s of the default config fitted by a real Lightning
Trainer, bare and with train.py's callbacks and CSV logger, against a minimal plain PyTorch loop
over the same model, data, augment, loss and optimiser. Overhead = 1 - ratio."""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from benchmarks.common import build_data, build_module, load_config, plain_optimizer, plain_step_fn
from benchmarks.timing import Series, interleave, synchronizer

RATIO_KEY = "ratio_to_plain"


def section_trainer(args, device) -> dict:
    import lightning as L
    from sslkit.launch.run import quiet_lightning

    quiet_lightning()
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*`max_epochs` was not set.*")
    cfg = load_config(device)
    dm, data_desc = build_data(cfg)
    batch = cfg.data.batch_size
    steps, warmup = args.steps, args.warmup_steps
    sync = synchronizer(device)
    tmp = Path(tempfile.mkdtemp(prefix="sslkit-bench-"))

    class StepTimer(L.Callback):
        """Seconds from the end of one step to the end of the next (loop overhead, data
        loading and the step itself), for the steps after ``warmup``."""

        def __init__(self) -> None:
            self.last, self.times = None, []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch_, batch_idx) -> None:
            sync()
            now = time.perf_counter()
            if batch_idx >= warmup:
                self.times.append(now - self.last)
            self.last = now

    def framework_trainer(run_dir: Path) -> L.Trainer:
        """The Trainer train.py builds (sslkit.training.build.build_trainer: eval callbacks, checkpoints,
        LR monitor, progress bar, preemption handler, CSV logger), stopped after ``steps``
        steps, validation off."""
        from omegaconf import open_dict

        from sslkit.training.build import build_trainer

        c = cfg.copy()
        with open_dict(c):
            c.trainer.max_steps, c.trainer.max_epochs, c.trainer.limit_val_batches = steps, -1, 0
            c.logger = {"csv": {"_target_": "lightning.pytorch.loggers.CSVLogger",
                                "save_dir": str(run_dir), "name": "", "version": ""}}
        return build_trainer(c, run_dir)

    def lightning_fit(framework: bool) -> Callable[[], list[float]]:
        def run() -> list[float]:
            module = build_module(cfg, device)
            timer = StepTimer()
            run_dir = Path(tempfile.mkdtemp(dir=tmp))
            if framework:
                trainer = framework_trainer(run_dir)
                trainer.callbacks.append(timer)
            else:
                trainer = L.Trainer(
                    accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
                    precision=cfg.trainer.precision, max_steps=steps, max_epochs=-1,
                    limit_val_batches=0, num_sanity_val_steps=0, logger=False,
                    enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False, callbacks=[timer], use_distributed_sampler=False,
                    default_root_dir=str(run_dir),
                )
            sink = io.StringIO()  # the progress bar draws, unseen
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                trainer.fit(module, datamodule=dm)
            return timer.times

        return run

    def plain_loop() -> list[float]:
        module = build_module(cfg, device)
        module.train()
        opt, sched = plain_optimizer(cfg, module, steps)
        step = plain_step_fn(module, opt, sched, cfg.model.channels_last)
        times, last = [], None
        for i, b in enumerate(dm.train_dataloader()):
            if i == steps:
                break
            step(b["image"].to(device, non_blocking=True))
            sync()
            now = time.perf_counter()
            if i >= warmup:
                times.append(now - last)
            last = now
        return times

    work = batch  # per step: every timed step is one measurement
    plain = Series("plain PyTorch loop", work)
    bare = Series("Lightning, bare (no callbacks, no logger)", work)
    full = Series("Lightning, train.py's Trainer (callbacks, CSV logger)", work,
                  callbacks="sslkit.training.build.build_trainer: online probe, kNN monitor (idle: no "
                            "validation), checkpoints, LR monitor, progress bar (drawn to a sink), "
                            "preemption handler; CSV logger")
    try:
        interleave([plain, bare, full], [plain_loop, lightning_fit(False), lightning_fit(True)],
                   args.repeats)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = [plain.record(), bare.record(plain, "ratio_to_plain"), full.record(plain, "ratio_to_plain")]
    for row in rows[1:]:
        if "ratio_to_plain" in row:
            row["overhead"] = 1 - row["ratio_to_plain"]
    return {
        "title": "Lightning Trainer vs plain PyTorch loop: train-step images/s (target overhead <= 5%)",
        "settings": {"data": data_desc, "batch": int(batch), "steps_per_fit": steps,
                     "timed_steps_per_fit": steps - warmup,
                     "encoder": cfg.encoder._target_, "augment": cfg.augment._target_,
                     "loss": cfg.loss._target_, "optimizer": cfg.optim.optimizer._target_,
                     "precision": cfg.trainer.precision, "device": str(device),
                     "note": "one measurement = one step, end of a step to the end of the next (data "
                             "loading, augment, forward, backward, step, logging, loop); median and min "
                             "over all timed steps of all fits; validation off in every variant"},
        "rows": rows,
    }


run = section_trainer
