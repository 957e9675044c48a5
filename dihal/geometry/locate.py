"""Locate, end to end on in-memory states: outlier rule → proxies → G → ℓ* → its stability.

The score stage calls this on memory-mapped layer files; tests call it on synthetic
clouds, so both exercise the same path. The document draws are made once and shared
by every layer, so the replicates of different layers are paired, as the argmax needs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from dihal.geometry.outliers import apply_rule
from dihal.geometry.proxies import ProxyContext, evaluate_proxies
from dihal.geometry.scoring import LayerScores, score_layers
from dihal.geometry.stability import Stability, document_counts, layer_replicates, stability


@dataclass
class LocateResult:
    table: LayerScores
    values: dict[int, dict[str, float]]
    outliers: dict[int, dict]
    stability: Stability | None
    bootstrap_seconds: float = 0.0
    n_documents: int = 0
    extra: dict = field(default_factory=dict)


def locate(
    layers: Sequence[int],
    load: Callable[[int], np.ndarray],
    doc: np.ndarray,
    *,
    weights: Mapping[str, float],
    names: Sequence[str] | None = None,
    rule: str = "drop",
    threshold: float = 20.0,
    anchors: int = 1024,
    k: int = 16,
    pairs: int = 4096,
    ridge: float = 1e-3,
    seed: int = 0,
    n_boot: int = 200,
    progress: Callable = lambda it, **_: it,
) -> LocateResult:
    """`load(layer)` returns that layer's (N, d) states; `doc[i]` is state i's document index."""
    import time

    names = list(dict.fromkeys([*(names or ()), *weights]))
    doc = np.asarray(doc, dtype=np.int64)
    n_docs = int(doc.max()) + 1
    counts = document_counts(n_docs, n_boot, seed) if n_boot else None
    values: dict[int, dict[str, float]] = {}
    outliers: dict[int, dict] = {}
    boot: dict[int, dict[str, np.ndarray]] = {}
    boot_seconds = 0.0
    for layer in progress(list(layers), desc="score layers", unit="layer"):
        states = np.asarray(load(layer))
        if len(states) != len(doc):
            raise ValueError(f"layer {layer} has {len(states)} states but {len(doc)} document labels")
        kept, keep, report = apply_rule(states, rule, threshold)
        outliers[layer] = report.to_dict()
        ctx = ProxyContext.from_states(kept, anchors=anchors, k=k, pairs=pairs, ridge=ridge, seed=seed)
        values[layer] = evaluate_proxies(ctx, names)
        if counts is not None:
            t = time.perf_counter()
            boot[layer] = layer_replicates(ctx, doc[keep], counts, list(weights))
            boot_seconds += time.perf_counter() - t
    table = score_layers(values, weights)
    stab = stability(boot, weights) if boot else None
    return LocateResult(table, values, outliers, stab, boot_seconds, n_docs)
