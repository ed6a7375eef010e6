"""Pictures of a run: a 2-D map of the test features, training curves, and what the loss head
does (CACR/CCT weights against distance, the GCA transport plan), as PNGs in
``<run_dir>/plots/`` (and, through the evaluation runner, in wandb or TensorBoard when such a
logger is attached).

The 2-D map uses openTSNE (default) or umap-learn (``method``). Timed on the same 10k
Fashion-MNIST test images (PCA-50, one thread, ``scripts/bench_embedding.py``, run twice in
both orders on a busy 2-core machine): UMAP's fit was 1.09-1.11x faster, but each new process
first spends 37-103 s compiling UMAP's numba kernels (openTSNE: 9 s of warm-up), so a whole
call in a fresh process, which is how evaluators run, took 265 vs 267 s and 337 vs 404 s
(openTSNE vs UMAP). openTSNE is the default.
"""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from sslkit.eval.context import EvalContext
from sslkit.eval.recorders import load_records

PLOTS_DIR = "plots"
METHODS = ("umap", "tsne")
# columns of metrics.csv that are bookkeeping, not curves
SKIP_COLUMNS = ("epoch", "step", "train/views_per_s")
# recorded points of training drawn in the weights picture
MAX_SHOWN = 6


class Plots:
    """Writes every picture the run has the data for and returns their paths (relative to the
    run dir) with what was skipped and why."""

    # top-level keys of every result (checked by tests/eval/test_evaluator_contract.py)
    result_keys = ("files", "skipped")

    def __init__(self, method: str = "tsne", max_points: int = 10_000, n_neighbors: int = 15,
                 metric: str = "cosine", n_jobs: int | None = None, max_pair_samples: int = 4000,
                 dpi: int = 100, seed: int = 0) -> None:
        if method not in METHODS:
            raise ValueError(f"plots.method must be one of {', '.join(METHODS)}, got {method!r}")
        self.method, self.max_points, self.n_neighbors = method, max_points, n_neighbors
        # None: one job per core (both libraries read -1 so)
        self.metric, self.max_pair_samples = metric, max_pair_samples
        self.n_jobs = n_jobs
        self.dpi, self.seed = dpi, seed

    def __call__(self, ctx: EvalContext) -> dict:
        run_dir = Path(ctx.run_dir)
        out = run_dir / PLOTS_DIR
        out.mkdir(parents=True, exist_ok=True)
        files: dict[str, str] = {}
        skipped: dict[str, str] = {}
        result: dict = {}

        x, y = ctx.labelled("test")
        if len(x) >= 3:
            started = time.perf_counter()
            xy, y_used = embed_2d(x.numpy(), y.numpy(), self.method, self.max_points,
                                  self.n_neighbors, self.metric,
                                  self.n_jobs or torch.get_num_threads(), self.seed)
            result["embedding_seconds"] = round(time.perf_counter() - started, 1)
            result["embedding_points"] = len(xy)
            name = "tsne" if self.method == "tsne" else "umap"
            path = out / f"embedding_{name}.png"
            names = class_names(ctx.datamodule)
            title = (f"{'t-SNE' if name == 'tsne' else 'UMAP'} of {len(xy)} test features "
                     f"({getattr(ctx.datamodule, 'name', 'data')}), coloured by class")
            save(plot_embedding(xy, y_used, title, names), path, self.dpi)
            files["embedding"] = str(path.relative_to(run_dir))
        else:
            skipped["embedding"] = "fewer than 3 labelled test images"

        csv_path = find_metrics_csv(run_dir)
        if csv_path is not None:
            fig = plot_curves(read_metrics(csv_path), f"Training curves ({csv_path.name})")
            if fig is not None:
                save(fig, out / "curves.png", self.dpi)
                files["curves"] = f"{PLOTS_DIR}/curves.png"
            else:
                skipped["curves"] = f"{csv_path} has no numeric columns"
        else:
            skipped["curves"] = "no metrics.csv in the run dir (logger=csv writes it)"

        records = load_records(run_dir)
        rng = np.random.default_rng(self.seed)
        if not records:
            why = "no records (train with monitor.recorder.every_n_epochs=1)"
            skipped["weights"] = skipped["plan"] = why
        else:
            if "neg_pair_weight" in records[0]["tensors"]:
                fig = plot_weights(records, self.max_pair_samples, rng)
                save(fig, out / "weights.png", self.dpi)
                files["weights"] = f"{PLOTS_DIR}/weights.png"
            else:
                skipped["weights"] = f"head {records[0]['head']} records no contrastive weights"
            if "plan_log_kv" in records[0]["tensors"]:
                save(plot_plan(records), out / "plan.png", self.dpi)
                files["plan"] = f"{PLOTS_DIR}/plan.png"
            else:
                skipped["plan"] = f"head {records[0]['head']} records no transport plan"

        # the evaluation runner logs these pictures to wandb / TensorBoard when a logger is attached
        return {"files": files, "skipped": skipped, **result}


