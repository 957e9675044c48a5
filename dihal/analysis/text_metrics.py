"""Text-quality metrics for generated samples, computed on token ids.

METHOD.md ("Evaluate") scores every generation run by its diversity
(distinct-1/2/3 and the product form prod_{n=2..4} (1 - rep_n)), by its unigram
entropy (to flag degenerate, repetitive text) and by the generative perplexity
the judge backbone assigns to it. All of these work on *token-id* sequences,
not on strings: the ids are what the backbone produced and what the judge
scores, so counting them avoids a detokenise/retokenise round trip that would
depend on the tokenizer's whitespace and merge rules and make runs with
different decoders incomparable.

Sequences are ordinary ``Sequence[int]`` (lists, tuples, 1-D numpy arrays or
tensors of integer ids). N-grams never cross from one sequence into the next:
each sample is a separate text.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Sequence

import numpy as np
from scipy.stats import entropy as _scipy_entropy

__all__ = [
    "distinct_n",
    "rep_n",
    "diversity",
    "unigram_entropy",
    "text_metrics",
    "perplexity_from_nll",
]


def _as_ids(seq: Iterable[int]) -> list[int]:
    """Coerce one sequence to a list of Python ints.

    ``operator.index`` accepts ints, numpy integers and integer tensors but
    rejects floats and strings, so a caller who passes decoded text or a flat
    list of ids where a list of sequences is expected gets a TypeError instead
    of silently counting characters.
    """
    if isinstance(seq, (str, bytes)):
        raise TypeError("text metrics take token-id sequences, not strings")
    try:
        return [operator.index(t) for t in seq]
    except TypeError as exc:
        raise TypeError(
            f"expected a sequence of integer token ids (got an element that is not an integer: {exc})"
        ) from None


def _check_n(n: int) -> int:
    """Validate an n-gram order: n >= 1 is the only meaningful range."""
    n = operator.index(n)
    if n < 1:
        raise ValueError(f"n-gram order must be >= 1, got {n}")
    return n


def _ngrams(ids: list[int], n: int) -> list[tuple[int, ...]]:
    """All contiguous n-grams of one sequence, as hashable tuples."""
    return list(zip(*(ids[i:] for i in range(n))))


def distinct_n(seqs: Sequence[Sequence[int]], n: int) -> float:
    """Distinct-n: unique n-grams / total n-grams, pooled over all sequences.

    Pooling (one set of unique n-grams for the whole sample set, rather than a
    per-sequence average) is the Li et al. (2016) definition; it also catches
    *cross-sample* collapse, where every sample is internally varied but all
    samples are the same text. Returns 0.0 when there are no n-grams at all
    (every sequence shorter than n), because an empty generation is as
    undiverse as it gets and a float keeps the metrics table rectangular.
    """
    n = _check_n(n)
    unique: set[tuple[int, ...]] = set()
    total = 0
    for seq in seqs:
        grams = _ngrams(_as_ids(seq), n)
        total += len(grams)
        unique.update(grams)
    return len(unique) / total if total else 0.0


def rep_n(seq: Sequence[int], n: int) -> float:
    """Repetition rate of one sequence: 1 - unique n-grams / total n-grams.

    This is the per-sample rep-n of Welleck et al. (2020) and of the
    contrastive-decoding / SEDD diversity score. A sequence with no n-grams
    (shorter than n) has nothing repeated, so it scores 0.0.
    """
    n = _check_n(n)
    grams = _ngrams(_as_ids(seq), n)
    if not grams:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def diversity(seqs: Sequence[Sequence[int]], ns: Sequence[int] = (2, 3, 4)) -> float:
    """Product diversity: prod_{n in ns} (1 - mean over sequences of rep_n).

    Convention: the one used by contrastive decoding (Li et al., 2023) and by
    SEDD (Lou et al., 2024), diversity = prod_{n=2}^{4} (1 - rep-n / 100) with
    rep-n in percent; here rep_n is a fraction, so no /100. rep_n is computed
    *within* each sample and averaged over samples (a plain, unweighted mean,
    so every sample counts once whatever its length) before the product. The
    result lies in [0, 1]; 1 means no repeated n-gram inside any sample.

    Note that a set of samples all shorter than min(ns) scores 1.0 (nothing
    can repeat); distinct_n and unigram_entropy flag such degenerate output.
    An empty ``seqs`` raises ValueError: a mean over zero samples has no value,
    and returning 1.0 would report an empty run as perfectly diverse.
    """
    seqs = list(seqs)
    if not seqs:
        raise ValueError("diversity needs at least one sequence")
    orders = [_check_n(n) for n in ns]
    if not orders:
        raise ValueError("diversity needs at least one n-gram order in ns")
    value = 1.0
    for n in orders:
        mean_rep = float(np.mean([rep_n(s, n) for s in seqs]))
        value *= 1.0 - mean_rep
    return value


def unigram_entropy(seqs: Sequence[Sequence[int]]) -> float:
    """Shannon entropy, in nats, of the token distribution pooled over all sequences.

    Used to flag degenerate text (a sampler stuck on a few tokens has entropy
    near 0, far below the corpus's). Nats match the natural-log NLLs used for
    perplexity. At most log(number of distinct tokens used); 0.0 when there
    are no tokens at all, since no text is the most degenerate output.
    """
    pooled = [t for seq in seqs for t in _as_ids(seq)]
    if not pooled:
        return 0.0
    _, counts = np.unique(np.asarray(pooled, dtype=np.int64), return_counts=True)
    return float(_scipy_entropy(counts))  # normalises counts; natural log by default


def text_metrics(seqs: Sequence[Sequence[int]]) -> dict[str, float]:
    """The per-run text metrics METHOD.md asks for, as one flat dict.

    Keys: distinct_1, distinct_2, distinct_3, diversity (ns = 2, 3, 4),
    unigram_entropy. The sequences are materialised once so that a generator
    argument is not exhausted by the first metric.
    """
    seqs = [_as_ids(s) for s in seqs]
    return {
        "distinct_1": distinct_n(seqs, 1),
        "distinct_2": distinct_n(seqs, 2),
        "distinct_3": distinct_n(seqs, 3),
        "diversity": diversity(seqs, (2, 3, 4)),
        "unigram_entropy": unigram_entropy(seqs),
    }


def perplexity_from_nll(total_nll: float, n_tokens: int) -> float:
    """Perplexity = exp(total NLL / number of scored tokens), NLL in nats.

    Taking the summed NLL and the token count (rather than a list of
    per-sample perplexities) makes the result token-weighted over the whole
    run, the standard corpus-level generative perplexity. ``n_tokens == 0``
    raises ValueError because the mean is undefined. A negative or NaN total
    also raises: an NLL of discrete tokens is >= 0, so a negative one almost
    always means log-likelihoods were passed instead of their negation. An
    overflowing exp returns inf rather than raising.
    """
    n_tokens = operator.index(n_tokens)
    if n_tokens <= 0:
        raise ValueError(f"perplexity needs at least one scored token, got n_tokens={n_tokens}")
    total_nll = float(total_nll)
    if math.isnan(total_nll):
        raise ValueError("total_nll is NaN")
    if total_nll < 0:
        raise ValueError(
            f"total_nll must be >= 0 (a negative log-likelihood), got {total_nll}; "
            "did you pass the log-likelihood instead?"
        )
    try:
        return math.exp(total_nll / n_tokens)
    except OverflowError:
        return math.inf
