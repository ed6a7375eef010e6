"""sslkit.stats.compare against independent references: scipy's ttest_rel and
ttest_ind(equal_var=False), and a Holm procedure written here from its definition."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from sslkit.stats.compare import (
    apply_holm,
    compare,
    contrast,
    holm,
    paired_contrast,
    verdict,
    welch_contrast,
)

RNG = np.random.default_rng(0)
CASES = [
    ([0.8837, 0.8821, 0.8812], [0.8864, 0.8857, 0.8872]),  # the main table's infonce and cacr
    ([0.50, 0.70, 0.60, 0.65], [0.52, 0.69, 0.66, 0.71]),
    (list(RNG.normal(0.0, 1.0, 10)), list(RNG.normal(0.3, 2.0, 10))),
]


@pytest.mark.parametrize("a, b", CASES)
def test_paired_matches_scipy_ttest_rel(a, b):
    out = compare(dict(enumerate(a)), dict(enumerate(b)))
    ref = scipy_stats.ttest_rel(a, b)
    low, high = ref.confidence_interval(0.95)
    assert out["test"] == "paired" and out["n"] == len(a) and out["dropped"] == 0
    assert out["diff"] == pytest.approx(np.mean(np.subtract(a, b)), rel=1e-12)
    assert (out["low"], out["high"]) == pytest.approx((low, high), rel=1e-9)
    assert out["t"] == pytest.approx(ref.statistic, rel=1e-9)
    assert out["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert out["df"] == len(a) - 1


@pytest.mark.parametrize("a, b", CASES)
def test_welch_matches_scipy_ttest_ind_unequal_variances(a, b):
    # different seeds on the two sides: nothing to pair
    out = compare({f"a{i}": v for i, v in enumerate(a)}, {f"b{i}": v for i, v in enumerate(b)})
    ref = scipy_stats.ttest_ind(a, b, equal_var=False)
    low, high = ref.confidence_interval(0.95)
    assert out["test"] == "welch" and out["n"] == len(a) + len(b)
    assert (out["n_a"], out["n_b"]) == (len(a), len(b))
    assert out["diff"] == pytest.approx(np.mean(a) - np.mean(b), rel=1e-12)
    assert (out["low"], out["high"]) == pytest.approx((low, high), rel=1e-9)
    assert out["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert out["df"] == pytest.approx(ref.df, rel=1e-9)
    # forced, and with unknown seeds (None), Welch too
    assert compare(dict(enumerate(a)), dict(enumerate(b)), paired=False)["p"] == pytest.approx(ref.pvalue)
    assert compare([(None, v) for v in a], [(None, v) for v in b])["test"] == "welch"


def test_pairs_only_the_shared_seeds_and_says_how_many_were_dropped():
    a = {0: 0.80, 1: 0.82, 2: 0.81, 3: 0.90}
    b = {1: 0.79, 2: 0.80, 0: 0.78, 7: 0.50}
    out = compare(a, b)
    ref = scipy_stats.ttest_rel([0.80, 0.82, 0.81], [0.78, 0.79, 0.80])
    assert out["test"] == "paired" and out["n"] == 3 and out["dropped"] == 2
    assert out["seeds"] == [0, 1, 2]
    assert out["p"] == pytest.approx(ref.pvalue)


def test_nan_values_are_dropped_and_counted():
    a = {0: 0.8, 1: math.nan, 2: 0.7, 3: 0.75}
    b = {0: 0.7, 1: 0.6, 2: 0.65, 3: 0.72}
    out = compare(a, b)
    ref = scipy_stats.ttest_rel([0.8, 0.7, 0.75], [0.7, 0.65, 0.72])
    assert out["n"] == 3 and out["dropped"] == 2 and out["p"] == pytest.approx(ref.pvalue)
    welch = compare(a, b, paired=False)
    assert welch["n_a"] == 3 and welch["dropped"] == 1
    assert welch["p"] == pytest.approx(scipy_stats.ttest_ind([0.8, 0.7, 0.75], list(b.values()), equal_var=False).pvalue)


def test_fewer_than_two_values_give_no_interval():
    one = compare({0: 0.9, 1: 0.8}, {0: 0.7})
    assert one["test"] == "paired" and one["n"] == 1 and one["dropped"] == 1
    assert one["diff"] == pytest.approx(0.2) and math.isnan(one["ci95"]) and math.isnan(one["p"])
    none = compare({0: 0.9}, {1: math.nan})
    assert none["test"] == "welch" and math.isnan(none["diff"]) and math.isnan(none["p"])
    single = compare({"a": 0.9}, {"b": 0.7, "c": 0.8})
    assert single["diff"] == pytest.approx(0.15) and math.isnan(single["ci95"])
    assert verdict(one["diff"], one["p"]) == "untested"


def test_zero_spread_gives_a_zero_width_interval_and_no_test():
    """Equal differences on every seed (one image of 500 each time) estimate no variance: the
    interval has zero width, and there is no t statistic, hence no p-value and no verdict."""
    same = compare({0: 0.5, 1: 0.6}, {0: 0.5, 1: 0.6})
    assert same["diff"] == 0.0 and same["ci95"] == 0.0 and math.isnan(same["p"])
    assert same["note"] == "zero spread"
    shifted = compare({0: 0.75, 1: 0.875}, {0: 0.5, 1: 0.625})  # exact in binary: differences 0.25
    assert shifted["diff"] == 0.25 and shifted["ci95"] == 0.0 and math.isnan(shifted["p"])
    rounded = compare({0: 0.66, 1: 0.65, 2: 0.658}, {0: 0.662, 1: 0.652, 2: 0.66})  # -0.002 up to rounding
    assert rounded["diff"] == pytest.approx(-0.002) and rounded["ci95"] == 0.0 and math.isnan(rounded["p"])
    assert verdict(rounded["diff"], rounded["p"], note=rounded["note"]) == "untested (zero spread)"
    flat = compare({"a": 1.0, "b": 1.0}, {"c": 0.5, "d": 0.5})
    assert flat["test"] == "welch" and flat["ci95"] == 0.0 and math.isnan(flat["p"])
    assert apply_holm([rounded, compare({0: 0.1, 1: 0.3, 2: 0.2}, {0: 0.0, 1: 0.1, 2: 0.1})])[0]["family_size"] == 1


def test_a_seed_given_twice_is_refused():
    with pytest.raises(ValueError, match="seed 0 given twice"):
        compare([(0, 0.8), (0, 0.9)], [(0, 0.7), (1, 0.6)])


def test_contrast_of_four_groups_pairs_per_seed_or_pools_welch():
    lt_a, bal_a = {0: 0.90, 1: 0.92, 2: 0.91}, {0: 0.93, 1: 0.93, 2: 0.92}
    lt_b, bal_b = {0: 0.89, 1: 0.90, 2: 0.88}, {0: 0.90, 1: 0.92, 2: 0.90}
    parts = [(+1, lt_a), (-1, bal_a), (-1, lt_b), (+1, bal_b)]
    per_seed = [lt_a[s] - bal_a[s] - lt_b[s] + bal_b[s] for s in range(3)]
    ref = scipy_stats.ttest_1samp(per_seed, 0.0)
    out = paired_contrast(parts)
    assert out["diff"] == pytest.approx(np.mean(per_seed)) and out["p"] == pytest.approx(ref.pvalue)
    assert contrast(parts)["test"] == "paired"
    welch = welch_contrast(parts)
    se2 = sum(np.var(list(d.values()), ddof=1) / 3 for _, d in parts)
    assert welch["ci95"] == pytest.approx(
        scipy_stats.t.ppf(0.975, se2 ** 2 / sum((np.var(list(d.values()), ddof=1) / 3) ** 2 / 2 for _, d in parts))
        * math.sqrt(se2))


def holm_by_hand(p: list[float], alpha: float = 0.05) -> tuple[list[float], list[bool]]:
    """Holm (1979): order the p-values, reject while p_(i) <= alpha / (m - i + 1); the adjusted
    p-value of rank i is max over j <= i of min(1, (m - j + 1) p_(j))."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adjusted, rejected = [0.0] * m, [False] * m
    still = True
    for rank, i in enumerate(order, start=1):
        candidates = [min(1.0, (m - r + 1) * p[order[r - 1]]) for r in range(1, rank + 1)]
        adjusted[i] = max(candidates)
        still = still and p[i] <= alpha / (m - rank + 1)
        rejected[i] = still
    return adjusted, rejected


