"""Long-tailed (imbalanced) subsampling of a labelled training set."""

from __future__ import annotations

import torch

from sslkit.errors import ConfigError

PROFILES = ("exponential", "step")


def class_counts(n_max: int, num_classes: int, imbalance_ratio: float,
                 profile: str = "exponential", minority_fraction: float = 0.5) -> list[int]:
    """Samples kept per class rank ``c = 0 .. C-1`` (the head first), never fewer than 1:

    - ``exponential`` (Cui et al. 2019): ``floor(n_max * ratio ** (-c / (C - 1)))``;
    - ``step`` (Cao et al. 2019, LDAM): the last ``floor(C * minority_fraction)`` classes keep
      ``floor(n_max / ratio)``, the others ``n_max``.

    Either way the head-to-tail ratio is ``imbalance_ratio`` (up to rounding)."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown data.imbalance_profile '{profile}'; choose one of: {', '.join(PROFILES)}")
    if num_classes < 2:
        return [n_max] * num_classes
    if profile == "exponential":
        counts = [int(n_max * imbalance_ratio ** (-c / (num_classes - 1))) for c in range(num_classes)]
    else:
        minority = int(num_classes * minority_fraction)
        counts = [n_max if c < num_classes - minority else int(n_max / imbalance_ratio)
                  for c in range(num_classes)]
    return [max(1, n) for n in counts]


def longtail_indices(labels: torch.Tensor, imbalance_ratio: float, seed: int = 0,
                     profile: str = "exponential") -> torch.Tensor:
    """Indices of a long-tailed subset of a labelled set (see ``class_counts``).

    Classes are ranked by their id; ``n_max`` is the largest class count, so class ``c`` keeps
    ``min(class_counts(...)[c], its size)`` samples, a seeded random subset of it; 1 keeps
    everything.
    """
    if imbalance_ratio < 1:
        raise ConfigError(f"data.imbalance_ratio must be >= 1 (1 = balanced), got {imbalance_ratio}")
    if profile not in PROFILES:
        raise ConfigError(f"unknown data.imbalance_profile '{profile}'; choose one of: {', '.join(PROFILES)}")
    classes = torch.unique(labels[labels >= 0])
    if imbalance_ratio == 1 or len(classes) < 2:
        return torch.arange(len(labels))
    gen = torch.Generator().manual_seed(seed)
    n_max = max(int((labels == c).sum()) for c in classes)
    counts = class_counts(n_max, len(classes), imbalance_ratio, profile)
    keep = []
    for n, c in zip(counts, classes.tolist()):
        idx = torch.nonzero(labels == c).flatten()
        keep.append(idx[torch.randperm(len(idx), generator=gen)[: min(n, len(idx))]])
    return torch.sort(torch.cat(keep)).values
