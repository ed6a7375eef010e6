"""Label efficiency: SimCLR's semi-supervised protocol (Chen et al. 2020, section 4.2).

For each fraction of ``fractions`` (1% and 10% by default) and each of ``draws`` seeded draws, a
class-balanced subset of the labelled training images is drawn: ``max(1, round(fraction * N /
C))`` images of each class (at most all of them), ``N`` the labelled training images and ``C``
the classes; the draws of one index are nested across fractions (the 1% subset lies in the 10%
one), as each class's images are taken in one seeded order. On each subset:

- a linear probe (the fast protocol of ``linear``: L-BFGS logistic regression on the frozen,
  cached features), its L2 strength chosen on the validation split;
- optionally a fine-tune (``finetune``, the ``eval=finetune`` protocol), its learning rate and
  epoch chosen on the validation split.

``full`` adds the whole labelled training split (100%, one draw) beside them. Each fraction
reports the mean over draws and its Student-t 95% interval (``sslkit.stats``); the label-
efficiency curve (top-1 against the fraction of labels, log x) goes to
``plots/label_efficiency.png``, and ``scripts/evaluate.py`` with several checkpoints draws one
line per checkpoint in one picture.

Selection reads the validation split (``data.val_size``), which holds more labels than a 1%
subset: the protocol measures the representation, not a realistic low-label model selection
(Oliver et al. 2018). The test split is scored once per chosen model.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from sslkit.errors import ConfigError
from sslkit.eval.finetune import FineTune, Selection, selection_split
from sslkit.eval.linear import Logistic, classification_report, fit_logistic, top1
from sslkit.stats.intervals import mean_ci95
from sslkit.training.checkpoint import run_dir_of

# offset of the subsets' seed from the evaluation seed (a stream of its own)
SUBSET_SEED = 1_000_003
FIGURE = "plots/label_efficiency.png"


def balanced_subset(labels: Tensor, fraction: float, num_classes: int, seed: int, draw: int) -> Tensor:
    """Sorted positions into ``labels`` of a class-balanced seeded subset: ``max(1, round(fraction
    * len(labels) / num_classes))`` of each class (all of a smaller class). The same ``(seed,
    draw)`` takes each class's images in the same order, so a smaller fraction's subset lies in
    a larger one's."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"eval.semi.fractions: {fraction} is not a fraction in (0, 1]")
    per_class = max(1, round(fraction * len(labels) / num_classes))
    gen = torch.Generator().manual_seed(SUBSET_SEED + 1000 * seed + draw)
    picked = []
    for c in range(num_classes):
        members = torch.nonzero(labels == c).flatten()
        order = torch.randperm(len(members), generator=gen)  # drawn for every class: fixed stream
        picked.append(members[order[:per_class]])
    return torch.cat(picked).sort().values


def percent(fraction: float) -> str:
    return f"{fraction * 100:g}%"


def select_l2_on_validation(x: Tensor, y: Tensor, xv: Tensor, yv: Tensor, num_classes: int,
                            l2_grid: Sequence[float], max_iter: int, tolerance: float
                            ) -> tuple[Logistic, float, float]:
    """Fit the probe for each L2 strength (strongest first, each fit starting from the last: a
    regularisation path) and keep the one with the best top-1 on ``(xv, yv)`` (ties: the
    stronger penalty). Returns the probe, its strength and its validation top-1."""
    best, init = (None, None, -1.0), None
    for l2 in sorted((float(v) for v in l2_grid), reverse=True):
        init = fit_logistic(x, y, num_classes, l2, max_iter, tolerance, init)
        with torch.no_grad():
            score = top1(init.logits(xv), yv)
        if score > best[2]:
            best = (init, l2, score)
    return best


def summarise(per_draw: list[dict]) -> dict:
    """Mean and 95% interval over the draws of every number they share, and the draws."""
    keys = [k for k in per_draw[0] if isinstance(per_draw[0][k], float) and k != "l2" and k != "lr"]
    return {**{k: mean_ci95([d[k] for d in per_draw]) for k in keys}, "draws": per_draw}


