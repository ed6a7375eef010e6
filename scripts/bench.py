"""Speed benchmarks of sslkit, side by side in one run: `make bench` (or `python scripts/bench.py`).

    python scripts/bench.py                       # everything; table on stdout, results/bench.json
    python scripts/bench.py --only heads trainer  # some sections
    python scripts/bench.py --quick --out /tmp/b.json   # tiny repeat counts (smoke test)

Sections (``--only``):

* ``trainer``: train-step images/s of the framework's module (``configs/train.yaml`` defaults:
  convnet, grey augment, AU head, AdamW; Fashion-MNIST 28x28 grey, batch 512) fitted by a real
  Lightning Trainer, bare and with train.py's callbacks and CSV logger, against a minimal plain
  PyTorch loop over the same model, data, augment, loss and optimiser. Overhead = 1 - ratio.
* ``augment``: the batched on-device ``ViewAugment`` images/s against the model's training
  images/s (views given) and against torchvision.transforms.v2 applied image by image (in the
  main process, and in a DataLoader with worker processes).
* ``heads``: forward+backward time of every head in configs/loss/ relative to InfoNCE at
  B = 256, 1024, 4096 (D = 128, V = 2); random momentum keys ``k`` and a queue of 4096 keys for
  the heads that need them.
* ``precision``: train-step images/s of the default model in fp32 (NCHW), fp32 channels_last
  (the default config), bf16 autocast, and torch.compile of the encoder.
* ``views``: train-step images/s of the real module (Lightning Trainer, bare) with the MoCo
  heads, computing only the views each head reads (``query_views`` / ``key_views``) against
  computing every view with both encoders (what the module did before heads declared their
  views); also the encoder rows per step of each, counted.
* ``attack``: images/s of torchattacks' PGD-20 (l-inf 8/255, step 2/255, random start; what
  ``eval=robust`` runs) against a plain hand-written PGD loop of the same forward/backward passes,
  on the default encoder + a linear head in eval mode (target: ratio >= 0.9).
* ``adversarial``: a training step with PGD views (``adversarial=pgd``) against a clean step,
  and the attack against a plain loop of the same passes (scripts/bench_adversarial.py).

Every figure is a ratio or a throughput measured in this run, repeated (variants interleaved,
order rotated each repeat); min and median are reported, with torch threads, CPU count and
os.getloadavg() recorded beside each benchmark. Figures from different runs or machines are
not comparable; ratios within one run are.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import datetime as dt
import io
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECTIONS = ("trainer", "augment", "heads", "precision", "views", "attack", "adversarial")
BATCH = 512  # Fashion-MNIST default batch (configs/data/fashion_mnist.yaml)
HEAD_DIM, HEAD_VIEWS, QUEUE = 128, 2, 4096


# -- measuring ---------------------------------------------------------------------------------
def context() -> dict:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    return {"torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "cpus_usable": usable, "loadavg": [round(x, 2) for x in os.getloadavg()]}


def synchronizer(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


class Series:
    """Seconds of repeated measurements of one variant, plus the load when each was taken."""

    def __init__(self, name: str, work: float, unit: str = "images", **info) -> None:
        self.name, self.work, self.unit, self.info = name, work, unit, info
        self.seconds: list[float] = []
        self.loads: list[float] = []
        self.error: str | None = None

    def add(self, seconds: float | list[float]) -> None:
        """One measurement, or a list of them (the steps of one run)."""
        self.seconds += seconds if isinstance(seconds, list) else [seconds]
        self.loads.append(round(os.getloadavg()[0], 2))

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")

    @property
    def best(self) -> float:
        return min(self.seconds) if self.seconds else float("nan")

    def record(self, ratio_to: "Series | None" = None, ratio_name: str = "ratio") -> dict:
        out = {"name": self.name, **self.info, "repeats": len(self.seconds), "runs": len(self.loads),
               "seconds": [round(s, 6) for s in self.seconds],
               "seconds_min": self.best, "seconds_median": self.median}
        if self.work:
            out["unit"] = f"{self.unit}/s"
            out["throughput_median"] = self.work / self.median if self.seconds else None
            out["throughput_best"] = self.work / self.best if self.seconds else None
        if ratio_to is not None and self.seconds and ratio_to.seconds:
            if self.work:  # throughput ratio: > 1 is faster than the reference
                out[ratio_name] = (self.work / self.median) / (ratio_to.work / ratio_to.median)
                out[ratio_name + "_best"] = (self.work / self.best) / (ratio_to.work / ratio_to.best)
            else:  # time ratio: > 1 is slower than the reference
                out[ratio_name] = self.median / ratio_to.median
                out[ratio_name + "_best"] = self.best / ratio_to.best
            out["ratio_to"] = ratio_to.name
        out["context"] = {**context(), "loadavg_1m_at_repeats": self.loads}
        if self.error:
            out["error"] = self.error
        return out


def interleave(series: list[Series], runners: list[Callable[[], float]], repeats: int) -> None:
    """Run every variant once per repeat, rotating the order so drifts in machine load hit all
    of them alike."""
    n = len(series)
    for r in range(repeats):
        for i in range(n):
            j = (i + r) % n
            if series[j].error:
                continue
            try:
                series[j].add(runners[j]())
            except Exception as err:  # one variant failing (OOM, no compiler) must not end the bench
                series[j].error = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"[:300]


# -- building the default model ----------------------------------------------------------------
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
    from sslkit.run import build_datamodule

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

    dm = RandomFMNIST(batch_size=cfg.data.batch_size, eval_batch_size=cfg.data.eval_batch_size)
    dm.setup("fit")
    return dm, "synthetic uint8 60000 x 1 x 28 x 28 (Fashion-MNIST files not found)"


def build_module(cfg, device: torch.device):
    import lightning as L

    from sslkit.run import build_module as build

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


# -- section: Lightning vs plain loop ----------------------------------------------------------
def section_trainer(args, device) -> dict:
    import lightning as L
    from sslkit.run import quiet_lightning

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
        """The Trainer train.py builds (sslkit.run.build_trainer: eval callbacks, checkpoints,
        LR monitor, progress bar, preemption handler, CSV logger), stopped after ``steps``
        steps, validation off."""
        from omegaconf import open_dict

        from sslkit.run import build_trainer

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
                  callbacks="sslkit.run.build_trainer: online probe, kNN monitor (idle: no "
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


# -- section: augmentation ---------------------------------------------------------------------
class PerSampleViews(torch.utils.data.Dataset):
    """Two torchvision.transforms.v2 views of each image, one image at a time."""

    def __init__(self, images: torch.Tensor, transform) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        img = self.images[i]
        return self.transform(img), self.transform(img)


def v2_pipeline(aug_cfg):
    from torchvision.transforms import v2

    return v2.Compose([
        v2.RandomResizedCrop(aug_cfg.crop_size, scale=tuple(aug_cfg.scale), ratio=tuple(aug_cfg.ratio),
                             antialias=True),
        v2.RandomHorizontalFlip(aug_cfg.flip_p),
        v2.RandomApply([v2.ColorJitter(brightness=aug_cfg.brightness, contrast=aug_cfg.contrast)],
                       p=aug_cfg.jitter_p),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(aug_cfg.mean), list(aug_cfg.std)),
    ])


def section_augment(args, device) -> dict:
    cfg = load_config(device)
    dm, data_desc = build_data(cfg)
    images_cpu = dm.split("pretrain").images[: BATCH * 4]
    images = images_cpu[:BATCH].to(device)
    sync = synchronizer(device)
    module = build_module(cfg, device)
    module.train()
    augment = module.augment
    iters = args.iters * 4  # batched augment calls per repeat (each a fraction of a train step)

    def batched() -> float:
        sync()
        t0 = time.perf_counter()
        for _ in range(iters):
            augment(images)
        sync()
        return time.perf_counter() - t0

    opt, sched = plain_optimizer(cfg, module, 10**6)
    fixed_views = [v.clone() for v in augment(images)]
    train_steps = max(1, args.iters // 3)

    def train_no_augment() -> float:
        # the model's step on views already made: encoder + projector + head + backward + step
        step = plain_step_fn(module, opt, sched, cfg.model.channels_last,
                             augment=lambda _: fixed_views)
        step(images)  # warm
        sync()
        t0 = time.perf_counter()
        for _ in range(train_steps):
            step(images)
        sync()
        return time.perf_counter() - t0

    transform = v2_pipeline(cfg.augment)
    n_per_sample = min(len(images_cpu), BATCH if not args.quick else 128)

    def per_sample_loop() -> float:
        # what a DataLoader worker does, in this process: two views per image, then collate
        t0 = time.perf_counter()
        v1, v2_ = [], []
        for img in images_cpu[:n_per_sample]:
            v1.append(transform(img))
            v2_.append(transform(img))
        torch.stack(v1), torch.stack(v2_)
        return time.perf_counter() - t0

    workers = max(1, min(os.cpu_count() or 1, 8))
    loader_images = images_cpu[: 512 if args.quick else len(images_cpu)]
    loader = torch.utils.data.DataLoader(
        PerSampleViews(loader_images, transform), batch_size=128, shuffle=True,
        num_workers=workers, persistent_workers=True, drop_last=True,
    )

    def per_sample_workers() -> float:
        # one whole epoch, clock started before the (persistent, idle) workers get the first
        # indices, so prefetching cannot hide work
        t0 = time.perf_counter()
        for _ in loader:
            pass
        return time.perf_counter() - t0

    s_batched = Series("ViewAugment, batched on the device (2 views)", iters * BATCH, device=str(device))
    s_train = Series("model training step on given views (no augment)", train_steps * BATCH,
                     device=str(device))
    s_loop = Series("torchvision.transforms.v2 per sample, main process (2 views)", n_per_sample,
                    device="cpu")
    s_workers = Series(f"torchvision.transforms.v2 per sample, DataLoader num_workers={workers}",
                       len(loader) * 128, device="cpu")
    batched(), per_sample_loop(), per_sample_workers()  # warm-up (workers started)
    interleave([s_batched, s_train, s_loop, s_workers],
               [batched, train_no_augment, per_sample_loop, per_sample_workers], args.repeats)
    del loader
    rows = [s_batched.record(), s_train.record(s_batched, "ratio_to_batched"),
            s_loop.record(s_batched, "ratio_to_batched"), s_workers.record(s_batched, "ratio_to_batched")]
    return {
        "title": "augmentation images/s: batched ViewAugment vs the model's training step vs per-sample torchvision v2",
        "settings": {"data": data_desc, "batch": BATCH, "loss": cfg.loss._target_,
                     "augment": "configs/augment/grey.yaml (crop, flip, "
                     "brightness/contrast jitter, normalise)", "device": str(device),
                     "per_sample_images_timed": n_per_sample,
                     "note": "ratio_to_batched < 1: slower than the batched augment; images/s count "
                             "input images (2 views each)"},
        "rows": rows,
    }


# -- section: loss heads -----------------------------------------------------------------------
def head_variants() -> list[tuple[str, dict]]:
    """(name, config) of each head in configs/loss/, plus dunif with a prior kernel."""
    import yaml

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    out = []
    paths = sorted((ROOT / "configs" / "loss").glob("*.yaml"), key=lambda p: (p.stem != "infonce", p.stem))
    # composed by Hydra: a head's file may inherit another's (cct.yaml takes cacr.yaml)
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        for path in paths:
            loss = compose("train", overrides=[f"loss={path.stem}"]).loss
            out.append((path.stem, OmegaConf.to_container(loss, resolve=True)))
    dunif = dict(yaml.safe_load((ROOT / "configs" / "loss" / "dunif.yaml").read_text()))
    dunif.update(kernel="rbf", sigma=1.0)
    out.append(("dunif+rbf_prior", dunif))
    return out


def head_extras(head, batch: int, device: torch.device, gen: torch.Generator) -> tuple[dict, str]:
    import torch.nn.functional as F

    extras, notes = {}, []
    needs = set(getattr(head, "requires", ()))
    if "k" in needs or "queue" in needs:
        k = torch.randn(batch, HEAD_VIEWS, HEAD_DIM, generator=gen)[:, getattr(head, "key_views", slice(None))]
        extras["k"] = k.to(device)
        notes.append(f"k [{batch},{k.shape[1]},{HEAD_DIM}]")
    if "queue" in needs:
        extras["queue"] = F.normalize(torch.randn(QUEUE, HEAD_DIM, generator=gen), dim=-1).to(device)
        notes.append(f"queue {QUEUE}")
    if "prior" in needs:
        extras["prior"] = torch.randn(batch, 16, generator=gen).to(device)
        notes.append("prior [B,16]")
    if "labels" in needs:
        extras["labels"] = torch.randint(0, 10, (batch,), generator=gen).to(device)
        notes.append("labels")
    return extras, ", ".join(notes)


def section_heads(args, device) -> dict:
    import hydra
    from omegaconf import OmegaConf

    sync = synchronizer(device)
    rows = []
    variants = head_variants()
    for batch in args.head_batches:
        gen = torch.Generator().manual_seed(batch)
        z0 = torch.randn(batch, HEAD_VIEWS, HEAD_DIM, generator=gen).to(device)
        series, runners = [], []
        for name, conf in variants:
            head = hydra.utils.instantiate(OmegaConf.create(conf)).to(device)
            extras, note = head_extras(head, batch, device, gen)
            s = Series(name, 0, head=name, batch=batch, dim=HEAD_DIM, views=HEAD_VIEWS,
                       extras=note or None)

            def run(head=head, extras=extras) -> float:
                z = z0[:, getattr(head, "query_views", slice(None))].clone().requires_grad_(True)
                sync()
                t0 = time.perf_counter()
                head(z, **extras).loss.backward()
                sync()
                return time.perf_counter() - t0

            try:
                run()  # warm-up (allocations, first-call dispatch)
            except Exception as err:
                s.error = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"[:300]
            series.append(s)
            runners.append(run)
        interleave(series, runners, args.head_repeats)
        ref = next(s for s in series if s.name == "infonce")
        rows += [s.record(ref, "time_ratio_to_infonce") for s in series]
    return {
        "title": f"loss heads: forward+backward time relative to InfoNCE (D={HEAD_DIM}, V={HEAD_VIEWS})",
        "settings": {"batches": list(args.head_batches), "dim": HEAD_DIM, "views": HEAD_VIEWS,
                     "queue": QUEUE, "device": str(device),
                     "note": f"heads needing momentum keys get random k; queue heads get a queue of "
                             f"{QUEUE} unit keys (not their configured queue_size); dunif+rbf_prior "
                             "is dunif with kernel=rbf, sigma=1 and a random prior [B,16]; "
                             "time_ratio_to_infonce > 1 is slower"},
        "rows": rows,
    }


# -- section: precision and compile ------------------------------------------------------------
def section_precision(args, device) -> dict:
    cfg = load_config(device)
    dm, data_desc = build_data(cfg)
    images = dm.split("pretrain").images[:BATCH].to(device)
    sync = synchronizer(device)
    bf16_ok = device.type == "cuda" and torch.cuda.is_bf16_supported() or device.type == "cpu"
    iters = max(1, args.iters // 2)

    def make(channels_last: bool, autocast_dtype=None, compile_encoder: bool = False,
             threads: int | None = None):
        state: dict = {}
        default_threads = torch.get_num_threads()

        def setup() -> None:
            module = build_module(cfg, device)
            if not channels_last:
                module.to(memory_format=torch.contiguous_format)
            module.train()
            opt, sched = plain_optimizer(cfg, module, 10**6)
            encoder = torch.compile(module.online.encoder) if compile_encoder else None
            state["step"] = plain_step_fn(module, opt, sched, channels_last, autocast_dtype, encoder)
            sync()
            t0 = time.perf_counter()
            for _ in range(2):  # compile (if any) and warm-up
                state["step"](images)
            sync()
            state["warmup_seconds"] = time.perf_counter() - t0

        def run() -> list[float]:
            torch.set_num_threads(threads or default_threads)
            try:
                if "step" not in state:
                    setup()
                times = []
                for _ in range(iters):
                    sync()
                    t0 = time.perf_counter()
                    state["step"](images)
                    sync()
                    times.append(time.perf_counter() - t0)
                return times
            finally:
                torch.set_num_threads(default_threads)

        return run, state

    work = BATCH  # per step: every step is one measurement
    threads = torch.get_num_threads()
    other_threads = 1 if threads > 1 else (os.cpu_count() or 1)
    specs = [
        ("fp32, NCHW", dict(channels_last=False)),
        ("fp32, channels_last (default config)", dict(channels_last=True)),
        ("bf16 autocast, channels_last", dict(channels_last=True, autocast_dtype=torch.bfloat16)),
        ("bf16 autocast, NCHW", dict(channels_last=False, autocast_dtype=torch.bfloat16)),
        ("torch.compile(encoder), fp32, channels_last", dict(channels_last=True, compile_encoder=True)),
        ("torch.compile(encoder), fp32, NCHW", dict(channels_last=False, compile_encoder=True)),
    ]
    if other_threads != threads:
        specs.append((f"fp32, channels_last, torch threads {other_threads} (others: {threads})",
                      dict(channels_last=True, threads=other_threads)))
    series, runners, states = [], [], []
    for name, spec in specs:
        if spec.get("autocast_dtype") is torch.bfloat16 and not bf16_ok:
            continue
        run, state = make(**spec)
        series.append(Series(name, work))
        runners.append(run)
        states.append(state)
    interleave(series, runners, args.repeats)
    rows = []
    for s, state in zip(series, states):
        row = s.record(series[0], "ratio_to_fp32")
        row["warmup_seconds"] = state.get("warmup_seconds")
        rows.append(row)
    return {
        "title": "precision and compile: train-step images/s of the default model (augment + model + loss + step)",
        "settings": {"data": data_desc, "batch": BATCH, "steps_per_run": iters, "device": str(device),
                     "encoder": cfg.encoder._target_, "loss": cfg.loss._target_,
                     "torch_threads": threads,
                     "note": "one measurement = one train step on a fixed batch; compile and warm-up "
                             "excluded (warmup_seconds); heads compute in fp32 under autocast"},
        "rows": rows,
    }


# -- section: views each head computes ----------------------------------------------------------
class AllViewsHead(torch.nn.Module):
    """The head as the module used it before heads declared their views: z and k of every view,
    the head's own views picked out afterwards."""

    def __init__(self, head: torch.nn.Module) -> None:
        super().__init__()
        self.inner = head
        self.requires, self.uses_predictor = head.requires, head.uses_predictor
        self.q = getattr(head, "query_views", slice(None))
        self.k = getattr(head, "key_views", slice(None))

    def forward(self, z, k=None, **extras):
        return self.inner(z[:, self.q], k=None if k is None else k[:, self.k], **extras)

    def enqueue(self, k):
        return self.inner.enqueue(k[:, self.k])


