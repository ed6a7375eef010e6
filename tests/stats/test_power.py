"""sslkit.stats.power against numbers computed by hand and by independent references: G*Power's
sample sizes of the paired (one-sample) t-test, the t-table half-widths, a Monte Carlo run of
scipy's ttest_rel, and the pooled SD and correlation formulas written out here."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from sslkit.stats.power import (
    detectable_effect,
    difference_sd,
    halfwidth,
    paired_power,
    pooled_sd,
    required_seeds,
    sd_upper,
)

# G*Power 3.1, "Means: difference from constant (one sample case)" = paired t, two tails,
# alpha 0.05, power 0.80: effect size dz -> total sample size (actual power); Cohen's table values
GPOWER = [(0.2, 199, 0.8017), (0.5, 34, 0.8078), (0.8, 15, 0.8213), (1.0, 10, 0.8031)]


@pytest.mark.parametrize("dz, n, actual", GPOWER)
def test_required_seeds_matches_gpower(dz, n, actual):
    # sd 0.3 points and effect dz * 0.3: only the ratio matters
    assert required_seeds(0.3, dz * 0.3, alpha=0.05, power=0.8) == n
    assert paired_power(n, 0.3, dz * 0.3) == pytest.approx(actual, abs=5e-5)
    assert paired_power(n - 1, 0.3, dz * 0.3) < 0.8


def test_normal_approximation_within_a_seed():
    """Guenther's approximation n = ((z_a + z_b) / d)^2 + z_a^2 / 2 (two-sided a)."""
    for sd, effect, m in [(0.3, 0.3, 1), (0.27, 0.3, 9), (0.2, 0.3, 4), (1.0, 0.3, 6)]:
        za, zb = scipy_stats.norm.ppf(1 - 0.05 / (2 * m)), scipy_stats.norm.ppf(0.8)
        approx = ((za + zb) * sd / effect) ** 2 + za ** 2 / 2
        assert abs(required_seeds(sd, effect, family_size=m) - math.ceil(approx)) <= 1


def test_power_is_finite_and_rising_for_large_effects():
    """Far tails of the noncentral t (scipy's nct.cdf gives NaN there) do not break the search."""
    powers = [paired_power(n, 0.078, 0.3, family_size=9) for n in range(2, 16)]
    assert all(math.isfinite(p) for p in powers)
    assert powers == sorted(powers) and powers[-1] > 0.999
    assert required_seeds(0.078, 0.3, family_size=9) == 5


def test_halfwidth_by_hand():
    # t(0.975, 6) = 2.4469, t(0.975, 5) = 2.5706 (t table): with sd = effect, 7 seeds are the
    # first whose 95% half-width 2.4469 / sqrt 7 = 0.925 sd is within the effect (6: 1.049 sd)
    assert halfwidth(7, 1.0) == pytest.approx(2.446912 / math.sqrt(7), rel=1e-6)
    assert halfwidth(6, 1.0) == pytest.approx(2.570582 / math.sqrt(6), rel=1e-6)
    assert required_seeds(0.3, 0.3, criterion="halfwidth") == 7
    # Holm's strictest level in a family of 5: t(1 - 0.005, n - 1); t(0.995, 11) = 3.1058
    assert halfwidth(12, 1.0, family_size=5) == pytest.approx(3.105807 / math.sqrt(12), rel=1e-6)
    n = required_seeds(0.3, 0.3, family_size=5, criterion="halfwidth")
    assert halfwidth(n, 0.3, family_size=5) <= 0.3 < halfwidth(n - 1, 0.3, family_size=5)
    assert halfwidth(1, 1.0) == math.inf


def test_family_needs_more_seeds_and_halfwidth_fewer_than_power():
    single = required_seeds(0.25, 0.3)
    assert required_seeds(0.25, 0.3, family_size=9) > single
    assert required_seeds(0.25, 0.3, criterion="halfwidth") < single


def test_power_against_monte_carlo_ttest_rel():
    """Draw n paired differences N(effect, sd), test with scipy's ttest_rel at alpha / m: the
    share of calls matches the noncentral-t power."""
    rng = np.random.default_rng(0)
    n, sd, effect, m, trials = 8, 0.3, 0.3, 3, 20000
    a = rng.normal(0.0, 1.0, (trials, n))
    b = a - rng.normal(effect, sd, (trials, n))  # a - b ~ N(effect, sd)
    p = scipy_stats.ttest_rel(a, b, axis=1).pvalue
    share = float(np.mean(p < 0.05 / m))
    assert share == pytest.approx(paired_power(n, sd, effect, family_size=m), abs=0.015)


def test_detectable_effect_inverts_power():
    e = detectable_effect(10, 0.3, family_size=4)
    assert paired_power(10, 0.3, e, family_size=4) == pytest.approx(0.8, abs=1e-6)
    assert required_seeds(0.3, e * 1.001, family_size=4) <= 10 < required_seeds(0.3, e * 0.97, family_size=4)
    assert detectable_effect(1, 0.3) == math.inf


def test_pooled_sd_by_hand():
    # groups centred on their own means: squares 0.02 and 0.5 (+ 0.5), df 2 + 2
    sd, df = pooled_sd([[0.1, 0.2, 0.3], [1.0, 2.0, 1.5], [5.0], [float("nan"), 1.0]])
    assert df == 4
    assert sd == pytest.approx(math.sqrt((0.02 + 0.5) / 4), rel=1e-12)
    assert pooled_sd([[1.0]]) == (pytest.approx(math.nan, nan_ok=True), 0)


def test_difference_sd_and_upper_bound():
    assert difference_sd(0.2, 0.2, 0.0) == pytest.approx(0.2 * math.sqrt(2))
    assert difference_sd(0.2, 0.2, 1.0) == pytest.approx(0.0, abs=1e-12)
    assert difference_sd(0.3, 0.1, 0.5) == pytest.approx(math.sqrt(0.09 + 0.01 - 0.03))
    with pytest.raises(ValueError, match="correlation"):
        difference_sd(0.2, 0.2, 1.5)
    # chi2(0.2, 10) = 6.1791 (chi-square table)
    assert sd_upper(0.3, 10, 0.8) == pytest.approx(0.3 * math.sqrt(10 / 6.179079), rel=1e-6)
    assert sd_upper(0.3, 10, 0.8) > 0.3


@pytest.mark.parametrize("kwargs, match", [
    ({"sd": 0.0, "effect": 0.3}, "positive number"),
    ({"sd": 0.3, "effect": -0.1}, "must be positive"),
    ({"sd": 0.3, "effect": 0.3, "criterion": "width"}, "one of power, halfwidth"),
    ({"sd": 0.3, "effect": 0.3, "power": 1.0}, "probability"),
    ({"sd": 0.3, "effect": 0.3, "family_size": 0}, "m >= 1"),
])
def test_bad_input_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        required_seeds(**kwargs)