@pytest.mark.parametrize("p", [[0.01, 0.04, 0.03, 0.005], [0.2, 0.001, 0.8, 0.04, 0.012, 0.3],
                               list(RNG.uniform(0, 0.1, 12)), [0.5]])
def test_holm_matches_the_procedure_written_out(p):
    adjusted, rejected = holm_by_hand(p)
    assert holm(p) == pytest.approx(adjusted, rel=1e-12)
    assert [a < 0.05 for a in holm(p)] == rejected or [a <= 0.05 for a in holm(p)] == rejected


def test_holm_leaves_untested_comparisons_out_of_the_family():
    out = holm([0.01, math.nan, 0.02])
    assert math.isnan(out[1]) and out == pytest.approx([0.02, math.nan, 0.02], nan_ok=True)


def test_apply_holm_sets_adjusted_p_family_size_and_verdicts():
    comparisons = [{"diff": 0.01, "p": 0.001}, {"diff": -0.02, "p": 0.02}, {"diff": 0.03, "p": 0.03},
                   {"diff": 0.02, "p": math.nan}]
    apply_holm(comparisons)
    assert [c["family_size"] for c in comparisons] == [3] * 4
    assert [c["p_holm"] for c in comparisons[:3]] == pytest.approx([0.003, 0.04, 0.04])
    assert [c["verdict"] for c in comparisons] == ["higher", "lower", "higher", "untested"]


