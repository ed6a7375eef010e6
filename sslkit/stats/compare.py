"""Differences between settings, and the correction of a family of them.

Runs that share a seed share their initial weights and augmentation stream, so two settings run
with the same seeds are *paired*: the difference is a one-sample t-interval of the per-seed
differences (``scipy.stats.ttest_rel``), on the seeds both sides have. Settings without a
shared seed are compared with Welch's unequal-variance t-interval
(``scipy.stats.ttest_ind(equal_var=False)``). Every comparison says which test it used
(``test``), how many values its interval used (``n``: pairs, or both sides' values) and how many
it dropped (``dropped``: seeds only one side has, non-finite values). A family of comparisons is
corrected with Holm-Bonferroni (``holm``, ``apply_holm``); the verdict rule is one for every
row and metric: the difference is called where its Holm-adjusted p-value is below ``alpha``
(equivalently, where its t-interval at Holm's level for its rank excludes 0). With a predicted
sign it *holds* (called with that sign) or *does not hold* (called with the other); an uncalled
difference whose t-interval at the Bonferroni level ``alpha / m`` lies inside ``(-margin,
+margin)`` is labelled *within* the margin (no difference the study was built to see), any
other is *inconclusive* (docs/results_protocol.md, "Verdict rule").

A side is a mapping seed -> value or a list of ``(seed, value)``; a seed of ``None`` is unknown
(never paired).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

from sslkit.stats.intervals import natural_key, t_quantile, t_sf

Side = Mapping[Hashable, float] | Sequence[tuple[Hashable, float]]

ALPHA = 0.05
ZERO_SPREAD = 1e-9  # a standard deviation below this fraction of the values' size is float rounding


def _items(side: Side) -> list[tuple[Hashable, float]]:
    items = list(side.items()) if isinstance(side, Mapping) else [tuple(x) for x in side]
    seeds = [s for s, _ in items if s is not None]
    if len(seeds) != len(set(seeds)):
        twice = sorted({str(s) for s in seeds if seeds.count(s) > 1})
        raise ValueError(f"seed {', '.join(twice)} given twice on one side of a comparison")
    return items


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _result(test: str, diff: float, half: float, t: float, df: float, p: float, se: float = math.nan,
            **extra) -> dict:
    low, high = (diff - half, diff + half) if math.isfinite(half) else (math.nan, math.nan)
    return {"test": test, "diff": diff, "ci95": half, "low": low, "high": high, "t": t, "df": df,
            "p": p, "se": se, **extra}


def _no_spread(sd: float, values: list[float]) -> bool:
    """A spread at the level of float rounding of the values: none."""
    return sd <= ZERO_SPREAD * max((abs(v) for v in values), default=0.0)


def one_sample(values: list[float]) -> dict:
    """Mean of ``values`` and its 95% t-interval, t statistic, degrees of freedom and two-sided
    p-value against 0. Fewer than 2 values: no interval (NaN), ``note`` "n < 2". No spread (all
    values equal, e.g. one image of 500 on every seed): a zero-width interval but no test (p
    NaN, ``note`` "zero spread"): the t statistic needs a variance to divide by, and n equal
    differences do not estimate one."""
    n = len(values)
    if n < 2:
        mean = sum(values) / n if n else math.nan
        return _result("paired", mean, math.nan, math.nan, math.nan, math.nan, note="n < 2")
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    df = n - 1
    if _no_spread(sd, values):
        return _result("paired", mean, 0.0, math.nan, df, math.nan, 0.0, note="zero spread")
    se = sd / math.sqrt(n)
    return _result("paired", mean, t_quantile(df) * se, mean / se, df, t_sf(mean / se, df), se, note="")


def paired_contrast(parts: list[tuple[float, Side]]) -> dict:
    """``sum(sign * value)`` per seed that every part has (a finite value for), then the
    one-sample interval of those per-seed contrasts. Two parts ``[(+1, a), (-1, b)]`` are the
    paired difference a - b (``scipy.stats.ttest_rel``)."""
    sides = [(sign, _items(side)) for sign, side in parts]
    by_seed = [{s: v for s, v in items if s is not None and _is_number(v)} for _, items in sides]
    shared = set.intersection(*(set(d) for d in by_seed)) if by_seed else set()
    seeds = sorted(shared, key=natural_key)
    contrasts = [sum(sign * d[s] for (sign, _), d in zip(sides, by_seed)) for s in seeds]
    out = one_sample(contrasts)
    total = sum(len(items) for _, items in sides)
    return {**out, "n": len(seeds), "n_a": len(seeds), "n_b": len(seeds),
            "dropped": total - len(seeds) * len(sides), "seeds": seeds}


def welch_contrast(parts: list[tuple[float, Side]]) -> dict:
    """``sum(sign * mean(values))`` over ``parts`` and its 95% t-interval with unequal variances
    (Welch-Satterthwaite degrees of freedom); no interval when a part has fewer than 2 finite
    values. Two parts ``[(+1, a), (-1, b)]`` are Welch's difference of means
    (``scipy.stats.ttest_ind(a, b, equal_var=False)``)."""
    sides = [(sign, [float(v) for _, v in _items(side) if _is_number(v)], len(_items(side)))
             for sign, side in parts]
    counts = [len(v) for _, v, _ in sides]
    extra = {"n": sum(counts), "n_a": counts[0] if counts else 0,
             "n_b": sum(counts[1:]), "dropped": sum(total - len(v) for _, v, total in sides)}
    if not all(counts):
        return {**_result("welch", math.nan, math.nan, math.nan, math.nan, math.nan, note="n < 2"), **extra}
    diff = sum(sign * sum(v) / len(v) for sign, v, _ in sides)
    if min(counts) < 2:
        return {**_result("welch", diff, math.nan, math.nan, math.nan, math.nan, note="n < 2"), **extra}
    terms = []
    for _, v, _ in sides:
        mean = sum(v) / len(v)
        terms.append(sum((x - mean) ** 2 for x in v) / (len(v) - 1) / len(v))
    se2 = sum(terms)
    if _no_spread(math.sqrt(se2), [x for _, v, _ in sides for x in v]):
        return {**_result("welch", diff, 0.0, math.nan, math.nan, math.nan, note="zero spread"), **extra}
    df = se2 ** 2 / sum(t ** 2 / (len(v) - 1) for t, (_, v, _) in zip(terms, sides))
    se = math.sqrt(se2)
    return {**_result("welch", diff, t_quantile(df) * se, diff / se, df, t_sf(diff / se, df), se, note=""),
            **extra}


def contrast(parts: list[tuple[float, Side]], paired: bool | None = None) -> dict:
    """Paired when every part shares at least one seed with the others (``paired=None``), else
    Welch; ``paired=False`` forces Welch, ``paired=True`` pairing."""
    if paired is None:
        seed_sets = [{s for s, _ in _items(side) if s is not None} for _, side in parts]
        paired = bool(seed_sets) and bool(set.intersection(*seed_sets))
    return paired_contrast(parts) if paired else welch_contrast(parts)


def compare(a: Side, b: Side, paired: bool | None = None) -> dict:
    """a minus b: paired over their shared seeds when they have any, else Welch."""
    return contrast([(+1.0, a), (-1.0, b)], paired)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the order given. Non-finite p-values (comparisons
    without an interval) stay NaN and do not count in the family's size."""
    tested = sorted((p, i) for i, p in enumerate(pvalues) if _is_number(p))
    m = len(tested)
    out = [math.nan] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


