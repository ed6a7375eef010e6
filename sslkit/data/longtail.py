"""Long-tailed (imbalanced) subsampling of a labelled training set."""

from __future__ import annotations

import torch


def longtail_indices(labels: torch.Tensor, imbalance_ratio: float, seed: int = 0) -> torch.Tensor:
    """Indices of an exponentially long-tailed subset (Cui et al. 2019; Cao et al. 2019).

    Classes are ranked by their id; class ``c`` of ``C`` keeps
    ``n_max * imbalance_ratio ** (-c / (C - 1))`` samples, ``n_max`` the largest class count, so
    the head-to-tail ratio is ``imbalance_ratio`` (1 keeps everything). The kept samples of each
    class are a seeded random subset.
    """
    if imbalance_ratio < 1:
        raise ValueError(f"imbalance_ratio must be >= 1 (1 = balanced), got {imbalance_ratio}")
    classes = torch.unique(labels)
    if imbalance_ratio == 1 or len(classes) < 2:
        return torch.arange(len(labels))
    gen = torch.Generator().manual_seed(seed)
    n_max = max(int((labels == c).sum()) for c in classes)
    keep = []
    for rank, c in enumerate(classes.tolist()):
        idx = torch.nonzero(labels == c).flatten()
        n = max(1, int(n_max * imbalance_ratio ** (-rank / (len(classes) - 1))))
        keep.append(idx[torch.randperm(len(idx), generator=gen)[: min(n, len(idx))]])
    return torch.sort(torch.cat(keep)).values
