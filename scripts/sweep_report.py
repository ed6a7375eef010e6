"""Summarise a Hydra multirun sweep: one row per swept setting, mean and 95% t-interval over seeds.

    python scripts/sweep_report.py multirun/temperature_x_loss/2025-01-01_12-00-00
    python scripts/sweep_report.py SWEEP_DIR --metrics linear_probe_top1 knn_top1 --plot-metric knn_top1
    python scripts/sweep_report.py SWEEP_DIR --compare loss=infonce
    python scripts/sweep_report.py SWEEP_A SWEEP_B --where loss=dunif --out DIR

Reads every run's ``summary.json`` and ``.hydra/overrides.yaml`` under each SWEEP_DIR (several
sweeps pool into one table: a key one sweep overrides and another does not is read from the
other's ``.hydra/config.yaml``; ``--where KEY=V1,V2`` keeps only the runs with one of those
values, an absent key reading as ``-``). The swept keys are the overrides whose value differs
between runs (``sweep``, the sweep file's name, aside);
runs are grouped by the swept keys except ``seed`` (``--seed-key``), so each row pools the seeds
of one setting. ``--compare KEY=VALUE`` adds, for every metric, each row's difference from the
row that has KEY=VALUE and the same other keys, with a 95% Welch t-interval (seeds unpaired).
Prints the table (rich), writes ``report.csv`` (per setting), ``runs.csv`` (per run) and plots the
``--plot-metric`` with its interval as error bars to ``report.png``, in the first SWEEP_DIR or
``--out``. Runs without a summary
(failed or unfinished) are counted and listed, never averaged.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sslkit.eval.stats import mean_ci95, natural_key, t_quantile  # noqa: E402

DEFAULT_METRICS = ("linear_probe_top1", "knn_top1", "online_probe_top1", "wall_seconds")


@dataclass
class Run:
    path: Path
    overrides: dict[str, str]
    summary: dict | None


@dataclass
class Group:
    key: tuple[str, ...]  # values of the grouping keys
    runs: list[Run] = field(default_factory=list)

    def values(self, metric: str) -> list[float]:
        out = []
        for r in self.runs:
            v = r.summary.get(metric) if r.summary else None
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                out.append(float(v))
        return out


def parse_overrides(lines: list[str]) -> dict[str, str]:
    """``["+sweep=x", "loss.temperature=0.1"]`` -> ``{"sweep": "x", "loss.temperature": "0.1"}``
    (the ``+``/``++`` prefixes dropped; ``~key`` deletions kept as ``key: "~"``)."""
    out: dict[str, str] = {}
    for line in lines:
        line = str(line)
        if line.startswith("~"):
            out[line.lstrip("~").split("=", 1)[0]] = "~"
            continue
        key, _, value = line.partition("=")
        out[key.lstrip("+")] = value
    return out


def find_runs(sweep_dir: Path) -> list[Run]:
    runs = []
    for ov in sorted(sweep_dir.glob("**/.hydra/overrides.yaml"), key=natural_key):
        run_dir = ov.parent.parent
        if ".submitit" in run_dir.parts:
            continue
        overrides = parse_overrides(yaml.safe_load(ov.read_text()) or [])
        runs.append(Run(run_dir, overrides, load_summary(run_dir)))
    return runs


def load_summary(run_dir: Path) -> dict | None:
    """``summary.json``, plus the numbers of evaluations run later on the run's checkpoint
    (``scripts/evaluate.py`` writes ``eval/NAME.json``) as ``eval/NAME/KEY`` where the summary
    has no such key; None when the run has no summary (failed or unfinished)."""
    summary_file = run_dir / "summary.json"
    if not summary_file.exists():
        return None
    summary = json.loads(summary_file.read_text())
    later = {f.stem: json.loads(f.read_text()) for f in sorted((run_dir / "eval").glob("*.json"))}
    if later:
        from sslkit.eval.runner import summary_entries

        for key, value in summary_entries(later).items():
            summary.setdefault(key, value)
    return summary


def fill_from_configs(runs: list[Run], extra_keys: list[str] | None = None) -> None:
    """A key some runs override and others do not (pooled sweeps: batch 64 and 1024 in one, the
    experiment's 256 in another) takes each other run's value from its ``.hydra/config.yaml``
    when that is a plain value there, so the rows say 256 instead of ``-``; a config group
    (``loss``, ``prior``) takes the run's choice from ``.hydra/hydra.yaml`` (a sweep file's
    ``override /loss: dunif``; an unselected group reads ``null``)."""
    from omegaconf import OmegaConf

    # ordered (not a set): the report's columns follow first appearance, whatever PYTHONHASHSEED is
    keys = list(dict.fromkeys([k for r in runs for k in r.overrides] + list(extra_keys or [])))
    for r in runs:
        missing = [k for k in keys if k not in r.overrides]
        config_file = r.path / ".hydra" / "config.yaml"
        if not missing or not config_file.exists():
            continue
        cfg = OmegaConf.load(config_file)
        hydra_file = r.path / ".hydra" / "hydra.yaml"
        choices = (OmegaConf.select(OmegaConf.load(hydra_file), "hydra.runtime.choices", default=None)
                   if hydra_file.exists() else None) or {}
        for k in missing:
            if k in choices:
                r.overrides[k] = "null" if choices[k] is None else str(choices[k])
                continue
            value = OmegaConf.select(cfg, k, default=None)
            if isinstance(value, (bool, int, float, str)):
                r.overrides[k] = str(value)


def matches(run: Run, where: dict[str, str]) -> bool:
    """``where``: key -> comma-separated accepted values (a key the run lacks reads ``-``)."""
    return all(run.overrides.get(k, "-") in v.split(",") for k, v in where.items())


def as_number(value: str) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def swept_keys(runs: list[Run]) -> list[str]:
    """Keys whose value differs between runs, in the order they first appear (``sweep``, the
    name of the sweep file, is not a setting)."""
    keys: list[str] = []
    for r in runs:
        keys += [k for k in r.overrides if k not in keys and k != "sweep"]
    return [k for k in keys if len({r.overrides.get(k) for r in runs}) > 1]


def ordered_values(runs: list[Run], key: str) -> list[str]:
    """Values of ``key`` in sweep order, numerically sorted when they are all numbers."""
    seen: list[str] = []
    for r in runs:
        v = r.overrides.get(key, "-")
        if v not in seen:
            seen.append(v)
    if all(as_number(v) is not None for v in seen):
        seen.sort(key=lambda v: as_number(v))
    return seen


def stats(values: list[float]) -> dict[str, float]:
    """Mean, 95% t-interval half-width, std, min and max over the seeds of one setting."""
    out = {k: v for k, v in mean_ci95(values).items() if k != "n"}
    return {**out, "min": min(values, default=math.nan), "max": max(values, default=math.nan)}


def welch_contrast(parts: list[tuple[int, list[float]]]) -> dict[str, float]:
    """``sum(sign * mean(values))`` over ``parts`` and its 95% t-interval half-width with unequal
    variances (Welch-Satterthwaite degrees of freedom); NaN interval when a part has fewer than 2
    values. Two parts ``[(+1, a), (-1, b)]`` are Welch's difference of means."""
    diff = sum(sign * sum(v) / len(v) for sign, v in parts) if all(v for _, v in parts) else math.nan
    if any(len(v) < 2 for _, v in parts):
        return {"diff": diff, "diff_ci95": math.nan}
    terms = [stats(v)["std"] ** 2 / len(v) for _, v in parts]
    se2 = sum(terms)
    if se2 == 0:
        return {"diff": diff, "diff_ci95": 0.0}
    df = se2 ** 2 / sum(t ** 2 / (len(v) - 1) for t, (_, v) in zip(terms, parts))
    return {"diff": diff, "diff_ci95": t_quantile(df) * math.sqrt(se2)}


