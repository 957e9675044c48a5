"""The built-in geometry proxies, exactly as METHOD.md ("Locate") defines them.

All work on the normalised states ``ctx.x`` (centred, mean squared norm d)
except anisotropy, whose whole point is the mean offset that normalisation
removes. Because normalisation divides out one scalar, every proxy here is
invariant to rescaling the states by a positive number; kappa, sigma, erank
and TwoNN are also invariant to translation.

Covariances are unbiased (1/(n-1)) throughout: with k=16 neighbours the 1/k
estimator would understate a neighbourhood's spread by 6%, and using the same
estimator for the global covariance keeps "local spread relative to global
spread" consistent.

Degenerate inputs (a median neighbourhood of exact duplicates, every sampled
pair identical) raise ValueError instead of returning +-inf or NaN: those
values would otherwise surface much later as a z-scoring failure with no hint
that the cause was duplicated states.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dihal.geometry.context import ProxyContext
from dihal.geometry.registry import register_proxy

__all__: list[str] = []  # everything here is reached through the registry


def _median(values: torch.Tensor) -> float:
    """Median with the two middle values averaged for even counts.

    ``torch.median`` returns the lower middle value, which would make the
    result depend on the parity of the anchor or pair count.
    """
    return float(np.median(values.detach().cpu().numpy()))


@register_proxy(
    "kappa",
    higher_is_better=True,
    description="local compactness -log(median_i tr(C_i)/d) over anchors' k-NN covariances; high = tight neighbourhoods",
)
def kappa(ctx: ProxyContext) -> dict[str, float]:
    """Tight neighbourhoods relative to the (unit) global spread read as high
    local curvature of the log-density: fast local contraction.

    The anchor is excluded from its own neighbourhood (METHOD.md takes "its k
    nearest neighbours among the N points"); including it would bias every
    C_i towards the anchor and shrink the spread artificially.
    """
    if ctx.k < 2:
        raise ValueError(f"kappa needs k >= 2 neighbours to form a covariance, got k={ctx.k}")
    if ctx.n <= ctx.k:
        raise ValueError(f"kappa needs more than k={ctx.k} states besides each anchor, got N={ctx.n}")
    s = ctx.anchor_spread
    med = _median(s)
    if med <= 0.0:
        raise ValueError(
            "kappa is undefined: at least half of the anchors' neighbourhoods consist of identical states "
            "(deduplicate the sampled tokens)"
        )
    return {"kappa": -math.log(med)}


@register_proxy(
    "sigma",
    higher_is_better=True,
    description="global stiffness: median over random pairs of (dx' P dx)/|dx|^2, P=(Sigma+lambda I)^-1; high = strongly contracting score map",
)
def sigma(ctx: ProxyContext) -> dict[str, float]:
    """The empirical monotonicity constant of the Gaussian score map x -> P(x - mu).

    P is applied through the eigendecomposition of Sigma rather than an
    explicit inverse: dx' P dx = sum_j (v_j' dx)^2 / (lambda_j + lambda), which
    stays accurate even when Sigma's small eigenvalues are far below the ridge.
    Every pair's ratio lies in [lambda_min(P), lambda_max(P)], so the median
    does too. Pairs of identical states have no direction and are skipped.
    """
    lam = ctx.ridge * float(torch.diagonal(ctx.cov).sum()) / ctx.d
    inv = 1.0 / (ctx.eigvals + lam)  # eigenvalues of P, descending
    coords, den = ctx.pair_terms
    num = coords @ inv
    keep = den > 0
    if not bool(keep.any()):
        raise ValueError("sigma is undefined: every sampled pair of states is identical")
    return {"sigma": _median(num[keep] / den[keep]), "lambda_min_p": float(inv.min())}


@register_proxy(
    "erank",
    higher_is_better=False,
    description="Roy-Vetterli effective rank exp(entropy of normalised covariance eigenvalues); low = variance in few directions",
)
def erank(ctx: ProxyContext) -> dict[str, float]:
    """Reported with the participation ratio (sum l)^2 / sum l^2, a second
    effective dimension that weights the dominant directions more heavily, so
    a reader can tell a long flat tail from a few strong directions."""
    ev = ctx.eigvals
    total = ev.sum()
    p = ev / total
    p = p[p > 0]
    entropy = float(-(p * torch.log(p)).sum())
    return {"erank": math.exp(entropy), "participation_ratio": float(total.square() / ev.square().sum())}


@register_proxy(
    "twonn",
    higher_is_better=False,
    description="TwoNN intrinsic dimension n / sum log(r2/r1) over anchors (Facco et al. 2017); low = states on a low-dimensional manifold",
)
def twonn(ctx: ProxyContext) -> dict[str, float]:
    """Maximum-likelihood TwoNN estimate: mu = r2/r1 follows a Pareto law with
    exponent equal to the intrinsic dimension, whose MLE over n anchors is
    n / sum log mu.

    Lower is better by the same reading as erank: a denoiser has less to
    learn when the states fill fewer dimensions. Not in G by default.
    Anchors whose nearest neighbour is an exact duplicate (r1 = 0) are
    dropped: log(r2/r1) is infinite there, and a repeated state (the same
    short context seen twice) says nothing about dimension.
    """
    d2, _ = ctx.anchor_neighbours
    if d2.shape[1] < 2:
        raise ValueError(f"twonn needs at least 3 states, got N={ctx.n}")
    r1, r2 = d2[:, 0], d2[:, 1]
    keep = r1 > 0
    log_mu = 0.5 * (torch.log(r2[keep]) - torch.log(r1[keep]))
    total = float(log_mu.sum())
    if total <= 0.0:
        raise ValueError("twonn is undefined: no anchor has distinct first and second neighbour distances")
    return {"twonn": int(keep.sum()) / total}


@register_proxy(
    "anisotropy",
    higher_is_better=False,
    description="mean cosine similarity of raw (uncentred) states over random pairs; high = all states share one direction",
)
def anisotropy(ctx: ProxyContext) -> dict[str, float]:
    """Measured on the raw states on purpose: the common offset that
    normalisation subtracts is exactly the anisotropy (a shared dominant
    direction, e.g. a massive-activation channel) this proxy reports.

    Lower is better: a shared offset wastes the representation's angular
    range, so small differences in meaning become small angles. Not in G by
    default, and not translation invariant by construction. Pairs involving
    a zero vector have no angle and are skipped.
    """
    i, j = ctx.pair_index
    a, b = ctx.raw[i], ctx.raw[j]
    norms = a.norm(dim=1) * b.norm(dim=1)
    keep = norms > 0
    if not bool(keep.any()):
        raise ValueError("anisotropy is undefined: every sampled pair involves an all-zero state")
    cos = (a * b).sum(dim=1)[keep] / norms[keep]
    return {"anisotropy": float(cos.mean())}
