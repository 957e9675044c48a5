"""How sure ℓ* is: a document bootstrap of the geometry sample, in seconds.

Tokens of one document are correlated, so the unit of resampling is the document:
each replicate draws the sample's D documents with replacement (the same draw for
every layer, so layers stay paired) and recomputes every proxy, z-scores them across
layers and takes G and its argmax. Per layer we report a 95% percentile interval of
G and the share of replicates in which the layer is the argmax.

Recomputing the proxies from scratch costs the whole score stage per replicate.
Instead each replicate reweights quantities the point estimate already computed,
by document multiplicity w_j:

- kappa: anchors keep the neighbourhoods they have in the full sample; a replicate
  takes the w-weighted median of their spreads s_i and rescales by the replicate's
  total variance (normalisation divides by one scalar, so kappa shifts by a log).
  What is resampled is which documents' anchors vote and the global scale — the
  failure this exists to catch (one document or token deciding the argmax) lives
  there. Neighbourhoods are not recomputed: a resample that drops 37% of the
  documents would otherwise thin every neighbourhood and bias kappa in every
  replicate.
- erank and sigma: the replicate covariance is exact on the top-r eigen-directions
  of the full sample (Rayleigh-Ritz from per-document second moments, r = 32) and
  scales the remaining spectrum's shape by the replicate's remaining variance.
  sigma's pairs are reweighted by w_i w_j and their quotients re-evaluated with the
  replicate's P: exactly on the top-r block (its eigenvectors rotate), with the
  tail's eigenvectors held. (Keeping only P's diagonal in the full eigenbasis was
  tried first: by convexity of the inverse it inflated sigma by ~10% per replicate.)
- twonn and anisotropy: w-weighted over anchors and pairs.

With all weights 1 every replicate reproduces the point estimate exactly (tested),
and `bench/score.py` compares the fast replicates with full recomputation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse as sp

from dihal.geometry.context import ProxyContext

RITZ_RANK = 32
REPLICATORS: dict[str, Callable[[Resample], dict[str, np.ndarray]]] = {}


def replicates(name: str):
    """Register how a proxy is recomputed under document weights (see module doc)."""

    def decorate(fn):
        REPLICATORS[name] = fn
        return fn

    return decorate


def document_counts(n_documents: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, D) multiplicities of D documents drawn with replacement; one draw shared by all layers."""
    if n_documents < 2:
        raise ValueError(f"a document bootstrap needs at least 2 documents, got {n_documents}")
    rng = np.random.default_rng([seed, 0x5AB1E])
    draws = rng.integers(0, n_documents, size=(n_boot, n_documents))
    counts = np.zeros((n_boot, n_documents), dtype=np.float64)
    np.add.at(counts, (np.arange(n_boot)[:, None], draws), 1.0)
    return counts


