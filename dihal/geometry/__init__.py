"""Locate: score each layer's hidden-state geometry and pick the interface layer.

METHOD.md ("Locate: the geometry proxies") defines the pipeline implemented
here: normalise a layer's states, compute pluggable proxies (kappa, sigma,
erank by default; TwoNN and anisotropy registered too), z-score them across
layers and combine them into G.
"""

from dihal.geometry.knn import knn
from dihal.geometry.normalize import normalize_states
from dihal.geometry.proxies import (
    PROXIES,
    Proxy,
    ProxyContext,
    compute_layer_proxies,
    register_proxy,
)
from dihal.geometry.scoring import DEFAULT_WEIGHTS, LayerScores, score_layers, zscore

__all__ = [
    "DEFAULT_WEIGHTS",
    "PROXIES",
    "LayerScores",
    "Proxy",
    "ProxyContext",
    "compute_layer_proxies",
    "knn",
    "normalize_states",
    "register_proxy",
    "score_layers",
    "zscore",
]
