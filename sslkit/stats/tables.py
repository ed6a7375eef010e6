"""A sweep report (``sslkit.stats.sweep.build_report``) as tables and files: the terminal table
(rich), GitHub markdown, ``report.csv`` (per setting), ``runs.csv`` (per run),
``comparisons.csv`` and ``report.json`` (strict JSON: no bare NaN)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from sslkit.stats.jsonio import write_json
from sslkit.stats.sweep import COMPARISON_FIELDS, STATS, short

COMPARISON_COLUMNS = ("label", "metric", "test", "n", "n_a", "n_b", "dropped", "diff", "ci95", "low",
                      "high", "df", "t", "p", "family", "family_size", "p_holm", "bonferroni_low",
                      "bonferroni_high", "predicted", "verdict", "note")


def fmt(mean: float, ci: float, metric: str = "") -> str:
    if math.isnan(mean):
        return "-"
    digits = 1 if metric.endswith("seconds") else 4
    return f"{mean:.{digits}f}" + ("" if math.isnan(ci) else f" ± {ci:.{digits}f}")


def fmt_diff(diff: float, ci: float, metric: str = "") -> str:
    """A signed difference with its interval (``+0.0041 ± 0.0026``); ``-`` when there is none."""
    return "-" if math.isnan(diff) else ("+" if diff >= 0 else "") + fmt(diff, ci, metric)


def fmt_p(p: float) -> str:
    if p is None or math.isnan(p):
        return "-"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}" if p < 0.01 else f"{p:.3f}"


def fmt_n(c: dict) -> str:
    """``3 pairs`` or ``3+3`` (Welch), with ``, 1 dropped`` where values were left out."""
    n = f"{c['n']} pair{'s' * (c['n'] != 1)}" if c["test"] == "paired" else f"{c['n_a']}+{c['n_b']}"
    return n + (f", {c['dropped']} dropped" if c.get("dropped") else "")


def compared_metrics(report: dict) -> list[str]:
    """The metrics whose comparisons the tables show (report.csv and report.json have every
    metric's)."""
    return report.get("compare_on") or report["metrics"][:1]


def header_texts(report: dict) -> list[str]:
    compare = report.get("compare")
    return (report["keys"] + ["n", report["seed_key"] + "s"] + report["metrics"]
            + ([f"Δ {m} vs {compare[0]}={compare[1]}" for m in compared_metrics(report)] if compare else []))


def cell_texts(report: dict, row: dict) -> list[str]:
    """A row's cells: its keys, n, seeds, each metric's mean ± interval, then each compared
    metric's difference from the --compare row (``-`` on that row itself)."""
    keys, metrics, compare = report["keys"], report["metrics"], report.get("compare")
    cells = [short(row[k]) for k in keys] + [str(row["n"]), row["seeds"]]
    cells += [fmt(row[f"{m}_mean"], row[f"{m}_ci95"], m) for m in metrics]
    if compare:
        for m in compared_metrics(report):
            diff, ci = row[f"{m}_diff"], row[f"{m}_diff_ci95"]
            cells.append("-" if row[compare[0]] == compare[1] else fmt_diff(diff, ci, m))
    return cells


def caption(report: dict) -> str:
    """What the tables' numbers are: the primary metric, the intervals, the test, the families."""
    text = f"Primary metric: {report['primary']}. Rows: mean ± 95% t-interval over seeds."
    comparisons = report.get("comparisons") or []
    if comparisons:
        names = {"paired": "paired t-interval of the per-seed differences",
                 "welch": "Welch t-interval (no shared seed)"}
        tests = sorted({c["test"] for c in comparisons})
        sizes = {c["family"]: c["family_size"] for c in comparisons}
        where = ("each metric's comparisons" if report["family"] == "metric" else "all comparisons")
        text += (" Δ: " + "; ".join(names[t] for t in tests)
                 + f". Holm within {where} ({' / '.join(str(n) for n in sizes.values())} tested);"
                 f" verdict where p (Holm) < {report['alpha']}")
        if report.get("predict"):
            text += " (holds: with the predicted sign; does not hold: with the other)"
        if report.get("within"):
            w, scale = report["within"], report.get("scale", 100.0)
            text += (f"; within {w:g}: not called, and the interval at the Bonferroni level"
                     f" {report['alpha']} / m lies inside ±{w:g} points (x{scale:g})")
        text += "."
    return text


def comparisons_rows(report: dict) -> list[list[str]]:
    shown = compared_metrics(report)
    rows = []
    for c in report["comparisons"]:
        if c["metric"] not in shown:
            continue
        rows.append([c["label"], c["metric"], c["test"], fmt_n(c), fmt_diff(c["diff"], c["ci95"], c["metric"]),
                     fmt_p(c["p"]), fmt_p(c["p_holm"]), c["verdict"]])
    return rows


COMPARISON_HEADER = ["comparison (a - b)", "metric", "test", "n", "Δ ± 95% interval", "p", "p (Holm)", "verdict"]


def markdown_table(report: dict) -> str:
    """The table as GitHub markdown (what docs/results.md shows)."""
    lines = ["| " + " | ".join(header_texts(report)) + " |", "|" + "---|" * len(header_texts(report))]
    lines += ["| " + " | ".join(cell_texts(report, row)) + " |" for row in report["rows"]]
    return "\n".join(lines)


def comparisons_markdown(report: dict) -> str:
    """The comparisons (a minus b), with their test, n, interval, raw and Holm p and verdict."""
    lines = ["| " + " | ".join(COMPARISON_HEADER) + " |", "|" + "---|" * len(COMPARISON_HEADER)]
    lines += ["| " + " | ".join(cells) + " |" for cells in comparisons_rows(report)]
    return "\n".join(lines)


def markdown(report: dict) -> str:
    """The rows table, its caption and (when there are comparisons) the comparisons table."""
    out = [markdown_table(report), "", caption(report)]
    if report.get("comparisons"):
        out += ["", comparisons_markdown(report)]
    return "\n".join(out)


def print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    metrics, keys = report["metrics"], report["keys"]
    fixed = " ".join(f"{k}={v}" for k, v in report["fixed"].items()) or "none"
    table = Table(
        title=f"sweep {report['sweep_dir']}",
        caption=caption(report) + f" Fixed overrides: {fixed}"
                + ("; only " + " ".join(f"{k}={v}" for k, v in report["where"].items()) if report.get("where") else ""),
    )
    for i, name in enumerate(header_texts(report)):
        table.add_column(name, style="cyan" if i < len(keys) else None,
                         justify="left" if i < len(keys) + 2 and name != "n" else "right")
    key_metric = report.get("primary") or (metrics[0] if metrics else None)
    best = None
    if key_metric and report["rows"]:
        finite = [m for r in report["rows"] if not math.isnan(m := r[f"{key_metric}_mean"])]
        best = max(finite) if finite and not key_metric.endswith("seconds") else None
    first_metric = len(keys) + 2 + metrics.index(key_metric) if key_metric in metrics else None
    for row in report["rows"]:
        cells = cell_texts(report, row)
        if first_metric is not None and row[f"{key_metric}_mean"] == best:
            cells[first_metric] = f"[bold green]{cells[first_metric]}[/]"
        table.add_row(*cells)
    console = Console(width=max(100, 24 * (len(metrics) + len(keys))))
    console.print(table)
    if report.get("comparisons"):
        comparisons = Table(title="comparisons (a - b)")
        for name in COMPARISON_HEADER:
            comparisons.add_column(name)
        for cells in comparisons_rows(report):
            comparisons.add_row(*cells)
        console.print(comparisons)
    if report["missing"]:
        console.print(f"[yellow]{len(report['missing'])} of {report['runs']} runs have no summary.json "
                      f"(failed or unfinished):[/] " + ", ".join(report["missing"]))


def _cell(value):
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else value


def write_csv(report: dict, path: Path) -> None:
    """``report.csv``: one line per setting; with --compare, every metric's difference from the
    reference row and its test, n, p, Holm p and verdict."""
    columns = report["keys"] + ["n", "seeds", "runs"]
    columns += [f"{m}_{s}" for m in report["metrics"] for s in STATS]
    if report.get("compare"):
        columns += [f"{m}_{s}" for m in compared_metrics(report) for s in COMPARISON_FIELDS]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, columns)
        writer.writeheader()
        for row in report["rows"]:
            writer.writerow({c: _cell(row.get(c)) for c in columns})


def write_comparisons_csv(report: dict, path: Path) -> None:
    """``comparisons.csv``: one line per comparison and metric."""
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["kind", "a", "b", *COMPARISON_COLUMNS, "seeds"])
        writer.writeheader()
        for c in report["comparisons"]:
            line = {k: _cell(c.get(k)) for k in ("kind", "a", "b", *COMPARISON_COLUMNS)}
            line["seeds"] = " ".join(map(str, c.get("seeds", [])))
            writer.writerow(line)


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
                line.update({m: _cell(run.summary.get(m)) for m in report["metrics"]})
                writer.writerow(line)


def report_json(report: dict) -> dict:
    """The report without its run objects: settings, per-seed values, summaries, comparisons."""
    out = {k: v for k, v in report.items() if k != "rows"}
    out["rows"] = []
    for row in report["rows"]:
        clean = {k: v for k, v in row.items() if not k.startswith("_")}
        clean["values"] = {m: [[seed, v] for seed, v in row["_seeded"][m]] for m in report["metrics"]}
        out["rows"].append(clean)
    return out


def write_report_json(report: dict, path: Path) -> Path:
    """``report.json``: ``report_json`` as strict JSON (NaN written as null)."""
    return write_json(report_json(report), path)
