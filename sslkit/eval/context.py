"""What every offline evaluator receives: the trained module, its data, and features extracted
once per split and shared by all evaluators.

An evaluator is any callable ``evaluator(ctx: EvalContext) -> dict`` built by Hydra from
``configs/eval/NAME.yaml``; the runner writes its result to ``<run_dir>/eval/NAME.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from sslkit.eval.features import extract


@dataclass
class EvalContext:
    """The trained module (eval mode, on its training device), its data module, where results
    go, and a cache of frozen encoder features per split."""

    module: Any  # sslkit.module.ContrastiveModule
    datamodule: Any  # sslkit.data.base.ImageDataModule
    run_dir: Path
    seed: int = 0
    _cache: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict, repr=False)

    @property
    def device(self) -> torch.device:
        return self.module.device

    @property
    def num_classes(self) -> int:
        return self.datamodule.num_classes

    def features(self, split: str) -> tuple[Tensor, Tensor]:
        """Un-augmented encoder features ``[N, F]`` (float32, CPU) and labels ``[N]`` of a split
        (``"probe"`` and ``"test"`` name the data module's probe and test splits), extracted on
        the module's device the first time and cached."""
        name = {"probe": self.datamodule.probe_split, "test": self.datamodule.test_split}.get(split, split)
        if name not in self._cache:
            self.module.eval()
            loader = self.datamodule.eval_dataloader(name)
            self._cache[name] = extract(self.module.features, loader, self.device)
        return self._cache[name]

    def labelled(self, split: str) -> tuple[Tensor, Tensor]:
        """``features(split)`` without the samples whose label is unknown (-1)."""
        x, y = self.features(split)
        keep = y >= 0
        return x[keep], y[keep]


class Evaluator(Protocol):
    def __call__(self, ctx: EvalContext) -> dict: ...
