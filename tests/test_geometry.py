"""Tests for the Locate half: normalisation, exact kNN, proxies and scoring.

Sizes are kept small (N <= 4000, d <= 64) so the whole file runs in seconds;
the properties checked are the ones METHOD.md's definitions imply, not
snapshots of particular outputs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dihal.geometry import (
    DEFAULT_WEIGHTS,
    PROXIES,
    LayerScores,
    ProxyContext,
    knn,
    normalize_states,
    register_proxy,
    score_layers,
    zscore,
)
from dihal.geometry import compute_layer_proxies as _compute_layer_proxies


def compute_layer_proxies(states, **kw):
    """The proxies' math is checked on covariance shapes, which the one-scalar space keeps (the bridge space
    standardises every channel, erasing the anisotropy these tests plant); tests/test_spaces.py covers it."""
    return _compute_layer_proxies(states, **{"space": "scalar", **kw})


ALL = ("kappa", "sigma", "erank", "twonn", "anisotropy")
SMALL = dict(anchors=64, k=8, pairs=256)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _subspace(n: int, d: int, rank: int, noise: float = 1e-4, seed: int = 0) -> np.ndarray:
    """Gaussian data on a random rank-dimensional subspace plus tiny isotropic noise."""
    g = _rng(seed)
    basis, _ = np.linalg.qr(g.standard_normal((d, rank)))
    return g.standard_normal((n, rank)) @ basis.T + noise * g.standard_normal((n, d))


@pytest.fixture(scope="module")
def offset_data() -> np.ndarray:
    """Anisotropic Gaussian with a common offset, so every proxy is non-trivial."""
    g = _rng(1)
    return g.standard_normal((200, 12)) * np.linspace(0.3, 2.0, 12) + 1.5


@pytest.fixture(scope="module")
def offset_base(offset_data) -> dict[str, float]:
    return compute_layer_proxies(offset_data, proxies=ALL, **SMALL)


def test_normalize_centres_and_scales_to_width():
    x = (_rng().standard_normal((500, 7)) * 30 + 4).astype(np.float32)
    y = normalize_states(x)
    assert y.dtype == torch.float64
    assert torch.allclose(y.mean(0), torch.zeros(7, dtype=torch.float64), atol=1e-12)
    assert float(y.square().sum(1).mean()) == pytest.approx(7.0, rel=1e-12)


def test_normalize_uses_one_scalar_keeping_covariance_shape():
    x = _rng().standard_normal((400, 5)) * np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    y = normalize_states(x).numpy()
    ratio = y.std(0) / (x - x.mean(0)).std(0)
    assert np.allclose(ratio, ratio[0], rtol=1e-12)


@pytest.mark.parametrize(
    "bad, error",
    [
        (np.ones((10, 3)), "identical"),
        (np.array([[0.0, 1.0], [np.nan, 2.0]]), "NaN"),
        (np.array([[0.0, np.inf], [1.0, 2.0]]), "infinite"),
        (np.zeros(5), "2-D"),
    ],
)
def test_normalize_rejects_degenerate_input(bad, error):
    with pytest.raises(ValueError, match=error):
        normalize_states(bad)


def _brute(q, p, k, exclude=None):
    d2 = torch.cdist(q, p).square()
    if exclude is not None:
        rows = torch.nonzero(exclude >= 0).squeeze(1)
        d2[rows, exclude[rows]] = float("inf")
    return torch.topk(d2, k, dim=1, largest=False, sorted=True)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(3, 60),
    d=st.integers(1, 9),
    k_frac=st.floats(0.0, 1.0),
    block=st.integers(1, 70),
    self_query=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_knn_matches_brute_force(n, d, k_frac, block, self_query, seed):
    g = torch.Generator().manual_seed(seed)
    points = torch.randn(n, d, generator=g, dtype=torch.float64)
    if self_query:
        # A subset of the points as queries, each excluded from its own answer;
        # one query keeps -1 to check that "no exclusion" rows are untouched.
        qi = torch.randperm(n, generator=g)[: max(1, n // 2)]
        queries, exclude = points[qi], qi.clone()
        exclude[0] = -1
        k_max = n - 1
    else:
        queries, exclude, k_max = torch.randn(7, d, generator=g, dtype=torch.float64), None, n
    k = 1 + int(k_frac * (k_max - 1))
    dist, idx = knn(queries, points, k, block=block, exclude=exclude)
    ref_dist, ref_idx = _brute(queries, points, k, exclude)
    assert dist.shape == idx.shape == (queries.shape[0], k)
    assert torch.equal(idx, ref_idx)
    assert torch.allclose(dist, ref_dist, rtol=1e-10, atol=1e-10)
    assert bool((dist[:, 1:] >= dist[:, :-1]).all())
    if exclude is not None:
        rows = exclude >= 0
        assert not bool((idx[rows] == exclude[rows].unsqueeze(1)).any())
        assert int(idx[0, 0]) == int(qi[0]) and float(dist[0, 0]) == 0.0


def test_knn_float32_input_and_exact_zero_for_duplicates():
    p = torch.randn(50, 4)
    p[10] = p[3]
    dist, idx = knn(p[[3]], p, 2, block=7, exclude=torch.tensor([3]))
    assert dist.dtype == torch.float64
    assert int(idx[0, 0]) == 10 and float(dist[0, 0]) == 0.0


def test_knn_validates_arguments():
    p = torch.randn(5, 3)
    with pytest.raises(ValueError, match="k must be"):
        knn(p, p, 5, exclude=torch.arange(5))
    with pytest.raises(ValueError, match="width"):
        knn(torch.randn(2, 4), p, 1)
    with pytest.raises(ValueError, match="exclude"):
        knn(p, p, 1, exclude=torch.tensor([0, 5, 1, 2, 3]))


def test_erank_isotropic_gaussian_is_near_full_width():
    d = 32
    out = compute_layer_proxies(_rng().standard_normal((4000, d)), proxies=("erank",))
    assert 0.9 * d < out["erank"] <= d
    assert 0.9 * d < out["participation_ratio"] <= out["erank"]


@pytest.mark.parametrize("rank", [1, 5, 12])
def test_erank_recovers_subspace_dimension(rank):
    out = compute_layer_proxies(_subspace(2000, 64, rank), proxies=("erank",))
    assert out["erank"] == pytest.approx(rank, abs=0.3)
    # exp(Renyi-2 entropy) never exceeds exp(Shannon entropy).
    assert out["participation_ratio"] <= out["erank"] + 1e-9


def test_kappa_higher_for_tight_clusters_than_isotropic():
    g = _rng(2)
    d, n = 16, 2000
    centres = g.standard_normal((10, d))
    mixture = centres[g.integers(0, 10, n)] + 0.05 * g.standard_normal((n, d))
    iso = g.standard_normal((n, d))
    k_mix = compute_layer_proxies(mixture, proxies=("kappa",), anchors=256)["kappa"]
    k_iso = compute_layer_proxies(iso, proxies=("kappa",), anchors=256)["kappa"]
    # Within-cluster spread is ~0.05^2 of the global one: about log(400) ~ 6 nats apart.
    assert k_mix > k_iso + 3.0


def test_sigma_isotropic_is_one_over_one_plus_ridge():
    out = compute_layer_proxies(_rng(3).standard_normal((3000, 24)), proxies=("sigma",), ridge=1e-2)
    assert out["sigma"] == pytest.approx(1 / 1.01, rel=0.02)
    assert out["lambda_min_p"] <= out["sigma"]


def test_sigma_collapses_with_rank_but_not_with_full_rank_anisotropy():
    """What anisotropy does to sigma, derived from the definition.

    After normalisation tr(Sigma) = d, and for a pair difference delta ~ N(0, 2 Sigma)
    the ratio concentrates at sum_j l_j/(l_j + lambda) / sum_j l_j. With every
    variance far above the ridge that is ~1 however unequal the variances are:
    the precision is small exactly where pairs are long. Directions with variance
    below the ridge contribute ~nothing to the numerator, so data on r of d
    directions give sigma ~ r/d. lambda_min(P) = 1/(l_max + lambda) does drop with
    anisotropy, and every pair ratio (hence the median) lies within P's spectrum.
    """
    d, n = 32, 3000
    g = _rng(4)
    iso = compute_layer_proxies(g.standard_normal((n, d)), proxies=("sigma",))
    aniso = compute_layer_proxies(g.standard_normal((n, d)) * np.geomspace(0.2, 5.0, d), proxies=("sigma",))
    assert aniso["sigma"] == pytest.approx(1.0, abs=0.05)
    assert aniso["lambda_min_p"] < 0.5 * iso["lambda_min_p"]

    sigmas = []
    for rank in (2, 8, 16, 32):
        out = compute_layer_proxies(_subspace(n, d, rank, noise=1e-5, seed=rank), proxies=("sigma",))
        assert out["sigma"] == pytest.approx(rank / d, rel=0.15)
        sigmas.append(out["sigma"])
    assert sigmas == sorted(sigmas)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), power=st.floats(0.0, 3.0))
def test_sigma_within_precision_spectrum(seed, power):
    g = _rng(seed)
    d = 10
    x = g.standard_normal((300, d)) * np.linspace(1.0, 10.0**power, d)
    ctx = ProxyContext.from_states(x, pairs=500, space="scalar")
    out = PROXIES["sigma"].fn(ctx)
    lam = ctx.ridge * float(ctx.eigvals.sum()) / d
    p_max = 1.0 / (float(ctx.eigvals.min()) + lam)
    assert out["lambda_min_p"] - 1e-12 <= out["sigma"] <= p_max + 1e-12


def test_twonn_recovers_subspace_dimension():
    out = compute_layer_proxies(_subspace(3000, 40, 4, noise=0.0), proxies=("twonn",), anchors=1024)
    assert out["twonn"] == pytest.approx(4.0, rel=0.2)


def test_anisotropy_sees_the_common_offset():
    g = _rng(5)
    centred = g.standard_normal((1000, 20))
    assert abs(compute_layer_proxies(centred, proxies=("anisotropy",))["anisotropy"]) < 0.05
    shifted = compute_layer_proxies(centred + 10.0, proxies=("anisotropy",))["anisotropy"]
    assert shifted > 0.9


def test_duplicated_states_raise_instead_of_returning_inf():
    base = _rng(6).standard_normal((20, 5))
    repeated = np.repeat(base, 20, axis=0)
    for name in ("kappa", "twonn"):
        with pytest.raises(ValueError, match=name):
            compute_layer_proxies(repeated, proxies=(name,), k=8)


@settings(max_examples=25, deadline=None)
@given(log_scale=st.floats(-6.0, 6.0))
def test_all_proxies_invariant_to_positive_rescaling(offset_data, offset_base, log_scale):
    scaled = compute_layer_proxies(offset_data * math.exp(log_scale), proxies=ALL, **SMALL)
    assert scaled.keys() == offset_base.keys()
    for key, value in offset_base.items():
        assert scaled[key] == pytest.approx(value, rel=1e-8, abs=1e-12), key


@settings(max_examples=25, deadline=None)
@given(shift=st.lists(st.floats(-50.0, 50.0), min_size=12, max_size=12))
def test_kappa_sigma_erank_twonn_invariant_to_translation(offset_data, offset_base, shift):
    names = ("kappa", "sigma", "erank", "twonn")
    moved = compute_layer_proxies(offset_data + np.array(shift), proxies=names, **SMALL)
    for key in ("kappa", "sigma", "lambda_min_p", "erank", "participation_ratio", "twonn"):
        assert moved[key] == pytest.approx(offset_base[key], rel=1e-8), key


def test_default_output_has_proxies_and_auxiliaries():
    out = compute_layer_proxies(_rng().standard_normal((100, 6)), **SMALL)
    assert set(out) == {"kappa", "sigma", "lambda_min_p", "erank", "participation_ratio"}
    assert all(isinstance(v, float) and math.isfinite(v) for v in out.values())


def test_registry_conventions():
    assert {"kappa", "sigma", "erank", "twonn", "anisotropy"} <= PROXIES.keys()
    signs = {name: PROXIES[name].higher_is_better for name in ALL}
    assert signs == {"kappa": True, "sigma": True, "erank": False, "twonn": False, "anisotropy": False}
    for name, w in DEFAULT_WEIGHTS.items():
        assert (w > 0) == PROXIES[name].higher_is_better
    assert all(PROXIES[name].description and "\n" not in PROXIES[name].description for name in ALL)


def test_unknown_proxy_name_lists_registered():
    with pytest.raises(ValueError) as info:
        compute_layer_proxies(np.eye(5), proxies=("kappa", "curvature"))
    message = str(info.value)
    assert "'curvature'" in message
    for name in ALL:
        assert name in message


def test_deterministic_for_seed_and_independent_of_proxy_order(offset_data):
    a = compute_layer_proxies(offset_data, proxies=ALL, seed=7, **SMALL)
    b = compute_layer_proxies(offset_data, proxies=ALL, seed=7, **SMALL)
    assert a == b
    other = compute_layer_proxies(offset_data, proxies=ALL, seed=8, **SMALL)
    assert other["kappa"] != a["kappa"] and other["sigma"] != a["sigma"]
    alone = compute_layer_proxies(offset_data, proxies=("kappa",), seed=7, **SMALL)
    reordered = compute_layer_proxies(offset_data, proxies=("anisotropy", "sigma", "kappa"), seed=7, **SMALL)
    assert alone["kappa"] == reordered["kappa"] == a["kappa"]
    assert reordered["sigma"] == a["sigma"]


def test_custom_proxy_is_computed_and_duplicates_rejected():
    name = "test_mean_sq_norm"

    @register_proxy(name, higher_is_better=True, description="mean squared norm of normalised states")
    def _mean_sq_norm(ctx: ProxyContext) -> dict[str, float]:
        return {name: float(ctx.x.square().sum(1).mean()), name + "_n": float(ctx.n)}

    try:
        with pytest.raises(ValueError, match="already registered"):
            register_proxy(name, higher_is_better=False, description="again")
        out = compute_layer_proxies(_rng().standard_normal((50, 4)), proxies=(name, "erank"))
        assert out[name] == pytest.approx(4.0)
        assert out[name + "_n"] == 50.0 and "erank" in out
    finally:
        PROXIES.pop(name, None)
    assert name not in PROXIES


def test_proxy_must_return_its_own_name():
    name = "test_forgetful"
    register_proxy(name, higher_is_better=True, description="returns the wrong key")(lambda ctx: {"other": 1.0})
    try:
        with pytest.raises(RuntimeError, match=name):
            compute_layer_proxies(np.eye(4), proxies=(name,))
    finally:
        PROXIES.pop(name, None)


def test_anchor_and_pair_draws():
    ctx = ProxyContext.from_states(_rng().standard_normal((30, 3)), anchors=100, pairs=1000)
    assert sorted(ctx.anchor_index.tolist()) == list(range(30))  # A = min(anchors, N), no repeats
    i, j = ctx.pair_index
    assert bool((i != j).all()) and int(j.min()) >= 0 and int(j.max()) < 30


def test_zscore_population_std():
    z = zscore([1.0, 2.0, 3.0, 4.0])
    assert np.allclose(z, (np.arange(1, 5) - 2.5) / np.std(np.arange(1, 5)))
    assert z.mean() == pytest.approx(0.0, abs=1e-15) and z.std() == pytest.approx(1.0)


def test_zscore_constant_and_rounding_level_spread_are_zero():
    assert np.array_equal(zscore([3.0, 3.0, 3.0]), np.zeros(3))
    assert np.array_equal(zscore([0.1 + 0.2, 0.3, 0.3]), np.zeros(3))
    assert np.array_equal(zscore([5.0]), np.zeros(1))


@pytest.mark.parametrize("bad", [[1.0, float("nan")], [float("inf"), 1.0], []])
def test_zscore_rejects_non_finite_and_empty(bad):
    with pytest.raises(ValueError):
        zscore(bad)


def test_score_layers_combines_with_default_signs():
    per_layer = {
        3: {"kappa": 1.0, "sigma": 0.5, "erank": 30.0, "lambda_min_p": 0.1},
        1: {"kappa": 2.0, "sigma": 0.7, "erank": 10.0},
        2: {"kappa": 1.5, "sigma": 0.6, "erank": 20.0},
    }
    s = score_layers(per_layer, DEFAULT_WEIGHTS)
    assert s.layers == [1, 2, 3]
    assert set(s.raw) == set(s.z) == set(DEFAULT_WEIGHTS)
    assert s.raw["erank"] == [10.0, 20.0, 30.0]
    expected = zscore([2.0, 1.5, 1.0]) + zscore([0.7, 0.6, 0.5]) - zscore([10.0, 20.0, 30.0])
    assert np.allclose(s.score, expected)
    assert s.best() == 1
    assert score_layers(per_layer).score == s.score  # weights default to DEFAULT_WEIGHTS


def test_score_layers_custom_weights_and_constant_proxy():
    per_layer = {0: {"a": 1.0, "b": 5.0}, 1: {"a": 3.0, "b": 5.0}}
    s = score_layers(per_layer, {"a": -2.0, "b": 1.0})
    assert s.z["b"] == [0.0, 0.0]
    assert np.allclose(s.score, [2.0, -2.0])
    assert s.best() == 0


def test_best_ties_go_to_shallowest_layer():
    per_layer = {5: {"kappa": 2.0}, 2: {"kappa": 1.0}, 4: {"kappa": 2.0}, 7: {"kappa": 1.0}}
    assert score_layers(per_layer, {"kappa": 1.0}).best() == 4
    assert score_layers({layer: {"kappa": 0.0} for layer in (9, 3, 6)}, {"kappa": 1.0}).best() == 3
    tied = LayerScores(layers=[1, 2, 3], raw={}, z={}, score=[0.5, 0.5 + 1e-13, -1.0])
    assert tied.best() == 1


def test_score_layers_missing_proxy_names_layer_and_proxy():
    with pytest.raises(ValueError, match=r"layer 2 .*'sigma'"):
        score_layers({1: {"kappa": 1.0, "sigma": 1.0, "erank": 1.0}, 2: {"kappa": 1.0, "erank": 2.0}})


def test_score_layers_non_finite_names_proxy():
    with pytest.raises(ValueError, match="'kappa'"):
        score_layers({1: {"kappa": float("inf")}, 2: {"kappa": 1.0}}, {"kappa": 1.0})