def welch(a: list[float], b: list[float]) -> dict[str, float]:
    """Mean of ``a`` minus mean of ``b`` and its 95% Welch t-interval."""
    return welch_contrast([(+1, a), (-1, b)])


def fmt_diff(diff: float, ci: float, metric: str = "") -> str:
    """A signed difference with its interval (``+0.0041 ± 0.0026``); ``-`` when there is none."""
    return "-" if math.isnan(diff) else ("+" if diff >= 0 else "") + fmt(diff, ci, metric)


def add_comparison(rows: list[dict], keys: list[str], metrics: list[str], compare: tuple[str, str]) -> None:
    """``row[f"{metric}_diff"]``/``_diff_ci95``: the row minus its reference row (``compare``'s
    key at its value, the other keys equal), for every row that has one. A key the reference
    row does not set (``-``: no prior, hence no kernel bandwidth) matches every value, and so
    does a key the row does not set (CACR, which has no temperature, against InfoNCE at 0.1)
    when that leaves one reference row."""
    key, value = compare
    others = [k for k in keys if k != key]
    refs = [r for r in rows if r.get(key) == value]

    def reference(row: dict) -> dict | None:
        exact = [r for r in refs if all(r[k] == row[k] for k in others)]
        loose = [r for r in refs if all("-" in (r[k], row[k]) or r[k] == row[k] for k in others)]
        return exact[0] if exact else loose[0] if len(loose) == 1 else None

    for row in rows:
        ref = reference(row)
        for m in metrics:
            out = (welch(row["_values"][m], ref["_values"][m]) if ref is not None
                   else {"diff": math.nan, "diff_ci95": math.nan})
            row[f"{m}_diff"], row[f"{m}_diff_ci95"] = out["diff"], out["diff_ci95"]


