import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats

from sslkit.stats.intervals import describe, mean_ci95, natural_key


def test_natural_key_orders_numbers_by_value():
    names = ["run_10", "run_2", "run_1", "a", "run_2b"]
    assert sorted(names, key=natural_key) == ["a", "run_1", "run_2", "run_2b", "run_10"]
    paths = [Path("m/10/x.ckpt"), Path("m/9/x.ckpt")]
    assert sorted(paths, key=natural_key) == [Path("m/9/x.ckpt"), Path("m/10/x.ckpt")]


@pytest.mark.parametrize("values", [[0.9, 0.91, 0.95], [1.0, 3.0], [0.2, 0.2, 0.2, 0.2]])
def test_mean_ci95_matches_scipy_interval(values):
    out = mean_ci95(values)
    lo, hi = scipy_stats.t.interval(0.95, len(values) - 1, loc=np.mean(values),
                                    scale=scipy_stats.sem(values)) if np.std(values) > 0 else (
        np.mean(values), np.mean(values))
    assert out["n"] == len(values)
    assert out["mean"] == pytest.approx(np.mean(values))
    assert out["std"] == pytest.approx(np.std(values, ddof=1))
    assert out["ci95"] == pytest.approx((hi - lo) / 2)


def test_mean_ci95_of_one_or_no_value_has_no_interval():
    one = mean_ci95([0.5])
    assert one["mean"] == 0.5 and one["n"] == 1 and math.isnan(one["ci95"]) and math.isnan(one["std"])
    none = mean_ci95([])
    assert none["n"] == 0 and math.isnan(none["mean"])


def test_describe_leaves_out_values_that_are_not_finite_numbers():
    out = describe([0.5, math.nan, 0.7, None, math.inf, 0.6])
    assert out["n"] == 3 and out["mean"] == pytest.approx(0.6)
    assert (out["min"], out["max"]) == (0.5, 0.7)
    assert out["ci95"] == pytest.approx(mean_ci95([0.5, 0.7, 0.6])["ci95"])
    empty = describe([math.nan])
    assert empty["n"] == 0 and math.isnan(empty["min"]) and math.isnan(empty["mean"])
