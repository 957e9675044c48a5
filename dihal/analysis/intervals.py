"""Small resampling helpers for :mod:`dihal.analysis.correlation`.

They know nothing about layers or losses: weights for a bootstrap draw, the
symmetric bootstrap interval, and a permutation p-value. Each is a pure
function of numpy arrays so it can be tested against a hand computation.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

__all__ = ["draw_weights", "permutation_pvalue", "permutations", "symmetric_interval"]


def draw_weights(rng: np.random.Generator, n_boot: int, size: int) -> np.ndarray:
    """(n_boot, size) averaging weights for ``max(size - 1, 1)`` draws with replacement.

    Drawing n - 1 of n units (not n) makes the bootstrap variance of a mean
    unbiased: the plug-in variance is (n-1)/n * s^2 and the mean of m draws
    has variance plug-in / m, so m = n - 1 gives s^2 / n. The ordinary n-of-n
    bootstrap is short by a factor (n-1)/n, which is 2/3 with 3 seeds. For a
    mean over a crossed seeds x batches array, drawing S-1 seeds and B-1
    batches independently makes the seed, batch and interaction components
    unbiased too, to first order. With one unit there is nothing to resample
    and every weight is 1.
    """
    draws = max(size - 1, 1)
    idx = rng.integers(0, size, size=(n_boot, draws))
    counts = np.zeros((n_boot, size), dtype=np.float64)
    np.add.at(counts, (np.arange(n_boot)[:, None], idx), 1.0)
    return counts / draws


def symmetric_interval(
    replicates: np.ndarray, estimate: float, ci: float, bounds: tuple[float, float] = (-1.0, 1.0)
) -> tuple[float, float, int]:
    """estimate +- the ``ci`` quantile of |replicate - estimate|, clipped to ``bounds``.

    Returns (lo, hi, number of finite replicates). This is the unstudentized
    form of Hall's (1988) symmetric bootstrap interval: the root is
    |theta* - theta_hat| rather than its two one-sided quantiles, so a bias
    of the replicates in either direction widens the interval instead of
    shifting it, and the estimate is always inside. Degenerate cases: NaN
    estimate or no finite replicate -> (NaN, NaN, count), because with no
    defined estimate, or no defined replicate, the bootstrap says nothing;
    every replicate equal to the estimate -> the zero-width interval at the
    estimate (no resampling variability).
    """
    values = np.asarray(replicates, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if not math.isfinite(estimate) or finite.size == 0:
        return math.nan, math.nan, int(finite.size)
    half = float(np.quantile(np.abs(finite - estimate), ci))
    lo, hi = bounds
    return max(lo, estimate - half), min(hi, estimate + half), int(finite.size)


def permutations(rng: np.random.Generator, n: int, n_perm: int) -> tuple[np.ndarray, bool]:
    """Index permutations of ``range(n)`` for a permutation test, and whether they are all.

    When n! <= n_perm every permutation is enumerated once (identity
    included), so the p-value is exact and needs no randomness; otherwise
    ``n_perm`` uniform random permutations are drawn from ``rng``.
    """
    if math.factorial(n) <= n_perm:
        return np.array(list(itertools.permutations(range(n))), dtype=np.intp), True
    return rng.permuted(np.tile(np.arange(n), (n_perm, 1)), axis=1), False


def permutation_pvalue(null: np.ndarray, observed: float, exact: bool) -> float:
    """Two-sided p-value from permutation statistics ``null``.

    Random permutations: (1 + #{|null| >= |observed|}) / (1 + n_perm), which
    counts the observed arrangement as one of the permutations and so is
    never 0 (Phipson & Smyth 2010). Exact enumeration already contains the
    observed arrangement, so there it is #{...} / n!. ``>=`` allows a
    relative slack of 1e-9 so that ties that are equal on paper but differ in
    the last bits still count. NaN when the observed statistic is undefined;
    undefined permuted statistics count as not extreme.
    """
    if not math.isfinite(observed):
        return math.nan
    null = np.asarray(null, dtype=np.float64)
    target = abs(observed) * (1.0 - 1e-9) - 1e-12
    hits = int(np.sum(np.abs(null) >= target))  # NaN compares False
    if exact:
        return hits / null.size
    return (1 + hits) / (1 + null.size)
