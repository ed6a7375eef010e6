"""Long-tailed protocol: accuracy overall and on many-, medium- and few-shot classes.

A run pretrained on a long-tailed subset (``data.imbalance_ratio``, ``data.imbalance_profile``)
is probed on the balanced probe split and tested on the balanced test set (the protocol of
SDCLR, Jiang et al. 2021, and BCL, Zhou et al. 2022); the classes are grouped by how many
images of theirs the *pretraining* set held: many-shot ``> many_threshold``, few-shot
``< few_threshold``, medium-shot in between (Liu et al. 2019 use 100 and 20 on ImageNet-LT).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import Tensor

from sslkit.errors import ConfigError
from sslkit.eval.knn import knn_predict
from sslkit.eval.linear import select_and_fit

GROUPS = ("many", "medium", "few")


def shot_groups(counts: Sequence[int], many_threshold: int, few_threshold: int) -> list[str]:
    """The group of each class from its pretraining count."""
    if few_threshold > many_threshold:
        raise ConfigError(
            f"eval.longtail.few_threshold={few_threshold} must not exceed many_threshold={many_threshold}"
        )
    return ["many" if n > many_threshold else "few" if n < few_threshold else "medium" for n in counts]


def group_accuracy(pred: Tensor, y: Tensor, groups: Sequence[str]) -> dict[str, float | None]:
    """Top-1 overall and over the test samples of each group's classes (``None`` for a group
    without classes)."""
    correct = (pred.cpu() == y.cpu()).float()
    member = torch.tensor([GROUPS.index(g) for g in groups])[y.cpu()]
    out: dict[str, float | None] = {"top1": correct.mean().item()}
    for i, g in enumerate(GROUPS):
        mask = member == i
        out[f"{g}_top1"] = correct[mask].mean().item() if mask.any() else None
    return out


class LongTailEval:
    """Offline evaluator ``longtail``; see the module docstring. Uses the fast linear protocol
    (``sslkit.eval.linear``) and weighted kNN."""

    # top-level keys of every result (checked by tests/eval/test_evaluator_contract.py)
    result_keys = ("imbalance_ratio", "imbalance_profile", "thresholds", "pretrain_class_counts",
                   "class_groups", "classes_per_group", "linear", "knn", "seconds")

    def __init__(self, many_threshold: int = 100, few_threshold: int = 20,
                 l2_grid: Sequence[float] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1),
                 holdout_fraction: float = 0.1, max_iter: int = 200, tolerance: float = 1e-6,
                 knn_k: int = 200, knn_temperature: float = 0.1) -> None:
        shot_groups([], many_threshold, few_threshold)
        self.many, self.few = many_threshold, few_threshold
        self.l2_grid, self.holdout_fraction = list(l2_grid), holdout_fraction
        self.max_iter, self.tolerance = max_iter, tolerance
        self.knn_k, self.knn_temperature = knn_k, knn_temperature

    def __call__(self, ctx) -> dict:
        started = time.perf_counter()
        dm = ctx.datamodule
        labels = dm.split("pretrain").labels
        counts = torch.bincount(labels[labels >= 0], minlength=ctx.num_classes).tolist()
        groups = shot_groups(counts, self.many, self.few)
        x, y = (t.to(ctx.device) for t in ctx.labelled("probe"))
        test_x, test_y = (t.to(ctx.device) for t in ctx.labelled("test"))
        probe, l2, _ = select_and_fit(x, y, ctx.num_classes, self.l2_grid, self.holdout_fraction,
                                      ctx.seed, self.max_iter, self.tolerance)
        with torch.no_grad():
            linear_pred = probe.logits(test_x).argmax(1)
        knn_pred = knn_predict(x, y, test_x, ctx.num_classes, self.knn_k, self.knn_temperature).argmax(1)
        return {
            "imbalance_ratio": getattr(dm, "imbalance_ratio", 1.0),
            "imbalance_profile": getattr(dm, "imbalance_profile", "exponential"),
            "thresholds": {"many_above": self.many, "few_below": self.few},
            "pretrain_class_counts": counts,
            "class_groups": groups,
            "classes_per_group": {g: groups.count(g) for g in GROUPS},
            "linear": {**group_accuracy(linear_pred, test_y, groups), "l2": l2},
            "knn": group_accuracy(knn_pred, test_y, groups),
            "seconds": time.perf_counter() - started,
        }