# -- the verdict rule of docs/results_protocol.md: holds, does not hold, within 0.3, inconclusive ---
SEEDS = 16
# per-seed differences with mean 0 and SD 1 (population centred and scaled), so a family's
# differences are exactly ``mean + sd * UNIT``
_z = np.random.default_rng(3).normal(size=SEEDS)
UNIT = (_z - _z.mean()) / _z.std(ddof=1)


def constructed(mean: float, sd: float) -> dict:
    """A paired comparison whose 16 per-seed differences have this mean and SD (fractions)."""
    base = 0.85 + 0.01 * np.random.default_rng(4).normal(size=SEEDS)
    return compare(dict(enumerate(base + mean + sd * UNIT)), dict(enumerate(base)))


def test_verdicts_on_constructed_paired_differences():
    """A family of four at 16 seeds, margin 0.3 points (0.003 as a fraction): a 1-point gain
    holds, a 1-point loss does not hold the predicted gain, a 0.02-point difference whose
    Bonferroni interval (alpha / 4) lies inside +-0.3 reads within 0.3, and a noisy 0.1-point
    one is inconclusive; the Bonferroni interval is scipy's at 1 - 0.05 / 4."""
    family = [constructed(0.01, 0.002), constructed(-0.01, 0.002), constructed(0.0002, 0.001),
              constructed(0.001, 0.01)]
    for c in family:
        c["predicted"] = "higher"
    apply_holm(family, margin=0.003, margin_label="within 0.3")
    assert [c["verdict"] for c in family] == ["holds", "does not hold", "within 0.3", "inconclusive"]
    for c, (mean, sd) in zip(family, [(0.01, 0.002), (-0.01, 0.002), (0.0002, 0.001), (0.001, 0.01)]):
        ref = scipy_stats.ttest_1samp(mean + sd * UNIT, 0.0).confidence_interval(1 - 0.05 / 4)
        assert (c["bonferroni_low"], c["bonferroni_high"]) == pytest.approx((ref.low, ref.high), rel=1e-9)
    within, noisy = family[2], family[3]
    assert -0.003 < within["bonferroni_low"] and within["bonferroni_high"] < 0.003 and within["p_holm"] >= 0.05
    assert noisy["bonferroni_high"] > 0.003 and noisy["p_holm"] >= 0.05
    # the label reads the interval at alpha / m, wider than the 95% one
    assert within["high"] < within["bonferroni_high"]


def test_within_reads_the_bonferroni_level_of_the_family_size():
    """The same comparison inside +-0.3 at alpha / 1 but not at alpha / 7 (its interval widens
    with the family): within 0.3 alone, inconclusive in a family of seven."""
    alone = constructed(0.0008, 0.004)
    apply_holm([alone], margin=0.003, margin_label="within 0.3")
    family = [constructed(0.0008, 0.004)] + [constructed(0.0, 0.01) for _ in range(6)]
    apply_holm(family, margin=0.003, margin_label="within 0.3")
    assert alone["bonferroni_high"] < 0.003 < family[0]["bonferroni_high"]
    assert alone["verdict"] == "within 0.3" and family[0]["verdict"] == "inconclusive"


def test_a_prediction_of_no_difference_holds_within_the_margin_only():
    """Claim 4b's reading: within 0.3 holds, a called difference of either sign does not."""
    family = [constructed(0.0002, 0.001), constructed(0.01, 0.002), constructed(-0.01, 0.002),
              constructed(0.001, 0.01)]
    for c in family:
        c["predicted"] = "none"
    apply_holm(family, margin=0.003, margin_label="within 0.3")
    assert [c["verdict"] for c in family] == ["holds (within 0.3)", "does not hold", "does not hold",
                                              "inconclusive"]
    # no margin: no label, and no prediction: the sign
    assert verdict(0.0002, 0.6) == "inconclusive" and verdict(-0.01, 0.001) == "lower"
    assert verdict(0.01, 0.001, predicted="lower") == "does not hold"
    with pytest.raises(ValueError, match="predicted='up'"):
        verdict(0.01, 0.001, predicted="up")
