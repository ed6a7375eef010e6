"""Pictures of a sweep report (``sslkit.stats.sweep.build_report``): each row's mean and 95%
t-interval with its seeds as faint points, one line per combination of the other keys; the trials
of a random or Bayesian search; two metrics against each other. Matplotlib is imported only here,
and only when a picture is drawn."""

from __future__ import annotations

import math
from pathlib import Path

from sslkit.stats.intervals import natural_key
from sslkit.stats.runs import as_number
from sslkit.stats.tables import short


def sources_title(report: dict) -> str:
    """The sweeps' names (a runs.csv by its folder's name)."""
    names = [Path(d).parent.name if Path(d).suffix == ".csv" else Path(d).name for d in report["sweep_dirs"]]
    return " + ".join(names)


def plot(report: dict, metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, keys = report["rows"], report["keys"]
    fig, ax = plt.subplots(figsize=(7.5, 4.6), dpi=150)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    if len(rows) > 2 and len(keys) > 1 and all(len({r[k] for r in rows}) == len(rows) for k in keys):
        plot_search(ax, rows, keys, metric)
        ax.set_title(f"{metric} per trial of a search ({len(rows)} settings)\n"
                     f"{sources_title(report)}", fontsize=10)
        fig.tight_layout()
        fig.savefig(path, bbox_inches="tight")
        plt.close(fig)
        return
    x_lines = False  # join the points of a series (a numeric x axis with few series)
    if not keys:  # one setting, several seeds
        series = {"all runs": rows}
        x_key, x_numeric = None, False
    else:
        # x axis: the numeric key with most values (else the key with most values);
        # one line per combination of the other keys
        def n_values(k):
            return len({r[k] for r in rows})

        numeric = [k for k in keys if all(as_number(r[k]) is not None for r in rows)]
        x_key = max(numeric or keys, key=n_values)
        x_numeric = x_key in numeric
        others = [k for k in keys if k != x_key]
        series = {}
        for r in rows:
            label = ", ".join(short(r[k]) for k in others) if others else metric
            series.setdefault(label, []).append(r)
        x_lines = x_numeric
        if len(series) > 10:  # a random or Bayesian search: every point its own setting
            series = {f"each run (other keys: {', '.join(others)})": rows}
            x_lines = False
    x_cats = [] if x_numeric or x_key is None else list(dict.fromkeys(r[x_key] for r in rows))
    xs_all = sorted({as_number(r[x_key]) for r in rows}) if x_numeric else []
    log_x = x_numeric and xs_all[0] > 0 and xs_all[-1] / xs_all[0] >= 8
    n_series = len(series)
    # series side by side around each x, so error bars do not hide each other
    step = min(0.08, 0.5 / n_series)
    if x_numeric:
        lo_x, hi_x = (math.log(xs_all[0]), math.log(xs_all[-1])) if log_x else (xs_all[0], xs_all[-1])
        step *= 0.25 * ((hi_x - lo_x) or 1.0)
    lows, highs = [], []
    for i, (label, srows) in enumerate(series.items()):
        color = colors[i % len(colors)]
        shift = (i - (n_series - 1) / 2) * step
        xs, ys, es = [], [], []
        for r in srows:
            if x_key is None:
                x = 0.0
            elif x_numeric:
                v = as_number(r[x_key])
                x = v * math.exp(shift) if log_x else v + shift
            else:
                x = x_cats.index(r[x_key]) + shift
            mean, ci = r[f"{metric}_mean"], r[f"{metric}_ci95"]
            if math.isnan(mean):
                continue
            xs.append(x), ys.append(mean), es.append(0.0 if math.isnan(ci) else ci)
            run_vals = r["_values"].get(metric, [])
            lows += [mean - es[-1], *run_vals]
            highs += [mean + es[-1], *run_vals]
            if run_vals:
                ax.scatter([x] * len(run_vals), run_vals, s=9, color=color, alpha=0.35, zorder=2)
        ax.errorbar(xs, ys, yerr=es, color=color, marker="o", markersize=5, capsize=4,
                    linewidth=1.5 if x_lines else 0, elinewidth=1.4, label=f"{label}", zorder=3)
    if x_key is None:
        ax.set_xticks([0.0], ["all runs"])
        ax.set_xlim(-1, 1)
    elif x_numeric:
        if log_x:
            ax.set_xscale("log")
        if len(xs_all) <= 12:
            ax.set_xticks(xs_all, [f"{v:g}" for v in xs_all])
            ax.minorticks_off()
        ax.set_xlabel(x_key)
    else:
        many = len(x_cats) > 8  # long names side by side overlap at a small angle
        ax.set_xticks(range(len(x_cats)), x_cats, rotation=45 if many else 20 if len(x_cats) > 5 else 0,
                      ha="right" if many else "center")
        ax.set_xlim(-0.6, len(x_cats) - 0.4)
        ax.set_xlabel(x_key)
    ax.set_ylabel(metric.replace("_", " "))
    # accuracies live in [0, 1]: a t-interval of few seeds may reach past that, so the axis stops
    # at the bounds (said under the plot) instead of shrinking the data to a sliver
    values = [v for r in rows for v in r["_values"].get(metric, [])]
    if lows and values and all(0.0 <= v <= 1.0 for v in values):
        lo, hi = min(lows), max(highs)
        pad = 0.06 * max(hi - lo, 1e-3)
        clipped = lo < 0.0 or hi > 1.0
        ax.set_ylim(max(lo - pad, 0.0 if clipped and lo < 0 else -1.0),
                    min(hi + pad, 1.0 if hi > 1.0 else 1.05))
        if clipped:
            fig.text(0.01, 0.01, "intervals clipped at the [0, 1] range of the metric", fontsize=7,
                     color="0.4")
    ns = sorted({r["n"] for r in rows})
    n_text = f"n = {ns[0]}" if len(ns) == 1 else f"n = {ns[0]}..{ns[-1]}"
    ax.set_title(f"{metric}: mean and 95% t-interval over seeds ({n_text} per point)\n"
                 f"{sources_title(report)}", fontsize=10)
    ax.grid(True, alpha=0.3)
    if keys and (len(series) > 1 or len(keys) > 1):
        others = [k for k in keys if k != x_key]
        ax.legend(title=", ".join(others) if others else None, fontsize=8, title_fontsize=8,
                  loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def plot_search(ax, rows: list[dict], keys: list[str], metric: str) -> None:
    """A random or Bayesian search (no two runs share a value): the metric of each trial in
    launch order, the best so far, and the best trial's setting."""
    rows = sorted(rows, key=lambda r: natural_key(r["runs"]))
    ys = [r[f"{metric}_mean"] for r in rows]
    xs = list(range(len(rows)))
    ax.plot(xs, ys, "o", color="C0", markersize=5, label="trial")
    best, best_so_far = -math.inf, []
    for y in ys:
        best = max(best, y) if not math.isnan(y) else best
        best_so_far.append(best)
    ax.step(xs, best_so_far, where="post", color="C1", linewidth=1.5, label="best so far")
    i = max(range(len(ys)), key=lambda j: -math.inf if math.isnan(ys[j]) else ys[j])
    setting = "\n".join(f"{k}={short(rows[i][k])}" for k in keys)
    ax.plot([xs[i]], [ys[i]], "*", color="C3", markersize=13, label="best trial", zorder=3)
    ax.text(1.02, 0.5, f"best trial (run {rows[i]['runs']}):\n{metric} = {ys[i]:.4f}\n{setting}",
            transform=ax.transAxes, fontsize=8, va="center", ha="left",
            bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "0.7"})
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial (launch order)")
    ax.set_ylabel(metric.replace("_", " "))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")


def plot_scatter(report: dict, x_metric: str, y_metric: str, path: Path) -> None:
    """Every row as a point (``x_metric``, ``y_metric``) with its 95% intervals as error bars in
    both directions and its setting as the label: e.g. alignment against uniformity per head."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 5.2), dpi=150)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, row in enumerate(report["rows"]):
        x, y = row[f"{x_metric}_mean"], row[f"{y_metric}_mean"]
        if math.isnan(x) or math.isnan(y):
            continue
        xe, ye = (0.0 if math.isnan(row[f"{m}_ci95"]) else row[f"{m}_ci95"] for m in (x_metric, y_metric))
        color = colors[i % len(colors)]
        ax.errorbar([x], [y], xerr=[xe], yerr=[ye], color=color, marker="o", markersize=5, capsize=3,
                    elinewidth=1.0)
        label = ", ".join(short(row[k]) for k in report["keys"]) or "all runs"
        ax.annotate(label, (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7, color=color)
    ax.set_xlabel(x_metric)
    ax.set_ylabel(y_metric)
    ax.grid(alpha=0.3)
    ax.set_title(f"{y_metric} against {x_metric}, mean and 95% t-interval over seeds\n"
                 f"{sources_title(report)}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
