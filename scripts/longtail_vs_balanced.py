"""Long-tailed against balanced pretraining, class group by class group, paired by seed.

    python scripts/longtail_vs_balanced.py multirun/results_longtail/<time> multirun/results_main/<time> --reference infonce

The long-tailed protocol (``eval=longtail``) reports accuracy on the many-, medium- and few-shot
classes, but those are different classes with different difficulty (on Fashion-MNIST the
few-shot end of the default profile holds sandal, sneaker, bag and ankle boot, which every
encoder classifies well). What imbalance costs a class is its accuracy after long-tailed
pretraining minus its accuracy after balanced pretraining with the same head, seed and protocol:
this script pairs each long-tailed run's groups (``eval/longtail.json``) with the same classes'
test accuracy in the balanced run of the same head and seed (``eval/linear.json``
``per_class_top1``; the test set is balanced, so a group's accuracy is the mean of its
classes'). Runs with the same seed share their initial weights and augmentation stream, so every
interval is a paired t-interval over the seeds all its runs have (``sslkit.stats.compare``;
seeds only some have are dropped and counted).

Prints two markdown tables. The first: per ratio, head and group the balanced and long-tailed
accuracy (mean ± 95% t-interval over seeds), the change (long-tailed minus balanced) and, against
``--reference``, the difference of changes. The second is the claim's family on the ``--group``
classes (few-shot by default; docs/results_protocol.md, claim 8), one per ratio: each head minus
the reference after long-tailed pretraining, and the change of each ``--changes`` head (default:
every head but the reference) minus the reference's, corrected together with Holm; the verdict
is the rule of ``scripts/sweep_report.py`` (called where the Holm-adjusted p is below 0.05,
``holds`` / ``does not hold`` against ``--predict``; ``within 0.3`` where the interval at the
Bonferroni level 0.05 / m lies inside +-``--within`` points).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

from sslkit.stats.compare import ALPHA, PREDICTIONS, apply_holm, paired_contrast
from sslkit.stats.identity import refuse_duplicate_seeds
from sslkit.stats.intervals import describe, natural_key
from sslkit.stats.runs import fill_from_configs, find_runs
from sslkit.stats.tables import fmt, fmt_diff, fmt_n, fmt_p

GROUPS = ("many", "medium", "few")
Seeded = dict  # seed -> value


def runs_with_loss(sweep_dir: Path) -> list:
    """The sweep's runs, each naming its head even where a sweep file chose it
    (``override /loss: ...``) rather than an override."""
    runs = find_runs(sweep_dir)
    fill_from_configs(runs, ["loss"])
    return runs


def _add(out: dict, key, seed: str | None, value, run) -> None:
    """``out[key][seed] = (value, run)``; a seed twice for one key is refused, naming both runs
    (a run without a seed is kept under its own path)."""
    seeded = out.setdefault(key, {})
    setting = f"loss={key[1]} data.imbalance_ratio={key[0]}" if isinstance(key, tuple) else f"loss={key}"
    refuse_duplicate_seeds([(s, r.path) for s, (_, r) in seeded.items()] + [(seed, run.path)],
                           f" ({setting})")
    seeded[seed if seed is not None else f"(no seed: {run.path})"] = (value, run)


def longtail_runs(sweep_dir: Path) -> dict[tuple[str, str], dict[str, dict]]:
    """(ratio, loss) -> seed -> the eval/longtail.json of every finished run."""
    out: dict = {}
    for run in runs_with_loss(sweep_dir):
        result = run.path / "eval" / "longtail.json"
        if run.summary is None or not result.exists():
            continue
        key = (run.overrides.get("data.imbalance_ratio", "1"), run.overrides.get("loss", "-"))
        _add(out, key, run.seed("seed"), json.loads(result.read_text()), run)
    return {k: {s: v for s, (v, _) in seeded.items()} for k, seeded in out.items()}


def balanced_runs(sweep_dirs: list[Path]) -> dict[str, dict[str, list[float]]]:
    """loss -> seed -> the per-class linear-probe top-1 of every finished balanced run."""
    out: dict = {}
    for sweep_dir in sweep_dirs:
        for run in runs_with_loss(sweep_dir):
            result = run.path / "eval" / "linear.json"
            if run.summary is None or not result.exists() or run.overrides.get("data.imbalance_ratio", "1") not in ("1", "1.0"):
                continue
            _add(out, run.overrides.get("loss", "-"), run.seed("seed"),
                 json.loads(result.read_text())["per_class_top1"], run)
    return {k: {s: v for s, (v, _) in seeded.items()} for k, seeded in out.items()}


def interval(values: Seeded) -> str:
    s = describe(list(values.values()))
    return fmt(s["mean"], s["ci95"], "")


def change(long_tailed: Seeded, balanced: Seeded) -> dict:
    """Long-tailed minus balanced, paired over the seeds both have."""
    return paired_contrast([(+1, long_tailed), (-1, balanced)])


def difference_of_changes(a_lt: Seeded, a_bal: Seeded, b_lt: Seeded, b_bal: Seeded) -> dict:
    """(a_lt - a_bal) - (b_lt - b_bal) per seed all four have, and its paired t-interval."""
    return paired_contrast([(+1, a_lt), (-1, a_bal), (-1, b_lt), (+1, b_bal)])


def group_values(lt: dict, balanced: dict) -> dict[tuple[str, str, str], tuple[Seeded, Seeded]]:
    """(ratio, loss, group) -> (long-tailed accuracy by seed, balanced accuracy of the same
    classes by seed), for every head with both kinds of runs."""
    values = {}
    for (ratio, loss), results in sorted(lt.items(), key=lambda kv: (float(kv[0][0]), kv[0][1])):
        if loss not in balanced:
            continue
        groups = next(iter(results.values()))["class_groups"]
        for group in GROUPS:
            classes = [c for c, g in enumerate(groups) if g == group]
            if not classes:
                continue
            long_tailed = {s: r["linear"][f"{group}_top1"] for s, r in results.items()}
            bal = {s: statistics.mean(per_class[c] for c in classes) for s, per_class in balanced[loss].items()}
            values[(ratio, loss, group)] = (long_tailed, bal)
    return values


def table(lt: dict, balanced: dict, reference: str | None) -> list[str]:
    lines = ["| ratio | loss | group (classes) | balanced | long-tailed | change (paired)"
             + (f" | change minus {reference}'s (paired)" if reference else "") + " |"]
    lines.append("|" + "---|" * (6 + bool(reference)))
    values = group_values(lt, balanced)
    for (ratio, loss, group), (long_tailed, bal) in values.items():
        c = change(long_tailed, bal)
        first = next(iter(lt[(ratio, loss)].values()))
        classes = " ".join(str(i) for i, g in enumerate(first["class_groups"]) if g == group)
        cells = [ratio, loss, f"{group} ({classes})", interval(bal), interval(long_tailed),
                 fmt_diff(c["diff"], c["ci95"]) + f" ({fmt_n(c)})"]
        if reference:
            ref = values.get((ratio, reference, group))
            if ref is None or loss == reference:
                cells.append("-")
            else:
                d = difference_of_changes(long_tailed, bal, *ref)
                cells.append(fmt_diff(d["diff"], d["ci95"]) + f" ({fmt_n(d)})")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def family(lt: dict, balanced: dict, reference: str, group: str, changes: list[str] | None,
           margin: float | None, within_label: str | None, predicted: str | None,
           alpha: float = ALPHA) -> dict[str, list[dict]]:
    """ratio -> the claim's family on ``group``: each head minus ``reference`` after long-tailed
    pretraining (paired), then each ``changes`` head's change from balanced minus the
    reference's (paired), Holm-corrected together (``sslkit.stats.compare.apply_holm``)."""
    values = group_values(lt, balanced)
    out = {}
    for ratio in sorted({r for r, _ in lt}, key=float):
        ref_lt = {s: r["linear"].get(f"{group}_top1") for s, r in lt.get((ratio, reference), {}).items()}
        if not ref_lt or all(v is None for v in ref_lt.values()):
            continue
        heads = sorted({loss for r, loss in lt if r == ratio and loss != reference}, key=natural_key)
        members = []
        for loss in heads:
            head_lt = {s: r["linear"].get(f"{group}_top1") for s, r in lt[(ratio, loss)].items()}
            c = paired_contrast([(+1, _numbers(head_lt)), (-1, _numbers(ref_lt))])
            members.append({**c, "label": f"{loss} - {reference} (long-tailed)", "predicted": predicted})
        for loss in heads if changes is None else [h for h in heads if h in changes]:
            mine, ref = values.get((ratio, loss, group)), values.get((ratio, reference, group))
            if mine is None or ref is None:
                continue
            c = difference_of_changes(*mine, *ref)
            members.append({**c, "label": f"{loss}'s change from balanced - {reference}'s", "predicted": predicted})
        out[ratio] = apply_holm(members, alpha, margin, within_label)
    return out