class SemiSupervised:
    """Offline evaluator ``semi``; see the module docstring."""

    # top-level keys of every result (checked by tests/eval/test_evaluator_contract.py)
    result_keys = ("protocol", "selection", "fractions", "n_labels", "linear", "finetune", "figure", "seconds")

    def __init__(self, fractions: Sequence[float] = (0.01, 0.1), draws: int = 3, full: bool = True,
                 l2_grid: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0), max_iter: int = 50,
                 tolerance: float = 1e-6, finetune: FineTune | None = None,
                 holdout_fraction: float = 0.1, dpi: int = 100) -> None:
        if not fractions or any(not 0 < float(f) < 1 for f in fractions):
            raise ConfigError(f"eval.semi.fractions={list(fractions)}: give fractions in (0, 1) "
                              "(eval.semi.full=true adds all the labels)")
        if draws < 1 or not l2_grid:
            raise ConfigError(f"eval.semi.draws={draws}, l2_grid={list(l2_grid)}: need draws >= 1 and "
                              "at least one L2 strength")
        self.fractions = sorted(float(f) for f in fractions) + ([1.0] if full else [])
        self.draws, self.l2_grid = int(draws), list(l2_grid)
        self.max_iter, self.tolerance = max_iter, tolerance
        self.finetune, self.holdout_fraction, self.dpi = finetune, holdout_fraction, dpi

    def subsets(self, ctx, selection: Selection) -> dict[float, list[Tensor]]:
        """Per fraction, the probe-split positions of each draw's labelled subset (the whole
        training set once for the fraction 1)."""
        labels = torch.as_tensor(ctx.datamodule.split(ctx.datamodule.probe_split).labels)[selection.train]
        return {f: [selection.train] if f == 1.0 else
                [selection.train[balanced_subset(labels, f, ctx.num_classes, ctx.seed, d)]
                 for d in range(self.draws)] for f in self.fractions}

    def _linear(self, ctx, index: Tensor, selection: Selection) -> dict:
        x, y = ctx.features("probe")
        xv, yv = ctx.features(selection.val_split)
        xv, yv = xv[selection.val], yv[selection.val]
        tx, ty = ctx.labelled("test")
        dev = ctx.device
        probe, l2, val = select_l2_on_validation(x[index].to(dev), y[index].to(dev), xv.to(dev), yv.to(dev),
                                                 ctx.num_classes, self.l2_grid, self.max_iter, self.tolerance)
        with torch.no_grad():
            report = classification_report(probe.logits(tx.to(dev)), ty, ctx.num_classes)
        return {"top1": report["top1"], **({"top5": report["top5"]} if "top5" in report else {}),
                "val_top1": val, "l2": l2}

    def _finetune(self, ctx, index: Tensor, selection: Selection) -> dict:
        fitted = self.finetune.fit(ctx, index, selection)
        report = self.finetune.test_report(ctx, fitted.model)
        return {"top1": report["top1"], **({"top5": report["top5"]} if "top5" in report else {}),
                "val_top1": fitted.val_top1, "lr": fitted.lr, "epoch": fitted.epoch}

    def __call__(self, ctx) -> dict:
        started = time.perf_counter()
        selection = selection_split(ctx.datamodule, ctx.seed, self.holdout_fraction)
        subsets = self.subsets(ctx, selection)
        linear, finetune = {}, {}
        for fraction, draws in subsets.items():
            linear[percent(fraction)] = summarise([self._linear(ctx, i, selection) for i in draws])
            if self.finetune is not None:
                finetune[percent(fraction)] = summarise([self._finetune(ctx, i, selection) for i in draws])
        result = {
            "protocol": "SimCLR semi-supervised: class-balanced seeded label subsets; linear probe "
                        "(L2 chosen on the selection split)" +
                        (" and fine-tune (learning rate and epoch chosen on it)" if self.finetune else ""),
            "selection": selection.described,
            "fractions": self.fractions,
            "draws": self.draws,
            "n_labels": {percent(f): len(d[0]) for f, d in subsets.items()},
            "linear": linear,
            "finetune": finetune or None,
            "finetune_settings": self.finetune.settings() if self.finetune else None,
        }
        path = Path(ctx.run_dir) / FIGURE
        path.parent.mkdir(parents=True, exist_ok=True)
        figure = label_efficiency_figure([("", result)], f"Label efficiency ({ctx.datamodule.name})")
        figure.savefig(path, dpi=self.dpi, bbox_inches="tight")
        return {**result, "figure": FIGURE, "seconds": time.perf_counter() - started}


def label_efficiency_figure(runs: list[tuple[str, dict]], title: str) -> Figure:
    """Test top-1 (mean over draws, 95% interval as error bars where there are several draws)
    against the fraction of labels, log x: one colour per run (``(label, semi result)``), a
    solid line for the linear probe and a dashed one for the fine-tune."""
    import matplotlib

    colours = matplotlib.colormaps["tab10"]
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.add_subplot()
    fractions: set[float] = set()
    for i, (label, result) in enumerate(runs):
        for protocol, style in (("linear", "-"), ("finetune", "--")):
            points = result.get(protocol) or {}
            xs = [f for f in result["fractions"] if percent(f) in points]
            if not xs:
                continue
            fractions.update(xs)
            mean = [points[percent(f)]["top1"]["mean"] for f in xs]
            ci = [points[percent(f)]["top1"]["ci95"] for f in xs]
            ci = [0.0 if c is None or not np.isfinite(c) else c for c in ci]
            name = protocol.replace("finetune", "fine-tune")
            ax.errorbar(xs, mean, yerr=ci, linestyle=style, marker="o", markersize=4, capsize=3,
                        color=colours(i % 10), label=f"{label}: {name}" if label else name)
    ax.set_xscale("log")
    ticks = sorted(fractions)
    ax.set_xticks(ticks, [percent(f) for f in ticks])
    ax.minorticks_off()
    ax.set_xlabel("fraction of training labels (log scale)")
    ax.set_ylabel("test top-1")
    low, high = ax.get_ylim()
    ax.set_ylim(max(low, 0.0), min(high, 1.01))  # a wide interval of few draws runs past [0, 1]
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return fig


def write_label_efficiency(runs: list[tuple[Path, dict]], out: Path | None = None, dpi: int = 100) -> Path:
    """One label-efficiency picture of several checkpoints' ``semi`` results (``(checkpoint
    path, result)``), one line per checkpoint and protocol, named by the checkpoint's path below
    the folder the checkpoints share; written to ``out`` (default: ``label_efficiency.png`` in
    that folder). Returns the path."""
    paths = [Path(p).resolve() for p, _ in runs]
    common = Path(os.path.commonpath([run_dir_of(p) for p in paths]))
    labels = []
    for p in paths:
        rel = run_dir_of(p).relative_to(common)
        labels.append(f"{rel}/{p.stem}" if str(rel) != "." else p.stem)
    if len(set(labels)) < len(labels):  # the same run dir and checkpoint name: the full path
        labels = [str(p.relative_to(common)) for p in paths]
    target = Path(out) if out else common / "label_efficiency.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    fig = label_efficiency_figure([(label, result) for label, (_, result) in zip(labels, runs)],
                                  f"Label efficiency of {len(runs)} checkpoints")
    fig.savefig(target, dpi=dpi, bbox_inches="tight")
    return target
