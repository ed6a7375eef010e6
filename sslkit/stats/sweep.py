"""A sweep's report as data: one row per setting (its seeds pooled: mean, 95% t-interval,
spread), and the comparisons between rows (paired over shared seeds, else Welch), corrected
with Holm within each metric's family. ``scripts/sweep_report.py`` is its command line; ``sslkit.stats.tables`` and
``sslkit.stats.plots`` show it.

Rows: the runs are grouped by the keys whose overrides differ between them (or exactly the
``group_by`` keys), then split further by any other key of their saved configs that differs
within a row (``sslkit.stats.identity``: everything but the seed, paths, logging, threads), which
then becomes a column; a row that would hold the same seed twice is refused."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from sslkit.stats.compare import ALPHA, PREDICTIONS, apply_holm, contrast
from sslkit.stats.compare import compare as compare_sides
from sslkit.stats.identity import differing_keys, refuse_duplicate_seeds
from sslkit.stats.intervals import describe, natural_key
from sslkit.stats.runs import (
    Run,
    as_number,
    fill_from_configs,
    find_runs,
    matches,
    merge_duplicates,
    ordered_values,
    read_runs_csv,
    swept_keys,
)

DEFAULT_METRICS = ("linear_probe_top1", "knn_top1", "val/online_probe_top1", "wall_seconds")
STATS = ("mean", "ci95", "std", "min", "max")
COMPARISON_FIELDS = ("diff", "diff_ci95", "test", "n", "dropped", "p", "p_holm", "verdict")


@dataclass
class Group:
    key: tuple[str, ...]  # values of the grouping keys
    runs: list[Run] = field(default_factory=list)

    def seeded(self, metric: str, seed_key: str) -> list[tuple[str | None, float]]:
        """``(seed, value)`` of every run (NaN where the run has no finite value)."""
        return [(r.seed(seed_key), r.value(metric)) for r in self.runs]

    def values(self, metric: str) -> list[float]:
        return [v for r in self.runs if not math.isnan(v := r.value(metric))]


def read_sources(sources: list[Path], seed_key: str = "seed") -> tuple[list[Run], list[str]]:
    """The runs of every sweep dir or ``runs.csv`` in ``sources`` (a run named twice counts
    once), and the metric columns the csv files have."""
    runs: list[Run] = []
    csv_metrics: list[str] = []
    for source in sources:
        if Path(source).is_file():
            found, metrics = read_runs_csv(Path(source), seed_key)
            runs += found
            csv_metrics += [m for m in metrics if m not in csv_metrics]
        else:
            runs += find_runs(Path(source))
    return merge_duplicates(runs), csv_metrics


def split_by_config(runs: list[Run], keys: list[str], seed_key: str, ignore: tuple[str, ...]) -> list[str]:
    """Config keys (not among ``keys``) whose value differs between runs that ``keys`` alone
    would pool; each run's value is written into its overrides so they group by it too."""
    rows: dict[tuple, list[Run]] = {}
    for r in runs:
        rows.setdefault(tuple(r.overrides.get(k, "-") for k in keys), []).append(r)
    extra: list[str] = []
    for members in rows.values():
        settings = [s for r in members if (s := r.setting((seed_key, *ignore))) is not None]
        extra += [k for k in differing_keys(settings) if k not in keys and k not in extra]
    for r in runs:
        s = r.setting((seed_key, *ignore)) or {}
        for k in extra:
            r.overrides.setdefault(k, s.get(k, "-"))
    return extra


def group_runs(runs: list[Run], keys: list[str], seed_key: str = "seed") -> list[Group]:
    """Rows of ``runs`` by the values of ``keys``, in sweep order; refuses a row holding one
    seed twice (``DuplicateSeedError``, naming the two runs)."""
    order = {k: ordered_values(runs, k) for k in keys}
    groups: dict[tuple[str, ...], Group] = {}
    for r in runs:
        key = tuple(r.overrides.get(k, "-") for k in keys)
        groups.setdefault(key, Group(key)).runs.append(r)
    for g in groups.values():
        where = ", ".join(f"{k}={v}" for k, v in zip(keys, g.key))
        refuse_duplicate_seeds([(r.seed(seed_key), r.source or str(r.path)) for r in g.runs],
                               f" ({where})" if where else "")
    return sorted(groups.values(), key=lambda g: [order[k].index(v) for k, v in zip(keys, g.key)])


def parse_selection(text: str) -> dict[str, str]:
    """``loss=cacr`` or ``adversarial.w_div=0.0,adversarial.sam_rho=0.0`` -> key -> value."""
    out = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{text!r}: write KEY=VALUE[,KEY=VALUE...], e.g. loss=cacr")
        out[key] = value
    return out


