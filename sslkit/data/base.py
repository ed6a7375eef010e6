"""Shared LightningDataModule machinery: splits, the validation split, long-tail subsampling,
rank-aware batching.

Splits by name (``split(name)``): the stored splits a reader loads (``train``, ``test``, ...) and
three derived ones. ``validation`` is ``val_size`` labelled images carved from the stored split the
probes train on (a seeded draw: the data seed, the same on every rank and every epoch);
``pretrain`` (the pretraining set, long-tailed when asked) and ``probe`` (what the final probes fit
on, L2 selection included) are their stored splits without those images. Everything that selects
(online monitors, best.ckpt, a sweep's objective) reads ``validation``; the test split is read
only by the final evaluation.

Every batch is a dict: ``image`` (uint8 ``[B, C, H, W]``, augmented later on the training
device), ``label`` (long ``[B]``, -1 where unknown) and ``index`` (position in the split), plus
any per-sample fields the split holds in ``fields`` (``domain``, ``prior``, ...; see
:mod:`sslkit.data.fields`). ``origin`` maps a split's positions to the sample's index in the
stored split, so data attached by original index (priors) survives subsetting.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from sslkit.data.domains import apply_domain_shift
from sslkit.data.fields import promote_fields
from sslkit.data.longtail import PROFILES, longtail_indices
from sslkit.data.sampler import EpochBatchSampler
from sslkit.errors import ConfigError


class TensorImages(Dataset):
    """Images held in memory as one uint8 tensor; fetched a whole batch at a time."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None,
                 fields: dict[str, torch.Tensor] | None = None,
                 origin: torch.Tensor | None = None) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"expected uint8 images [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
        self.images = images
        self.labels = labels.long() if labels is not None else torch.full((len(images),), -1)
        self.fields = dict(fields or {})
        self.origin = origin if origin is not None else torch.arange(len(images))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[i], "label": self.labels[i], "index": torch.tensor(i),
                **{k: v[i] for k, v in self.fields.items()}}

    def __getitems__(self, idx: list[int]) -> dict[str, torch.Tensor]:
        index = torch.as_tensor(idx)
        return {"image": self.images[index], "label": self.labels[index], "index": index,
                **{k: v[index] for k, v in self.fields.items()}}

    def subset(self, index: torch.Tensor) -> "TensorImages":
        return TensorImages(self.images[index], self.labels[index],
                            {k: v[index] for k, v in self.fields.items()}, self.origin[index])

    @staticmethod
    def collate(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return batch


class SubsetImages(Dataset):
    """A view of a per-item dataset restricted to ``index`` (used for long-tailed subsets)."""

    def __init__(self, base: Dataset, index: torch.Tensor) -> None:
        self.base, self.index = base, index
        self.labels = base.labels[index]
        self.origin = getattr(base, "origin", torch.arange(len(base)))[index]
        # the base's per-sample fields (a domain folder's ``domain``) in this view's order
        self.fields: dict[str, torch.Tensor] = {k: v[index] for k, v in getattr(base, "fields", {}).items()}

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = self.base[int(self.index[i])]
        item["index"] = torch.tensor(i)
        item.update({k: v[i] for k, v in self.fields.items()})
        return item


class ImageDataModule(L.LightningDataModule):
    """Base for every dataset. Subclasses set the class attributes and implement ``load_split``.

    ``batch_size`` is the global batch: each of ``world_size`` ranks gets ``batch_size //
    world_size`` samples a step, so the contrastive batch is the same on 1 or N devices.
    """

    name = "base"
    in_chans = 3
    image_size = 32
    num_classes = 10
    # stored splits: pretraining, the labelled one the probes train on (and the validation images
    # come from), the one they are tested on
    train_split, probe_source, test_split = "train", "train", "test"
    # the derived split the probes fit on: ``probe_source`` without the validation images
    probe_split = "probe"
    # read from image files: ``data.cache=true`` keeps them decoded (sslkit/data/cache.py)
    cacheable = False
    # the pretraining batches carry labels: the online probe learns from them and best.ckpt
    # follows its validation top-1 (sslkit/training/build.py)
    pretrain_labelled = True

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        batch_size: int = 512,
        eval_batch_size: int = 1024,
        num_workers: int = 0,
        imbalance_ratio: float = 1.0,
        seed: int = 0,
        imbalance_profile: str = "exponential",
        pin_memory: bool = False,
        in_chans: int | None = None,
        image_size: int | None = None,
        num_classes: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        domain_shift: Sequence[str] | None = None,
        val_size: int | None = None,
        cache: bool = False,
        cache_dir: str = "~/.cache/sslkit",
    ) -> None:
        super().__init__()
        # the data config is the one place other groups read these from (``${data.in_chans}``):
        # a value that contradicts the dataset is refused rather than silently ignored
        for key, given in (("in_chans", in_chans), ("image_size", image_size),
                           ("num_classes", num_classes)):
            fixed = getattr(self, key)
            if given is not None and fixed and given != fixed:
                raise ConfigError(f"data.{key}={given} contradicts {self.name}, whose images have "
                                  f"{key}={fixed}; remove the override or set it to {fixed}")
        for key, stats in (("mean", mean), ("std", std)):
            if stats is not None and len(stats) != self.in_chans:
                raise ConfigError(f"data.{key}={list(stats)} has {len(stats)} values for "
                                  f"{self.in_chans} channel(s) of {self.name}; give one per channel")
        self.mean, self.std = mean, std
        self.root = Path(root).expanduser()
        self.download = download
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.imbalance_ratio, self.seed = imbalance_ratio, seed
        self.domain_shift = list(domain_shift) if domain_shift else None
        if imbalance_ratio < 1 or imbalance_profile not in PROFILES:
            raise ConfigError(
                f"data.imbalance_ratio={imbalance_ratio} / data.imbalance_profile={imbalance_profile}: "
                f"the ratio must be >= 1 (1 = balanced) and the profile one of {', '.join(PROFILES)}"
            )
        self.imbalance_profile = imbalance_profile
        if val_size is not None and (isinstance(val_size, bool) or val_size < 1):
            raise ConfigError(f"data.val_size={val_size}: give the number of training images held out "
                              "as the validation split (>= 1), or null for none")
        self.val_size = val_size
        if cache and not self.cacheable:
            raise ConfigError(f"data.cache=true: {self.name} is not read from image files (its images "
                              "are held in memory already); set data.cache=false")
        self.cache, self.cache_dir = cache, Path(cache_dir).expanduser()
        if self.probe_split != "probe":  # a reader written when probe_split named a stored split
            self.probe_source, self.probe_split = self.probe_split, "probe"
        self.splits: dict[str, Dataset] = {}

    # -- subclasses -------------------------------------------------------------------------
    def load_split(self, split: str) -> Dataset:
        raise NotImplementedError

    # -- splits -----------------------------------------------------------------------------
    def split(self, split: str) -> Dataset:
        """A split by name (cached): a stored one (``load_split``), or ``"pretrain"`` (the
        pretraining set: ``train_split`` without the validation images, then long-tailed if
        asked), ``"probe"`` (``probe_source`` without them) or ``"validation"`` (see
        ``validation_index``; refused when ``val_size`` is null)."""
        if split not in self.splits:
            if split == "pretrain":
                data = self._without_validation(self.train_split)
                if self.imbalance_ratio != 1:
                    keep = longtail_indices(data.labels, self.imbalance_ratio, self.seed,
                                            self.imbalance_profile)
                    data = _subset(data, keep)
            elif split == "probe":
                data = self._without_validation(self.probe_source)
            elif split == "validation":
                index = self.validation_index()
                if index is None:
                    raise ConfigError(f"data.val_size=null: {self.name} has no validation split; set "
                                      "data.val_size to the number of training images to hold out")
                data = _subset(self.split(self.probe_source), index)
            else:
                data = promote_fields(self.reader(self.load_split(split), split))
                if self.domain_shift:
                    data = apply_domain_shift(data, self.domain_shift, self.seed, split, self.name)
            self.splits[split] = data
        return self.splits[split]

    def reader(self, data: Dataset, split: str) -> Dataset:
        """How a stored split's batches are read: from its pre-decoded cache when ``data.cache``
        is on and ``data`` is a reader of image files (``decoded(i)``); else ``data`` itself."""
        if not self.cache or not hasattr(data, "decoded"):
            return data
        from sslkit.data.cache import cached_split

        return cached_split(data, f"{self.name}-{split}", self.root, self.cache_dir, self.num_workers)

    @property
    def has_validation(self) -> bool:
        return self.val_size is not None

    def validation_index(self) -> torch.Tensor | None:
        """Positions in the stored ``probe_source`` split of the validation images (sorted): a
        seeded random draw (data seed) of ``val_size`` of its labelled images, at most half of
        them, so that at least as many remain to train on; None when ``val_size`` is null. The
        draw depends on the seed and the split's labels only: the same on every rank, every epoch
        and every resume."""
        if self.val_size is None:
            return None
        if getattr(self, "_validation_index", None) is None:
            labels = torch.as_tensor(self.split(self.probe_source).labels)
            labelled = torch.nonzero(labels >= 0).flatten()
            n = min(self.val_size, len(labelled) // 2)
            if n < 1:
                raise ConfigError(f"data.val_size={self.val_size}: the {self.probe_source} split of "
                                  f"{self.name} has {len(labelled)} labelled image(s), too few to hold "
                                  "one out; set data.val_size=null (no validation split)")
            gen = torch.Generator().manual_seed(VALIDATION_SEED + self.seed)
            self._validation_index = labelled[torch.randperm(len(labelled), generator=gen)[:n]].sort().values
        return self._validation_index

    def _without_validation(self, split: str) -> Dataset:
        """Stored split ``split`` without the validation images it holds: those of
        ``probe_source``, which is ``split`` itself or its first part (``train+unlabeled``)."""
        data = self.split(split)
        index = self.validation_index()
        if index is None or not (split == self.probe_source or split.startswith(self.probe_source + "+")):
            return data
        keep = torch.ones(len(data), dtype=torch.bool)
        keep[index] = False
        return _subset(data, torch.nonzero(keep).flatten())

    def setup(self, stage: str | None = None) -> None:
        self.split("pretrain")
        self.split(self.test_split)
        if self.has_validation:
            self.split("validation")

    # -- loaders ----------------------------------------------------------------------------
    def _rank(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def per_rank_batch(self, world_size: int) -> int:
        if self.batch_size % world_size:
            raise ConfigError(
                f"data.batch_size={self.batch_size} is the global batch and must be divisible by "
                f"the number of processes ({world_size}); pick a multiple of {world_size}"
            )
        return self.batch_size // world_size

    def loader(self, data: Dataset, batch_size: int, shuffle: bool, drop_last: bool,
               rank: int = 0, world_size: int = 1) -> DataLoader:
        sampler = EpochBatchSampler(
            len(data), batch_size, shuffle, drop_last, self.seed, rank, world_size
        )
        return DataLoader(
            data,
            batch_sampler=sampler,
            collate_fn=getattr(data, "collate", default_collate),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        rank, world = self._rank()
        data = self.split("pretrain")
        per_rank = self.per_rank_batch(world)
        if len(data) < self.batch_size:
            raise ConfigError(
                f"data.batch_size={self.batch_size} exceeds the {len(data)} training images of "
                f"{self.name}; lower data.batch_size"
            )
        loader = self.loader(data, per_rank, True, True, rank, world)
        loader.batch_sampler.resume_skip = self._take_resume_skip
        return loader

    # A checkpoint written mid-epoch (preemption, step checkpoints) records how many batches of
    # its epoch were done; the first pass over that epoch after a resume skips them.
    def state_dict(self) -> dict:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return {}
        # "processed": a checkpoint written in on_train_batch_end (step checkpoints) comes before
        # Lightning counts the batch as completed, yet its update is already in the weights
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        # a count that reached the epoch's length belongs to a finished epoch (a save between
        # epochs already sees the next epoch number): nothing of the current epoch to skip
        if done >= trainer.num_training_batches:
            done = 0
        return {"epoch": trainer.current_epoch, "batches_done": done}

    def load_state_dict(self, state: dict) -> None:
        self._resume = (state["epoch"], state["batches_done"]) if state else None

    def _take_resume_skip(self, epoch: int) -> int:
        resume, self._resume = getattr(self, "_resume", None), None
        return resume[1] if resume is not None and resume[0] == epoch else 0

    def val_dataloader(self) -> DataLoader | list:
        """The validation split, sharded over ranks (each scores its part); none (an empty
        list, so Lightning skips validation) when ``val_size`` is null."""
        if not self.has_validation:
            return []
        rank, world = self._rank()
        return self.loader(self.split("validation"), self.eval_batch_size, False, False, rank, world)

    def eval_dataloader(self, split: str) -> DataLoader:
        """Unshuffled loader over a whole split on this process (feature extraction)."""
        return self.loader(self.split(split), self.eval_batch_size, False, False)


# offset of the validation draw's seed from the data seed (its own stream, apart from the
# long-tail subsampling's and the batch order's)
VALIDATION_SEED = 7_340_033


def _subset(data: Dataset, index: torch.Tensor) -> Dataset:
    return data.subset(index) if hasattr(data, "subset") else SubsetImages(data, index)


def first_existing(candidates: Sequence[Path], names: Sequence[str]) -> Path | None:
    """The first directory among ``candidates`` that holds every file in ``names``."""
    for d in candidates:
        if all((d / n).exists() for n in names):
            return d
    return None