def _numbers(seeded: dict) -> dict:
    return {s: v for s, v in seeded.items() if v is not None}


def family_table(families: dict[str, list[dict]], group: str) -> list[str]:
    lines = ["| ratio | comparison (a - b), " + group + "-shot classes | n | Δ ± 95% interval "
             "| interval at 0.05 / m | p | p (Holm) | m | verdict |", "|" + "---|" * 9]
    for ratio, members in families.items():
        for c in members:
            low, high = c.get("bonferroni_low"), c.get("bonferroni_high")
            bonf = "-" if low is None or math.isnan(low) else f"[{low:+.4f}, {high:+.4f}]"
            lines.append("| " + " | ".join([ratio, c["label"], fmt_n(c), fmt_diff(c["diff"], c["ci95"]), bonf,
                                            fmt_p(c["p"]), fmt_p(c["p_holm"]), str(c["family_size"]),
                                            c["verdict"]]) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("longtail_dir", type=Path, help="the sweep with data.imbalance_ratio > 1 and eval=longtail")
    parser.add_argument("balanced_dirs", type=Path, nargs="+", help="sweeps with the same heads and seeds, "
                        "balanced, eval=linear")
    parser.add_argument("--reference", help="the head the others are compared with, e.g. infonce; "
                        "gives the family table")
    parser.add_argument("--group", choices=GROUPS, default="few", help="the classes of the family (default: few)")
    parser.add_argument("--changes", nargs="+", metavar="HEAD",
                        help="heads whose change minus the reference's joins the family (default: every head "
                             "but the reference)")
    parser.add_argument("--within", type=float, default=0.3, metavar="POINTS",
                        help="the verdict rule's margin in points (default: 0.3; 0: no label)")
    parser.add_argument("--scale", type=float, default=100.0, help="a fraction times this is points (default: 100)")
    parser.add_argument("--predict", choices=PREDICTIONS,
                        help="the sign the family's comparisons predict (verdicts then read holds / does not hold)")
    args = parser.parse_args(argv)
    for d in [args.longtail_dir, *args.balanced_dirs]:
        if not d.is_dir():
            print(f"error: {d} is not a directory", file=sys.stderr)
            return 2
    try:
        lt, balanced = longtail_runs(args.longtail_dir), balanced_runs(args.balanced_dirs)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not lt or not any(loss in balanced for _, loss in lt):
        print(f"error: no head has both long-tailed runs with eval/longtail.json under {args.longtail_dir} "
              f"and balanced runs with eval/linear.json under {' '.join(map(str, args.balanced_dirs))}",
              file=sys.stderr)
        return 1
    heads = {loss for _, loss in lt}
    unknown = [h for h in [args.reference or "", *(args.changes or [])] if h and h not in heads]
    if unknown:
        print(f"error: {', '.join(unknown)}: no long-tailed run of that head; heads: "
              f"{', '.join(sorted(heads))}", file=sys.stderr)
        return 2
    print("\n".join(table(lt, balanced, args.reference)))
    if args.reference:
        margin = args.within / args.scale if args.within else None
        families = family(lt, balanced, args.reference, args.group, args.changes, margin,
                          f"within {args.within:g}" if args.within else None, args.predict)
        print(f"\nThe family on the {args.group}-shot classes, per ratio: paired over seeds, Holm within the "
              "family; verdict where p (Holm) < 0.05"
              + (f"; within {args.within:g}: not called, the interval at 0.05 / m inside ±{args.within:g} "
                 f"points (x{args.scale:g})" if args.within else "") + ".\n")
        print("\n".join(family_table(families, args.group)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
