"""score and select: the geometry proxies per layer and space, their z-scores, G, ℓ*, and how sure ℓ* is.

Per layer: the outlier rule (massive activations, `geometry/outliers.py`) first, with
its diagnostics and the tokens behind the dominant channel recorded; then, in every
configured space (`geometry/spaces.py`), the proxies on what is left and the document
bootstrap (`geometry/stability.py`). `geometry/locate.py` holds the whole path.
"""

from __future__ import annotations

import numpy as np

import dihal.stages.dvc_files as dvc_files
from dihal.analysis.verdicts import confidence
from dihal.spec.geometry import STANDARD  # always computed: the ledger has a column for each
from dihal.stages.common import (
    RESULT_METRICS,
    StageConfig,
    Timer,
    check_stage_finite,
    read_json,
    write_json,
    write_results,
)
from dihal.stages.extract import layer_file
from dihal.utils import progress


def _space_block(res, name: str) -> dict:
    sr = res.spaces[name]
    t = sr.table
    return {
        "layers": t.layers,
        "values": {str(k): v for k, v in sr.values.items()},
        "z": t.z,
        "score": t.score,
        "best": t.best(),
        "shape": {str(k): v for k, v in sr.shape.items()},
    }


def _stability_block(stab, n_documents: int, seed: int) -> dict | None:
    return None if stab is None else {**stab.to_dict(), "n_documents": n_documents, "seed": seed}


def run_score(cfg: StageConfig) -> None:
    from dihal.geometry.locate import locate
    from dihal.geometry.outliers import describe

    geo, seed = cfg.params["geometry"], cfg.params["seed"]
    src = cfg.inputs["extract"]
    meta = read_json(src / "meta.json")
    rule, threshold = geo["outliers"]["rule"], geo["outliers"]["threshold"]
    space, spaces = geo["space"], geo["spaces"]
    tokens = np.load(src / "state_tokens.npy") if (src / "state_tokens.npy").exists() else None
    text = {int(k): v for k, v in read_json(src / "token_text.json").items()} if tokens is not None else None
    with Timer() as timer:
        res = locate(
            meta["layers"],
            lambda layer: np.load(src / layer_file(layer), mmap_mode="r"),
            np.load(src / "documents.npy"),
            weights=geo["proxies"],
            names=STANDARD,
            spaces=spaces,
            space=space,
            tokens=tokens,
            token_text=text,
            rule=rule,
            threshold=threshold,
            anchors=geo["anchors"],
            k=geo["k"],
            pairs=geo["pairs"],
            ridge=geo["ridge"],
            seed=seed,
            n_boot=geo["n_boot"],
            progress=progress.bar,
        )
    # The top level is the space ℓ* comes from (what select, correlate and the DVC files read); `spaces` holds
    # every scored space, the chosen one included, so each can be reported and correlated on its own.
    scores = {
        **_space_block(res, space),
        "space": space,
        "spaces": {name: _space_block(res, name) for name in spaces},
        "weights": geo["proxies"],
        "seconds": timer.seconds,
        "bootstrap_seconds": res.bootstrap_seconds,
        "n_tokens": meta["n_tokens"],
        "d": meta["d"],
        "n_layers": meta["n_layers"],
        "n_documents": res.n_documents,
        "block_start": meta.get("block_start"),
        "outlier_rule": describe(rule, threshold),
        "outliers": {str(k): v for k, v in res.outliers.items()},
        "channels": {str(k): v for k, v in res.channels.items()},
    }
    for name in spaces:
        check_stage_finite(cfg, scores["spaces"][name], RESULT_METRICS["score"])
    write_json(cfg.out / "scores.json", scores)
    stability = None
    if res.stability is not None:
        stability = {
            **_stability_block(res.stability, res.n_documents, seed),
            "space": space,
            "spaces": {name: _stability_block(res.spaces[name].stability, res.n_documents, seed) for name in spaces},
        }
        write_json(cfg.out / "stability.json", stability)
    # from the stored JSON, so the DVC metrics carry exactly the numbers in artifacts/ and the ledger
    write_results(
        cfg,
        *dvc_files.score_results(
            read_json(cfg.out / "scores.json"), stability and read_json(cfg.out / "stability.json")
        ),
    )


def run_select(cfg: StageConfig) -> None:
    rule = cfg.params["select"]
    src = cfg.inputs["score"]
    scores = read_json(src / "scores.json")
    layers, g = scores["layers"], scores["score"]
    if rule["rule"] == "argmax":
        layer = scores["best"]
    else:
        layer = rule["layer"]
        # dihal.compile.preflight refuses the same before any compute; this guards a config run by `dvc repro` alone
        if not 1 <= layer <= scores["n_layers"]:
            raise ValueError(f"select.layer: {layer} is not a layer of the backbone (1..{scores['n_layers']})")
    by_layer = dict(zip(layers, g))
    share, stab = None, None
    if (src / "stability.json").exists():
        stab = read_json(src / "stability.json")
        share = dict(zip(stab["layers"], stab["argmax_share"])).get(layer)
    selection = {
        "layer": layer,
        "rule": rule["rule"],
        "score": by_layer.get(layer),
        "rank_by_score": sorted(layers, key=lambda x: -by_layer[x]).index(layer) + 1 if layer in by_layer else None,
        "n_layers": scores["n_layers"],
        "argmax_share": share,
        "space": scores.get("space"),
        "confidence": confidence(layer, scores, stab if share is not None else None)
        if rule["rule"] == "argmax"
        else None,
    }
    check_stage_finite(cfg, selection, RESULT_METRICS["select"])
    write_json(cfg.out / "selection.json", selection)
    write_results(cfg, dvc_files.select_metrics(selection))
