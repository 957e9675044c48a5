"""Which tokens light a layer's dominant channel.

A massive activation shared by many tokens passes any norm rule and can decide the one-scalar
geometry by itself (on SmolLM2 every " the" lights channel 507 in blocks 3-9). Naming the tokens
turns that finding from a manual investigation into a column: per layer, the channel with the most
raw variance after the outlier rule, and the three token ids with the largest mean |centred
activation| on it, each with its count and the share of the channel's variance its states carry.

Tokens seen fewer than `MIN_COUNT` times are not ranked: one rare token with one large value says
nothing about what drives a channel across the sample.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

MIN_COUNT = 5
TOP_TOKENS = 3


def dominant_channel(
    states: np.ndarray, tokens: np.ndarray, channel: int, token_text: Mapping[int, str] | None = None
) -> dict:
    """{'channel', 'tokens': [{'id', 'text', 'count', 'mean_abs', 'variance_share'}, ...]} for one layer."""
    x = np.asarray(states, dtype=np.float64)[:, channel]
    ids = np.asarray(tokens, dtype=np.int64)
    if len(ids) != len(x):
        raise ValueError(f"{len(ids)} token ids for {len(x)} states")
    c = x - x.mean()
    total = float(np.square(c).sum())
    uniq, inv, count = np.unique(ids, return_inverse=True, return_counts=True)
    mean_abs = np.bincount(inv, weights=np.abs(c)) / count
    sq = np.bincount(inv, weights=np.square(c))
    ranked = [i for i in np.argsort(-mean_abs, kind="stable") if count[i] >= MIN_COUNT][:TOP_TOKENS]
    text = token_text or {}
    return {
        "channel": int(channel),
        "tokens": [
            {
                "id": int(uniq[i]),
                "text": text.get(int(uniq[i])),
                "count": int(count[i]),
                "mean_abs": float(mean_abs[i]),
                "variance_share": float(sq[i] / total) if total > 0 else 0.0,
            }
            for i in ranked
        ],
    }
