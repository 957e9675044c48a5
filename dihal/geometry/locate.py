"""Locate, end to end on in-memory states: outlier rule → each space → proxies → G → ℓ* → its stability.

The score stage calls this on memory-mapped layer files; tests call it on synthetic
clouds, so both exercise the same path. Each layer is read once: the outlier rule runs
once, then every configured space (`geometry/spaces.py`) gets its own proxies, G and
bootstrap from the same states, the same anchors and pairs and the same document draws
(shared by every layer too, so replicates are paired across layers, as the argmax needs).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from dihal.geometry.channels import dominant_channel
from dihal.geometry.outliers import apply_rule
from dihal.geometry.proxies import ProxyContext, ensure_proxies, evaluate_proxies
from dihal.geometry.scoring import LayerScores, score_layers
from dihal.geometry.spaces import DEFAULT_SPACE, ensure_space
from dihal.geometry.stability import Stability, document_counts, layer_replicates, stability
from dihal.spec.geometry import ANCHORS, BOOTSTRAP, NEIGHBOURS, OUTLIER_RULE, OUTLIER_THRESHOLD, PAIRS, RIDGE


@dataclass
class SpaceResult:
    """One space's view of every layer."""

    table: LayerScores
    values: dict[int, dict[str, float]]
    stability: Stability | None
    # per layer: the largest principal direction's and the largest channel's share of the variance, in this space
    shape: dict[int, dict[str, float]] = field(default_factory=dict)


@dataclass
class LocateResult:
    space: str  # the space ℓ* is taken from
    spaces: dict[str, SpaceResult]
    outliers: dict[int, dict]
    channels: dict[int, dict]  # per layer: the raw top channel and the tokens that light it
    bootstrap_seconds: float = 0.0
    n_documents: int = 0

    @property
    def table(self) -> LayerScores:
        return self.spaces[self.space].table

    @property
    def values(self) -> dict[int, dict[str, float]]:
        return self.spaces[self.space].values

    @property
    def stability(self) -> Stability | None:
        return self.spaces[self.space].stability


def _shape(ctx: ProxyContext) -> dict[str, float]:
    ev = ctx.eigvals
    var = ctx.x.var(dim=0)
    return {
        "top_direction_share": float(ev[-1] / ev.sum()) if float(ev.sum()) > 0 else 0.0,
        "top_channel_share": float(var.max() / var.sum()) if float(var.sum()) > 0 else 0.0,
    }


def locate(
    layers: Sequence[int],
    load: Callable[[int], np.ndarray],
    doc: np.ndarray,
    *,
    weights: Mapping[str, float],
    names: Sequence[str] | None = None,
    spaces: Sequence[str] = (DEFAULT_SPACE,),
    space: str = DEFAULT_SPACE,
    tokens: np.ndarray | None = None,
    token_text: Mapping[int, str] | None = None,
    rule: str = OUTLIER_RULE,
    threshold: float = OUTLIER_THRESHOLD,
    anchors: int = ANCHORS,
    k: int = NEIGHBOURS,
    pairs: int = PAIRS,
    ridge: float = RIDGE,
    seed: int = 0,
    n_boot: int = BOOTSTRAP,
    progress: Callable = lambda it, **_: it,
) -> LocateResult:
    """`load(layer)` returns that layer's (N, d) states; `doc[i]` is state i's document, `tokens[i]` its token id."""
    spaces = list(dict.fromkeys(spaces))
    if space not in spaces:
        raise ValueError(f"geometry.space {space!r} must be one of the scored spaces {spaces}")
    names = list(dict.fromkeys([*(names or ()), *weights]))
    ensure_proxies(names)  # plugins are imported (or refused) before any layer is read
    for name in spaces:
        ensure_space(name)
    doc = np.asarray(doc, dtype=np.int64)
    n_docs = int(doc.max()) + 1
    counts = document_counts(n_docs, n_boot, seed) if n_boot else None
    values: dict[str, dict[int, dict[str, float]]] = {s: {} for s in spaces}
    shape: dict[str, dict[int, dict[str, float]]] = {s: {} for s in spaces}
    boot: dict[str, dict[int, dict[str, np.ndarray]]] = {s: {} for s in spaces}
    outliers: dict[int, dict] = {}
    channels: dict[int, dict] = {}
    boot_seconds = 0.0
    for layer in progress(list(layers), desc=f"score layers ({len(spaces)} spaces)", unit="layer"):
        states = np.asarray(load(layer))
        if len(states) != len(doc):
            raise ValueError(f"layer {layer} has {len(states)} states but {len(doc)} document labels")
        kept, keep, report = apply_rule(states, rule, threshold)
        outliers[layer] = report.to_dict()
        if tokens is not None:
            channels[layer] = dominant_channel(kept, np.asarray(tokens)[keep], report.top_channel, token_text)
        for name in spaces:
            ctx = ProxyContext.from_states(kept, anchors=anchors, k=k, pairs=pairs, ridge=ridge, seed=seed, space=name)
            values[name][layer] = evaluate_proxies(ctx, names)
            shape[name][layer] = _shape(ctx)
            if counts is not None:
                t = time.perf_counter()
                boot[name][layer] = layer_replicates(ctx, doc[keep], counts, list(weights))
                boot_seconds += time.perf_counter() - t
            del ctx
    results = {
        name: SpaceResult(
            score_layers(values[name], weights),
            values[name],
            stability(boot[name], weights) if boot[name] else None,
            shape[name],
        )
        for name in spaces
    }
    return LocateResult(space, results, outliers, channels, boot_seconds, n_docs)
