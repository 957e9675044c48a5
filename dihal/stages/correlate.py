"""correlate: does the geometry score predict insertion quality across layers (C1)?

When the score stage ran the document bootstrap, its replicates of G enter the interval
jointly with the resampled seeds and validation batches, so the interval also carries
the uncertainty of G itself (which documents the geometry sample happened to hold).
One result per scored geometry space, so a sweep answers "which view of the geometry
predicts the bridge?" by itself; the top level is the space ℓ* was selected in.
"""

from __future__ import annotations

import dihal.stages.dvc_files as dvc_files
from dihal.stages.common import RESULT_METRICS, StageConfig, check_stage_finite, read_json, write_json, write_results


def _one_space(
    cfg: StageConfig, scores: dict, stab: dict | None, selected: int, losses: dict[tuple[int, int], list[float]]
) -> dict:
    from dihal.analysis.correlation import correlate

    swept = sorted({layer for layer, _ in losses})
    g = dict(zip(scores["layers"], scores["score"]))
    missing = [layer for layer in swept if layer not in g]
    if missing:
        raise ValueError(f"bridge.layers {missing} are not geometry candidate layers, so they have no score G")
    replicates = None
    if stab is not None:
        cols = {layer: i for i, layer in enumerate(stab["layers"])}
        replicates = {layer: [row[cols[layer]] for row in stab["replicates"]] for layer in swept}
    result = correlate(
        {layer: g[layer] for layer in swept},
        losses,
        selected_layer=selected if selected in swept else min(swept, key=lambda x: -g[x]),
        n_boot=cfg.params["n_boot"],
        top_k=cfg.params["top_k"],
        seed=cfg.params["seed"],
        score_replicates=replicates,
    )
    out = result.to_dict()
    out["selected_layer"] = selected
    out["selected_swept"] = selected in swept
    if selected not in swept:  # that space's ℓ* was not trained: its rank by loss is unknown
        out["selected_rank"], out["in_top_k"] = None, None
    out["layers"] = swept
    check_stage_finite(cfg, out, RESULT_METRICS["correlate"])
    return out


def run(cfg: StageConfig) -> None:
    scores = read_json(cfg.inputs["score"] / "scores.json")
    selected = read_json(cfg.inputs["select"] / "selection.json")["layer"]
    losses: dict[tuple[int, int], list[float]] = {}
    for role, path in sorted(cfg.inputs.items()):
        if role.startswith("evaluate"):
            m = read_json(path / "metrics.json")
            losses[(int(m["layer"]), int(m["seed"]))] = m["val_batch_losses"]
    stab_path = cfg.inputs["score"] / "stability.json"
    stab = read_json(stab_path) if stab_path.exists() else None
    space = scores.get("space")
    per_space = scores.get("spaces") or {space: scores}
    stab_spaces = (stab or {}).get("spaces") or {space: stab}
    # Every scored space gets its own C1; ℓ* in a space other than the selection's is that space's argmax.
    by_space = {
        name: _one_space(cfg, block, stab_spaces.get(name), selected if name == space else block["best"], losses)
        for name, block in per_space.items()
    }
    out = {**by_space[space], "space": space, "spaces": by_space}
    write_json(cfg.out / "correlation.json", out)
    g = dict(zip(scores["layers"], scores["score"]))
    write_results(cfg, *dvc_files.correlate_results(out, g, losses))