# -- data ------------------------------------------------------------------------------------
def class_names(dm) -> list[str] | None:
    """The dataset's class names in label order (``class_names``: a tuple, or the method image
    folders have; else the ``classes`` of its test split), or None when it has none for every
    class (the legend then shows class ids)."""
    names = getattr(dm, "class_names", None)
    if callable(names):
        names = names()
    if not names:
        names = getattr(dm.split(dm.test_split), "classes", None) if hasattr(dm, "split") else None
    names = [str(n) for n in names] if names else None
    return names if names and len(names) == getattr(dm, "num_classes", len(names)) else None


def embed_2d(x: np.ndarray, y: np.ndarray, method: str, max_points: int, n_neighbors: int,
             metric: str, n_jobs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded subsample of at most ``max_points`` rows mapped to 2-D, and its labels."""
    if len(x) > max_points:
        keep = np.sort(np.random.default_rng(seed).permutation(len(x))[:max_points])
        x, y = x[keep], y[keep]
    x = np.ascontiguousarray(x, dtype=np.float32)
    neighbors = max(2, min(n_neighbors, len(x) - 1))
    if method == "umap":
        import umap

        reducer = umap.UMAP(n_components=2, n_neighbors=neighbors, metric=metric,
                            random_state=seed, n_jobs=n_jobs)
        return reducer.fit_transform(x), y
    from openTSNE import TSNE

    perplexity = min(30.0, max(1.0, (len(x) - 1) / 3.0))
    tsne = TSNE(n_components=2, perplexity=perplexity, metric=metric, random_state=seed,
                n_jobs=n_jobs)
    return np.asarray(tsne.fit(x, affinities=tsne_affinities(x, perplexity, metric, n_jobs, seed))), y


# the metrics for which openTSNE's neighbours="auto" takes scikit-learn's exact search below
# 1,000 points and Annoy above, whether or not pynndescent is installed
_AUTO_WITHOUT_PYNNDESCENT = ("cosine", "euclidean", "manhattan", "hamming", "dot", "l1", "l2", "taxicab")


def tsne_affinities(x: np.ndarray, perplexity: float, metric: str, n_jobs: int, seed: int):
    """The affinities openTSNE's ``TSNE.fit(x)`` builds (its ``neighbors="auto"`` index, the
    multiscale mixture at ``perplexity``), built here for the metrics above; None for the others
    (openTSNE builds them). The reason is time: to make its "auto" choice, openTSNE imports
    pynndescent (a umap-learn dependency) only to learn whether it is installed, and in a new
    environment that import compiles pynndescent's numba kernels: 65 s against 5.7 s for the
    smoke plots evaluator, measured with an empty ``NUMBA_CACHE_DIR`` on a 2-core machine."""
    if metric not in _AUTO_WITHOUT_PYNNDESCENT:
        return None
    from openTSNE.affinity import MultiscaleMixture
    from openTSNE.nearest_neighbors import Annoy, Sklearn

    index = (Sklearn if len(x) < 1000 else Annoy)(
        x, k=min(len(x) - 1, int(3 * perplexity)), metric=metric, n_jobs=n_jobs, random_state=seed)
    return MultiscaleMixture(perplexities=perplexity, knn_index=index, n_jobs=n_jobs,
                             random_state=seed)


def find_metrics_csv(run_dir: Path) -> Path | None:
    """The CSVLogger's metrics.csv: in the run dir itself (sslkit's logger config) or, for
    other logger settings, the newest one below it."""
    direct = run_dir / "metrics.csv"
    if direct.exists():
        return direct
    found = sorted(run_dir.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def read_metrics(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{column: (steps, values)}`` for every numeric column, empty cells dropped."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    series: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if not rows:
        return series
    for col in rows[0]:
        if col in SKIP_COLUMNS:
            continue
        steps, values = [], []
        for i, row in enumerate(rows):
            value = _number(row.get(col))
            if value is None:
                continue
            step = _number(row.get("step"))
            steps.append(step if step is not None else i)
            values.append(value)
        if values:
            series[col] = (np.asarray(steps), np.asarray(values))
    return series


def _number(text: str | None) -> float | None:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def plan_of(record: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The recorded plan ``P`` [N, N], its marginals ``mu``, ``nu`` and row labels."""
    t = record["tensors"]
    plan = torch.exp(t["plan_log_u"].double()[:, None] + t["plan_log_kv"].double())
    labels = record["labels"].repeat(record["views"])  # view-major rows: v * B + i
    mu, nu = t["plan_mu"].double().numpy(), t["plan_nu"].double().numpy()
    return plan.numpy(), mu, nu, labels.numpy()


