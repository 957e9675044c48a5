"""Massive activations: states whose norm is many times the layer's median.

A handful of tokens (the block start, sometimes a delimiter or a word fragment
right after it) carry activations hundreds of times the median norm on a few
channels, and act as extra attention sinks. After centring and the one-scalar
rescale, one such state among thousands can carry most of a layer's variance, so
the effective rank collapses, the stiffness jumps and the argmax of G is decided by
that one token. METHOD.md's default therefore drops states above 20x the layer's
median norm, and every layer records what the rule did:

- `norm_ratio_max`: max / median raw norm;
- `n_over_threshold`: states above threshold x median;
- `top_share_before` / `top_share_after`: the share of the layer's variance (sum of
  centred squared norms) carried by the top 0.1% of states, before and after the
  rule. Gaussian-like clouds give ~0.3%; tens of percent means a few states decide
  every proxy.

- `top_channel` / `top_channel_share`: the coordinate carrying the most centred
  variance after the rule, and its share. A massive activation shared by many tokens
  (on SmolLM2, every " the" lights channel 507 at 5-11x the median norm in blocks
  3-9: 76% of layer 3's variance) passes any norm rule yet collapses the effective
  rank; this names it.

Norms are of the raw (uncentred) states, as METHOD.md states the rule; the variance
share is of centred states, as the proxies see them. `clip` rescales an offending
state onto the threshold sphere (direction kept) instead of dropping it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from dihal.spec.geometry import OUTLIER_RULE, OUTLIER_THRESHOLD

RULES = ("drop", "keep", "clip")
TOP_FRACTION = 0.001


@dataclass(frozen=True)
class OutlierReport:
    rule: str
    threshold: float
    n_states: int  # before the rule
    n_kept: int  # after it (== n_states unless the rule drops)
    norm_ratio_max: float
    n_over_threshold: int
    top_share_before: float
    top_share_after: float
    top_channel: int
    top_channel_share: float

    def to_dict(self) -> dict:
        return asdict(self)


def top_share(x: np.ndarray, fraction: float = TOP_FRACTION) -> float:
    """Share of sum ||x_i - mean||^2 carried by the ceil(fraction * N) largest terms."""
    x = np.asarray(x, dtype=np.float64)
    sq = np.square(x - x.mean(axis=0)).sum(axis=1)
    total = float(sq.sum())
    if total <= 0:
        return 0.0
    k = max(1, math.ceil(fraction * len(sq)))
    return float(np.partition(sq, len(sq) - k)[len(sq) - k :].sum() / total)


def apply_rule(
    states, rule: str = OUTLIER_RULE, threshold: float = OUTLIER_THRESHOLD
) -> tuple[np.ndarray, np.ndarray, OutlierReport]:
    """(states after the rule, float64; keep mask over the input rows; report).

    The mask says which input rows survive (all of them for keep and clip), so a
    caller can carry per-state labels (documents) along.
    """
    if rule not in RULES:
        raise ValueError(f"outlier rule must be one of {RULES}, got {rule!r}")
    if not (math.isfinite(threshold) and threshold > 1):
        raise ValueError(f"outlier threshold must be a finite multiple of the median norm > 1, got {threshold!r}")
    x = np.asarray(states, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"states must be an (N >= 2, d) matrix, got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1)
    median = float(np.median(norms))
    over = norms > threshold * median if median > 0 else np.zeros(len(x), dtype=bool)
    before = top_share(x)
    keep = np.ones(len(x), dtype=bool)
    out = x
    if rule == "drop" and over.any():
        keep = ~over
        out = x[keep]
    elif rule == "clip" and over.any():
        out = x.copy()
        out[over] *= (threshold * median / norms[over])[:, None]
    report = OutlierReport(
        rule=rule,
        threshold=float(threshold),
        n_states=len(x),
        n_kept=len(out),
        norm_ratio_max=float(norms.max() / median) if median > 0 else math.inf,
        n_over_threshold=int(over.sum()),
        top_share_before=before,
        top_share_after=before if out is x else top_share(out),
        **_top_channel(out),
    )
    return out, keep, report


def _top_channel(x: np.ndarray) -> dict:
    var = x.var(axis=0)
    total = float(var.sum())
    c = int(np.argmax(var))
    return {"top_channel": c, "top_channel_share": float(var[c] / total) if total > 0 else 0.0}


def describe(rule: str, threshold: float) -> str:
    """One label for the ledger and the report, e.g. 'drop>20x median norm'."""
    return "keep (no rule)" if rule == "keep" else f"{rule}>{threshold:g}x median norm"
