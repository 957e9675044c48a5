"""Tests for dihal.analysis.intervals: hand-computed cases and the properties each helper promises."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dihal.analysis.intervals import draw_weights, permutation_pvalue, permutations, symmetric_interval


def test_draw_weights_shape_and_support():
    w = draw_weights(np.random.default_rng(0), 500, 4)
    assert w.shape == (500, 4)
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    counts = w * 3  # 3 = 4 - 1 draws per replicate
    np.testing.assert_allclose(counts, np.round(counts))
    assert np.all(w >= 0)


def test_draw_weights_single_unit_is_never_resampled():
    w = draw_weights(np.random.default_rng(0), 10, 1)
    np.testing.assert_array_equal(w, np.ones((10, 1)))


def test_draw_weights_give_unbiased_variance_of_a_mean():
    # x = [0, 1, 2]: s^2 = 1, so the sampling variance of the mean is s^2 / 3.
    # n-1 draws should reproduce it; ordinary n-of-n draws give 2/3 of it.
    x = np.array([0.0, 1.0, 2.0])
    w = draw_weights(np.random.default_rng(1), 40_000, 3)
    assert np.var(w @ x) == pytest.approx(1.0 / 3.0, rel=0.03)


def test_symmetric_interval_hand_case():
    # |reps - 0.2| = [0.1, 0, 0.1, 0.3]; its median (ci = 0.5) is 0.1
    lo, hi, n = symmetric_interval(np.array([0.1, 0.2, 0.3, 0.5]), 0.2, 0.5)
    assert (lo, hi, n) == (pytest.approx(0.1), pytest.approx(0.3), 4)


def test_symmetric_interval_clips_and_keeps_estimate_when_replicates_are_one_sided():
    # every replicate is closer to 0 than the estimate (the old percentile's failure)
    reps = np.array([-0.80, -0.82, -0.85, -0.78])
    lo, hi, _ = symmetric_interval(reps, -0.95, 0.95)
    assert lo == -1.0 and hi > -0.95
    assert lo <= -0.95 <= hi


def test_symmetric_interval_degenerate_cases():
    assert symmetric_interval(np.full(5, 0.3), 0.3, 0.95) == (0.3, 0.3, 5)
    lo, hi, n = symmetric_interval(np.array([math.nan, 0.1, 0.5]), 0.3, 0.95)
    assert n == 2 and lo < 0.3 < hi
    lo, hi, n = symmetric_interval(np.full(3, math.nan), 0.3, 0.95)
    assert math.isnan(lo) and math.isnan(hi) and n == 0
    lo, hi, n = symmetric_interval(np.array([0.1, 0.2]), math.nan, 0.95)
    assert math.isnan(lo) and math.isnan(hi) and n == 2


@settings(max_examples=60, deadline=None)
@given(
    reps=st.lists(st.floats(-1, 1), min_size=1, max_size=30),
    estimate=st.floats(-1, 1),
    ci=st.floats(0.5, 0.99),
)
def test_symmetric_interval_always_contains_estimate(reps, estimate, ci):
    lo, hi, n = symmetric_interval(np.array(reps), estimate, ci)
    assert n == len(reps)
    assert -1.0 <= lo <= estimate <= hi <= 1.0


def test_permutations_exact_when_few():
    perms, exact = permutations(np.random.default_rng(0), 3, 6)
    assert exact and perms.shape == (6, 3)
    assert {tuple(p) for p in perms} == {(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)}


def test_permutations_random_when_many():
    perms, exact = permutations(np.random.default_rng(0), 4, 10)  # 4! = 24 > 10
    assert not exact and perms.shape == (10, 4)
    assert all(sorted(p) == [0, 1, 2, 3] for p in perms.tolist())


def test_permutation_pvalue_hand_cases():
    null = np.array([0.1, -0.5, 0.5, 0.9])  # |null| >= 0.5: three of four
    assert permutation_pvalue(null, 0.5, exact=False) == pytest.approx((1 + 3) / (1 + 4))
    assert permutation_pvalue(null, -0.5, exact=True) == pytest.approx(3 / 4)
    assert permutation_pvalue(null, 0.95, exact=False) == pytest.approx(1 / 5)  # never 0
    assert math.isnan(permutation_pvalue(null, math.nan, exact=False))
    # undefined permuted statistics are not "as extreme"
    assert permutation_pvalue(np.array([math.nan, 0.2]), 0.1, exact=True) == pytest.approx(0.5)
