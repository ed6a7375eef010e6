"""Linear probe, fast protocol: multinomial logistic regression on frozen, standardised features.

The L2 strength is chosen on a seeded held-out part of the probe (training) split and the probe
is then refitted on the whole split; the test split is only ever used for the final score.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.classification import multiclass_accuracy

from sslkit.errors import ConfigError


@dataclass
class Logistic:
    """A fitted probe: standardisation statistics and the linear map."""

    mean: Tensor
    std: Tensor
    weight: Tensor  # [C, F]
    bias: Tensor  # [C]

    def logits(self, x: Tensor) -> Tensor:
        x = (x.to(self.weight) - self.mean) / self.std
        return x @ self.weight.T + self.bias


def fit_logistic(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    l2: float,
    max_iter: int = 200,
    tolerance: float = 1e-6,
    init: Logistic | None = None,
) -> Logistic:
    """Minimise ``mean CE(W x' + b, y) + l2 / 2 * ||W||^2`` (bias unpenalised, as scikit-learn's
    LogisticRegression with ``C = 1 / (l2 * N)``) over standardised features ``x'``, by full-batch
    L-BFGS with a strong-Wolfe line search, on the device ``x`` is on.

    Written in torch rather than calling scikit-learn so that it runs on the training device:
    on the GPU a 60k x 256 fit takes well under a second, and the objective is the same (the
    test checks it against scikit-learn)."""
    x = x.float()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    xs = (x - mean) / std
    weight = torch.zeros(num_classes, x.shape[1], device=x.device, requires_grad=True)
    bias = torch.zeros(num_classes, device=x.device, requires_grad=True)
    if init is not None:
        with torch.no_grad():
            weight.copy_(init.weight)
            bias.copy_(init.bias)
    opt = torch.optim.LBFGS([weight, bias], lr=1, max_iter=max_iter, history_size=20,
                            tolerance_grad=tolerance, tolerance_change=tolerance * 1e-3,
                            line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(xs @ weight.T + bias, y) + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return Logistic(mean, std, weight.detach(), bias.detach())


def holdout_split(n: int, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Seeded random (fit, held-out) index split of ``range(n)``, each part non-empty."""
    if not 0 < fraction < 1:
        raise ConfigError(f"holdout_fraction must be in (0, 1), got {fraction}")
    if n < 2:
        raise ConfigError(f"the probe split has {n} labelled sample(s); a linear probe needs at least 2")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    held = min(max(1, round(n * fraction)), n - 1)
    return perm[held:], perm[:held]


def top1(logits: Tensor, y: Tensor) -> float:
    return (logits.argmax(1) == y).float().mean().item()


def select_and_fit(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    l2_grid: Sequence[float],
    holdout_fraction: float = 0.1,
    seed: int = 0,
    max_iter: int = 200,
    tolerance: float = 1e-6,
) -> tuple[Logistic, float, dict[str, float]]:
    """Choose the L2 strength by top-1 on a seeded held-out part of ``(x, y)`` (ties go to the
    stronger penalty), then refit on all of ``(x, y)``. Returns the probe, the chosen strength
    and the held-out top-1 of every candidate. Only ``(x, y)`` is read: the test split cannot
    influence the choice."""
    if not l2_grid:
        raise ConfigError("l2_grid is empty; give at least one L2 strength")
    fit_idx, held_idx = holdout_split(len(x), holdout_fraction, seed)
    scores: dict[str, float] = {}
    best, best_l2, best_fit, init = -1.0, None, None, None
    # strongest penalty first: each fit starts from the previous solution (a regularisation path)
    for l2 in sorted((float(v) for v in l2_grid), reverse=True):
        init = fit_logistic(x[fit_idx], y[fit_idx], num_classes, l2, max_iter, tolerance, init)
        scores[repr(l2)] = top1(init.logits(x[held_idx]), y[held_idx])
        if scores[repr(l2)] > best:
            best, best_l2, best_fit = scores[repr(l2)], l2, init
    # the refit starts from the chosen strength's solution on 90% of the same data
    probe = fit_logistic(x, y, num_classes, best_l2, max_iter, tolerance, best_fit)
    return probe, best_l2, scores


def classification_report(logits: Tensor, y: Tensor, num_classes: int) -> dict:
    """top-1, top-5 (when there are more than 5 classes) and per-class top-1 (``None`` for a
    class absent from ``y``)."""
    logits, y = logits.float().cpu(), y.cpu()
    out: dict = {"top1": top1(logits, y)}
    if num_classes > 5:
        out["top5"] = multiclass_accuracy(logits, y, num_classes, average="micro", top_k=5).item()
    present = torch.bincount(y, minlength=num_classes) > 0
    per_class = multiclass_accuracy(logits, y, num_classes, average=None)
    out["per_class_top1"] = [float(a) if p else None for a, p in zip(per_class.tolist(), present.tolist())]
    return out


def fit_class_probe(ctx, l2_grid: Sequence[float], holdout_fraction: float, max_iter: int,
                    tolerance: float) -> tuple[Logistic, float, dict[str, float]]:
    """``select_and_fit`` on the labelled probe-split features of ``ctx``, shared through
    ``ctx.memo`` by every evaluator that asks with the same settings."""
    key = ("class_probe", tuple(sorted(float(v) for v in l2_grid)), float(holdout_fraction),
           ctx.seed, int(max_iter), float(tolerance))

    def make():
        x, y = ctx.labelled("probe")
        return select_and_fit(x.to(ctx.device), y.to(ctx.device), ctx.num_classes, l2_grid,
                              holdout_fraction, ctx.seed, max_iter, tolerance)

    return ctx.memo(key, make)


class LinearProbe:
    """Offline evaluator ``linear`` (fast protocol); see the module docstring."""

    # top-level keys of every result (checked by tests/eval/test_evaluator_contract.py)
    result_keys = ("protocol", "top1", "per_class_top1", "train_top1", "l2", "holdout_top1",
                   "n_train", "n_test", "seconds")

    def __init__(self, l2_grid: Sequence[float] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1),
                 holdout_fraction: float = 0.1, max_iter: int = 200, tolerance: float = 1e-6) -> None:
        self.l2_grid, self.holdout_fraction = list(l2_grid), holdout_fraction
        self.max_iter, self.tolerance = max_iter, tolerance

    def fit(self, ctx) -> tuple[Logistic, float, dict[str, float]]:
        """The class probe of the probe split, fitted once per context and settings: another
        evaluator with the same settings (``domain``) gets the same fit."""
        return fit_class_probe(ctx, self.l2_grid, self.holdout_fraction, self.max_iter, self.tolerance)

    def __call__(self, ctx) -> dict:
        started = time.perf_counter()
        probe, l2, scores = self.fit(ctx)
        train_x, train_y = ctx.labelled("probe")
        test_x, test_y = ctx.labelled("test")
        with torch.no_grad():
            report = classification_report(probe.logits(test_x.to(ctx.device)), test_y, ctx.num_classes)
            train_top1 = top1(probe.logits(train_x.to(ctx.device)).cpu(), train_y)
        return {
            "protocol": "fast: L-BFGS logistic regression on frozen standardised features, "
                        "L2 chosen on a held-out part of the training split",
            **report,
            "train_top1": train_top1,
            "l2": l2,
            "holdout_top1": scores,
            "n_train": len(train_y),
            "n_test": len(test_y),
            "seconds": time.perf_counter() - started,
        }
