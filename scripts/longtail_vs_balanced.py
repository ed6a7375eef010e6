"""Long-tailed against balanced pretraining, class group by class group.

    python scripts/longtail_vs_balanced.py multirun/results_longtail/<time> multirun/results_main/<time> --reference infonce

The long-tailed protocol (``eval=longtail``) reports accuracy on the many-, medium- and few-shot
classes, but those are different classes with different difficulty (on Fashion-MNIST the
few-shot end of the default profile holds sandal, sneaker, bag and ankle boot, which every
encoder classifies well). What imbalance costs a class is its accuracy after long-tailed
pretraining minus its accuracy after balanced pretraining with the same head and protocol: this
script pairs each long-tailed run's groups (``eval/longtail.json``) with the same classes' test
accuracy in the balanced runs (``eval/linear.json`` ``per_class_top1``; the test set is balanced,
so a group's accuracy is the mean of its classes'). Prints a markdown table: per ratio, head and
group the balanced and long-tailed accuracy (mean ± 95% t-interval over seeds), the change
(± 95% Welch interval) and, against ``--reference``, the difference of changes (± 95% interval
with Welch-Satterthwaite degrees of freedom over the four groups of runs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from sslkit.stats.compare import welch_contrast
from sslkit.stats.intervals import describe
from sslkit.stats.runs import fill_from_configs, find_runs
from sslkit.stats.tables import fmt, fmt_diff

GROUPS = ("many", "medium", "few")


def runs_with_loss(sweep_dir: Path) -> list:
    """The sweep's runs, each naming its head even where a sweep file chose it
    (``override /loss: ...``) rather than an override."""
    runs = find_runs(sweep_dir)
    fill_from_configs(runs, ["loss"])
    return runs


def longtail_runs(sweep_dir: Path) -> dict[tuple[str, str], list[dict]]:
    """(ratio, loss) -> the eval/longtail.json of every finished seed."""
    out: dict[tuple[str, str], list[dict]] = {}
    for run in runs_with_loss(sweep_dir):
        result = run.path / "eval" / "longtail.json"
        if run.summary is None or not result.exists():
            continue
        key = (run.overrides.get("data.imbalance_ratio", "1"), run.overrides.get("loss", "-"))
        out.setdefault(key, []).append(json.loads(result.read_text()))
    return out


def balanced_runs(sweep_dirs: list[Path]) -> dict[str, list[list[float]]]:
    """loss -> the per-class linear-probe top-1 of every finished seed."""
    out: dict[str, list[list[float]]] = {}
    for sweep_dir in sweep_dirs:
        for run in runs_with_loss(sweep_dir):
            result = run.path / "eval" / "linear.json"
            if run.summary is None or not result.exists() or run.overrides.get("data.imbalance_ratio", "1") not in ("1", "1.0"):
                continue
            out.setdefault(run.overrides.get("loss", "-"), []).append(json.loads(result.read_text())["per_class_top1"])
    return out


def interval(values: list[float]) -> str:
    s = describe(values)
    return fmt(s["mean"], s["ci95"], "")


def difference_of_changes(a_lt, a_bal, b_lt, b_bal) -> tuple[float, float]:
    """(a_lt - a_bal) - (b_lt - b_bal) and its 95% half-width (Welch-Satterthwaite)."""
    out = welch_contrast([(+1, list(enumerate(a_lt))), (-1, list(enumerate(a_bal))),
                          (-1, list(enumerate(b_lt))), (+1, list(enumerate(b_bal)))])
    return out["diff"], out["ci95"]


def table(lt: dict, balanced: dict, reference: str | None) -> list[str]:
    lines = ["| ratio | loss | group (classes) | balanced | long-tailed | change"
             + (f" | change minus {reference}'s" if reference else "") + " |"]
    lines.append("|" + "---|" * (6 + bool(reference)))
    values: dict[tuple[str, str, str], tuple[list[float], list[float]]] = {}
    for (ratio, loss), results in sorted(lt.items(), key=lambda kv: (float(kv[0][0]), kv[0][1])):
        if loss not in balanced:
            continue
        groups = results[0]["class_groups"]
        for group in GROUPS:
            classes = [c for c, g in enumerate(groups) if g == group]
            if not classes:
                continue
            long_tailed = [r["linear"][f"{group}_top1"] for r in results]
            bal = [statistics.mean(per_class[c] for c in classes) for per_class in balanced[loss]]
            values[(ratio, loss, group)] = (long_tailed, bal)
    for (ratio, loss, group), (long_tailed, bal) in values.items():
        change = welch_contrast([(+1, list(enumerate(long_tailed))), (-1, list(enumerate(bal)))])
        classes = " ".join(str(c) for c, g in enumerate(lt[(ratio, loss)][0]["class_groups"]) if g == group)
        cells = [ratio, loss, f"{group} ({classes})", interval(bal), interval(long_tailed),
                 fmt_diff(change["diff"], change["ci95"])]
        if reference:
            ref = values.get((ratio, reference, group))
            if ref is None or loss == reference:
                cells.append("-")
            else:
                cells.append(fmt_diff(*difference_of_changes(long_tailed, bal, *ref)))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("longtail_dir", type=Path, help="the sweep with data.imbalance_ratio > 1 and eval=longtail")
    parser.add_argument("balanced_dirs", type=Path, nargs="+", help="sweeps with the same heads, balanced, eval=linear")
    parser.add_argument("--reference", help="the head the others' changes are compared with, e.g. infonce")
    args = parser.parse_args(argv)
    for d in [args.longtail_dir, *args.balanced_dirs]:
        if not d.is_dir():
            print(f"error: {d} is not a directory", file=sys.stderr)
            return 2
    lt, balanced = longtail_runs(args.longtail_dir), balanced_runs(args.balanced_dirs)
    if not lt or not any(loss in balanced for _, loss in lt):
        print(f"error: no head has both long-tailed runs with eval/longtail.json under {args.longtail_dir} "
              f"and balanced runs with eval/linear.json under {' '.join(map(str, args.balanced_dirs))}",
              file=sys.stderr)
        return 1
    print("\n".join(table(lt, balanced, args.reference)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
