"""What every offline evaluator receives: the trained module, its data, and features extracted
once per split and shared by all evaluators.

An evaluator is any callable ``evaluator(ctx: EvalContext) -> dict`` built by Hydra from
``configs/eval/NAME.yaml``; the runner writes its result to ``<run_dir>/eval/NAME.json``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from sslkit.errors import ConfigError
from sslkit.eval.features import extract


@dataclass
class EvalContext:
    """The trained module (eval mode, on its training device), its data module, where results
    go, a cache of frozen encoder features per split, and a cache of what evaluators compute
    from them and may share (``memo``)."""

    module: Any  # sslkit.training.module.ContrastiveModule
    datamodule: Any  # sslkit.data.base.ImageDataModule
    run_dir: Path
    seed: int = 0
    # features extracted under autocast to this dtype (None: float32); see feature_dtype
    autocast: torch.dtype | None = None
    _cache: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict, repr=False)
    _memo: dict[Hashable, Any] = field(default_factory=dict, repr=False)

    @property
    def device(self) -> torch.device:
        return self.module.device

    @property
    def num_classes(self) -> int:
        return self.datamodule.num_classes

    def split_name(self, split: str) -> str:
        return {"probe": self.datamodule.probe_split, "test": self.datamodule.test_split}.get(split, split)

    def features(self, split: str) -> tuple[Tensor, Tensor]:
        """Un-augmented encoder features ``[N, F]`` (float32, CPU) and labels ``[N]`` of a split
        (``"probe"`` and ``"test"`` name the data module's probe and test splits), extracted on
        the module's device the first time and cached."""
        name = self.split_name(split)
        if name not in self._cache:
            self.module.eval()
            loader = self.datamodule.eval_dataloader(name)
            with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast is not None):
                self._cache[name] = extract(self.module.features, loader, self.device)
        return self._cache[name]

    def labelled(self, split: str) -> tuple[Tensor, Tensor]:
        """``features(split)`` without the samples whose label is unknown (-1)."""
        x, y = self.features(split)
        keep = y >= 0
        return x[keep], y[keep]

    def field(self, split: str, name: str) -> Tensor:
        """A per-sample field of a split (``"domain"``, ...; see :mod:`sslkit.data.fields`) in
        the order of ``features(split)``, read from the split itself: no pass over the images.
        The feature loader is unshuffled and keeps every sample, so its order is the split's."""
        split_name = self.split_name(split)
        values = getattr(self.datamodule.split(split_name), "fields", {}).get(name)
        if values is None:
            raise ConfigError(f"data {self.datamodule.name} gives its {split_name} split no `{name}` "
                              "field; see docs/evaluation.md for the evaluators that need one")
        n = len(self.features(split)[0])
        if len(values) != n:
            raise ConfigError(f"the `{name}` field of the {split_name} split has {len(values)} rows "
                              f"for {n} samples")
        return values

    def memo(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """``make()``, computed once per ``key`` for every evaluator of this context (a probe two
        evaluators fit with the same settings on the same features, for example)."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]


def feature_dtype(eval_precision: str | None, run_precision: str | None) -> torch.dtype | None:
    """The autocast dtype of feature extraction: ``eval_precision`` auto follows the precision
    pretraining ran in (``bf16-mixed`` -> bfloat16, ``16-mixed`` -> float16, else float32:
    None); ``32-true``, ``bf16-mixed``, ``16-mixed`` choose it. On a CPU with native bf16,
    bf16 extraction ran 1.9x faster than float32 (convnet, 10k Fashion-MNIST test images: 7.8
    vs 14.8 s on one thread) with features 0.4% apart (relative norm) and probe top-1 0.8504 vs
    0.8498 (docs/evaluation.md)."""
    setting = run_precision if eval_precision in (None, "auto") else eval_precision
    return {"bf16-mixed": torch.bfloat16, "bf16-true": torch.bfloat16, "bf16": torch.bfloat16,
            "16-mixed": torch.float16, "16-true": torch.float16, "16": torch.float16}.get(str(setting))


class Evaluator(Protocol):
    def __call__(self, ctx: EvalContext) -> dict: ...
