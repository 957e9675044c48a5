"""Claim C1: does the geometry score G_l predict the bridge validation loss?

METHOD.md ("Evaluate") asks, across candidate layers, for Spearman rho and
Kendall tau between G_l and bridge_val_loss_l (C1 predicts rho < 0), a
bias-robust bootstrap 95% interval over seeds, validation batches and geometry
documents, a permutation p-value over layers, and whether the selected layer
l* is among the k best layers by loss. This module computes that from plain
numbers, so it does not depend on how the sweep was run or stored.

Resampling. The per-layer loss is a mean over training seeds and validation
batches, and G_l is estimated from a sample of documents: all three move the
ranking of layers. Each replicate draws seeds and batches with replacement
and, when geometry replicates are given, one of them; the *same* draws serve
every layer, because the layers share seeds, batches and documents (paired),
and resampling them independently would inflate the interval. Seeds and
batches are drawn S-1 of S and B-1 of B (:func:`intervals.draw_weights`): with
3 seeds the ordinary bootstrap understates the seed variance by a third.

Why a symmetric interval, not BCa or the percentile. The coefficient is a sum
of sign(mean_i - mean_j) terms over layer pairs. A replicate adds resampling
noise to already noisy means, flips close pairs and is pulled toward 0, so the
percentile interval sits on the zero side of the estimate and, with many
layers and a strong relation, can exclude it. BCa (and the basic interval)
*shift* the interval by the bootstrap bias, but that bias carries the sign of
each observed pair, right or wrong, so the shift amplifies the estimate's
chance errors rather than removing its bias: z0 varies between data sets more
than the bias it estimates. The symmetric interval, estimate +- the ci
quantile of |theta* - theta_hat| clipped to [-1, 1], widens by the size of
the bias instead of guessing its direction, and always contains the estimate.
Evidence, 1000 synthetic sweeps per design (layer-specific seed and batch
noise, true rho = Spearman(G, true mean loss), n_boot=400), coverage of a
nominal 95% interval:

    layers, seeds, batches, relation   percentile (old)   BCa     symmetric
    9, 3, 4, moderate                  0.902              0.771   0.951
    17, 3, 8, moderate                 0.881              0.801   0.937
    17, 3, 8, strong                   0.792              0.776   0.944
    29, 3, 8, strong                   0.702              0.708   0.943
    13, 3, 6, weak                     0.891              0.781   0.925
    17, 1, 8, moderate                 0.892              0.789   0.928
    17, 2, 8, strong                   0.749              0.738   0.933

(percentile and BCa with n-of-n draws; BCa acceleration from delete-one
jackknives per factor, scipy's multi-sample formula. BCa with n-1 draws
reached 0.74-0.86, an equal-tailed studentized interval 0.83-0.91.) With a
noisy G (60 documents), holding G fixed covered 0.13-0.81 and resampling it
jointly 0.88-0.92: the interval can still under-cover when the attenuation
bias dwarfs the spread. The tests re-check new and old coverage on one design.

The permutation p-value shuffles G across layers against the observed mean
losses, so it tests "no association" without any resampling of the loss.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from dihal.analysis.intervals import draw_weights, permutation_pvalue, permutations, symmetric_interval

__all__ = ["CorrelationResult", "correlate"]

INTERVAL_METHOD = "symmetric"


@dataclass(frozen=True)
class CorrelationResult:
    """Outcome of :func:`correlate`; all fields are plain Python scalars or strings.

    ``spearman_lo/hi`` and ``kendall_lo/hi`` are symmetric bootstrap bounds at
    level ``ci`` (``interval_method``; NaN when the point estimate or every
    replicate is undefined). The point estimates are NaN when the scores or
    the mean losses are constant across layers, where a rank correlation is
    undefined. ``selected_rank`` is 1 + the number of layers with a strictly
    lower mean loss, so a layer tied for best ranks 1. ``best_layer`` breaks
    ties toward the shallower layer. ``n_boot_spearman``/``n_boot_kendall``
    count the replicates that survived (undefined ones are dropped), so a
    reader can tell a trustworthy interval from one resting on a handful of
    replicates. ``spearman_p``/``kendall_p`` are two-sided permutation
    p-values over ``n_perm`` permutations of G across layers (all n_layers!
    of them, exactly, when ``perm_exact``). ``n_geometry`` is the number of
    geometry replicates the interval drew from (0: G held fixed) and
    ``resampled`` says in one sentence what the interval resampled.
    """

    n_layers: int
    n_seeds: int
    n_batches: int
    spearman_rho: float
    spearman_lo: float
    spearman_hi: float
    kendall_tau: float
    kendall_lo: float
    kendall_hi: float
    selected_layer: int
    selected_rank: int
    best_layer: int
    in_top_k: bool
    top_k: int
    ci: float = 0.95
    n_boot: int = 0
    n_boot_spearman: int = 0
    n_boot_kendall: int = 0
    interval_method: str = INTERVAL_METHOD
    spearman_p: float = math.nan
    kendall_p: float = math.nan
    n_perm: int = 0
    perm_exact: bool = False
    n_geometry: int = 0
    resampled: str = ""

    def to_dict(self) -> dict:
        """Field name -> value, for run records and reports (NaN stays a float NaN)."""
        return dataclasses.asdict(self)


def _collect(
    scores: Mapping[int, float],
    losses: Mapping[tuple[int, int], Sequence[float]],
) -> tuple[list[int], list[int], np.ndarray, np.ndarray]:
    """Validate the inputs and lay the losses out as an (L, S, B) array.

    Every error names what is missing or inconsistent, because the usual cause
    is a sweep with a crashed or unfinished (layer, seed) run, and the user
    needs to know which one to rerun.
    """
    layers = sorted(int(layer) for layer in scores)
    if len(layers) < 3:
        raise ValueError(
            f"need scores for >= 3 layers to correlate (got {len(layers)}: {layers}); "
            "with 2 layers any rank correlation is trivially +-1"
        )
    g = np.array([float(scores[layer]) for layer in layers], dtype=np.float64)
    if not np.all(np.isfinite(g)):
        bad = [layer for layer, v in zip(layers, g) if not math.isfinite(v)]
        raise ValueError(f"non-finite geometry score for layers {bad}")

    keys: list[tuple[int, int]] = []
    for key in losses:
        if not (isinstance(key, tuple) and len(key) == 2):
            raise ValueError(f"losses keys must be (layer, seed) pairs, got {key!r}")
        keys.append((int(key[0]), int(key[1])))
    layer_set = set(layers)
    extra = sorted({layer for layer, _ in keys} - layer_set)
    if extra:
        raise ValueError(f"losses given for layers without a geometry score: {extra}")
    seeds = sorted({seed for _, seed in keys})
    if not seeds:
        raise ValueError("losses is empty: no (layer, seed) runs to correlate with")
    present = set(keys)
    missing = [(layer, seed) for layer in layers for seed in seeds if (layer, seed) not in present]
    if missing:
        raise ValueError(f"every layer needs losses for the same seeds {seeds}; missing (layer, seed) runs: {missing}")

    rows = {k: np.asarray(v, dtype=np.float64).reshape(-1) for k, v in losses.items()}
    rows = {(int(k[0]), int(k[1])): v for k, v in rows.items()}
    lengths = {k: len(v) for k, v in rows.items()}
    if len(set(lengths.values())) != 1:
        by_len: dict[int, list[tuple[int, int]]] = {}
        for k in sorted(lengths):
            by_len.setdefault(lengths[k], []).append(k)
        raise ValueError(
            f"every (layer, seed) run needs the same number of validation batches; batch counts -> runs: {by_len}"
        )
    n_batches = next(iter(lengths.values()))
    if n_batches == 0:
        raise ValueError("loss sequences are empty: need >= 1 validation batch per run")

    arr = np.stack([np.stack([rows[(layer, seed)] for seed in seeds]) for layer in layers])
    if not np.all(np.isfinite(arr)):
        bad = sorted({(layers[i], seeds[j]) for i, j, _ in zip(*np.nonzero(~np.isfinite(arr)))})
        raise ValueError(f"non-finite bridge_val_loss in runs (layer, seed): {bad}")
    return layers, seeds, g, arr


def _collect_replicates(layers: list[int], score_replicates: Mapping[int, Sequence[float]] | None) -> np.ndarray | None:
    """Validate geometry replicates and lay them out as an (R, L) array (None if not given).

    Replicate r of every layer must come from the same document resample, so
    every layer needs the same R; the caller's mapping is checked for exactly
    the scored layers, R >= 1, and finite values, with errors that name the
    offending layers.
    """
    if score_replicates is None:
        return None
    given = {int(layer) for layer in score_replicates}
    missing, extra = sorted(set(layers) - given), sorted(given - set(layers))
    if missing or extra:
        raise ValueError(
            f"score_replicates must cover exactly the scored layers {layers}; missing {missing}, extra {extra}"
        )
    rows = {int(k): np.asarray(v, dtype=np.float64).reshape(-1) for k, v in score_replicates.items()}
    lengths = {layer: len(rows[layer]) for layer in layers}
    if len(set(lengths.values())) != 1 or lengths[layers[0]] < 1:
        raise ValueError(
            "score_replicates need the same number R >= 1 of replicates for every layer "
            f"(replicate r of all layers comes from one document resample); lengths: {lengths}"
        )
    reps = np.stack([rows[layer] for layer in layers], axis=1)
    if not np.all(np.isfinite(reps)):
        bad = [layer for i, layer in enumerate(layers) if not np.all(np.isfinite(reps[:, i]))]
        raise ValueError(f"non-finite score_replicates for layers {bad}")
    return reps


def _spearman_rows(g: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Spearman rho along the last axis (broadcasting leading axes); NaN for constant input.

    Pearson correlation of average ranks, which is scipy's definition
    (checked against scipy.stats.spearmanr in the tests), vectorised over
    replicates because calling scipy per replicate dominated the runtime.
    """
    gr, mr = stats.rankdata(g, axis=-1), stats.rankdata(m, axis=-1)
    gr = gr - gr.mean(axis=-1, keepdims=True)
    mr = mr - mr.mean(axis=-1, keepdims=True)
    return _ratio(np.sum(gr * mr, axis=-1), np.sum(gr * gr, axis=-1) * np.sum(mr * mr, axis=-1))


