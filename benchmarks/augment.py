"""``augment`` section: the batched on-device ``ViewAugment`` images/s against the real module's
training step on given views and against torchvision.transforms.v2 applied image by image (in
the main process, and in a DataLoader with worker processes)."""

from __future__ import annotations

import os
import time

import torch

from benchmarks.common import BATCH, build_data, build_module, load_config, module_step, plain_optimizer
from benchmarks.timing import Series, interleave, synchronizer

RATIO_KEY = "ratio_to_batched"


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

    fixed_views = [v.clone() for v in augment(images)]
    train_steps = max(1, args.iters // 3)
    given = build_module(cfg, device)
    given.train()
    # the real training step on views already made: its augment returns them
    given.augment.forward = lambda _images, generator=None: fixed_views
    opt, sched = plain_optimizer(cfg, given, 10**6)
    step = module_step(given, opt, sched)

    def train_no_augment() -> float:
        # encoder + projector + head + backward + step
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


run = section_augment