def section_views(args, device) -> dict:
    import lightning as L

    from sslkit.run import quiet_lightning

    quiet_lightning()
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*`max_epochs` was not set.*")
    steps, warmup = args.steps, args.warmup_steps
    sync = synchronizer(device)
    tmp = Path(tempfile.mkdtemp(prefix="sslkit-bench-views-"))
    variants = [("moco", ["loss=moco"])]
    if not args.quick:
        variants.append(("cacr_mocov3, 2 global + 4 local crops",
                         ["loss=cacr_mocov3", "augment.local_views=4"]))
    rows = []

    def fit(cfg, dm, all_views: bool, counts: dict) -> Callable[[], list[float]]:
        def run() -> list[float]:
            module = build_module(cfg, device)
            if all_views:
                every = list(range(module.augment.num_views))
                module.views.query = every
                if module.key_net is not None:
                    module.views.key = every
                module.head = AllViewsHead(module.head)
            rows_seen = {"online": 0, "key": 0}
            for name, net in (("online", module.online.encoder),
                              ("key", module.key_net.net.encoder if module.key_net is not None else None)):
                if net is not None:
                    net.register_forward_pre_hook(
                        lambda _m, a, name=name: rows_seen.__setitem__(name, rows_seen[name] + a[0].shape[0]))
            times, last = [], [None]

            class StepTimer(L.Callback):
                def on_train_batch_end(self, trainer, pl_module, outputs, batch_, batch_idx) -> None:
                    sync()
                    now = time.perf_counter()
                    if batch_idx >= warmup:
                        times.append(now - last[0])
                    last[0] = now

            trainer = L.Trainer(
                accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
                precision=cfg.trainer.precision, max_steps=steps, max_epochs=-1,
                limit_val_batches=0, num_sanity_val_steps=0, logger=False,
                enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, callbacks=[StepTimer()], use_distributed_sampler=False,
                default_root_dir=str(Path(tempfile.mkdtemp(dir=tmp))),
            )
            sink = io.StringIO()
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                trainer.fit(module, datamodule=dm)
            counts.update({k: v // steps for k, v in rows_seen.items()})
            return times

        return run

    try:
        for head, overrides in variants:
            cfg = load_config(device, overrides)
            dm, data_desc = build_data(cfg)
            batch = int(cfg.data.batch_size)
            after_counts, before_counts = {}, {}
            after = Series(f"{head}: query/key views only", batch, head=head)
            before = Series(f"{head}: every view, both encoders (before)", batch, head=head)
            interleave([before, after], [fit(cfg, dm, True, before_counts), fit(cfg, dm, False, after_counts)],
                       args.repeats)
            row_b, row_a = before.record(), after.record(before, "ratio_to_all_views")
            row_b["encoder_rows_per_step"], row_a["encoder_rows_per_step"] = before_counts, after_counts
            if before_counts and after_counts:
                row_a["encoder_rows_ratio"] = {k: after_counts[k] / before_counts[k]
                                               for k in before_counts if before_counts[k]}
            rows += [row_b, row_a]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "title": "views each head computes: train-step images/s of the real module, only the views "
                 "the head reads vs every view through both encoders",
        "settings": {"data": data_desc, "batch": batch, "steps_per_fit": steps,
                     "timed_steps_per_fit": steps - warmup, "heads": [v[0] for v in variants], "device": str(device),
                     "note": "ratio_to_all_views > 1: faster than computing every view; "
                             "encoder_rows_per_step counts the rows each encoder's forward sees (the online "
                             "encoder's also run backward); moco: query view 0, keys of view 1; "
                             "cacr_mocov3: every view a query, keys of the n_global global crops"},
        "rows": rows,
    }


# -- section: adversarial attack, torchattacks vs a plain loop ----------------------------------
ATTACK_BATCH, ATTACK_STEPS = 256, 20


def plain_pgd(model, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float,
              steps: int) -> torch.Tensor:
    """l-inf PGD with random start as a bare loop: the reference for torchattacks.PGD."""
    import torch.nn.functional as F

    adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        adv.requires_grad_(True)
        grad, = torch.autograd.grad(F.cross_entropy(model(adv), y), adv)
        adv = torch.minimum(torch.maximum(adv.detach() + alpha * grad.sign(), x - eps), x + eps)
        adv = adv.clamp(0, 1)
    return adv


def section_attack(args, device) -> dict:
    import torchattacks

    from sslkit.eval.robust import ImageClassifier, LinearHead

    cfg = load_config(device)
    dm, data_desc = build_data(cfg)
    batch = 64 if args.quick else ATTACK_BATCH
    steps = 2 if args.quick else ATTACK_STEPS
    data = dm.split(dm.test_split)
    x = (data.images[:batch].float() / 255).to(device)
    y = data.labels[:batch].to(device)
    module = build_module(cfg, device).eval()
    with torch.no_grad():
        feats = module.features(data.images[:batch].to(device))
    head = LinearHead(feats.mean(0), feats.std(0), dm.num_classes).to(device)
    model = ImageClassifier(module.augment.eval_transform, module.online.encoder, head,
                            cfg.model.channels_last).eval()
    eps, alpha = 8 / 255, 2 / 255
    library = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
    sync = synchronizer(device)

    def timed(fn) -> Callable[[], float]:
        def run() -> float:
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            return time.perf_counter() - t0
        return run

    runners = [timed(lambda: library(x, y)), timed(lambda: plain_pgd(model, x, y, eps, alpha, steps))]
    for run in runners:
        run()  # warm-up
    series = [Series("torchattacks.PGD", batch), Series("plain PGD loop", batch)]
    interleave(series, runners, max(args.repeats, 3))
    rows = [series[0].record(series[1], "ratio_to_plain"), series[1].record()]
    return {
        "title": f"attack: PGD-{steps} images/s, torchattacks vs a plain loop (default encoder + "
                 "linear head, eval mode)",
        "settings": {"data": data_desc, "batch": batch, "steps": steps, "eps": eps, "alpha": alpha,
                     "device": str(device), "encoder": cfg.encoder._target_,
                     "note": "same forward/backward passes; ratio_to_plain >= 0.9 is the target"},
        "rows": rows,
    }


# -- report ------------------------------------------------------------------------------------
def fmt_rate(x) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def print_tables(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=140)
    m = results["machine"]
    console.print(f"[bold]sslkit bench[/] {results['created']}  device={m['device']}  "
                  f"torch={m['torch']}  threads={m['torch_threads']}  cpus={m['cpu_count']}  "
                  f"load at start={m['loadavg_start']}{'  (--quick)' if results['quick'] else ''}")
    for key, sec in results["sections"].items():
        table = Table(title=sec["title"], title_justify="left", show_lines=False)
        if key == "heads":
            batches = sec["settings"]["batches"]
            table.add_column("head")
            table.add_column("extras")
            for b in batches:
                table.add_column(f"B={b} ms (median)", justify="right")
                table.add_column(f"B={b} x InfoNCE", justify="right")
            by_head: dict[str, dict] = {}
            for row in sec["rows"]:
                by_head.setdefault(row["head"], {})[row["batch"]] = row
            for head, per_b in by_head.items():
                cells = [head, next(iter(per_b.values())).get("extras") or ""]
                for b in batches:
                    row = per_b.get(b, {})
                    if row.get("error"):
                        cells += ["error", row["error"][:18]]
                        continue
                    cells.append(f"{row['seconds_median'] * 1e3:.1f}" if row.get("seconds") else "-")
                    r = row.get("time_ratio_to_infonce")
                    cells.append(f"{r:.2f}" if r is not None else "-")
                table.add_row(*cells)
        else:
            ratio_key = {"trainer": "ratio_to_plain", "augment": "ratio_to_batched",
                         "precision": "ratio_to_fp32", "views": "ratio_to_all_views",
                         "attack": "ratio_to_plain", "adversarial": "ratio"}[key]
            table.add_column("benchmark")
            table.add_column("img/s median", justify="right")
            table.add_column("img/s best", justify="right")
            table.add_column(ratio_key.replace("_", " ") + " (median | best)", justify="right")
            table.add_column("load 1m", justify="right")
            for row in sec["rows"]:
                if row.get("error"):
                    table.add_row(row["name"], "error", row["error"][:40], "", "")
                    continue
                r = row.get(ratio_key)
                ratio = f"{r:.3f} | {row[ratio_key + '_best']:.3f}" if r is not None else "(reference)"
                if key == "trainer" and r is not None:
                    ratio += f"  overhead {row['overhead']:+.1%}"
                loads = row["context"]["loadavg_1m_at_repeats"]
                table.add_row(row["name"], fmt_rate(row.get("throughput_median")),
                              fmt_rate(row.get("throughput_best")), ratio,
                              f"{min(loads):.1f}-{max(loads):.1f}" if loads else "-")
        console.print(table)
        note = sec["settings"].get("note")
        reps = sorted({r.get("repeats") for r in sec["rows"]})
        runs = sorted({r.get("runs") for r in sec["rows"]})
        console.print(f"  [dim]{key}: measurements per row={reps} in runs={runs}; {note}[/]")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny repeat counts and sizes (smoke test)")
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME",
                        help=f"sections to run, of: {', '.join(SECTIONS)} (comma or space separated)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench.json")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats of every measurement")
    parser.add_argument("--steps", type=int, default=None,
                        help="trainer section: steps per fit (the first 2, or 1 with --quick, untimed)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's, one per core)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    only = [s for item in (args.only or SECTIONS) for s in item.split(",") if s]
    unknown = [s for s in only if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    # a train step of the default model at batch 512 takes 1-3 s on 2 CPU cores; ~10 ms on a GPU
    if args.quick:
        args.repeats = args.repeats or 1
        steps, args.warmup_steps, args.iters = 4, 1, 2
        args.head_batches, args.head_repeats = (64, 256), args.repeats
        args.warm_steps = 2
    else:
        args.warm_steps = 12
        args.repeats = args.repeats or 3
        steps, args.warmup_steps, args.iters = 10, 2, 6
        args.head_batches, args.head_repeats = (256, 1024, 4096), max(args.repeats, 5)
    if device.type == "cuda":
        steps, args.iters, args.warmup_steps = steps * 8, args.iters * 8, args.warmup_steps * 4
    args.steps = args.steps or steps
    if args.steps <= args.warmup_steps:
        parser.error(f"--steps must exceed the {args.warmup_steps} untimed warm-up steps")
    warnings.filterwarnings("ignore", category=UserWarning, module="lightning")
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)

    results = {
        "schema": 1,
        "created": dt.datetime.now().isoformat(timespec="seconds"),
        "argv": sys.argv[1:] if argv is None else argv,
        "quick": args.quick,
        "machine": {
            "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "device": str(device) if device.type == "cpu"
            else torch.cuda.get_device_name(device),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        },
        "sections": {},
    }
    if {"trainer", "augment", "precision", "views"} & set(only):
        print("[bench] warming up ...", file=sys.stderr, flush=True)
        results["machine"]["warmup_step_seconds"] = warm_process(device, args.warm_steps)
    from bench_adversarial import section_adversarial

    runners = {"trainer": section_trainer, "augment": section_augment, "heads": section_heads,
               "precision": section_precision, "views": section_views,
               "attack": section_attack, "adversarial": section_adversarial}
    for name in SECTIONS:
        if name not in only:
            continue
        started = time.perf_counter()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        ctx = context()
        section = runners[name](args, device)
        section["context"] = {"start": ctx, "end": context()}
        section["seconds"] = round(time.perf_counter() - started, 1)
        results["sections"][name] = section
    results["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=float) + "\n")
    print_tables(results)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