def weighted_median(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per row of `weights` (B, M): the median of `values` ((M,) shared or (B, M)) with integer weights.

    Equals np.median when all weights are 1 (the two middle values are averaged);
    NaN for a row whose weights are all 0.
    """
    weights = np.asarray(weights, dtype=np.float64)
    if values.ndim == 1:
        order = np.argsort(values)
        v = np.broadcast_to(values[order], weights.shape)
        w = weights[:, order]
    else:
        order = np.argsort(values, axis=1)
        v = np.take_along_axis(values, order, axis=1)
        w = np.take_along_axis(weights, order, axis=1)
    cum = np.cumsum(w, axis=1)
    half = cum[:, -1:] / 2.0
    lo = np.argmax(cum >= half, axis=1)
    hi = np.argmax(cum > half, axis=1)
    rows = np.arange(len(w))
    out = (v[rows, lo] + v[rows, hi]) / 2.0
    out[cum[:, -1] <= 0] = np.nan
    return out


@dataclass
class Resample:
    """One layer's context under a batch of document weights."""

    ctx: ProxyContext
    doc: np.ndarray  # (N,) document index of each state in ctx
    counts: np.ndarray  # (B, D)
    rank: int = RITZ_RANK

    def __post_init__(self) -> None:
        if len(self.doc) != self.ctx.n:
            raise ValueError(f"{len(self.doc)} document labels for {self.ctx.n} states")

    @cached_property
    def state_w(self) -> np.ndarray:
        return self.counts[:, self.doc]  # (B, N)

    @cached_property
    def anchor_w(self) -> np.ndarray:
        return self.state_w[:, self.ctx.anchor_index.cpu().numpy()]

    @cached_property
    def pair_w(self) -> np.ndarray:
        i, j = (t.cpu().numpy() for t in self.ctx.pair_index)
        return self.state_w[:, i] * self.state_w[:, j]

    @cached_property
    def _moments(self):
        """Replicate total variance and top-r covariance block (population, normalised units), r, and the
        states' coordinates on the top-r directions (sigma's pair differences are differences of these)."""
        x = self.ctx.x.cpu().numpy()
        n, d = x.shape
        r = min(self.rank, d)
        vecs = self.ctx.eigvecs.cpu().numpy()[:, d - r :]  # eigh is ascending: the top r are last
        n_docs = self.counts.shape[1]
        one_hot = sp.csr_matrix((np.ones(n), (self.doc, np.arange(n))), shape=(n_docs, n))
        z = x @ vecs
        per_doc_n = np.bincount(self.doc, minlength=n_docs).astype(np.float64)
        per_doc_sum = one_hot @ x
        per_doc_sq = np.bincount(self.doc, weights=np.einsum("ij,ij->i", x, x), minlength=n_docs)
        # Per-document second moments on the top-r directions: a small matmul per document.
        order = np.argsort(self.doc, kind="stable")
        bounds = np.searchsorted(self.doc[order], np.arange(n_docs + 1))
        zs = z[order]
        per_doc_outer = np.stack([zs[a:b].T @ zs[a:b] for a, b in zip(bounds[:-1], bounds[1:])]).reshape(n_docs, r * r)
        w = self.counts
        nb = w @ per_doc_n
        mean = (w @ per_doc_sum) / nb[:, None]
        total = (w @ per_doc_sq) / nb - np.einsum("bj,bj->b", mean, mean)
        mz = mean @ vecs
        top = (w @ per_doc_outer).reshape(-1, r, r) / nb[:, None, None] - mz[:, :, None] * mz[:, None, :]
        return total, top, r, z

    @cached_property
    def ritz(self) -> np.ndarray:
        """(B, r) eigenvalues of each replicate's top-r covariance block, population units."""
        _, top, _, _ = self._moments
        return np.clip(np.linalg.eigvalsh(top), 0.0, None)

    @cached_property
    def _tail_full(self) -> np.ndarray:
        """The full sample's eigenvalues outside the top r (population units, ascending)."""
        r = self._moments[2]
        n = self.ctx.n
        return self.ctx.eigvals.cpu().numpy()[: self.ctx.d - r] * (n - 1) / n

    @cached_property
    def tail_scale(self) -> np.ndarray:
        """(B,) factor the replicate applies to the full sample's tail eigenvalues: its remaining variance."""
        total = self._moments[0]
        base = float(self._tail_full.sum())
        return np.clip(total - self.ritz.sum(axis=1), 0.0, None) / base if base > 0 else np.ones(len(total))

    @cached_property
    def spectrum(self) -> tuple[np.ndarray, np.ndarray]:
        """(tail eigenvalues (B, d-r), top Ritz eigenvalues (B, r)), population units."""
        return self._tail_full[None, :] * self.tail_scale[:, None], self.ritz

    @cached_property
    def scale2(self) -> np.ndarray:
        """c_b^2: the factor the replicate's normalisation would multiply squared lengths by."""
        total, _, _, _ = self._moments
        return self.ctx.d / total


@replicates("erank")
def _erank(rs: Resample) -> dict[str, np.ndarray]:
    tail, mu = rs.spectrum
    ev = np.concatenate([tail, mu], axis=1)
    p = ev / ev.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    return {"erank": np.exp(h)}


@replicates("kappa")
def _kappa(rs: Resample) -> dict[str, np.ndarray]:
    s = rs.ctx.anchor_spread.cpu().numpy()
    return {"kappa": -np.log(weighted_median(s, rs.anchor_w)) - np.log(rs.scale2)}


@replicates("sigma")
def _sigma(rs: Resample) -> dict[str, np.ndarray]:
    """Quotients under the replicate's P: exact on the top-r Ritz block (rotation included), and
    with the tail's eigenvectors held fixed and its eigenvalues rescaled."""
    ctx = rs.ctx
    n, d = ctx.n, ctx.d
    total, top, r, z = rs._moments  # z: the states on the top-r directions
    unbiased = n / (n - 1)
    lam = ctx.ridge * float(ctx.cov.diagonal().sum()) / d  # normalised units: the same in every replicate
    c2 = rs.scale2[:, None]
    coords, den = (t.cpu().numpy() for t in ctx.pair_terms)
    ok = den > 0
    i, j = (t.cpu().numpy() for t in ctx.pair_index)
    a = z[i] - z[j]  # pair differences on the top-r directions
    tail_coords = coords[:, : d - r]
    if not ok.all():
        a, tail_coords, den = a[ok], tail_coords[ok], den[ok]
    # The replicate's tail eigenvalues (unbiased, replicate-normalised) are c_b^2 * tail_scale_b * the full sample's.
    num = _tail_quotients(tail_coords, ctx.eigvals.cpu().numpy()[: d - r], c2[:, 0] * rs.tail_scale, lam)
    # On the top block P is exactly Q_b = (c_b^2 E_b + lam I)^-1, E_b the replicate's r x r covariance block: one
    # batched inverse, then one GEMM of the pairs' outer products (upper triangle, off-diagonal doubled) against
    # every replicate's Q. float64: the off-diagonal terms cancel.
    q = np.linalg.inv(c2[:, :, None] * unbiased * top + lam * np.eye(r))
    iu = np.triu_indices(r)
    twice = np.where(iu[0] == iu[1], 1.0, 2.0)
    num += (a[:, iu[0]] * a[:, iu[1]] * twice) @ q[:, iu[0], iu[1]].T
    return {"sigma": weighted_median((num / den[:, None]).T, rs.pair_w[:, ok])}


def _tail_quotients(coords: np.ndarray, ev: np.ndarray, t: np.ndarray, lam: float, nodes: int = 8) -> np.ndarray:
    """(pairs, B): sum_k coords[p, k] / (t_b ev_k + lam) for every replicate's tail scale t_b.

    Each pair's sum is a smooth function of the one scalar t (its poles lie at t <= 0),
    so it is evaluated at a few Chebyshev nodes spanning the replicates' t and
    interpolated: 8 products of (pairs x tail) instead of B; relative error ~1e-8.
    """
    lo, hi = float(t.min()), float(t.max())
    if hi - lo <= 1e-12 * max(abs(hi), 1.0):
        return np.repeat(coords @ (1.0 / (lo * ev + lam)), len(t)).reshape(len(coords), len(t))
    k = np.arange(nodes)
    x = np.cos((2 * k + 1) * np.pi / (2 * nodes))  # Chebyshev nodes of the first kind on [-1, 1]
    tj = (lo + hi) / 2 + (hi - lo) / 2 * x
    f = coords @ (1.0 / (tj[None, :] * ev[:, None] + lam))  # (pairs, nodes)
    # Barycentric weights for first-kind Chebyshev nodes: (-1)^k sin((2k+1)pi/(2n)).
    w = (-1.0) ** k * np.sin((2 * k + 1) * np.pi / (2 * nodes))
    diff = t[:, None] - tj[None, :]
    exact = np.isclose(diff, 0.0, atol=1e-300)
    diff[exact] = 1.0
    basis = w / diff
    basis /= basis.sum(axis=1, keepdims=True)
    rows = exact.any(axis=1)
    basis[rows] = exact[rows].astype(np.float64)
    return f @ basis.T


@replicates("twonn")
def _twonn(rs: Resample) -> dict[str, np.ndarray]:
    d2 = rs.ctx.anchor_neighbours[0].cpu().numpy()
    keep = d2[:, 0] > 0
    log_mu = 0.5 * (np.log(d2[keep, 1]) - np.log(d2[keep, 0]))
    w = rs.anchor_w[:, keep]
    return {"twonn": w.sum(axis=1) / (w @ log_mu)}


@replicates("anisotropy")
def _anisotropy(rs: Resample) -> dict[str, np.ndarray]:
    i, j = rs.ctx.pair_index
    a, b = rs.ctx.raw[i].cpu().numpy(), rs.ctx.raw[j].cpu().numpy()
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    keep = norms > 0
    cos = np.einsum("ij,ij->i", a[keep], b[keep]) / norms[keep]
    w = rs.pair_w[:, keep]
    return {"anisotropy": (w @ cos) / w.sum(axis=1)}


def layer_replicates(
    ctx: ProxyContext, doc: np.ndarray, counts: np.ndarray, names: Sequence[str]
) -> dict[str, np.ndarray]:
    """{proxy: (B,) replicate values} for one layer; every name must have a registered replicator."""
    missing = [n for n in names if n not in REPLICATORS]
    if missing:
        raise ValueError(
            f"no document-bootstrap rule for proxies {missing}; registered: {sorted(REPLICATORS)}. Register one "
            "with dihal.geometry.stability.replicates (docs/extending.md), or set geometry.n_boot: 0"
        )
    rs = Resample(ctx, np.asarray(doc, dtype=np.int64), counts)
    out: dict[str, np.ndarray] = {}
    for name in names:
        out.update(REPLICATORS[name](rs))
    return {k: v for k, v in out.items() if k in names}


@dataclass(frozen=True)
class Stability:
    layers: list[int]
    g: np.ndarray  # (B, L) G per replicate (rows with an undefined proxy removed)
    lo: list[float]
    hi: list[float]
    share: list[float]  # per layer: share of replicates in which it is the argmax; sums to 1
    n_boot: int

    def to_dict(self) -> dict:
        return {
            "layers": self.layers,
            "g_lo": self.lo,
            "g_hi": self.hi,
            "argmax_share": self.share,
            "n_boot": self.n_boot,
            "n_valid": int(len(self.g)),
            "replicates": self.g.tolist(),
        }


def _z(values: np.ndarray) -> np.ndarray:
    """Row-wise population z-scores across layers; a constant row scores 0 (as scoring.zscore)."""
    mean = values.mean(axis=1, keepdims=True)
    std = values.std(axis=1, keepdims=True)
    flat = std <= 1e-12 * np.abs(values).max(axis=1, keepdims=True)
    return np.where(flat, 0.0, (values - mean) / np.where(flat, 1.0, std))


def stability(
    per_layer: Mapping[int, Mapping[str, np.ndarray]], weights: Mapping[str, float], ci: float = 0.95
) -> Stability:
    """G per replicate from per-layer replicate proxies, with its intervals and argmax shares.

    The argmax breaks ties toward the shallower layer, as the point selection does.
    """
    layers = sorted(per_layer)
    g = 0.0
    for name, w in weights.items():
        g = g + float(w) * _z(np.stack([np.asarray(per_layer[layer][name], dtype=np.float64) for layer in layers], 1))
    g = np.asarray(g)
    g = g[np.all(np.isfinite(g), axis=1)]
    if len(g) == 0:
        raise ValueError("every bootstrap replicate had an undefined proxy")
    top = g.max(axis=1, keepdims=True)
    best = np.argmax(g >= top - 1e-9, axis=1)  # first = shallowest of the tied maxima
    share = np.bincount(best, minlength=len(layers)) / len(g)
    alpha = (1 - ci) / 2
    lo, hi = np.quantile(g, [alpha, 1 - alpha], axis=0)
    return Stability(layers, g, lo.tolist(), hi.tolist(), share.tolist(), int(len(g)))