def group_runs(runs: list[Run], keys: list[str]) -> list[Group]:
    order = {k: ordered_values(runs, k) for k in keys}
    groups: dict[tuple[str, ...], Group] = {}
    for r in runs:
        key = tuple(r.overrides.get(k, "-") for k in keys)
        groups.setdefault(key, Group(key)).runs.append(r)
    return sorted(groups.values(), key=lambda g: [order[k].index(v) for k, v in zip(keys, g.key)])


def build_report(sweep_dir: Path | list[Path], metrics: list[str], seed_key: str = "seed",
                 where: dict[str, str] | None = None, compare: tuple[str, str] | None = None,
                 keys: list[str] | None = None, group_by: list[str] | None = None) -> dict:
    """Everything the table, CSV and plot show; also what tests check. ``group_by``: the rows
    are exactly these keys' values (read from each run's config where no override names them),
    whatever else differs between the runs (how a setting was written, data paths)."""
    dirs = [sweep_dir] if isinstance(sweep_dir, Path) else list(sweep_dir)
    runs = [r for d in dirs for r in find_runs(d)]
    fill_from_configs(runs, [*(keys or []), *(group_by or []), *([seed_key] if group_by else [])])
    runs = [r for r in runs if matches(r, where or {})]
    done = [r for r in runs if r.summary is not None]
    swept = swept_keys(runs) if not group_by else [k for k in group_by if k != seed_key] + [seed_key]
    group_keys = [k for k in swept if k != seed_key]
    fixed = {k: v for k, v in (runs[0].overrides.items() if runs else []) if k not in swept}
    rows = []
    for g in group_runs(done, group_keys):
        row: dict = dict(zip(group_keys, g.key))
        row["n"] = len(g.runs)
        row["seeds"] = " ".join(sorted({r.overrides.get(seed_key, "default") for r in g.runs}, key=natural_key))
        row["runs"] = " ".join(r.path.name for r in g.runs)
        row["_values"] = {m: g.values(m) for m in metrics}  # per-run values (plot scatter)
        row["_runs"] = g.runs
        for m in metrics:
            for stat, v in stats(row["_values"][m]).items():
                row[f"{m}_{stat}"] = v
        rows.append(row)
    if compare is not None:
        if compare[0] not in group_keys or not any(r[compare[0]] == compare[1] for r in rows):
            raise ValueError(f"--compare {compare[0]}={compare[1]}: no row has it; swept keys and values: "
                             + "; ".join(f"{k}: {', '.join(ordered_values(runs, k))}" for k in group_keys))
        add_comparison(rows, group_keys, metrics, compare)
    return {
        "sweep_dir": " ".join(map(str, dirs)), "sweep_dirs": [str(d) for d in dirs], "keys": group_keys, "seed_key": seed_key, "fixed": fixed,
        "metrics": metrics, "rows": rows, "runs": len(runs), "where": where or {}, "compare": compare,
        "missing": [str(r.path) for r in runs if r.summary is None],
    }


def short(value: str) -> str:
    """Long floats from a Bayesian search (0.2588170214937917) shown as 0.2588; long paths
    (``prior.checkpoint=/data/runs/x/0/checkpoints/last.ckpt``) by their last four parts."""
    x = as_number(value)
    if x is not None and len(value) > 8:
        return f"{x:.4g}"
    parts = value.split("/")
    return ".../" + "/".join(parts[-4:]) if len(value) > 40 and len(parts) > 4 else value


