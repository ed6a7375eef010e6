"""Mean and 95% Student-t interval over seeds, and the natural order of run names, shared by
``sslkit.eval.aggregate`` and ``scripts/sweep_report.py``. No torch import: the report script
starts in under a second (importing ``sslkit.eval.aggregate`` pulls in Lightning, ~5 s)."""

from __future__ import annotations

import math
import re
from pathlib import PurePath


def t_quantile(df: float, q: float = 0.975) -> float:
    """Student-t quantile with ``df`` degrees of freedom."""
    from scipy import stats

    return float(stats.t.ppf(q, df))


def mean_ci95(values: list[float]) -> dict[str, float]:
    """Mean, Student-t 95% interval half-width (NaN for one value), std and n."""
    n = len(values)
    if n == 0:
        return {"mean": math.nan, "ci95": math.nan, "std": math.nan, "n": 0}
    mean = sum(values) / n
    if n == 1:
        return {"mean": mean, "ci95": math.nan, "std": math.nan, "n": 1}
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return {"mean": mean, "ci95": t_quantile(n - 1) * std / math.sqrt(n), "std": std, "n": n}


def natural_key(name: str | PurePath) -> list:
    """Sort key that orders the digits in a name as numbers: ``run_2`` before ``run_10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(name))]
