"""How many seeds a paired comparison needs: the design side of ``sslkit.stats.compare``.

A paired comparison (two settings run with the same seeds) is a one-sample t-test of the ``n``
per-seed differences, whose standard deviation ``sd`` is what the design has to know. Two
criteria, for a family of ``m`` comparisons corrected with Holm at level ``alpha``:

- ``"power"``: the probability that the paired t-test calls a true difference of ``effect``
  (two-sided, at level ``alpha / m``) is at least ``power``. The level ``alpha / m`` is the
  Bonferroni bound of Holm: Holm calls every comparison Bonferroni calls, so a design powered at
  ``alpha / m`` has at least that power under Holm. The power is read from the noncentral t
  distribution, ``df = n - 1``, noncentrality ``effect * sqrt(n) / sd``; the normal
  approximation ``n = ((z(1 - a/2) + z(power)) * sd / effect)^2 + z(1 - a/2)^2 / 2`` lands
  within a seed of it.
- ``"halfwidth"``: the paired t-interval at Holm's strictest level is no wider than ``effect``
  on each side: ``t(1 - alpha / (2m), n - 1) * sd / sqrt(n) <= effect``. A difference of
  ``effect`` observed at its true value then excludes 0; a true difference of ``effect`` is
  called about half the time (power ~0.5), so it is the weaker criterion.

``sd`` is a planning value. ``pooled_sd`` pools the per-seed differences of earlier comparisons
(each comparison's own mean removed); ``difference_sd`` gives the SD of a difference from the
two settings' seed-to-seed SDs and an assumed correlation between them, where the seeds of the
data at hand were not shared; ``sd_upper`` is a one-sided upper confidence bound of a pooled SD
(chi-square with its degrees of freedom), for a design that must not come out short.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

CRITERIA = ("power", "halfwidth")


def pooled_sd(groups: Sequence[Sequence[float]]) -> tuple[float, int]:
    """Pooled standard deviation of several comparisons' per-seed differences, each group
    centred on its own mean: ``sqrt(sum (n_i - 1) s_i^2 / sum (n_i - 1))``, and its degrees of
    freedom. Groups with fewer than 2 finite values are left out; none left: ``(nan, 0)``."""
    ss, df = 0.0, 0
    for g in groups:
        values = [float(v) for v in g if math.isfinite(v)]
        if len(values) < 2:
            continue
        mean = sum(values) / len(values)
        ss += sum((v - mean) ** 2 for v in values)
        df += len(values) - 1
    return (math.sqrt(ss / df), df) if df else (math.nan, 0)


def difference_sd(sd_a: float, sd_b: float, rho: float) -> float:
    """SD of a - b for seed-to-seed SDs ``sd_a``, ``sd_b`` and correlation ``rho`` between the
    two settings' values on the same seed: ``sqrt(sd_a^2 + sd_b^2 - 2 rho sd_a sd_b)``."""
    if not -1.0 <= rho <= 1.0:
        raise ValueError(f"rho={rho}: a correlation lies in [-1, 1]")
    return math.sqrt(max(0.0, sd_a ** 2 + sd_b ** 2 - 2.0 * rho * sd_a * sd_b))


def sd_upper(sd: float, df: int, confidence: float = 0.8) -> float:
    """One-sided ``confidence`` upper bound of a standard deviation estimated with ``df``
    degrees of freedom: ``sd * sqrt(df / chi2(1 - confidence, df))``."""
    from scipy import stats

    if df < 1:
        return math.nan
    return sd * math.sqrt(df / stats.chi2.ppf(1.0 - confidence, df))


def _check(sd: float, effect: float, alpha: float, family_size: int) -> None:
    if not (sd > 0 and math.isfinite(sd)):
        raise ValueError(f"sd={sd}: the SD of the per-seed differences must be a positive number")
    if not effect > 0:
        raise ValueError(f"effect={effect}: the difference to resolve must be positive")
    if not 0 < alpha < 1 or family_size < 1:
        raise ValueError(f"alpha={alpha}, family_size={family_size}: need 0 < alpha < 1 and m >= 1")


def halfwidth(n: int, sd: float, alpha: float = 0.05, family_size: int = 1) -> float:
    """Half-width of the paired t-interval of ``n`` seeds at level ``alpha / family_size``
    (Holm's strictest): ``t(1 - alpha / (2 m), n - 1) * sd / sqrt(n)``."""
    from scipy import stats

    if n < 2:
        return math.inf
    return float(stats.t.ppf(1.0 - alpha / (2.0 * family_size), n - 1)) * sd / math.sqrt(n)


def paired_power(n: int, sd: float, effect: float, alpha: float = 0.05, family_size: int = 1) -> float:
    """Power of the two-sided paired t-test of ``n`` seeds at level ``alpha / family_size`` for a
    true difference ``effect`` (noncentral t, ``df = n - 1``)."""
    from scipy import stats

    _check(sd, effect, alpha, family_size)
    if n < 2:
        return 0.0
    df = n - 1
    crit = float(stats.t.ppf(1.0 - alpha / (2.0 * family_size), df))
    nc = effect * math.sqrt(n) / sd
    # the lower tail as the upper tail of -T' (scipy's nct.cdf returns NaN far out in the tail,
    # e.g. nct.cdf(-7.2, 3, 7.7)); where it still fails it is below alpha / (2 m) and is dropped
    lower = float(stats.nct.sf(crit, df, -nc))
    return float(stats.nct.sf(crit, df, nc)) + (lower if math.isfinite(lower) else 0.0)


def required_seeds(sd: float, effect: float, alpha: float = 0.05, power: float = 0.8,
                   family_size: int = 1, criterion: str = "power", max_seeds: int = 100_000) -> int:
    """The smallest number of paired seeds (at least 2) that meets ``criterion`` (``"power"``:
    ``paired_power >= power``; ``"halfwidth"``: ``halfwidth <= effect``) for a difference of
    ``effect`` with per-seed-difference SD ``sd``, in a Holm family of ``family_size`` at
    ``alpha``. ``sd`` and ``effect`` in the same units (points, or fractions)."""
    _check(sd, effect, alpha, family_size)
    if criterion not in CRITERIA:
        raise ValueError(f"criterion={criterion!r}: one of {', '.join(CRITERIA)}")
    if criterion == "power" and not 0 < power < 1:
        raise ValueError(f"power={power}: a probability in (0, 1)")

    def ok(n: int) -> bool:
        if criterion == "power":
            return paired_power(n, sd, effect, alpha, family_size) >= power
        return halfwidth(n, sd, alpha, family_size) <= effect

    # both criteria improve monotonically with n: double to bracket, then bisect
    low, high = 1, 2
    while not ok(high):
        low, high = high, high * 2
        if high > max_seeds:
            raise ValueError(f"more than {max_seeds} seeds needed (sd {sd}, effect {effect})")
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if ok(mid) else (mid, high)
    return high


def detectable_effect(n: int, sd: float, alpha: float = 0.05, power: float = 0.8,
                      family_size: int = 1) -> float:
    """The smallest true difference that ``n`` paired seeds call with probability ``power``
    at level ``alpha / family_size`` (same units as ``sd``): what a design that cannot afford
    the seeds still resolves."""
    from scipy import optimize

    if n < 2:
        return math.inf
    _check(sd, 1.0, alpha, family_size)
    hi = sd
    while paired_power(n, sd, hi, alpha, family_size) < power:
        hi *= 2
    return float(optimize.brentq(lambda e: paired_power(n, sd, e, alpha, family_size) - power,
                                 1e-12 * sd, hi, xtol=1e-10 * sd))
