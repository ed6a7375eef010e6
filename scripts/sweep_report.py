"""Summarise a Hydra multirun sweep: one row per setting (mean and 95% t-interval over seeds) and
the differences between settings (paired over shared seeds, else Welch; Holm over the family).

    python scripts/sweep_report.py multirun/temperature_x_loss/2025-01-01_12-00-00
    python scripts/sweep_report.py SWEEP_DIR --metrics linear_probe_top1 knn_top1 --plot-metric knn_top1
    python scripts/sweep_report.py SWEEP_DIR --compare loss=infonce --compare-on linear_probe_top1 knn_top1
    python scripts/sweep_report.py SWEEP_DIR --pairs loss=cacr:loss=infonce loss=gca_uot:loss=gca_ince
    python scripts/sweep_report.py SWEEP_A SWEEP_B --where loss=dunif --out DIR
    python scripts/sweep_report.py docs/data/results_main/runs.csv --pairs loss=cacr:loss=infonce --markdown --no-plot

Reads every run's ``summary.json`` (plus later ``eval/NAME.json``) and ``.hydra/overrides.yaml``
under each SWEEP_DIR, or the runs of a ``runs.csv`` this script wrote before; several pool into
one table (a run named twice counts once; a key one sweep overrides and another does not is
read from the other's ``.hydra/config.yaml``; ``--where KEY=V1,V2`` keeps only the runs with one
of those values, an absent key reading as ``-``).

Rows: the runs are grouped by the overrides whose value differs between them (``sweep``, the
sweep file's name, aside), or by exactly the ``--group-by`` keys, and then by any other key of
their saved configs that differs (all but the seed, paths, logging and threads:
``sslkit.stats.identity``; ``--ignore-keys`` adds to that list), so each row pools the seeds of
one setting. A row holding the same seed twice is refused, naming both runs.

Comparisons: ``--compare KEY=VALUE`` takes every row minus the row with KEY=VALUE and the same
other keys; ``--pairs A:B`` each row matching A minus its B; ``--interaction A:B`` each
compared pair of rows matching A minus the one matching B (a difference of differences). Runs with the same seed share
their initial weights and augmentation stream, so a difference is a paired t-interval over the
seeds both rows have (seeds only one has are dropped and counted), and Welch's interval where
they share none (``--unpaired``: always Welch). Differences are taken on the ``--compare-on``
metrics (default: the primary metric) and corrected with Holm within each family: the report's
comparisons on one metric (``--family metric``, the default) or all of them (``--family all``);
the verdict, the same for every row and metric, is the sign of the difference where its
Holm-adjusted p-value is below 0.05 (``holds`` / ``does not hold`` against the ``--predict``
sign); an uncalled difference whose t-interval at the Bonferroni level 0.05 / m lies inside
+-``--within`` points (0.3; a metric times ``--scale``, 100 for fractions) reads ``within 0.3``
(docs/results_protocol.md, "Verdict rule"), any other ``inconclusive``; no test, ``untested``,
with fewer than 2 values or no spread at all. ``--primary`` names the table's primary metric
(default: the first of ``--metrics``).

Prints the tables (rich, or ``--markdown``), writes ``report.csv`` (per setting), ``runs.csv`` (per
run; not over an input file), ``report.json`` (everything, strict JSON), ``comparisons.csv`` and
plots the ``--plot-metric`` with its interval to ``report.png``, in the first SWEEP_DIR (the
folder of a runs.csv) or ``--out``. Runs without a summary (failed or unfinished) are counted and
listed, never averaged.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sslkit.errors import UserError
from sslkit.stats.compare import PREDICTIONS
from sslkit.stats.sweep import DEFAULT_METRICS, build_report
from sslkit.stats.tables import (  # noqa: F401
    markdown,
    markdown_table,
    print_table,
    short,
    write_comparisons_csv,
    write_csv,
    write_report_json,
    write_runs_csv,
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sweep_dir", type=Path, nargs="+",
                   help="the multirun dir (hydra.sweep.dir) or a runs.csv; several pool into one table")
    p.add_argument("--metrics", nargs="+",
                   help="summary.json keys to tabulate, e.g. eval/knn/k20_top1 for a number of an evaluator "
                        f"(default: a runs.csv's metric columns, else {' '.join(DEFAULT_METRICS)})")
    p.add_argument("--primary", metavar="METRIC", help="the table's primary metric (default: the first metric)")
    p.add_argument("--plot-metric", help="the metric report.png shows (default: the primary metric)")
    p.add_argument("--seed-key", default="seed", help="override pooled over (default: seed)")
    p.add_argument("--where", nargs="+", default=[], metavar="KEY=VALUE",
                   help="only runs with these overrides (loss=dunif, loss=infonce,cacr for either; a "
                        "key a run lacks reads -)")
    p.add_argument("--compare", metavar="KEY=VALUE",
                   help="difference of every row from the row with KEY=VALUE (the other keys equal), "
                        "e.g. loss=infonce")
    p.add_argument("--pairs", nargs="+", default=[], metavar="A:B",
                   help="differences of the rows matching A from their rows matching B (the other keys "
                        "equal), e.g. loss=cacr:loss=infonce or "
                        "adversarial.w_div=0.1,adversarial.sam_rho=0.05:adversarial.w_div=0.1,adversarial.sam_rho=0.0")
    p.add_argument("--interaction", nargs="+", default=[], metavar="A:B",
                   help="differences of differences: each compared pair of rows matching A minus the "
                        "compared pair matching B, e.g. with --pairs data.batch_size=64:data.batch_size=1024, "
                        "loss=cacr:loss=infonce (CACR's change minus InfoNCE's)")
    p.add_argument("--compare-on", nargs="+", metavar="METRIC",
                   help="the metrics whose differences the tables show (default: the primary metric)")
    p.add_argument("--family", choices=("metric", "all"), default="metric",
                   help="the Holm families: each metric's comparisons (default), or all comparisons of "
                        "the report together")
    p.add_argument("--within", type=float, default=0.3, metavar="POINTS",
                   help="label an uncalled difference whose interval at the Bonferroni level (0.05 / m) "
                        "lies inside +-POINTS 'within POINTS' (default: 0.3; 0: no label)")
    p.add_argument("--scale", type=float, default=100.0,
                   help="multiplies a metric into points for --within (default: 100, for fractions)")
    p.add_argument("--predict", nargs="+", choices=PREDICTIONS, metavar="SIGN",
                   help="the predicted sign (higher, lower, none: no difference), one for every comparison or "
                        "one per --compare, --pairs and --interaction selection in that order; verdicts "
                        "then read holds / does not hold")
    p.add_argument("--unpaired", action="store_true",
                   help="Welch intervals even where rows share seeds (seeds that do not share weights "
                        "or augmentation streams)")
    p.add_argument("--keys", nargs="+", default=[], metavar="KEY",
                   help="config keys to show as columns although no override names them (read from each "
                        "run's .hydra/config.yaml; a config group's choice from .hydra/hydra.yaml), "
                        "e.g. augment.recrop_p")
    p.add_argument("--group-by", nargs="+", metavar="KEY",
                   help="one row per value of exactly these keys (from the overrides, else each run's "
                        "config), pooling runs that reached the same setting by different overrides, "
                        "e.g. loss adversarial.w_div adversarial.sam_rho")
    p.add_argument("--ignore-keys", nargs="+", default=[], metavar="KEY",
                   help="config keys (or prefixes) whose differences do not make another setting, beside "
                        "the seed, paths, logger and threads")
    p.add_argument("--out", type=Path, help="where the files go (default: the first sweep dir)")
    p.add_argument("--markdown", action="store_true", help="print the tables as GitHub markdown")
    p.add_argument("--scatter", nargs=2, metavar=("X", "Y"),
                   help="also plot every row at (X, Y) with both intervals to report_scatter.png, "
                        "e.g. eval/metrics/projector/alignment eval/metrics/projector/uniformity")
    p.add_argument("--no-plot", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    for d in args.sweep_dir:
        if not d.exists():
            print(f"error: {d} is not a directory or a runs.csv", file=sys.stderr)
            return 2
    for item in args.where + ([args.compare] if args.compare else []):
        if "=" not in item:
            print(f"error: {item!r}: write KEY=VALUE, e.g. loss=infonce", file=sys.stderr)
            return 2
    where = dict(item.split("=", 1) for item in args.where)
    compare = tuple(args.compare.split("=", 1)) if args.compare else None
    extra = [m for m in [args.primary, args.plot_metric, *(args.scatter or []), *(args.compare_on or [])] if m]
    try:
        report = build_report(args.sweep_dir, args.metrics, args.seed_key, where, compare, args.keys,
                              args.group_by, pairs=args.pairs, interactions=args.interaction,
                              compare_on=args.compare_on, family=args.family, primary=args.primary,
                              paired=False if args.unpaired else None, ignore=args.ignore_keys,
                              extra_metrics=extra, within=args.within, scale=args.scale,
                              predict=args.predict)
    except (ValueError, UserError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not report["rows"]:
        print(f"error: no run under {' '.join(map(str, args.sweep_dir))} has both .hydra/overrides.yaml "
              f"and summary.json" + (f" and {' '.join(args.where)}" if args.where else ""), file=sys.stderr)
        return 1
    first = args.sweep_dir[0]
    out = args.out or (first.parent if first.is_file() else first)
    out.mkdir(parents=True, exist_ok=True)
    if args.markdown:
        print(markdown(report))
    else:
        print_table(report)
    write_csv(report, out / "report.csv")
    written = [out / "report.csv", write_report_json(report, out / "report.json")]
    if report["comparisons"]:
        write_comparisons_csv(report, out / "comparisons.csv")
        written.append(out / "comparisons.csv")
    inputs = {d.resolve() for d in args.sweep_dir if d.is_file()}
    if (out / "runs.csv").resolve() not in inputs:
        write_runs_csv(report, out / "runs.csv")
        written.append(out / "runs.csv")
    print("wrote " + ", ".join(map(str, written)))
    if not args.no_plot:
        from sslkit.stats.plots import plot, plot_scatter

        plot(report, args.plot_metric or report["primary"], out / "report.png")
        print(f"wrote {out / 'report.png'}")
        if args.scatter:
            plot_scatter(report, *args.scatter, out / "report_scatter.png")
            print(f"wrote {out / 'report_scatter.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