def fmt(mean: float, ci: float, metric: str) -> str:
    if math.isnan(mean):
        return "-"
    digits = 1 if metric.endswith("seconds") else 4
    return f"{mean:.{digits}f}" + ("" if math.isnan(ci) else f" ± {ci:.{digits}f}")


def cell_texts(report: dict, row: dict) -> list[str]:
    """A row's cells: its keys, n, seeds, each metric's mean ± interval, then each metric's
    difference from the --compare row (``-`` on that row itself)."""
    keys, metrics, compare = report["keys"], report["metrics"], report.get("compare")
    cells = [short(row[k]) for k in keys] + [str(row["n"]), row["seeds"]]
    cells += [fmt(row[f"{m}_mean"], row[f"{m}_ci95"], m) for m in metrics]
    if compare:
        for m in compared_metrics(report):
            diff, ci = row[f"{m}_diff"], row[f"{m}_diff_ci95"]
            cells.append("-" if row[compare[0]] == compare[1] else fmt_diff(diff, ci, m))
    return cells


def compared_metrics(report: dict) -> list[str]:
    """The metrics whose difference from the --compare row the table shows (--compare-on;
    default: the first metric). report.csv has the difference of every metric."""
    return report.get("compare_on") or report["metrics"][:1]


def header_texts(report: dict) -> list[str]:
    compare = report.get("compare")
    return (report["keys"] + ["n", report["seed_key"] + "s"] + report["metrics"]
            + ([f"Δ {m} vs {compare[0]}={compare[1]}" for m in compared_metrics(report)] if compare else []))


def markdown_table(report: dict) -> str:
    """The table as GitHub markdown (what docs/results.md shows)."""
    lines = ["| " + " | ".join(header_texts(report)) + " |", "|" + "---|" * len(header_texts(report))]
    lines += ["| " + " | ".join(cell_texts(report, row)) + " |" for row in report["rows"]]
    return "\n".join(lines)


def print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    metrics, keys = report["metrics"], report["keys"]
    fixed = " ".join(f"{k}={v}" for k, v in report["fixed"].items()) or "none"
    table = Table(
        title=f"sweep {report['sweep_dir']}",
        caption=f"mean ± 95% t-interval over seeds; fixed overrides: {fixed}"
                + ("; only " + " ".join(f"{k}={v}" for k, v in report["where"].items()) if report.get("where") else "")
                + ("; Δ: difference of means, 95% Welch t-interval" if report.get("compare") else ""),
    )
    for i, name in enumerate(header_texts(report)):
        table.add_column(name, style="cyan" if i < len(keys) else None,
                         justify="left" if i < len(keys) + 2 and name != "n" else "right")
    best = None
    key_metric = metrics[0] if metrics else None
    if key_metric and report["rows"]:
        means = [r[f"{key_metric}_mean"] for r in report["rows"]]
        finite = [m for m in means if not math.isnan(m)]
        best = max(finite) if finite and not key_metric.endswith("seconds") else None
    first_metric = len(keys) + 2
    for row in report["rows"]:
        cells = cell_texts(report, row)
        if key_metric and row[f"{key_metric}_mean"] == best:
            cells[first_metric] = f"[bold green]{cells[first_metric]}[/]"
        table.add_row(*cells)
    console = Console(width=max(100, 24 * (len(metrics) + len(keys))))
    console.print(table)
    if report["missing"]:
        console.print(f"[yellow]{len(report['missing'])} of {report['runs']} runs have no summary.json "
                      f"(failed or unfinished):[/] " + ", ".join(report["missing"]))


def write_csv(report: dict, path: Path) -> None:
    columns = report["keys"] + ["n", "seeds", "runs"]
    columns += [f"{m}_{s}" for m in report["metrics"] for s in ("mean", "ci95", "std", "min", "max")]
    if report.get("compare"):
        columns += [f"{m}_{s}" for m in report["metrics"] for s in ("diff", "diff_ci95")]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, columns)
        writer.writeheader()
        for row in report["rows"]:
            writer.writerow({c: ("" if isinstance(row.get(c), float) and math.isnan(row[c]) else row.get(c))
                             for c in columns})


