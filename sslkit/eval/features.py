"""Extract frozen encoder features of a whole split."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor


@torch.no_grad()
def extract(
    features: Callable[[Tensor], Tensor], loader: Iterable[dict], device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor]:
    """``features(images) -> [B, F]`` over every batch of ``loader``; returns features and labels
    on the CPU, in loader order."""
    feats, labels = [], []
    for batch in loader:
        feats.append(features(batch["image"].to(device, non_blocking=True)).float().cpu())
        labels.append(batch["label"].cpu())
    return torch.cat(feats), torch.cat(labels)
