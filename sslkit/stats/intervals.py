"""The summary of one setting over its seeds: mean, Student-t 95% interval, spread; and the
natural order of run names. No torch import: report scripts start in under a second."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from pathlib import PurePath


def t_quantile(df: float, q: float = 0.975) -> float:
    """Student-t quantile with ``df`` degrees of freedom."""
    from scipy import stats

    return float(stats.t.ppf(q, df))


def t_sf(t: float, df: float) -> float:
    """Two-sided p-value of a Student-t statistic ``t`` with ``df`` degrees of freedom."""
    from scipy import stats

    return float(2.0 * stats.t.sf(abs(t), df))


def finite(values: Iterable) -> list[float]:
    """The values that are finite numbers (NaN, inf, None, flags and text left out), as floats."""
    return [float(v) for v in values
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]


def mean_ci95(values: list[float]) -> dict[str, float]:
    """Mean, Student-t 95% interval half-width (NaN for one value), std and n. Non-finite
    values are left out, and ``n`` counts the values used."""
    values = finite(values)
    n = len(values)
    if n == 0:
        return {"mean": math.nan, "ci95": math.nan, "std": math.nan, "n": 0}
    mean = sum(values) / n
    if n == 1:
        return {"mean": mean, "ci95": math.nan, "std": math.nan, "n": 1}
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return {"mean": mean, "ci95": t_quantile(n - 1) * std / math.sqrt(n), "std": std, "n": n}


def describe(values: list[float]) -> dict[str, float]:
    """``mean_ci95`` plus min and max: what a report shows of one setting's seeds."""
    out = mean_ci95(values)
    used = finite(values)
    return {**out, "min": min(used, default=math.nan), "max": max(used, default=math.nan)}


def natural_key(name: str | PurePath) -> list:
    """Sort key that orders the digits in a name as numbers: ``run_2`` before ``run_10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(name))]
