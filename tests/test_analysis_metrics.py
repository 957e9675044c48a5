"""Tests for dihal.analysis.text_metrics: hand-computed cases plus properties.

The hand cases pin each metric's convention (pooling, per-sample averaging,
units) so a refactor cannot silently switch to a neighbouring definition; the
hypothesis properties pin the ranges the report relies on.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dihal.analysis.text_metrics import (
    distinct_n,
    diversity,
    perplexity_from_nll,
    rep_n,
    text_metrics,
    unigram_entropy,
)

seqs_strategy = st.lists(st.lists(st.integers(min_value=0, max_value=12), max_size=30), min_size=1, max_size=6)


# --- rep_n ---------------------------------------------------------------


def test_rep_n_hand_cases():
    # bigrams of [1,2,1,2]: (1,2),(2,1),(1,2) -> 2 unique of 3
    assert rep_n([1, 2, 1, 2], 2) == pytest.approx(1 - 2 / 3)
    assert rep_n([1, 2, 1, 2], 1) == pytest.approx(1 - 2 / 4)
    assert rep_n([5, 5, 5, 5, 5], 3) == pytest.approx(1 - 1 / 3)
    assert rep_n([1, 2, 3], 3) == 0.0


def test_rep_n_no_ngrams_is_zero():
    assert rep_n([], 1) == 0.0
    assert rep_n([1, 2], 3) == 0.0


def test_rep_n_accepts_numpy_and_rejects_bad_input():
    assert rep_n(np.array([1, 2, 1, 2]), 2) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        rep_n([1, 2], 0)
    with pytest.raises(TypeError):
        rep_n("abab", 2)
    with pytest.raises(TypeError):
        rep_n([1.0, 2.0], 1)


# --- distinct_n ----------------------------------------------------------


def test_distinct_1_pooled():
    # tokens 1,2,3 / 3,4 -> 4 unique of 5
    assert distinct_n([[1, 2, 3], [3, 4]], 1) == pytest.approx(4 / 5)


def test_distinct_2_pooled_across_samples():
    # bigrams: (1,2),(2,3) | (1,2),(2,4) -> unique {(1,2),(2,3),(2,4)} = 3 of 4
    assert distinct_n([[1, 2, 3], [1, 2, 4]], 2) == pytest.approx(3 / 4)
    # identical samples collapse: pooling catches cross-sample duplication
    assert distinct_n([[1, 2, 3], [1, 2, 3]], 2) == pytest.approx(2 / 4)


def test_distinct_ngrams_do_not_cross_sequences():
    # if the sequences were concatenated, (2,3) would be a bigram; it must not be
    assert distinct_n([[1, 2], [3, 4]], 2) == pytest.approx(1.0)
    assert distinct_n([[1], [2]], 2) == 0.0


def test_distinct_no_ngrams_is_zero():
    assert distinct_n([], 1) == 0.0
    assert distinct_n([[], [1]], 2) == 0.0


# --- diversity -----------------------------------------------------------


def test_diversity_hand_case():
    seqs = [[1, 2, 1, 2], [1, 2, 3, 4]]
    # rep_2: 1/3 and 0 -> mean 1/6; rep_3: [1,2,1],[2,1,2] unique -> 0, 0; rep_4: 0
    assert diversity(seqs) == pytest.approx((1 - 1 / 6) * 1.0 * 1.0)
    # all-one-token sequence of length 6: rep_2 = 1-1/5, rep_3 = 1-1/4, rep_4 = 1-1/3
    expected = (1 / 5) * (1 / 4) * (1 / 3)
    assert diversity([[7] * 6]) == pytest.approx(expected)


def test_diversity_is_mean_of_per_sample_rep_not_pooled():
    # Two identical all-distinct samples: pooled distinct-2 is 0.5 but no sample
    # repeats internally, so diversity (per-sample rep_n) is 1.
    seqs = [[1, 2, 3, 4, 5], [1, 2, 3, 4, 5]]
    assert diversity(seqs) == pytest.approx(1.0)
    assert distinct_n(seqs, 2) == pytest.approx(0.5)


def test_diversity_custom_orders_and_errors():
    assert diversity([[1, 2, 1, 2]], ns=(2,)) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        diversity([])
    with pytest.raises(ValueError):
        diversity([[1, 2]], ns=())


# --- unigram_entropy -----------------------------------------------------


@pytest.mark.parametrize("m", [1, 2, 5, 17])
def test_entropy_uniform_is_log_m(m):
    seqs = [list(range(m)), list(range(m))[::-1]]
    assert unigram_entropy(seqs) == pytest.approx(math.log(m))


def test_entropy_hand_case_nats():
    # counts 3:1 -> -(3/4 ln 3/4 + 1/4 ln 1/4)
    expected = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert unigram_entropy([[1, 1], [1, 9]]) == pytest.approx(expected)


def test_entropy_empty_is_zero():
    assert unigram_entropy([]) == 0.0
    assert unigram_entropy([[], []]) == 0.0


# --- text_metrics --------------------------------------------------------


def test_text_metrics_keys_and_values():
    seqs = [[1, 2, 1, 2], [1, 2, 3, 4]]
    out = text_metrics(seqs)
    assert set(out) == {"distinct_1", "distinct_2", "distinct_3", "diversity", "unigram_entropy"}
    assert out["distinct_1"] == pytest.approx(4 / 8)
    assert out["distinct_2"] == pytest.approx(distinct_n(seqs, 2))
    assert out["distinct_3"] == pytest.approx(distinct_n(seqs, 3))
    assert out["diversity"] == pytest.approx(diversity(seqs))
    assert out["unigram_entropy"] == pytest.approx(unigram_entropy(seqs))
    assert all(isinstance(v, float) for v in out.values())


def test_text_metrics_accepts_generator():
    gen = (s for s in [[1, 2, 3], [4, 5, 6]])
    out = text_metrics(gen)
    assert out["distinct_1"] == 1.0 and out["diversity"] == 1.0


# --- perplexity_from_nll -------------------------------------------------


def test_perplexity_hand_cases():
    assert perplexity_from_nll(0.0, 10) == 1.0
    assert perplexity_from_nll(10 * math.log(50), 10) == pytest.approx(50.0)
    assert perplexity_from_nll(1e6, 1) == math.inf


def test_perplexity_errors():
    with pytest.raises(ValueError):
        perplexity_from_nll(3.0, 0)
    with pytest.raises(ValueError):
        perplexity_from_nll(3.0, -1)
    with pytest.raises(ValueError):
        perplexity_from_nll(-3.0, 4)
    with pytest.raises(ValueError):
        perplexity_from_nll(float("nan"), 4)


# --- properties ----------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(seqs_strategy, st.integers(min_value=1, max_value=4))
def test_distinct_in_unit_interval(seqs, n):
    assert 0.0 <= distinct_n(seqs, n) <= 1.0


@settings(max_examples=200, deadline=None)
@given(seqs_strategy)
def test_diversity_in_unit_interval(seqs):
    assert 0.0 <= diversity(seqs) <= 1.0


@settings(max_examples=200, deadline=None)
@given(seqs_strategy)
def test_entropy_bounded_by_log_vocab_used(seqs):
    used = {t for s in seqs for t in s}
    h = unigram_entropy(seqs)
    assert h >= 0.0
    if used:
        assert h <= math.log(len(used)) + 1e-12


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(min_value=-1000, max_value=1000), unique=True, max_size=40),
    st.integers(min_value=1, max_value=5),
)
def test_rep_n_all_distinct_is_zero(seq, n):
    assert rep_n(seq, n) == 0.0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=5), max_size=30), st.integers(1, 4))
def test_rep_n_in_unit_interval(seq, n):
    assert 0.0 <= rep_n(seq, n) < 1.0