PREDICTIONS = ("higher", "lower", "none")


def verdict(diff: float, p: float, alpha: float = ALPHA, note: str = "", predicted: str | None = None,
            within: str = "") -> str:
    """The verdict of one comparison (the first side minus the second) from its Holm-adjusted
    ``p``. Called (p below ``alpha``): ``higher`` / ``lower``, or against a ``predicted`` sign
    ``holds`` / ``does not hold`` (``predicted="none"``, a prediction of no difference: any
    called difference does not hold). Not called: ``within``, the label of a comparison whose
    interval at the Bonferroni level lies inside the margin (``within 0.3``; empty where it does
    not), which holds a prediction of no difference (``holds (within 0.3)``); else
    ``inconclusive``. ``untested`` without a test (fewer than 2 values, or no spread; ``note``
    says which)."""
    if predicted not in (None, *PREDICTIONS):
        raise ValueError(f"predicted={predicted!r}: one of {', '.join(PREDICTIONS)} (or None)")
    if not _is_number(p) or not _is_number(diff):
        return f"untested ({note})" if note else "untested"
    if p < alpha:
        sign = "higher" if diff > 0 else "lower"
        return sign if predicted is None else "holds" if predicted == sign else "does not hold"
    if within:
        return f"holds ({within})" if predicted == "none" else within
    return "inconclusive"


def bonferroni_interval(c: dict, family_size: int, alpha: float = ALPHA) -> tuple[float, float]:
    """The comparison's t-interval at the Bonferroni level ``alpha / family_size`` (two-sided):
    ``diff -+ t(1 - alpha / (2 m), df) * se``; NaN where it has no standard error."""
    se, df, diff = c.get("se", math.nan), c.get("df", math.nan), c.get("diff", math.nan)
    if family_size < 1 or not all(_is_number(v) for v in (se, df, diff)):
        return math.nan, math.nan
    half = t_quantile(df, 1.0 - alpha / (2.0 * family_size)) * se
    return diff - half, diff + half


def apply_holm(comparisons: list[dict], alpha: float = ALPHA, margin: float | None = None,
               margin_label: str | None = None) -> list[dict]:
    """Holm over ``comparisons`` (one family): each gets ``p_holm``, ``family_size`` (the tested
    ones) and ``verdict`` (on ``p_holm``, against the comparison's ``predicted`` sign where it
    has one). With a ``margin`` (in the metric's units), each also gets its interval at the
    Bonferroni level ``alpha / family_size`` (``bonferroni_low``, ``bonferroni_high``) and an
    uncalled comparison whose interval lies inside ``(-margin, +margin)`` is labelled
    ``margin_label`` (default ``within MARGIN``). Returns the same dicts."""
    adjusted = holm([c["p"] for c in comparisons])
    size = sum(_is_number(c["p"]) for c in comparisons)
    label = margin_label or (f"within {margin:g}" if margin else "")
    for c, p in zip(comparisons, adjusted):
        c["p_holm"], c["family_size"] = p, size
        inside = False
        if margin:
            c["bonferroni_low"], c["bonferroni_high"] = low, high = bonferroni_interval(c, size, alpha)
            inside = _is_number(p) and -margin < low and high < margin
        c["verdict"] = verdict(c["diff"], p, alpha, c.get("note", ""), c.get("predicted"),
                               label if inside else "")
    return comparisons
