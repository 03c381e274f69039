"""Rank statistics of the benchmark reports against SciPy, hand-computed cases and simulation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sps

from nasdet.utils.stats import (
    _counts,
    _Taus,
    kendall_tau_b,
    mean_difference,
    null_sd_kendall,
    partial_kendall,
    proxy_statistics,
    rank_aggregate,
    top_fraction_recall,
)
from nasdet.utils.stats import test_retest as retest

# float64 sums of at most n² = 10⁴ terms of ±1: exact integers, one rounding in the ratio
TOL = 1e-12


def _population(n: int, seed: int = 0, r: float = 0.6):
    rng = np.random.default_rng(seed)
    params = rng.uniform(1e6, 8e6, n)
    target = 0.5 * np.log(params) + rng.normal(0, 0.4, n)
    proxy = r * target + rng.normal(0, 0.3, n)
    macs = params * rng.uniform(5, 15, n)
    return proxy, target, params, macs


def test_tau_and_rho_equal_scipy_with_ties():
    proxy, target, params, macs = _population(40)
    proxy = np.round(proxy, 1)                      # ties in the proxy
    target = np.round(target, 1)                    # and in the target
    assert len(np.unique(proxy)) < 40 and len(np.unique(target)) < 40
    out = proxy_statistics(proxy, target, n_params=params, macs=macs, n_resamples=300)
    assert out["tau"] == pytest.approx(sps.kendalltau(proxy, target).statistic, abs=TOL)
    assert out["rho"] == pytest.approx(sps.spearmanr(proxy, target).statistic, abs=TOL)
    assert out["tau_params"] == pytest.approx(sps.kendalltau(params, target).statistic, abs=TOL)
    assert out["tau_macs"] == pytest.approx(sps.kendalltau(macs, target).statistic, abs=TOL)
    assert out["delta_tau_params"] == pytest.approx(out["tau"] - out["tau_params"], abs=TOL)
    assert kendall_tau_b(proxy, target) == pytest.approx(out["tau"], abs=TOL)
    for key in ("tau", "rho", "delta_tau_params", "delta_tau_macs", "partial_tau_params"):
        low, high = out[f"{key}_ci"]
        assert low <= out[key] <= high, key
    assert out["method"] == "BCa" and out["n"] == 40 and out["notes"] == []


def test_resample_statistic_equals_scipy_on_the_resampled_values():
    proxy, target, *_ = _population(25, seed=3)
    proxy = np.round(proxy, 1)
    taus = _Taus({"x": proxy, "y": target})
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 25, size=(50, 25))                        # bootstrap resamples
    jack = np.array([np.delete(np.arange(25), i) for i in range(25)])  # jackknife samples
    for rows in (idx, jack):
        got = taus.tau("x", "y", _counts(rows, 25))
        ref = [sps.kendalltau(proxy[r], target[r]).statistic for r in rows]
        np.testing.assert_allclose(got, ref, rtol=0, atol=TOL)


def test_partial_kendall_of_a_hand_computed_case():
    # τ_xy = (5 − 1)/6 = 2/3, τ_xz = (4 − 2)/6 = 1/3, τ_yz = (3 − 3)/6 = 0
    # τ_xy·z = (2/3 − 0) / sqrt((1 − 1/9)(1 − 0)) = 1/√2
    x, y, z = [1, 2, 3, 4], [1, 3, 2, 4], [2, 1, 4, 3]
    assert sps.kendalltau(x, z).statistic == pytest.approx(1 / 3)
    assert sps.kendalltau(y, z).statistic == pytest.approx(0.0)
    assert partial_kendall(x, y, z) == pytest.approx(1 / math.sqrt(2), abs=TOL)
    # proxy_statistics conditions on log #params: the same, as τ is rank-based
    out = proxy_statistics(x, y, n_params=np.exp(z), macs=z, n_resamples=200)
    assert out["partial_tau_params"] == pytest.approx(1 / math.sqrt(2), abs=TOL)
    assert math.isnan(partial_kendall(x, y, x))                   # |τ_xz| = 1: undefined


def test_interval_covers_the_population_tau_at_about_the_nominal_rate():
    # bivariate normal with correlation r: population τ = (2/π) arcsin r
    r, n, sims = 0.5, 25, 200
    true_tau = 2 / math.pi * math.asin(r)
    rng = np.random.default_rng(42)
    covered = 0
    for i in range(sims):
        a = rng.standard_normal(n)
        b = r * a + math.sqrt(1 - r * r) * rng.standard_normal(n)
        low, high = retest(a, b, n_resamples=400, seed=i)["tau_ci"]
        covered += low <= true_tau <= high
    # nominal 0.95; the binomial sd over 200 runs is 0.015, BCa undercovers a little at n=25
    assert 0.85 <= covered / sims <= 0.99


def test_interval_contains_the_estimate_and_shrinks_with_n():
    widths = []
    for n in (20, 80, 320):
        proxy, target, params, macs = _population(n, seed=n)
        out = proxy_statistics(proxy, target, n_params=params, macs=macs, n_resamples=500)
        low, high = out["tau_ci"]
        assert low < out["tau"] < high
        widths.append(high - low)
        assert out["null_sd"] == pytest.approx(null_sd_kendall(n))
    assert widths[0] > widths[1] > widths[2]
    assert widths[0] / widths[2] > 2.5                    # ~ sqrt(16) = 4 for 1/√n shrinkage


def test_delta_tau_of_a_proxy_against_itself_is_exactly_zero():
    proxy, target, params, macs = _population(30)
    out = proxy_statistics(params, target, n_params=params, macs=macs, n_resamples=300)
    assert out["delta_tau_params"] == 0.0 and out["delta_tau_params_ci"] == [0.0, 0.0]
    assert math.isnan(out["partial_tau_params"])          # a proxy given itself
    out = proxy_statistics(macs, target, n_params=params, macs=macs, n_resamples=300)
    assert out["delta_tau_macs"] == 0.0 and out["delta_tau_macs_ci"] == [0.0, 0.0]
    # a proxy far better than #params: the paired interval lies above 0
    out = proxy_statistics(target + 0.01 * proxy, target, n_params=params, macs=macs,
                           n_resamples=500)
    low, high = out["delta_tau_params_ci"]
    assert 0 < low <= out["delta_tau_params"] <= high


def test_top_recall_by_hand():
    target = np.arange(20.0)                    # true top 10%: architectures 19 and 18
    scores = np.zeros(20)
    scores[[19, 5]] = [10.0, 9.0]               # the proxy's top 2: 19 and 5 -> recall 1/2
    assert top_fraction_recall(scores, target) == 0.5
    assert top_fraction_recall(target, target) == 1.0
    assert top_fraction_recall(-target, target) == 0.0
    # three tied at the top for two places: each is in with probability 2/3
    tied = np.zeros(20)
    tied[[19, 18, 0]] = 5.0
    assert top_fraction_recall(tied, target) == pytest.approx(2 / 3, abs=TOL)
    # k = ceil(0.1 n): 25 architectures -> top 3
    t25 = np.arange(25.0)
    s25 = t25.copy()
    s25[24] = -1.0                              # the best one is ranked last
    assert top_fraction_recall(s25, t25) == pytest.approx(2 / 3, abs=TOL)
    out = proxy_statistics(scores, target, n_params=target + 1, macs=target + 1, n_resamples=100)
    assert out["top_recall"] == 0.5 and out["top_fraction"] == 0.1


def test_nan_scores_are_dropped_pairwise_and_degenerate_cases_reported():
    proxy, target, params, macs = _population(30)
    proxy[[2, 11, 17]] = np.nan
    out = proxy_statistics(proxy, target, n_params=params, macs=macs, n_resamples=300)
    keep = np.isfinite(proxy)
    assert out["n"] == 27 and out["n_dropped"] == 3
    assert out["tau"] == pytest.approx(sps.kendalltau(proxy[keep], target[keep]).statistic,
                                       abs=TOL)
    assert out["null_sd"] == pytest.approx(null_sd_kendall(27))

    const = proxy_statistics(np.ones(30), target, n_params=params, macs=macs, n_resamples=300)
    assert math.isnan(const["tau"]) and all(math.isnan(v) for v in const["tau_ci"])
    assert any("constant" in note for note in const["notes"])
    assert const["tau_params"] == pytest.approx(sps.kendalltau(params, target).statistic)

    empty = proxy_statistics(np.full(30, np.nan), target, n_params=params, macs=macs)
    assert empty["n"] == 0 and math.isnan(empty["tau"]) and empty["notes"]
    with pytest.raises(ValueError, match="differ in length"):
        proxy_statistics(proxy[:5], target, n_params=params, macs=macs)


def test_null_sd_is_the_exact_permutation_sd():
    n = 6
    taus = [sps.kendalltau(range(n), perm).statistic
            for perm in itertools.permutations(range(n))]
    assert null_sd_kendall(n) == pytest.approx(float(np.std(taus)), abs=TOL)
    assert null_sd_kendall(10) == pytest.approx(math.sqrt(50 / 810))


def test_test_retest_ceiling_and_tau_fraction():
    proxy, target, params, macs = _population(40)
    rng = np.random.default_rng(5)
    second = target + rng.normal(0, 0.1, 40)
    ceiling = retest(target, second, n_resamples=400)
    assert ceiling["tau"] == pytest.approx(sps.kendalltau(target, second).statistic, abs=TOL)
    low, high = ceiling["tau_ci"]
    assert low < ceiling["tau"] < high <= 1.0
    out = proxy_statistics(proxy, target, n_params=params, macs=macs, ceiling=ceiling,
                           n_resamples=300)
    assert out["ceiling"] == ceiling["tau"]
    assert out["tau_over_ceiling"] == pytest.approx(out["tau"] / ceiling["tau"], abs=TOL)
    assert out["tau_over_ceiling_ci"] == pytest.approx([v / ceiling["tau"] for v in out["tau_ci"]])
    same = retest(target, target, n_resamples=200)
    assert same["tau"] == 1.0 and same["tau_ci"] == [1.0, 1.0]
    assert retest([1.0], [2.0])["notes"]


def test_rank_aggregate_mean_and_log_of_ranks():
    a = [1.0, 2.0, 3.0, 4.0]
    b = [40.0, 10.0, 20.0, 20.0]            # ranks 4, 1, 2.5, 2.5
    np.testing.assert_allclose(rank_aggregate(a, b), [2.5, 1.5, 2.75, 3.25])
    np.testing.assert_allclose(rank_aggregate(a, b, method="log"),
                               np.log(np.array([1, 2, 3, 4]) / 4) +
                               np.log(np.array([4, 1, 2.5, 2.5]) / 4))
    with_nan = rank_aggregate([1.0, np.nan, 3.0], [3.0, 2.0, 1.0])
    # the NaN architecture is out of the first ranking (ranks 1, 2 of 2) and gets NaN
    assert math.isnan(with_nan[1]) and with_nan.tolist()[0::2] == [2.0, 1.5]
    with pytest.raises(ValueError):
        rank_aggregate([1.0], [1.0, 2.0])


def test_mean_difference_is_scipys_paired_bca_interval_of_the_mean():
    rng = np.random.default_rng(3)
    a = rng.normal(0.2, 0.05, 30)
    b = a - rng.normal(0.01, 0.02, 30)
    b[4] = np.nan  # a pair with a missing side is left out
    got = mean_difference(a, b, n_resamples=999, seed=7)
    keep = np.isfinite(b)
    d = a[keep] - b[keep]
    assert got["n"] == 29 and got["mean"] == pytest.approx(d.mean(), abs=1e-15)
    assert got["positive"] == pytest.approx(np.mean(d > 0))
    ref = sps.bootstrap((d,), np.mean, n_resamples=999, method="BCa",
                        rng=np.random.default_rng(7)).confidence_interval
    # Resampling indices or values draws the same pairs: the same interval up to the
    # order of the float sums (a few ulps of values ~0.01).
    assert got["ci"] == pytest.approx([ref.low, ref.high], abs=1e-12)
    same = mean_difference([0.3, 0.5, 0.4], [0.2, 0.4, 0.3])  # every difference 0.1
    assert same["mean"] == pytest.approx(0.1) and same["ci"] == pytest.approx([0.1, 0.1])
