"""Combine per-layer proxies into the geometry score G and pick the layer.

METHOD.md: z-score each proxy across the candidate layers and take
G_l = z(kappa_l) + z(sigma_l) - z(erank_l); select l* = argmax G. The proxies
live on unrelated scales (a log, a Rayleigh quotient, a dimension count), so
only their *relative* standing across layers is comparable -- hence z-scores,
and hence a score that means nothing outside the candidate set it was
computed on. Which proxies enter G and with which sign is a spec choice, so
the weights are a mapping rather than hard-wired.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from dihal.spec.geometry import DEFAULT_WEIGHTS

__all__ = ["DEFAULT_WEIGHTS", "LayerScores", "score_layers", "zscore"]


# Spreads below this fraction of the values' magnitude are rounding, not signal.
_CONSTANT_RTOL = 1e-12
# Scores closer than this are tied: z-scores are O(1), so a difference this
# small is rounding in the weighted sum and must not decide the layer.
_TIE_ATOL = 1e-9


def zscore(values: Sequence[float]) -> np.ndarray:
    """Population z-scores (ddof=0) of one proxy across layers.

    A proxy that is constant across the layers carries no information about
    which layer to pick, so all its z-scores are 0 (instead of 0/0). "Constant"
    includes spreads at the level of floating-point rounding (std at most
    1e-12 of the largest magnitude): dividing by such a std would blow
    rounding noise up to +-1 and let it vote in G with full weight.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"zscore needs a non-empty 1-D sequence, got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"zscore got non-finite values: {v.tolist()}")
    std = float(v.std())
    if std <= _CONSTANT_RTOL * float(np.abs(v).max()):
        return np.zeros_like(v)
    return (v - v.mean()) / std


@dataclass(frozen=True)
class LayerScores:
    """Per-layer raw proxies, their z-scores and the combined score G.

    All lists are aligned with ``layers``, which is sorted ascending.
    """

    layers: list[int]
    raw: dict[str, list[float]]
    z: dict[str, list[float]]
    score: list[float]

    def best(self) -> int:
        """The layer with the highest G; ties go to the shallowest layer.

        Shallow wins ties because a shallower interface replaces fewer blocks
        with the bridge and keeps more of the pretrained stack.
        """
        if not self.layers:
            raise ValueError("no layers were scored")
        top = max(self.score)
        return min(layer for layer, s in zip(self.layers, self.score) if s >= top - _TIE_ATOL)


def score_layers(
    per_layer: Mapping[int, Mapping[str, float]],
    weights: Mapping[str, float] | None = None,
) -> LayerScores:
    """G_l = sum_p weights[p] * z(p)_l over the proxies named in ``weights``.

    ``weights`` defaults to DEFAULT_WEIGHTS (kappa +1, sigma +1, erank -1).
    Only the weighted proxies are z-scored and reported; extra entries in
    ``per_layer`` (auxiliaries such as lambda_min_p) are ignored.
    """
    if weights is None:
        weights = DEFAULT_WEIGHTS
    if not per_layer:
        raise ValueError("score_layers needs at least one layer")
    if not weights:
        raise ValueError("score_layers needs at least one weighted proxy")
    for name, w in weights.items():
        if not math.isfinite(float(w)):
            raise ValueError(f"weight for proxy {name!r} is not finite: {w!r}")
    layers = sorted(int(layer) for layer in per_layer)
    if len(set(layers)) != len(per_layer):
        raise ValueError("layer keys collide after conversion to int")
    by_int = {int(layer): values for layer, values in per_layer.items()}

    raw: dict[str, list[float]] = {}
    z: dict[str, list[float]] = {}
    for name in weights:
        column = []
        for layer in layers:
            if name not in by_int[layer]:
                raise ValueError(f"layer {layer} has no value for proxy {name!r}")
            column.append(float(by_int[layer][name]))
        try:
            z[name] = zscore(column).tolist()
        except ValueError as exc:
            raise ValueError(f"proxy {name!r}: {exc}") from None
        raw[name] = column
    score = [sum(float(weights[name]) * z[name][i] for name in weights) for i in range(len(layers))]
    return LayerScores(layers=layers, raw=raw, z=z, score=score)