def parse_pair(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """``loss=cacr:loss=infonce`` -> (selection of the first rows, of the second)."""
    a, sep, b = text.partition(":")
    if not sep:
        raise ValueError(f"{text!r}: write A:B, e.g. loss=cacr:loss=infonce (A minus B)")
    return parse_selection(a), parse_selection(b)


def pair_rows(rows: list[dict], keys: list[str], a: dict[str, str], b: dict[str, str]) -> list[tuple[dict, dict]]:
    """Every row matching ``a`` with the row matching ``b`` whose other keys are equal. A key
    one of the two rows does not set (``-``: no prior, hence no kernel bandwidth; CACR, which has
    no temperature, against InfoNCE at 0.1) matches any value when that leaves one row."""
    chosen = set(a) | set(b)
    others = [k for k in keys if k not in chosen]
    out = []
    for row in rows:
        if not all(row.get(k) == v for k, v in a.items()):
            continue
        refs = [r for r in rows if r is not row and all(r.get(k) == v for k, v in b.items())]
        exact = [r for r in refs if all(r[k] == row[k] for k in others)]
        loose = [r for r in refs if all("-" in (r[k], row[k]) or r[k] == row[k] for k in others)]
        ref = exact[0] if exact else loose[0] if len(loose) == 1 else None
        if ref is not None:
            out.append((row, ref))
    return out


def label(row: dict, ref: dict, keys: list[str]) -> str:
    """``cacr - infonce (data.imbalance_ratio=10)``: the values that differ (names bare, numbers
    as ``key=value``, unset ones left out), then the keys both rows set alike."""
    apart = [k for k in keys if row[k] != ref[k]]
    same = ", ".join(f"{k}={short(row[k])}" for k in keys if row[k] == ref[k] and row[k] != "-")

    def side(r: dict) -> str:
        parts = [short(r[k]) if as_number(r[k]) is None and k == apart[0] else f"{k}={short(r[k])}"
                 for k in apart if r[k] != "-"]
        return ", ".join(parts) or "-"

    return f"{side(row)} - {side(ref)}" + (f" ({same})" if same else "")


def short(value: str) -> str:
    """Long floats from a Bayesian search (0.2588170214937917) shown as 0.2588; long paths
    (``prior.checkpoint=/data/runs/x/0/checkpoints/last.ckpt``) by their last four parts."""
    x = as_number(value)
    if x is not None and len(value) > 8:
        return f"{x:.4g}"
    parts = value.split("/")
    return ".../" + "/".join(parts[-4:]) if len(value) > 40 and len(parts) > 4 else value


def interaction_pairs(rows: list[dict], keys: list[str], pairs: list[tuple[dict, dict]],
                      a: dict[str, str], b: dict[str, str]) -> list[tuple[tuple[dict, dict], tuple[dict, dict]]]:
    """Each compared pair whose two rows match ``a`` with the compared pair whose two rows match
    ``b`` and whose rows' other keys are the same: the difference of two differences (how much
    more CACR loses from batch 64 to 1024 than InfoNCE does)."""
    chosen = set(a) | set(b)
    others = [k for k in keys if k not in chosen]

    def fits(row: dict, sel: dict) -> bool:
        return all(row.get(k) == v for k, v in sel.items())

    out = []
    for p in pairs:
        if not (fits(p[0], a) and fits(p[1], a)):
            continue
        for q in pairs:
            if fits(q[0], b) and fits(q[1], b) and all(
                    p[i][k] == q[i][k] for i in (0, 1) for k in others):
                out.append((p, q))
    return out


def add_comparisons(report: dict, pairs: list[tuple[dict, dict]], metrics: list[str], family: str,
                    paired: bool | None, alpha: float,
                    interactions: list[tuple[tuple[dict, dict], tuple[dict, dict]]] = (),
                    margin: float | None = None, margin_label: str | None = None,
                    predicted: list[str | None] | None = None,
                    interactions_predicted: list[str | None] | None = None) -> None:
    """``report["comparisons"]``: every pair of rows on every metric (a minus b), and every
    interaction ((a1 - b1) - (a2 - b2)), paired over the seeds all their rows share, else Welch;
    corrected with Holm within each family: the comparisons on one metric (``family="metric"``)
    or all of them (``family="all"``). ``margin``: the *within* label of the verdict rule
    (``sslkit.stats.compare.apply_holm``); ``predicted``, ``interactions_predicted``: the sign
    each pair and interaction predicts (``higher``, ``lower``, ``none``; None: no prediction)."""
    rows, keys = report["rows"], report["keys"]
    predicted = list(predicted or [None] * len(pairs))
    interactions_predicted = list(interactions_predicted or [None] * len(interactions))
    out = []
    for (row, ref), sign in zip(pairs, predicted):
        for m in metrics:
            c = compare_sides(row["_seeded"][m], ref["_seeded"][m], paired)
            c.update({"kind": "pair", "a": rows.index(row), "b": rows.index(ref),
                      "label": label(row, ref, keys), "metric": m, "predicted": sign})
            out.append(c)
    for ((a1, b1), (a2, b2)), sign in zip(interactions, interactions_predicted):
        inner = [k for k in keys if a1[k] == a2[k] and b1[k] == b2[k]]
        text = f"({label(a1, b1, inner)}) for {label(a1, a2, [k for k in keys if k not in inner])}"
        for m in metrics:
            c = contrast([(+1, a1["_seeded"][m]), (-1, b1["_seeded"][m]), (-1, a2["_seeded"][m]),
                          (+1, b2["_seeded"][m])], paired)
            c.update({"kind": "interaction", "a": rows.index(a1), "b": rows.index(b1),
                      "c": rows.index(a2), "d": rows.index(b2),
                      "label": text, "metric": m, "predicted": sign})
            out.append(c)
    families: dict[str, list[dict]] = {}
    for c in out:
        c["family"] = c["metric"] if family == "metric" else "all"
        families.setdefault(c["family"], []).append(c)
    for members in families.values():
        apply_holm(members, alpha, margin, margin_label)
    report["comparisons"] = out


def build_report(sweep_dir: Path | list[Path], metrics: list[str] | None = None, seed_key: str = "seed",
                 where: dict[str, str] | None = None, compare: tuple[str, str] | None = None,
                 keys: list[str] | None = None, group_by: list[str] | None = None,
                 pairs: list[str] | None = None, interactions: list[str] | None = None,
                 compare_on: list[str] | None = None,
                 family: str = "metric", primary: str | None = None,
                 paired: bool | None = None, ignore: list[str] | None = None,
                 extra_metrics: list[str] | None = None, alpha: float = ALPHA,
                 within: float | None = None, scale: float = 100.0,
                 predict: list[str] | None = None) -> dict:
    """Everything the table, CSV, JSON and plots show; also what tests check.

    ``sweep_dir``: sweep dirs and/or ``runs.csv`` files, pooled. ``metrics``: summary keys (default:
    the csv files' metric columns, else ``DEFAULT_METRICS``); ``primary``: the table's primary
    metric (default: the first). ``group_by``: the rows are exactly these keys' values (read from
    each run's config where no override names them). ``compare=(KEY, VALUE)``: every row minus
    the row with KEY=VALUE and the same other keys; ``pairs``: ``A:B`` selections
    (``loss=cacr:loss=infonce``), each row matching A minus its B; ``interactions``: ``A:B``, each
    compared pair whose rows match A minus the compared pair whose rows match B (a difference of
    differences: ``loss=cacr:loss=infonce`` over ``data.batch_size=64:data.batch_size=1024``). Compared on ``compare_on``
    (default: the primary metric), and corrected with Holm within each family: the comparisons
    on one metric (``family="metric"``), or all of them (``family="all"``). ``paired``: None
    pairs where seeds are shared, False forces Welch. ``ignore``: more config keys that do not
    split a row. ``extra_metrics``: summarised too (a plotted metric), after ``metrics``.
    ``within``: the verdict rule's margin in points (a metric times ``scale``; 100 for fractions):
    an uncalled comparison whose interval at the Bonferroni level lies inside it is labelled
    ``within W`` (None or 0: no label). ``predict``: the predicted sign (``higher``, ``lower``,
    ``none``) of every comparison (one value), or one per selection in the order ``compare``,
    ``pairs``, ``interactions``; verdicts then read holds / does not hold."""
    dirs = [sweep_dir] if isinstance(sweep_dir, (str, Path)) else list(sweep_dir)
    runs, csv_metrics = read_sources([Path(d) for d in dirs], seed_key)
    metrics = list(metrics or csv_metrics or DEFAULT_METRICS)
    primary = primary or metrics[0]
    metrics = list(dict.fromkeys([*metrics, primary, *(extra_metrics or [])]))
    fill_from_configs(runs, [*(keys or []), *(group_by or []), seed_key])
    runs = [r for r in runs if matches(r, where or {})]
    done = [r for r in runs if r.summary is not None]
    swept = swept_keys(runs) if not group_by else [k for k in group_by if k != seed_key] + [seed_key]
    group_keys = [k for k in swept if k != seed_key]
    group_keys += split_by_config(done, group_keys, seed_key, tuple(ignore or ()))
    fixed = {k: v for k, v in (runs[0].overrides.items() if runs else []) if k not in swept + group_keys}
    rows = []
    for g in group_runs(done, group_keys, seed_key):
        row: dict = dict(zip(group_keys, g.key))
        row["n"] = len(g.runs)
        row["seeds"] = " ".join(sorted({r.seed(seed_key) or "default" for r in g.runs}, key=natural_key))
        row["runs"] = " ".join(r.path.name for r in g.runs)
        row["_values"] = {m: g.values(m) for m in metrics}  # finite per-run values (plot scatter)
        row["_seeded"] = {m: g.seeded(m, seed_key) for m in metrics}
        row["_runs"] = g.runs
        for m in metrics:
            for stat, v in describe(row["_values"][m]).items():
                if stat != "n":
                    row[f"{m}_{stat}"] = v
        rows.append(row)
    compare_on = [m for m in (compare_on or [primary]) if m in metrics] or [primary]
    report = {
        "sweep_dir": " ".join(map(str, dirs)), "sweep_dirs": [str(d) for d in dirs], "keys": group_keys,
        "seed_key": seed_key, "fixed": fixed, "metrics": metrics, "primary": primary, "rows": rows,
        "runs": len(runs), "where": where or {}, "compare": compare, "pairs": list(pairs or []),
        "compare_on": compare_on, "family": family,
        "alpha": alpha, "missing": [str(r.path) for r in runs if r.summary is None], "comparisons": [],
    }
    selections = int(compare is not None) + len(pairs or []) + len(interactions or [])
    signs = list(predict or [])
    if len(signs) == 1:
        signs *= max(1, selections)
    if signs and len(signs) != selections:
        raise ValueError(f"--predict: {len(predict)} signs for {selections} selections (--compare, "
                         "--pairs, --interaction); give one sign, or one per selection in that order")
    bad = [s for s in signs if s not in PREDICTIONS]
    if bad:
        raise ValueError(f"--predict {' '.join(bad)}: a sign is one of {', '.join(PREDICTIONS)}")
    sign_of = iter(signs or [None] * selections)
    chosen: list[tuple[dict, dict]] = []
    chosen_signs: list[str | None] = []
    if compare is not None:
        if compare[0] not in group_keys or not any(r[compare[0]] == compare[1] for r in rows):
            raise ValueError(f"--compare {compare[0]}={compare[1]}: no row has it; swept keys and values: "
                             + "; ".join(f"{k}: {', '.join(ordered_values(runs, k))}" for k in group_keys))
        chosen += [(a, b) for a, b in pair_rows(rows, group_keys, {}, {compare[0]: compare[1]})
                   if a[compare[0]] != compare[1]]
        chosen_signs += [next(sign_of)] * len(chosen)
    for text in pairs or []:
        a, b = parse_pair(text)
        unknown = [k for k in (*a, *b) if k not in group_keys]
        if unknown:
            raise ValueError(f"--pairs {text}: {', '.join(unknown)} is not a key of the rows "
                             f"({', '.join(group_keys) or 'none'})")
        found = pair_rows(rows, group_keys, a, b)
        if not found:
            raise ValueError(f"--pairs {text}: no row matches both sides with its other keys equal")
        new = [p for p in found if not any(p[0] is q[0] and p[1] is q[1] for q in chosen)]
        chosen += new
        chosen_signs += [next(sign_of)] * len(new)
    crossed, crossed_signs = [], []
    for text in interactions or []:
        a, b = parse_pair(text)
        found = interaction_pairs(rows, group_keys, chosen, a, b)
        if not found:
            raise ValueError(f"--interaction {text}: no compared pair of rows matching the first side "
                             "has a compared pair matching the second with the same other keys")
        crossed += found
        crossed_signs += [next(sign_of)] * len(found)
    if family not in ("metric", "all"):
        raise ValueError(f"family={family!r}: metric (one Holm family per metric) or all")
    margin = within / scale if within else None
    report["within"], report["scale"], report["predict"] = within or None, scale, signs or None
    add_comparisons(report, chosen, compare_on, family, paired, alpha, crossed, margin,
                    f"within {within:g}" if within else None, chosen_signs, crossed_signs)
    if compare is not None:  # each row's difference from its reference, as columns
        for row in rows:
            for m in compare_on:
                c = next((c for c in report["comparisons"] if c["kind"] == "pair" and rows[c["a"]] is row
                          and c["metric"] == m and rows[c["b"]][compare[0]] == compare[1]), None)
                c = c or {"diff": 0.0 if row[compare[0]] == compare[1] else math.nan, "ci95": math.nan}
                for f in COMPARISON_FIELDS:
                    value = c.get("ci95" if f == "diff_ci95" else f, math.nan)
                    row[f"{m}_{f}"] = value
    return report
