"""The default model, data and training step the benchmark sections time.

:func:`module_step` is the real step (``ContrastiveModule.training_step``, backward, optimiser
step); :func:`plain_step_fn` is the same work written as a minimal PyTorch loop, the reference
the ``trainer`` section compares the framework against.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.timing import synchronizer

ROOT = Path(__file__).resolve().parent.parent
BATCH = 512  # Fashion-MNIST default batch (configs/data/fashion_mnist.yaml)


def load_config(device: torch.device, overrides: list[str] = ()):
    from hydra import compose, initialize_config_dir

    base = ["~logger", "data.download=false"]
    if device.type == "cuda":
        base.append("trainer=gpu")
    # the figures compare fixed precisions: not trainer.precision=auto's start-up choice
    base.append(f"trainer.precision={'bf16-mixed' if device.type == 'cuda' else '32-true'}")
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        return compose("train", overrides=base + list(overrides))


def build_data(cfg):
    """The Fashion-MNIST data module, or uint8 tensors of its shape when the files are absent."""
    from sslkit.data.base import ImageDataModule, TensorImages
    from sslkit.errors import UserError
    from sslkit.training.build import build_datamodule

    dm = build_datamodule(cfg)
    try:
        dm.setup("fit")
        return dm, "fashion_mnist (real, 60000 x 1 x 28 x 28 uint8)"
    except UserError:
        pass

    class RandomFMNIST(ImageDataModule):
        name, in_chans, image_size, num_classes = "random_fmnist", 1, 28, 10

        def load_split(self, split):
            n = 60000 if split == "train" else 10000
            gen = torch.Generator().manual_seed(0)
            images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=gen)
            return TensorImages(images, torch.randint(0, 10, (n,), generator=gen))

    dm = RandomFMNIST(batch_size=cfg.data.batch_size, eval_batch_size=cfg.data.eval_batch_size,
                      val_size=cfg.data.val_size)
    dm.setup("fit")
    return dm, "synthetic uint8 60000 x 1 x 28 x 28 (Fashion-MNIST files not found)"


def build_module(cfg, device: torch.device):
    import lightning as L

    from sslkit.training.build import build_module as build

    L.seed_everything(0, verbose=False)
    return build(cfg).to(device)


def plain_optimizer(cfg, module, steps: int):
    import hydra

    from sslkit.optim import build_optimizer, warmup_cosine

    opt = build_optimizer(hydra.utils.instantiate(cfg.optim.optimizer), [module.online],
                          cfg.optim.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(steps, 1, cfg.optim.final_lr_ratio))
    return opt, sched


def plain_step_fn(module, opt, sched, channels_last: bool, autocast_dtype=None, encoder=None,
                  augment=None):
    """One training step written as a minimal PyTorch loop over the module's parts."""
    online, head = module.online, module.head
    augment = augment if augment is not None else module.augment
    encoder = encoder if encoder is not None else online.encoder
    device_type = next(online.parameters()).device.type

    def step(images: torch.Tensor) -> torch.Tensor:
        views = augment(images)
        x = torch.cat(views)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type, dtype=autocast_dtype or torch.float32,
                            enabled=autocast_dtype is not None):
            z = online.projector(encoder(x))
            z = z.view(len(views), images.shape[0], -1).transpose(0, 1)
            loss = head(z).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        return loss

    return step


def module_step(module, opt, sched=None, autocast_dtype=None) -> Callable[[torch.Tensor], torch.Tensor]:
    """One training step of the real module, outside a Trainer: ``training_step`` (augment,
    encoders, head, queue) on a batch of uint8 images, backward, optimiser step. ``self.log``
    calls are no-ops without a Trainer."""
    device_type = next(module.parameters()).device.type

    def step(images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if labels is None:
            labels = torch.zeros(len(images), dtype=torch.long, device=images.device)
        batch = {"image": images, "label": labels}
        with torch.autocast(device_type, dtype=autocast_dtype or torch.float32,
                            enabled=autocast_dtype is not None):
            loss = module.training_step(batch, 0)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        return loss

    return step


def warm_process(device: torch.device, steps: int) -> list[float]:
    """Train steps of the default model before anything is timed. A fresh process runs its
    first ~5-10 steps 2x slower on CPU (memory being faulted in, kernel caches); without this the
    first-timed variant pays for it."""
    cfg = load_config(device)
    dm, _ = build_data(cfg)
    images = dm.split("pretrain").images[:BATCH].to(device)
    module = build_module(cfg, device)
    module.train()
    opt, sched = plain_optimizer(cfg, module, 10**6)
    step = plain_step_fn(module, opt, sched, cfg.model.channels_last)
    sync = synchronizer(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step(images)
        sync()
        times.append(round(time.perf_counter() - t0, 3))
    return times


def fit_step_times(cfg, dm, device: torch.device, steps: int, warmup: int,
                   prepare: Callable[[torch.nn.Module], None] | None = None) -> Callable[[], list[float]]:
    """A function that fits a fresh module (changed by ``prepare`` first, if given) for ``steps``
    steps with a bare Lightning Trainer and returns the step times after ``warmup`` (end of one
    step to the end of the next): the real step, EMA updates and callbacks' hooks included."""
    import lightning as L

    sync = synchronizer(device)

    def run() -> list[float]:
        module = build_module(cfg, device)
        if prepare is not None:
            prepare(module)
        times, last = [], [None]

        class StepTimer(L.Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
                sync()
                now = time.perf_counter()
                if batch_idx >= warmup:
                    times.append(now - last[0])
                last[0] = now

        root = tempfile.mkdtemp(prefix="sslkit-bench-fit-")
        trainer = L.Trainer(
            accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
            precision=cfg.trainer.precision, max_steps=steps, max_epochs=-1, limit_val_batches=0,
            num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, callbacks=[StepTimer()],
            use_distributed_sampler=False, default_root_dir=root)
        sink = io.StringIO()
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                trainer.fit(module, datamodule=dm)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        return times

    return run


def run_module_child(module: str, *args) -> dict:
    """``python -m MODULE ARGS...`` in a fresh process (so that its peak memory is its own), and
    the JSON of its last stdout line; ``{"error": ...}`` with its last stderr line if it failed."""
    cmd = [sys.executable, "-m", module, *map(str, args)]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        return {"error": tail[:300]}
    return json.loads(proc.stdout.strip().splitlines()[-1])
