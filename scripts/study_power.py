"""How many paired seeds a study needs: the SD of the per-seed differences of earlier runs, and the
seeds that resolve a difference of --effect points at that SD (sslkit.stats.power).

    python scripts/study_power.py docs/data/results_main/runs.csv --pairs loss=cacr:loss=infonce loss=cacr:loss=dcl
    python scripts/study_power.py RUNS.csv --compare loss=infonce --metric knn_top1 --family-size 9 --seeds 10

Reads the runs and forms the comparisons exactly as ``scripts/sweep_report.py`` does (``--pairs``,
``--compare``, ``--interaction``, ``--where``: the same syntax, pairing over shared seeds). For each
comparison: the number of pairs, the SD of its per-seed differences, and the seeds needed so that
a true difference of --effect is called with probability --power by the paired t-test at
--alpha / m (m: --family-size, default the number of comparisons; the Bonferroni bound of Holm),
and so that the paired interval at that level is at most --effect wide on each side. The last
rows pool the comparisons' differences (each centred on its own mean): the family's planning SD
with its degrees of freedom, its one-sided 80% upper bound, the rows' seed-to-seed SD and the
correlation between paired settings that the two imply. Values are in points (--scale 100 for
metrics stored as fractions; --scale 1 for metrics in their own units). Prints only.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sslkit.errors import UserError
from sslkit.stats.power import detectable_effect, pooled_sd, required_seeds, sd_upper
from sslkit.stats.sweep import build_report


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sources", type=Path, nargs="+", help="runs.csv files or sweep dirs (pooled)")
    p.add_argument("--metric", default="linear_probe_top1", help="the metric compared (default: %(default)s)")
    p.add_argument("--pairs", nargs="+", default=[], metavar="A:B", help="as scripts/sweep_report.py")
    p.add_argument("--compare", metavar="KEY=VALUE", help="as scripts/sweep_report.py")
    p.add_argument("--interaction", nargs="+", default=[], metavar="A:B", help="as scripts/sweep_report.py")
    p.add_argument("--where", nargs="+", default=[], metavar="KEY=VALUE", help="as scripts/sweep_report.py")
    p.add_argument("--effect", type=float, default=0.3, help="difference to resolve, points (default: 0.3)")
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--power", type=float, default=0.8)
    p.add_argument("--family-size", type=int, metavar="M",
                   help="the Holm family the study will correct over (default: the comparisons given)")
    p.add_argument("--seeds", type=int, metavar="N",
                   help="also the smallest difference N seeds call with --power (the detectable effect)")
    p.add_argument("--scale", type=float, default=100.0,
                   help="multiplies the metric into points (default: 100, for fractions)")
    p.add_argument("--claim", default="", help="a name printed on the family row")
    return p


def per_seed(rows: list[dict], parts: list[tuple[float, int]], metric: str) -> list[float]:
    """The per-seed contrasts a paired comparison tests: sum of sign * value on every seed that
    all its rows have a finite value for."""
    sides = [(sign, {s: v for s, v in rows[i]["_seeded"][metric] if s is not None and math.isfinite(v)})
             for sign, i in parts]
    shared = set.intersection(*(set(d) for _, d in sides))
    return [sum(sign * d[s] for sign, d in sides) for s in sorted(shared)]


def needed(sd: float, args, m: int, criterion: str) -> str:
    if not (sd > 0 and math.isfinite(sd)):
        return "-"
    return str(required_seeds(sd, args.effect, args.alpha, args.power, m, criterion))


def detectable(sd: float, args, m: int) -> str:
    """The table cell of the detectable effect at --seeds (empty without it)."""
    if not args.seeds:
        return ""
    ok = sd > 0 and math.isfinite(sd)
    return f" {detectable_effect(args.seeds, sd, args.alpha, args.power, m):.2f} |" if ok else " - |"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    for source in args.sources:
        if not source.exists():
            print(f"error: {source} is not a runs.csv or a sweep directory", file=sys.stderr)
            return 2
    for item in args.where + ([args.compare] if args.compare else []):
        if "=" not in item:
            print(f"error: {item!r}: write KEY=VALUE, e.g. loss=infonce", file=sys.stderr)
            return 2
    if not (args.pairs or args.compare):
        print("error: name the comparisons: --pairs A:B ... or --compare KEY=VALUE", file=sys.stderr)
        return 2
    try:
        report = build_report(args.sources, [args.metric], where=dict(i.split("=", 1) for i in args.where),
                              compare=tuple(args.compare.split("=", 1)) if args.compare else None,
                              pairs=args.pairs, interactions=args.interaction, compare_on=[args.metric])
    except (ValueError, UserError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rows, comparisons = report["rows"], report["comparisons"]
    if not any(row["_values"][args.metric] for row in rows):
        print(f"error: no run has a number for {args.metric!r}; name a metric column of the runs.csv "
              "(or a summary.json key of the runs), e.g. --metric knn_top1", file=sys.stderr)
        return 2
    if not comparisons:
        print("error: no comparison formed; check --pairs / --compare against the runs' keys", file=sys.stderr)
        return 1
    m = args.family_size or len(comparisons)
    head = (f"| comparison | n | paired SD | seeds for {args.power:.0%} power | seeds for half-width "
            f"<= {args.effect:g} |" + (f" detectable at {args.seeds} seeds |" if args.seeds else ""))
    print(f"{args.metric}, points x{args.scale:g}; effect {args.effect:g} points, alpha {args.alpha:g} / m, "
          f"m = {m} (Holm's Bonferroni bound)\n")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    groups = []
    for c in comparisons:
        parts = [(+1.0, c["a"]), (-1.0, c["b"])]
        if c["kind"] == "interaction":
            parts += [(-1.0, c["c"]), (+1.0, c["d"])]
        diffs = [args.scale * d for d in per_seed(rows, parts, args.metric)]
        groups.append(diffs)
        sd, _ = pooled_sd([diffs])
        print(f"| {c['label']} | {len(diffs)} | {sd:.3f} | {needed(sd, args, m, 'power')} | "
              f"{needed(sd, args, m, 'halfwidth')} |{detectable(sd, args, m)}")
    sd, df = pooled_sd(groups)
    upper = sd_upper(sd, df, 0.8)
    used = {i for c in comparisons for i in (c["a"], c["b"], c.get("c"), c.get("d")) if i is not None}
    seed_sd, seed_df = pooled_sd([[args.scale * v for v in rows[i]["_values"][args.metric]] for i in used])
    name = f"{args.claim}: " if args.claim else ""
    print(f"| **{name}pooled ({len(groups)} comparison{'s' if len(groups) > 1 else ''}, {df} df)** | - | {sd:.3f} | "
          f"{needed(sd, args, m, 'power')} | {needed(sd, args, m, 'halfwidth')} |{detectable(sd, args, m)}")
    print(f"| **{name}80% upper bound of the pooled SD** | - | {upper:.3f} | "
          f"{needed(upper, args, m, 'power')} | {needed(upper, args, m, 'halfwidth')} |{detectable(upper, args, m)}")
    line = f"\nseed-to-seed SD of the {len(used)} settings (pooled, {seed_df} df): {seed_sd:.3f} points"
    if all(c["kind"] == "pair" for c in comparisons) and seed_sd > 0:
        # var(a - b) = 2 sd^2 (1 - rho) for two settings of equal seed-to-seed SD
        line += f"; implied correlation of paired settings: {1.0 - sd ** 2 / (2.0 * seed_sd ** 2):.2f}"
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