def _kendall_rows(g: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Kendall tau-b along the last axis (broadcasting leading axes); NaN for constant input.

    tau-b = sum(sx * sy) / sqrt(sum(sx^2) * sum(sy^2)) over layer pairs, with
    sx, sy the signs of the pairwise differences: sum(sx^2) counts pairs not
    tied in x, which is scipy's (P + Q + U) denominator term.
    """
    i, j = np.triu_indices(g.shape[-1], k=1)
    sx, sy = np.sign(g[..., i] - g[..., j]), np.sign(m[..., i] - m[..., j])
    return _ratio(np.sum(sx * sy, axis=-1), np.sum(sx * sx, axis=-1) * np.sum(sy * sy, axis=-1))


def _ratio(num: np.ndarray, den_squared: np.ndarray) -> np.ndarray:
    """num / sqrt(den_squared) clipped to [-1, 1]; NaN where the denominator is 0 (constant input)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip(np.where(den_squared > 0, num / np.sqrt(den_squared), np.nan), -1.0, 1.0)


def _bootstrap(
    rng: np.random.Generator, arr: np.ndarray, g: np.ndarray, g_reps: np.ndarray | None, n_boot: int
) -> tuple[np.ndarray, np.ndarray]:
    """(spearman, kendall) replicates, each of shape (n_boot,).

    Seeds, then batches, then geometry replicate indices are drawn from
    ``rng`` in that order, so giving geometry replicates leaves the seed and
    batch draws unchanged (and replicates identical to G reproduce the G-fixed
    interval exactly). Weighted means avoid an (n_boot, L, S, B) array.
    """
    _, n_seeds, n_batches = arr.shape
    w_seed = draw_weights(rng, n_boot, n_seeds)
    w_batch = draw_weights(rng, n_boot, n_batches)
    means = np.einsum("lsb,rs,rb->rl", arr, w_seed, w_batch)
    g_boot = g[None, :] if g_reps is None else g_reps[rng.integers(0, g_reps.shape[0], size=n_boot)]
    return _spearman_rows(g_boot, means), _kendall_rows(g_boot, means)


def _permutation_test(
    rng: np.random.Generator, g: np.ndarray, mean_loss: np.ndarray, rho: float, tau: float, n_perm: int
) -> tuple[float, float, int, bool]:
    """Two-sided permutation p-values for rho and tau: G shuffled across layers.

    Under "no association" every assignment of the scores to layers is
    equally likely, whatever the noise in the losses, so this needs no model
    of seeds or batches. Chunks of 2048 permutations bound the memory of the
    (permutations x layer pairs) Kendall arrays. Returns (spearman_p,
    kendall_p, permutations used, exact).
    """
    perms, exact = permutations(rng, g.size, n_perm)
    chunks = np.array_split(perms, max(1, perms.shape[0] // 2048))
    rho_null = np.concatenate([_spearman_rows(g[c], mean_loss[None, :]) for c in chunks])
    tau_null = np.concatenate([_kendall_rows(g[c], mean_loss[None, :]) for c in chunks])
    p_rho, p_tau = permutation_pvalue(rho_null, rho, exact), permutation_pvalue(tau_null, tau, exact)
    return p_rho, p_tau, int(perms.shape[0]), exact


def _describe(n_seeds: int, n_batches: int, n_geometry: int) -> str:
    """One plain-English sentence saying what the interval resampled."""
    seeds = f"{n_seeds} seeds" if n_seeds > 1 else "1 seed (so seed-to-seed variance is not covered)"
    batches = (
        f"{n_batches} validation batches (blocks drawn round-robin over documents)"
        if n_batches > 1
        else "1 validation batch (so batch-to-batch variance is not covered)"
    )
    if n_geometry == 0:
        return f"{seeds} and {batches}, jointly; G held fixed."
    if n_geometry == 1:
        geometry = "1 geometry document-resample (so geometry variance is not covered)"
    else:
        geometry = f"{n_geometry} geometry document-resamples"
    return f"{seeds}, {batches} and {geometry}, jointly."


def correlate(
    scores: Mapping[int, float],
    losses: Mapping[tuple[int, int], Sequence[float]],
    *,
    selected_layer: int,
    n_boot: int = 1000,
    top_k: int = 3,
    seed: int = 0,
    ci: float = 0.95,
    score_replicates: Mapping[int, Sequence[float]] | None = None,
    n_perm: int = 10000,
) -> CorrelationResult:
    """Rank-correlate geometry scores with bridge validation loss across layers.

    scores: G per layer. losses[(layer, seed)] = per-validation-batch
    bridge_val_loss values; every key must have the same number of batches B
    and every scored layer the same set of seeds, else ValueError naming what
    is missing. Needs >= 3 layers (ValueError otherwise).
    score_replicates: optional, per layer R >= 1 bootstrap replicates of G
    from a document bootstrap of the geometry sample, replicate r of every
    layer from the same resample (same layers as ``scores``, same R, finite;
    ValueError otherwise).

    Point estimate: Spearman rho and Kendall tau (tau-b, which handles ties)
    between G_l and the mean loss per layer (mean over seeds and batches).
    C1 predicts rho < 0.

    Interval (``interval_method`` "symmetric", see the module docstring for
    why): ``n_boot`` replicates, each drawing S-1 of S seeds and B-1 of B
    batches with replacement (all of them when there is only one), the same
    draws for every layer, plus one geometry replicate index when
    ``score_replicates`` is given, whose G then serves all layers. The bounds
    are estimate +- the ``ci`` quantile of |replicate - estimate|, clipped to
    [-1, 1], so they always contain the estimate. Replicates with an undefined
    coefficient are dropped (counted in ``n_boot_spearman``/``n_boot_kendall``).

    p-values: two-sided permutation test over layers, ``n_perm`` random
    permutations of G against the mean losses, or all L! when L! <= n_perm.

    Deterministic for a given ``seed``: the bootstrap and the permutations
    use separate child streams of it, so changing ``n_perm`` does not change
    the interval. Also reports the selected layer's rank by mean loss (1 =
    lowest, ties share the better rank), the best layer and whether the
    selected layer is within ``top_k``.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if n_perm < 1:
        raise ValueError(f"n_perm must be >= 1, got {n_perm}")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    layers, seeds, g, arr = _collect(scores, losses)
    g_reps = _collect_replicates(layers, score_replicates)
    selected_layer = int(selected_layer)
    if selected_layer not in layers:
        raise ValueError(f"selected_layer {selected_layer} has no geometry score (layers {layers})")
    n_layers, n_seeds, n_batches = arr.shape

    mean_loss = arr.mean(axis=(1, 2))
    rho = float(_spearman_rows(g, mean_loss))
    tau = float(_kendall_rows(g, mean_loss))

    boot_rng, perm_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    boot_rho, boot_tau = _bootstrap(boot_rng, arr, g, g_reps, n_boot)
    s_lo, s_hi, s_n = symmetric_interval(boot_rho, rho, ci)
    k_lo, k_hi, k_n = symmetric_interval(boot_tau, tau, ci)
    rho_p, tau_p, perms_used, exact = _permutation_test(perm_rng, g, mean_loss, rho, tau, n_perm)
    n_geometry = 0 if g_reps is None else int(g_reps.shape[0])

    sel = layers.index(selected_layer)
    selected_rank = 1 + int(np.sum(mean_loss < mean_loss[sel]))
    best_layer = layers[int(np.argmin(mean_loss))]  # argmin: first (shallowest) on ties

    return CorrelationResult(
        n_layers=int(n_layers),
        n_seeds=int(n_seeds),
        n_batches=int(n_batches),
        spearman_rho=rho,
        spearman_lo=s_lo,
        spearman_hi=s_hi,
        kendall_tau=tau,
        kendall_lo=k_lo,
        kendall_hi=k_hi,
        selected_layer=selected_layer,
        selected_rank=selected_rank,
        best_layer=int(best_layer),
        in_top_k=bool(selected_rank <= top_k),
        top_k=int(top_k),
        ci=float(ci),
        n_boot=int(n_boot),
        n_boot_spearman=s_n,
        n_boot_kendall=k_n,
        interval_method=INTERVAL_METHOD,
        spearman_p=rho_p,
        kendall_p=tau_p,
        n_perm=perms_used,
        perm_exact=exact,
        n_geometry=n_geometry,
        resampled=_describe(n_seeds, n_batches, n_geometry),
    )
