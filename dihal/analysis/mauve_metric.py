"""MAUVE of generated text against held-out real text, on the judge backbone's own features, with an interval.

MAUVE (Pillutla et al., NeurIPS 2021) compares two sets of texts as distributions: it embeds each text, quantises
the union of the embeddings into k-means buckets, and integrates the divergence frontier between the two
bucket histograms (1: indistinguishable; near 0: disjoint). It is the number the field reports next to gen PPL
because a sampler cannot buy it with low entropy: repetitive text fills few buckets and scores low however
likely the judge finds it.

**Features.** MAUVE's paper embeds a text by the last token's final hidden state of GPT-2 large. dihal has no
GPT-2 large offline, so its judge -- the unmodified backbone that already scores every row's gen PPL
(`dihal.analysis.judge`) -- supplies them from the same forward pass: h_L after the final norm (what HF reports
as the last hidden state, and what the LM head reads) at the **last position** of each `seq_len`-token sequence,
prompt included, for generated and real text alike. The last position is MAUVE's own choice, and in a causal
LM it is the only state that has read the whole text; a mean over positions was measured too (on 64 KJV blocks
of 64 tokens: real vs real 1.0 and 0.87, real vs shuffled tokens 0.01) and separates shuffled text as well as
the last position does (0.99 / 0.97 against 0.07 / 0.04), so MAUVE's convention is kept.

**Settings** (`SETTINGS`, one place): the `mauve-text` defaults, pinned here so a package update cannot move
them silently -- buckets = max(2, round(min(n_p, n_q) / 10)) (MAUVE's n/10 rule: 2 buckets at 16 samples), PCA
keeping 90% of the variance after l2 normalisation, k-means best of 5 runs of at most 500 iterations, seed 25,
scaling factor c = 5, 25 mixture weights on the frontier.

**Ties.** `mauve-text` 0.4.0 integrates the frontier after an unstable argsort; when the two histograms are
equal every interior point of the frontier is (1, 1), and the area comes out 1 or 0.75 depending on how the
tie with the end point (1, 0) sorts. `mauve_score` takes the package's frontier and integrates it ordered by x
ascending, then y descending (the frontier is monotone, so that is its order), which gives 1 for equal
histograms and the package's own number otherwise (tests/test_mauve.py checks both).

**Interval.** 95%, over samples: each replicate draws n_p real texts and n_q generated texts with replacement
and recomputes MAUVE; the interval is the symmetric bootstrap interval around the estimate
(`dihal.analysis.intervals.symmetric_interval`, clipped to [0, 1]), which contains the estimate by construction
and widens rather than shifts where resampling biases MAUVE (duplicated samples make the histograms lumpier).
`N_BOOT` replicates: one MAUVE on 16 + 16 texts took ~50 ms on a loaded 2-core machine (PCA and k-means), so
an interval costs ~10 s per row there; at 16 samples MAUVE has 2 buckets and its interval is wide (docs/method.md
gives the widths measured at 16 and 64 samples).
"""

from __future__ import annotations

import contextlib
import os
import sys

import numpy as np

from dihal.analysis.intervals import symmetric_interval

__all__ = ["CI", "MAUVE_KEYS", "N_BOOT", "SETTINGS", "buckets", "mauve_interval", "mauve_score"]

SETTINGS = {
    "kmeans_explained_var": 0.9,
    "kmeans_num_redo": 5,
    "kmeans_max_iter": 500,
    "mauve_scaling_factor": 5,
    "divergence_curve_discretization_size": 25,
    "seed": 25,
}
N_BOOT = 200
CI = 0.95
MAUVE_KEYS = ("mauve", "mauve_lo", "mauve_hi")  # the estimate and its interval, as stage metrics and ledger columns


def buckets(n_p: int, n_q: int) -> int:
    """MAUVE's quantisation size: one bucket per 10 texts of the smaller set, at least 2."""
    return max(2, int(round(min(n_p, n_q) / 10)))


def _features(x, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim != 2 or len(arr) < 2:
        raise ValueError(f"MAUVE needs {name} as a (texts, dims) array of at least 2 texts, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"MAUVE's {name} hold NaN or inf: the judge's hidden states are broken")
    return arr


@contextlib.contextmanager
def _one_thread_quiet():
    """BLAS and faiss on one thread, with faiss's native stderr silenced; Python exceptions still propagate.

    One thread: PCA and k-means on a few dozen points gain nothing from more, one thread keeps the clustering
    reproducible, and a multi-threaded BLAS on a busy machine spins: a 32 x 576 SVD took 1.4 s with OpenBLAS's
    2 threads on a loaded 2-core box and 7 ms with one. The limit covers only libraries already loaded, so
    `mauve` (which loads sklearn, scipy and faiss) is imported first. Quiet: faiss warns on every k-means with
    fewer than 39 points per centroid, which MAUVE's n/10 rule always has by design."""
    import faiss
    import mauve  # noqa: F401  (loads the BLAS that threadpool_limits must see)
    from threadpoolctl import threadpool_limits

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null, threadpool_limits(1):
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        faiss.omp_set_num_threads(threads)


def _frontier_area(curve: np.ndarray) -> float:
    """MAUVE's area under the divergence frontier, with ties ordered along the frontier (see the module doc)."""
    from sklearn.metrics import auc

    x, y = np.asarray(curve, dtype=np.float64).T
    by_x = np.lexsort((-y, x))
    by_y = np.lexsort((-x, y))
    return float(0.5 * (auc(x[by_x], y[by_x]) + auc(y[by_y], x[by_y])))


def _score(p: np.ndarray, q: np.ndarray) -> float:
    import mauve

    out = mauve.compute_mauve(p_features=p, q_features=q, num_buckets=buckets(len(p), len(q)), **SETTINGS)
    return _frontier_area(out.divergence_curve)


def mauve_score(p_features, q_features) -> float:
    """MAUVE of texts q (generated) against texts p (real), from (texts, dims) feature arrays."""
    p, q = _features(p_features, "p_features"), _features(q_features, "q_features")
    with _one_thread_quiet():
        return _score(p, q)


def mauve_interval(p_features, q_features, seed: int, n_boot: int = N_BOOT, ci: float = CI) -> dict[str, float]:
    """{'mauve', 'mauve_lo', 'mauve_hi'}: the estimate and its bootstrap interval over both sets' samples.

    `seed` seeds the resampling (numpy), so the same features and seed give the same interval."""
    p, q = _features(p_features, "p_features"), _features(q_features, "q_features")
    rng = np.random.default_rng([seed, 0x6D617576])  # 'mauv': a stream of its own
    with _one_thread_quiet():
        estimate = _score(p, q)
        replicates = [
            _score(p[rng.integers(0, len(p), len(p))], q[rng.integers(0, len(q), len(q))]) for _ in range(n_boot)
        ]
    lo, hi, _ = symmetric_interval(np.asarray(replicates), estimate, ci, bounds=(0.0, 1.0))
    return dict(zip(MAUVE_KEYS, (estimate, lo, hi)))
