"""score and select: the geometry proxies per layer, their z-scores, G, ℓ*, and how sure ℓ* is.

Per layer: the outlier rule (massive activations, `geometry/outliers.py`) first, with
its diagnostics recorded; then the proxies on what is left; then the document
bootstrap (`geometry/stability.py`), whose replicates reuse the point estimate's
intermediates. The document draws are made once and shared by every layer, so the
replicates of different layers are paired, as the argmax needs.
"""

from __future__ import annotations

import numpy as np

from dihal import progress
from dihal.stages.common import StageConfig, Timer, read_json, write_json
from dihal.stages.extract import layer_file

STANDARD = ("kappa", "sigma", "erank")  # always computed: the ledger has a column for each


def run_score(cfg: StageConfig) -> None:
    from dihal.geometry import ProxyContext, score_layers
    from dihal.geometry.outliers import apply_rule, describe
    from dihal.geometry.proxies import evaluate_proxies
    from dihal.geometry.stability import document_counts, layer_replicates, stability

    geo, seed = cfg.params["geometry"], cfg.params["seed"]
    src = cfg.inputs["extract"]
    meta = read_json(src / "meta.json")
    weights = geo["proxies"]
    names = list(dict.fromkeys([*STANDARD, *weights]))
    rule, threshold = geo["outliers"]["rule"], geo["outliers"]["threshold"]
    doc = np.load(src / "documents.npy").astype(np.int64)
    n_docs = int(doc.max()) + 1
    n_boot = geo["n_boot"]
    counts = document_counts(n_docs, n_boot, seed) if n_boot else None
    per_layer: dict[int, dict[str, float]] = {}
    outliers: dict[str, dict] = {}
    boot: dict[int, dict[str, np.ndarray]] = {}
    boot_seconds = 0.0
    with Timer() as timer:
        for layer in progress.bar(meta["layers"], desc="score layers", unit="layer"):
            states = np.load(src / layer_file(layer), mmap_mode="r")
            kept, keep, report = apply_rule(np.asarray(states), rule, threshold)
            outliers[str(layer)] = report.to_dict()
            ctx = ProxyContext.from_states(kept, anchors=geo["anchors"], k=geo["k"], pairs=geo["pairs"],
                                           ridge=geo["ridge"], seed=seed)  # fmt: skip
            per_layer[layer] = evaluate_proxies(ctx, names)
            if counts is not None:
                with Timer() as bt:
                    boot[layer] = layer_replicates(ctx, doc[keep], counts, list(weights))
                boot_seconds += bt.seconds
    table = score_layers(per_layer, weights)
    stab = stability(boot, weights).to_dict() if boot else None
    write_json(cfg.out / "scores.json", {
        "layers": table.layers,
        "values": {str(k): v for k, v in per_layer.items()},
        "z": table.z,
        "score": table.score,
        "weights": weights,
        "best": table.best(),
        "seconds": timer.seconds,
        "bootstrap_seconds": boot_seconds,
        "n_tokens": meta["n_tokens"],
        "d": meta["d"],
        "n_layers": meta["n_layers"],
        "n_documents": n_docs,
        "block_start": meta.get("block_start"),
        "outlier_rule": describe(rule, threshold),
        "outliers": outliers,
    })  # fmt: skip
    if stab is not None:
        write_json(cfg.out / "stability.json", {**stab, "n_documents": n_docs, "seed": seed,
                                                "resampled": f"{n_boot} resamples of {n_docs} documents"})  # fmt: skip


def run_select(cfg: StageConfig) -> None:
    rule = cfg.params["select"]
    src = cfg.inputs["score"]
    scores = read_json(src / "scores.json")
    layers, g = scores["layers"], scores["score"]
    if rule["rule"] == "argmax":
        layer = scores["best"]
    else:
        layer = rule["layer"]
        if layer not in layers and not 1 <= layer < scores["n_layers"]:
            raise ValueError(f"select.layer: {layer} is not a layer of the backbone (1..{scores['n_layers'] - 1})")
    by_layer = dict(zip(layers, g))
    share = None
    if (src / "stability.json").exists():
        stab = read_json(src / "stability.json")
        share = dict(zip(stab["layers"], stab["argmax_share"])).get(layer)
    write_json(cfg.out / "selection.json", {
        "layer": layer, "rule": rule["rule"], "score": by_layer.get(layer),
        "rank_by_score": sorted(layers, key=lambda x: -by_layer[x]).index(layer) + 1 if layer in by_layer else None,
        "n_layers": scores["n_layers"], "argmax_share": share,
    })  # fmt: skip