def write_runs_csv(report: dict, path: Path) -> None:
    """One line per run (the raw numbers behind report.csv): its setting, seed, dir, metrics."""
    seed_key = report["seed_key"]
    columns = report["keys"] + [seed_key, "run"] + report["metrics"]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, columns)
        writer.writeheader()
        for row in report["rows"]:
            for run in row["_runs"]:
                line = {k: row[k] for k in report["keys"]}
                line.update({seed_key: run.overrides.get(seed_key, ""), "run": str(run.path)})
                line.update({m: run.summary.get(m, "") for m in report["metrics"]})
                writer.writerow(line)


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
                     f"{' + '.join(Path(d).name for d in report['sweep_dirs'])}", fontsize=10)
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
                 f"{' + '.join(Path(d).name for d in report['sweep_dirs'])}", fontsize=10)
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
            bbox=dict(boxstyle="round", facecolor="white", edgecolor="0.7"))
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
                 f"{' + '.join(Path(d).name for d in report['sweep_dirs'])}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, nargs="+",
                        help="the multirun dir (hydra.sweep.dir); several pool into one table")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS),
                        help="summary.json keys to tabulate, e.g. eval/knn/k20_top1 for a number of "
                             "an evaluator (default: %(default)s)")
    parser.add_argument("--plot-metric", default="linear_probe_top1")
    parser.add_argument("--seed-key", default="seed", help="override pooled over (default: seed)")
    parser.add_argument("--where", nargs="+", default=[], metavar="KEY=VALUE",
                        help="only runs with these overrides (loss=dunif, loss=infonce,cacr for either; a "
                             "key a run lacks reads -)")
    parser.add_argument("--compare", metavar="KEY=VALUE",
                        help="difference of every row from the row with KEY=VALUE (the other keys "
                             "equal), with a 95%% Welch t-interval, e.g. loss=infonce")
    parser.add_argument("--compare-on", nargs="+", metavar="METRIC",
                        help="the metrics whose --compare difference the table shows (default: the first)")
    parser.add_argument("--keys", nargs="+", default=[], metavar="KEY",
                        help="config keys to group by although no override names them (read from each "
                             "run's .hydra/config.yaml; a config group's choice from .hydra/hydra.yaml), "
                             "e.g. augment.recrop_p to tell two sweeps apart")
    parser.add_argument("--group-by", nargs="+", metavar="KEY",
                        help="one row per value of exactly these keys (from the overrides, else each "
                             "run's config), pooling runs that reached the same setting by different "
                             "overrides, e.g. loss adversarial.w_div adversarial.sam_rho")
    parser.add_argument("--out", type=Path, help="where report.csv/png go (default: the first sweep dir)")
    parser.add_argument("--markdown", action="store_true", help="print the table as GitHub markdown")
    parser.add_argument("--scatter", nargs=2, metavar=("X", "Y"),
                        help="also plot every row at (X, Y) with both intervals to report_scatter.png, "
                             "e.g. eval/metrics/projector/alignment eval/metrics/projector/uniformity")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    for d in args.sweep_dir:
        if not d.is_dir():
            print(f"error: {d} is not a directory", file=sys.stderr)
            return 2
    for item in args.where + ([args.compare] if args.compare else []):
        if "=" not in item:
            print(f"error: {item!r}: write KEY=VALUE, e.g. loss=infonce", file=sys.stderr)
            return 2
    where = dict(item.split("=", 1) for item in args.where)
    compare = tuple(args.compare.split("=", 1)) if args.compare else None
    metrics = list(dict.fromkeys([*args.metrics, args.plot_metric, *(args.scatter or [])]))
    try:
        report = build_report(args.sweep_dir, metrics, args.seed_key, where, compare, args.keys,
                              args.group_by)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report["compare_on"] = [m for m in (args.compare_on or []) if m in metrics]
    if not report["rows"]:
        print(f"error: no run under {' '.join(map(str, args.sweep_dir))} has both .hydra/overrides.yaml "
              f"and summary.json" + (f" and {' '.join(args.where)}" if args.where else ""), file=sys.stderr)
        return 1
    out = args.out or args.sweep_dir[0]
    out.mkdir(parents=True, exist_ok=True)
    if args.markdown:
        print(markdown_table(report))
    else:
        print_table(report)
    write_csv(report, out / "report.csv")
    write_runs_csv(report, out / "runs.csv")
    print(f"wrote {out / 'report.csv'} and {out / 'runs.csv'}")
    if not args.no_plot:
        plot(report, args.plot_metric, out / "report.png")
        print(f"wrote {out / 'report.png'}")
        if args.scatter:
            plot_scatter(report, *args.scatter, out / "report_scatter.png")
            print(f"wrote {out / 'report_scatter.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
