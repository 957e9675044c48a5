"""The space the geometry is measured in: the bridge's own (per-channel standardised) and the one-scalar one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dihal.bridge.standardize import Standardizer
from dihal.geometry.channels import dominant_channel
from dihal.geometry.locate import locate
from dihal.geometry.outliers import apply_rule
from dihal.geometry.proxies import PROXIES, ProxyContext, compute_layer_proxies
from dihal.geometry.spaces import SPACES, to_space
from dihal.geometry.stability import document_counts, layer_replicates
from dihal.spec.geometry import DEFAULT_SPACE, SPACE_NAMES

WEIGHTS = {"kappa": 1.0, "sigma": 1.0, "erank": -1.0}
SMALL = dict(anchors=128, k=8, pairs=512, seed=0)
BOTH = dict(spaces=("bridge", "scalar"))


def test_the_torch_free_names_match_the_registry():
    assert set(SPACE_NAMES) == set(SPACES) and DEFAULT_SPACE == "bridge"


def test_bridge_space_is_the_standardizer_transform_on_the_same_states():
    """One code path: a drift in either (ddof, eps floor, outlier handling) fails here."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 24)) * np.geomspace(0.1, 50, 24) + rng.normal(size=24) * 10  # float32 stats: 1e-5
    x[:, 5] = 3.0  # a constant channel: the std floor, not a division by zero
    x[11] *= 400  # a massive activation: the rule handles it before either sees the states
    kept, _, _ = apply_rule(x, "drop", 20.0)
    ours = to_space(kept, "bridge").numpy()
    std = Standardizer.fit(torch.from_numpy(kept))
    theirs = std.transform(torch.from_numpy(kept)).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
    assert np.allclose(ours.var(axis=0)[np.arange(24) != 5], 1.0)


def test_scalar_space_is_todays_normalisation():
    from dihal.geometry.normalize import normalize_states

    x = np.random.default_rng(1).normal(size=(500, 8)) * np.arange(1, 9)
    assert torch.equal(to_space(x, "scalar"), normalize_states(x))
    with pytest.raises(ValueError, match="unknown geometry space 'whitened'"):
        to_space(x, "whitened")


def rogue_layers(n_docs: int = 60, per_doc: int = 30, d: int = 16, seed: int = 0):
    """Five layers of the same isotropic-ish cloud; in layer 2 a frequent token lights channel 3 so strongly that it
    carries ~80% of the layer's raw variance. Layer 4 is genuinely low-rank in every channel."""
    rng = np.random.default_rng(seed)
    n = n_docs * per_doc
    doc = np.repeat(np.arange(n_docs), per_doc)
    tokens = rng.integers(10, 200, size=n)
    tokens[rng.random(n) < 0.1] = 7  # " the": 10% of the tokens
    layers = {}
    for layer in range(1, 6):
        x = rng.normal(size=(n, d)) + 2.0
        if layer == 4:
            basis = np.linalg.qr(rng.normal(size=(d, 4)))[0]
            x = rng.normal(size=(n, 4)) @ basis.T * 2 + 0.3 * rng.normal(size=(n, d))
        layers[layer] = x
    layers[2][tokens == 7, 3] += 26.0
    return layers, doc, tokens


def test_a_planted_rogue_channel_decides_the_scalar_space_but_not_the_bridge_space():
    layers, doc, tokens = rogue_layers()
    var = layers[2].var(axis=0)
    assert var[3] / var.sum() > 0.75
    res = locate(
        list(layers),
        layers.get,
        doc,
        weights=WEIGHTS,
        n_boot=0,
        tokens=tokens,
        token_text={7: " the"},
        space="bridge",
        **BOTH,
        **SMALL,
    )
    assert res.spaces["scalar"].table.best() == 2  # one channel makes layer 2 look low-rank and stiff
    assert res.spaces["bridge"].table.best() == 4  # standardised, layer 2 is as isotropic as the rest
    assert res.table.best() == 4 and res.space == "bridge"
    ch = res.channels[2]
    assert ch["channel"] == 3 and ch["tokens"][0]["id"] == 7 and ch["tokens"][0]["text"] == " the"
    assert ch["tokens"][0]["variance_share"] > 0.8 and ch["tokens"][0]["count"] == int((tokens == 7).sum())
    assert res.spaces["scalar"].shape[2]["top_channel_share"] > 0.75
    assert res.spaces["bridge"].shape[2]["top_channel_share"] == pytest.approx(1 / 16, rel=1e-6)


def test_each_space_alone_gives_the_numbers_it_gives_beside_the_other():
    layers, doc, _ = rogue_layers()
    both = locate(list(layers), layers.get, doc, weights=WEIGHTS, n_boot=40, space="scalar", **BOTH, **SMALL)
    alone = locate(
        list(layers), layers.get, doc, weights=WEIGHTS, n_boot=40, spaces=("scalar",), space="scalar", **SMALL
    )
    assert both.table.score == alone.table.score
    assert both.stability.share == alone.stability.share and both.stability.lo == alone.stability.lo


def test_dominant_channel_ranks_by_mean_absolute_activation_and_skips_rare_tokens():
    ids = np.append(np.arange(100) % 4, 99)  # token 99 once
    x = np.zeros((101, 2))
    x[ids == 1, 0] = 5.0
    x[ids == 2, 0] = -3.0
    x[100, 0] = 50.0  # the rare token's one large value says nothing about the channel
    out = dominant_channel(x, ids, 0, {1: "a"})
    assert [t["id"] for t in out["tokens"]] == [1, 2, 0] and out["tokens"][0]["text"] == "a"
    assert out["tokens"][0]["count"] == 25 and out["tokens"][1]["text"] is None
    with pytest.raises(ValueError, match="token ids"):
        dominant_channel(x, ids[:10], 0)


def test_bridge_space_fast_replicates_track_full_recomputation():
    """A second, independent path for the bootstrap in the bridge space: each resample re-standardised per channel
    and every proxy recomputed, against the fast replicates (which hold the full sample's channel statistics)."""
    rng = np.random.default_rng(4)
    n_docs, d = 40, 24
    doc = np.repeat(np.arange(n_docs), 40)
    x = rng.normal(size=(len(doc), d)) * np.linspace(0.3, 2, d) + rng.normal(size=(n_docs, d))[doc]
    ctx = ProxyContext.from_states(x, anchors=256, k=8, pairs=1024, seed=0, space="bridge")
    for name in WEIGHTS:
        PROXIES[name].fn(ctx)
    counts = document_counts(n_docs, 30, seed=0)
    fast = layer_replicates(ctx, doc, counts, list(WEIGHTS))
    full = {name: [] for name in WEIGHTS}
    for b, c in enumerate(counts):
        idx = np.concatenate([np.flatnonzero(doc == j) for j in range(n_docs) for _ in range(int(c[j]))])
        vals = compute_layer_proxies(
            x[idx], proxies=["sigma", "erank"], anchors=256, k=8, pairs=1024, seed=b, space="bridge"
        )
        vals.update(
            compute_layer_proxies(
                x[c[doc] > 0], proxies=["kappa"], anchors=256, k=8, pairs=1024, seed=b, space="bridge"
            )
        )
        for name in WEIGHTS:
            full[name].append(vals[name])
    assert np.mean(fast["erank"]) == pytest.approx(np.mean(full["erank"]), rel=0.02)
    assert np.mean(fast["sigma"]) == pytest.approx(np.mean(full["sigma"]), rel=0.02)
    assert 0.5 < np.std(fast["kappa"]) / np.std(full["kappa"]) < 2.0
