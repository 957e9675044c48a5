"""score and select: the geometry proxies per layer, their z-scores, G, and ℓ*."""

from __future__ import annotations

import numpy as np

from dihal import progress
from dihal.stages.common import StageConfig, Timer, read_json, write_json
from dihal.stages.extract import layer_file

STANDARD = ("kappa", "sigma", "erank")  # always computed: the ledger has a column for each


def run_score(cfg: StageConfig) -> None:
    from dihal.geometry import compute_layer_proxies, score_layers

    geo = cfg.params["geometry"]
    src = cfg.inputs["extract"]
    meta = read_json(src / "meta.json")
    weights = geo["proxies"]
    names = list(dict.fromkeys([*STANDARD, *weights]))
    per_layer: dict[int, dict[str, float]] = {}
    with Timer() as timer:
        for layer in progress.bar(meta["layers"], desc="score layers", unit="layer"):
            states = np.load(src / layer_file(layer), mmap_mode="r")
            per_layer[layer] = compute_layer_proxies(
                np.asarray(states), proxies=names, anchors=geo["anchors"], k=geo["k"],
                pairs=geo["pairs"], ridge=geo["ridge"], seed=cfg.params["seed"],
            )  # fmt: skip
    table = score_layers(per_layer, weights)
    write_json(cfg.out / "scores.json", {
        "layers": table.layers,
        "values": {str(k): v for k, v in per_layer.items()},
        "z": table.z,
        "score": table.score,
        "weights": weights,
        "best": table.best(),
        "seconds": timer.seconds,
        "n_tokens": meta["n_tokens"],
        "d": meta["d"],
        "n_layers": meta["n_layers"],
    })  # fmt: skip


def run_select(cfg: StageConfig) -> None:
    rule = cfg.params["select"]
    scores = read_json(cfg.inputs["score"] / "scores.json")
    layers, g = scores["layers"], scores["score"]
    if rule["rule"] == "argmax":
        layer = scores["best"]
    else:
        layer = rule["layer"]
        if layer not in layers and not 1 <= layer < scores["n_layers"]:
            raise ValueError(f"select.layer: {layer} is not a layer of the backbone (1..{scores['n_layers'] - 1})")
    by_layer = dict(zip(layers, g))
    write_json(cfg.out / "selection.json", {
        "layer": layer, "rule": rule["rule"], "score": by_layer.get(layer),
        "rank_by_score": sorted(layers, key=lambda x: -by_layer[x]).index(layer) + 1 if layer in by_layer else None,
        "n_layers": scores["n_layers"],
    })  # fmt: skip