# -- figures ---------------------------------------------------------------------------------
def save(fig: Figure, path: Path, dpi: int) -> Path:
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def _class_colours(n: int):
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20" if n <= 20 else "turbo"]
    return [cmap(i if n <= 20 else i / max(n - 1, 1)) for i in range(n)]


def plot_embedding(xy: np.ndarray, labels: np.ndarray, title: str,
                   class_names: list[str] | None = None) -> Figure:
    classes = np.unique(labels)
    colours = _class_colours(int(classes.max()) + 1)
    fig = Figure(figsize=(7, 6))
    ax = fig.add_subplot()
    size = max(1.0, min(12.0, 20000 / max(len(xy), 1)))
    for c in classes:
        pts = xy[labels == c]
        name = class_names[c] if class_names is not None else str(int(c))
        ax.scatter(pts[:, 0], pts[:, 1], s=size, color=colours[int(c)], label=name,
                   alpha=0.7, linewidths=0)
    if len(classes) <= 20:
        ax.legend(title="class", markerscale=max(1.0, 12 / size), fontsize=8,
                  loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    return fig


def plot_curves(series: dict[str, tuple[np.ndarray, np.ndarray]], title: str) -> Figure | None:
    """One small panel per logged quantity against the optimiser step: loss terms, the online
    probe and kNN monitor, metrics, learning rates."""
    if not series:
        return None

    def order(name: str) -> tuple[int, str]:
        rank = 0 if name == "train/loss" else 1 if name.startswith("train/") else \
            2 if name.startswith("val/") else 3
        return rank, name

    names = sorted(series, key=order)
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(3.4 * cols, 2.5 * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, name in zip(axes.flat, names):
        steps, values = series[name]
        sparse = len(values) <= 30
        ax.plot(steps, values, marker="o" if sparse else None, markersize=3, linewidth=1)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("step", fontsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=11)
    return fig


def _subsample(d: torch.Tensor, w: torch.Tensor, keep: torch.Tensor, n: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    d, w = d[keep].numpy(), w[keep].numpy()
    if len(d) > n:
        idx = rng.choice(len(d), n, replace=False)
        d, w = d[idx], w[idx]
    return d, w


def plot_weights(records: list[dict], max_samples: int, rng: np.random.Generator) -> Figure:
    """CACR/CCT: each query's positive weights and negative weights against the squared
    distance of the pair, one colour per recorded point of training."""
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    batch, views = records[0]["batch"], records[0]["views"]
    if len(records) > MAX_SHOWN:  # evenly spaced, first and last included
        records = [records[i] for i in np.linspace(0, len(records) - 1, MAX_SHOWN).round().astype(int)]
    fig = Figure(figsize=(12, 4.6), layout="constrained")
    ax_pos, ax_neg = fig.subplots(1, 2)
    for k, rec in enumerate(records):
        colour = cmap(k / max(len(records) - 1, 1))
        label = f"epoch {rec['epochs_done']}"
        t = rec["tensors"]
        d, w = _subsample(t["pos_pair_sqdist"], t["pos_pair_weight"],
                          torch.ones_like(t["pos_pair_sqdist"], dtype=torch.bool), max_samples, rng)
        ax_pos.scatter(d, w, s=4, color=colour, alpha=0.5, linewidths=0, label=label)
        # [P, rows, B]: all B query rows, or the first block of a chunked head
        neg = t["neg_pair_sqdist"]
        eye = torch.eye(*neg.shape[-2:], dtype=torch.bool).expand_as(neg)
        d, w = _subsample(t["neg_pair_sqdist"], t["neg_pair_weight"], ~eye, max_samples, rng)
        ax_neg.scatter(d, w, s=4, color=colour, alpha=0.4, linewidths=0, label=label)
    ax_pos.axhline(1 / (views - 1), color="grey", linestyle="--", linewidth=1,
                   label="uniform 1/(V-1)")
    ax_neg.axhline(1 / (batch - 1), color="grey", linestyle="--", linewidth=1,
                   label="uniform 1/(B-1)")
    ax_neg.set_yscale("log")
    one = " (V=2: one positive per query, weight 1)" if views == 2 else ""
    ax_pos.set_title(f"positive weights w+ vs distance{one}", fontsize=10)
    ax_neg.set_title("negative weights w- vs distance", fontsize=10)
    for ax in (ax_pos, ax_neg):
        ax.set_xlabel("squared distance ||u_query - u_pair||^2 (unit sphere: 0..4)")
        ax.set_ylabel("weight")
        ax.legend(fontsize=7, markerscale=3)
    fig.suptitle(f"{records[0]['head']}: contrastive weights on one fixed batch "
                 f"(B={batch}, V={views}) during training", fontsize=11)
    return fig


def plot_plan(records: list[dict]) -> Figure:
    """GCA: the transport plan of one fixed batch (rows and columns sorted by class) at the
    first and last recorded points of training, and the last plan's marginal errors."""
    shown = [records[0], records[-1]] if len(records) > 1 else [records[0]]
    fig = Figure(figsize=(5.2 * len(shown) + 5.5, 4.8), layout="constrained")
    axes = fig.subplots(1, len(shown) + 1, width_ratios=[1] * len(shown) + [1.05])
    for ax, rec in zip(axes, shown):
        plan, _, _, labels = plan_of(rec)
        order = np.argsort(labels, kind="stable")
        p = plan[order][:, order]
        logp = np.log10(np.maximum(p / p.sum(), 1e-300))
        # at most 4 decades, and no wider than the bulk of the entries spans
        top = logp.max()
        low = max(top - 4, float(np.percentile(logp, 1)))
        im = ax.imshow(logp, cmap="magma", vmin=low, vmax=top, interpolation="nearest")
        bounds = np.flatnonzero(np.diff(labels[order])) + 0.5
        for b in bounds:
            ax.axhline(b, color="cyan", linewidth=0.5, alpha=0.8)
            ax.axvline(b, color="cyan", linewidth=0.5, alpha=0.8)
        ax.set_title(f"plan P at epoch {rec['epochs_done']} (log10 P/sum P)", fontsize=10)
        ax.set_xlabel("column (views of the batch, sorted by class)", fontsize=8)
        ax.set_ylabel("row (sorted by class)", fontsize=8)
        fig.colorbar(im, ax=ax, shrink=0.8)
    plan, mu, nu, labels = plan_of(records[-1])
    order = np.argsort(labels, kind="stable")
    row_err = (plan.sum(1) - mu) / mu
    col_err = (plan.sum(0) - nu) / nu
    ax = axes[-1]
    ax.plot(row_err[order], linewidth=0.8, label=f"rows: (P1 - mu)/mu, L1 "
            f"{np.abs(plan.sum(1) - mu).sum() / mu.sum():.2e}")
    ax.plot(col_err[order], linewidth=0.8, label=f"columns: (P^T1 - nu)/nu, L1 "
            f"{np.abs(plan.sum(0) - nu).sum() / nu.sum():.2e}")
    ax.axhline(0, color="grey", linewidth=0.6)
    ax.set_title(f"marginal errors at epoch {records[-1]['epochs_done']}", fontsize=10)
    ax.set_xlabel("row / column (sorted by class)", fontsize=8)
    ax.set_ylabel("relative error", fontsize=8)
    ax.legend(fontsize=7)
    fig.suptitle(f"{records[-1]['head']}: transport plan of one fixed batch "
                 f"(B={records[-1]['batch']}, V={records[-1]['views']})", fontsize=11)
    return fig
