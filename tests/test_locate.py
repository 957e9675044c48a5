"""Massive activations, the document bootstrap and ℓ*'s stability, on synthetic layers with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from dihal.geometry.locate import locate
from dihal.geometry.outliers import apply_rule, top_share
from dihal.geometry.proxies import PROXIES, ProxyContext, compute_layer_proxies
from dihal.geometry.stability import document_counts, layer_replicates, stability, weighted_median

WEIGHTS = {"kappa": 1.0, "sigma": 1.0, "erank": -1.0}
SMALL = dict(anchors=128, k=8, pairs=512, seed=0)
# The synthetic layers differ by per-channel spread, which the bridge space standardises away; these tests are about
# the outlier rule and the bootstrap, so they measure in the one-scalar space (tests/test_spaces.py: the bridge space).
SCALAR = dict(spaces=("scalar",), space="scalar")


def synthetic_layers(n_docs: int = 40, per_doc: int = 25, d: int = 16, seed: int = 0):
    """Four layers; layer 3 is the most anisotropic (low erank, high stiffness): the true argmax."""
    rng = np.random.default_rng(seed)
    doc = np.repeat(np.arange(n_docs), per_doc)
    spreads = {1: np.ones(d), 2: np.linspace(0.5, 1.5, d), 3: np.geomspace(0.05, 3.0, d), 4: np.ones(d)}
    layers = {}
    for layer, sd in spreads.items():
        centres = rng.normal(size=(n_docs, d)) * 0.3 * sd
        layers[layer] = rng.normal(size=(len(doc), d)) * sd + centres[doc] + 5.0
    return layers, doc


def planted(layers: dict, layer: int = 4, factor: float = 1000.0) -> dict:
    out = {k: v.copy() for k, v in layers.items()}
    out[layer][7] *= factor  # one massive-activation state
    return out


def test_one_planted_state_decides_argmax_only_without_the_rule():
    layers, doc = synthetic_layers()
    assert locate(list(layers), layers.get, doc, weights=WEIGHTS, n_boot=0, **SMALL, **SCALAR).table.best() == 3
    bad = planted(layers)
    kept = locate(list(bad), bad.get, doc, weights=WEIGHTS, n_boot=0, rule="keep", **SMALL, **SCALAR)
    assert kept.table.best() == 4  # the single state collapses layer 4's erank and wins G
    default = locate(list(bad), bad.get, doc, weights=WEIGHTS, n_boot=0, **SMALL, **SCALAR)
    assert default.table.best() == 3
    rep = default.outliers[4]
    assert rep["n_over_threshold"] == 1 and rep["n_kept"] == len(doc) - 1
    assert rep["top_share_before"] > 0.9 > 0.05 > rep["top_share_after"]
    assert kept.outliers[4]["top_share_after"] > 0.9  # the diagnostic reports it when the rule keeps it
    # clip keeps the state at 20x the median *raw* norm, which (raw norms include the mean offset) can still
    # carry most of the centred variance: weaker than drop, which is why drop is the default.
    clipped = locate(list(bad), bad.get, doc, weights=WEIGHTS, n_boot=0, rule="clip", **SMALL, **SCALAR)
    assert clipped.outliers[4]["n_kept"] == len(doc)
    assert clipped.outliers[4]["top_share_after"] < kept.outliers[4]["top_share_after"]


def test_outlier_rule_basics():
    x = np.random.default_rng(1).normal(size=(2000, 8)) + 3
    assert top_share(x) < 0.01  # Gaussian cloud: the top 0.1% carry about their share
    out, keep, rep = apply_rule(x, "drop", 20.0)
    assert keep.all() and rep.n_over_threshold == 0 and out is not None
    x[0] *= 500
    out, keep, rep = apply_rule(x, "clip", 20.0)
    assert keep.all() and np.linalg.norm(out[0]) == pytest.approx(20.0 * np.median(np.linalg.norm(x, axis=1)))
    with pytest.raises(ValueError, match="one of"):
        apply_rule(x, "median", 20.0)
    with pytest.raises(ValueError, match="> 1"):
        apply_rule(x, "drop", 0.5)


def test_weighted_median_matches_numpy_with_unit_weights():
    rng = np.random.default_rng(2)
    for n in (5, 6, 101):
        v = rng.normal(size=n)
        assert weighted_median(v, np.ones((1, n)))[0] == pytest.approx(np.median(v))
        w = rng.integers(0, 3, size=(1, n)).astype(float)
        w[0, 0] = 1
        assert weighted_median(v, w)[0] == pytest.approx(np.median(np.repeat(v, w[0].astype(int))))
    assert np.isnan(weighted_median(np.arange(3.0), np.zeros((1, 3)))[0])


@pytest.mark.parametrize("d", [12, 48])  # below and above the Ritz rank
def test_unit_weights_reproduce_the_point_estimate(d):
    rng = np.random.default_rng(3)
    doc = np.repeat(np.arange(30), 40)
    x = rng.normal(size=(len(doc), d)) * np.geomspace(0.1, 2, d) + rng.normal(size=(30, d))[doc]
    ctx = ProxyContext.from_states(x, **SMALL, space="scalar")
    names = list(PROXIES)
    point = {}
    for name in names:
        point.update(PROXIES[name].fn(ctx))
    reps = layer_replicates(ctx, doc, np.ones((1, 30)), names)
    for name in names:
        assert reps[name][0] == pytest.approx(point[name], rel=1e-6), name


def test_fast_replicates_track_full_recomputation():
    """The fast replicates against recomputing the proxies on each resample (a second, independent path).

    erank is exact below the Ritz rank; sigma's replicate mean must match the recomputed
    mean (the convexity bias of a diagonal-only P was ~10%); kappa's spread must match.
    """
    rng = np.random.default_rng(4)
    n_docs, d = 40, 24
    doc = np.repeat(np.arange(n_docs), 40)
    x = rng.normal(size=(len(doc), d)) * np.linspace(0.3, 2, d) + rng.normal(size=(n_docs, d))[doc]
    ctx = ProxyContext.from_states(x, anchors=256, k=8, pairs=1024, seed=0, space="scalar")
    for name in WEIGHTS:
        PROXIES[name].fn(ctx)
    counts = document_counts(n_docs, 30, seed=0)
    fast = layer_replicates(ctx, doc, counts, list(WEIGHTS))
    full = {name: [] for name in WEIGHTS}
    for b, c in enumerate(counts):
        idx = np.concatenate([np.flatnonzero(doc == j).repeat(1) for j in range(n_docs) for _ in range(int(c[j]))])
        vals = compute_layer_proxies(
            x[idx], proxies=["sigma", "erank"], anchors=256, k=8, pairs=1024, seed=b, space="scalar"
        )
        vals.update(
            compute_layer_proxies(
                x[c[doc] > 0], proxies=["kappa"], anchors=256, k=8, pairs=1024, seed=b, space="scalar"
            )
        )
        for name in WEIGHTS:
            full[name].append(vals[name])
    np.testing.assert_allclose(fast["erank"], full["erank"], rtol=1e-9)
    assert np.mean(fast["sigma"]) == pytest.approx(np.mean(full["sigma"]), rel=0.02)
    assert 0.5 < np.std(fast["kappa"]) / np.std(full["kappa"]) < 2.0


def test_stability_shares_sum_to_one_and_a_dominant_layer_takes_them_all():
    layers, doc = synthetic_layers()
    res = locate(list(layers), layers.get, doc, weights=WEIGHTS, n_boot=60, **SMALL, **SCALAR)
    st = res.stability
    assert st is not None and len(st.g) == 60
    assert sum(st.share) == pytest.approx(1.0)
    assert st.share[st.layers.index(3)] >= 0.95
    for g, lo, hi in zip(res.table.score, st.lo, st.hi):
        assert lo <= hi and lo - 1.0 < g < hi + 1.0


def test_two_equal_layers_split_the_argmax():
    rng = np.random.default_rng(5)
    per = {layer: {"kappa": rng.normal(size=400) + (5 if layer in (2, 3) else 0)} for layer in (1, 2, 3, 4)}
    st = stability(per, {"kappa": 1.0})
    assert sum(st.share) == pytest.approx(1.0)
    assert 0.3 < st.share[1] < 0.7 and 0.3 < st.share[2] < 0.7 and st.share[0] < 0.01
