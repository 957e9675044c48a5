"""Turn a plan's stage outputs into ledger rows (pure: reads files, returns rows)."""

from __future__ import annotations

import json
from pathlib import Path

from dihal.analysis.mauve_metric import MAUVE_KEYS
from dihal.compile.plan import Plan
from dihal.ledger.schema import PROXY_COLUMNS
from dihal.spec.geometry import STANDARD
from dihal.stages.common import GEN_METRICS, JUDGED_METRICS, RESULT_METRICS, check_finite, read_json
from dihal.stages.manifest import verify_stages

# Ledger columns that are results (see RESULT_METRICS, which names them as the stage files do): a NaN or inf in
# any of them fails the ingest, so a run whose stage files were written by older code (or edited) is never
# recorded `succeeded` with a broken number. G is `score` in the stage files and `g` in the ledger.
ROW_METRICS: dict[str, tuple[str, ...]] = {
    "layer_geometry": ("g",),
    "selections": ("g",),
    "selection_stability": ("g",),
    "bridge_results": RESULT_METRICS["evaluate"],
    "training_curves": RESULT_METRICS["train"],
    "correlations": RESULT_METRICS["correlate"],
    "reference_results": RESULT_METRICS["reference"],
    "interface_results": RESULT_METRICS["evaluate"],
    "frontier_points": RESULT_METRICS["frontier"],
}


def check_rows(tables: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """The tables unchanged, or NonFiniteMetricError naming the table, the row (layer/seed/variant) and the value."""
    for table, rows in tables.items():
        for row in rows:
            where = ", ".join(
                f"{k} {row[k]}"
                for k in ("variant", "reference", "interface", "layer", "seed", "step", "temperature", "steps")
                if row.get(k) is not None
            )
            check_finite(f"ingest {table} ({where})" if where else f"ingest {table}", row, ROW_METRICS.get(table, ()))
    return tables


def _prov(run: dict) -> dict:
    return {"run_id": run["run_id"], "code_version": run["code_version"], "packages": run["packages"]}


def _stability(score_dir: Path) -> dict | None:
    path = score_dir / "stability.json"
    return read_json(path) if path.exists() else None


def _intervals(stab: dict | None) -> dict[int, tuple[float, float, float]]:
    """layer -> (G low, G high, argmax share) from a stability.json, empty without one."""
    if not stab:
        return {}
    return {
        layer: (lo, hi, sh)
        for layer, lo, hi, sh in zip(stab["layers"], stab["g_lo"], stab["g_hi"], stab["argmax_share"])
    }


def selection_warning(scores: dict, layer: int, limit: float) -> str | None:
    """A sentence when the top 0.1% of states carry more than `limit` of ℓ*'s variance after the outlier rule."""
    o = (scores.get("outliers") or {}).get(str(layer))
    if not o or o["top_share_after"] <= limit:
        return None
    k = max(1, -(-o["n_kept"] // 1000))
    return (
        f"at ℓ* = {layer} the top 0.1% of states ({k} of {o['n_kept']}) carry {o['top_share_after']:.0%} of the "
        f"variance after the outlier rule ({scores.get('outlier_rule')}; limit {limit:.0%}): a handful of states "
        "may decide the proxies there; see the massive-activation panel, or try a lower outliers.threshold"
    )


def _per_space(scores: dict, stab: dict | None) -> dict[str, tuple[dict, dict | None]]:
    """space -> (its scores block, its stability block); stage outputs without `spaces` are the scalar space."""
    space = scores.get("space") or "scalar"
    blocks = scores.get("spaces") or {space: scores}
    stabs = (stab or {}).get("spaces") or {space: stab}
    return {name: (block, stabs.get(name)) for name, block in blocks.items()}


def geometry_rows(
    plan: Plan, root: Path, spec_hash: str, run: dict, seed: int, warn_top_share: float = 0.05
) -> dict[str, list[dict]]:
    verify_stages(root, [plan.score, plan.select, *plan.variants.values()])  # before reading (dihal.stages.manifest)
    scores = read_json(root / plan.score.out / "scores.json")
    sel = read_json(root / plan.select.out / "selection.json")
    stab = _stability(root / plan.score.out)
    rows = []
    for space, (block, space_stab) in _per_space(scores, stab).items():
        interval = _intervals(space_stab)
        for i, layer in enumerate(block["layers"]):
            vals = block["values"][str(layer)]
            z = {name: block["z"][name][i] for name in block["z"]}
            o = (scores.get("outliers") or {}).get(str(layer), {})
            shape = (block.get("shape") or {}).get(str(layer), {})
            lo, hi, share = interval.get(layer, (None, None, None))
            rows.append(
                {
                    "spec_hash": spec_hash,
                    "space": space,
                    "layer": layer,
                    **{PROXY_COLUMNS[p]: vals.get(p) for p in STANDARD},
                    "participation_ratio": vals.get("participation_ratio"),
                    "lambda_min_p": vals.get("lambda_min_p"),
                    **{f"z_{PROXY_COLUMNS[p]}": z.get(p) for p in STANDARD},
                    "g": block["score"][i],
                    "selected": layer == sel["layer"],
                    "space_best": layer == block["best"],
                    "proxies": {"values": vals, "z": z, "weights": scores["weights"]},
                    "n_states": o.get("n_kept"),
                    "norm_ratio_max": o.get("norm_ratio_max"),
                    "n_over_threshold": o.get("n_over_threshold"),
                    "top_share_before": o.get("top_share_before"),
                    "top_share_after": o.get("top_share_after"),
                    "top_channel": o.get("top_channel"),
                    "top_channel_share": o.get("top_channel_share"),
                    "g_lo": lo,
                    "g_hi": hi,
                    "argmax_share": share,
                    "space_channel_share": shape.get("top_channel_share"),
                    "top_direction_share": shape.get("top_direction_share"),
                    "top_channel_tokens": ((scores.get("channels") or {}).get(str(layer)) or {}).get("tokens"),
                    **_prov(run),
                    "seed": seed,
                }
            )
    start = scores.get("block_start") or {}
    selection = [
        {
            "spec_hash": spec_hash,
            "rule": sel["rule"],
            "layer": sel["layer"],
            "g": sel["score"],
            "n_candidates": len(scores["layers"]),
            "argmax_share": sel.get("argmax_share"),
            "n_boot": stab["n_boot"] if stab else None,
            "n_documents": scores.get("n_documents"),
            "block_start": start.get("text"),
            "outlier_rule": scores.get("outlier_rule"),
            "warning": selection_warning(scores, sel["layer"], warn_top_share),
            "space": sel.get("space") or "scalar",
            "confidence": sel.get("confidence"),
            **_prov(run),
            "seed": seed,
        }
    ]
    stability = _stability_rows("main", {}, scores, stab, spec_hash, run, seed)
    for name, score_stage in plan.variants.items():
        v_scores = read_json(root / score_stage.out / "scores.json")
        stability += _stability_rows(
            name,
            plan.variant_settings.get(name, {}),
            v_scores,
            _stability(root / score_stage.out),
            spec_hash,
            run,
            seed,
        )
    return check_rows({"layer_geometry": rows, "selections": selection, "selection_stability": stability})


def _stability_rows(
    variant: str, settings: dict, scores: dict, stab: dict | None, spec_hash: str, run: dict, seed: int
) -> list[dict]:
    """One row per (space, layer): G, its interval and argmax share; `selected` marks that space's argmax of G."""
    rows = []
    for space, (block, space_stab) in _per_space(scores, stab).items():
        by_layer = _intervals(space_stab)
        for layer, g in zip(block["layers"], block["score"]):
            lo, hi, share = by_layer.get(layer, (None, None, None))
            o = (scores.get("outliers") or {}).get(str(layer), {})
            rows.append(
                {
                    "spec_hash": spec_hash,
                    "variant": variant,
                    "space": space,
                    "layer": layer,
                    "g": g,
                    "g_lo": lo,
                    "g_hi": hi,
                    "argmax_share": share,
                    "selected": layer == block["best"],
                    "n_boot": space_stab["n_boot"] if space_stab else None,
                    "n_documents": scores.get("n_documents"),
                    "top_share_after": o.get("top_share_after"),
                    "settings": settings,
                    **_prov(run),
                    "seed": seed,
                }
            )
    return rows


def bridge_rows(plan: Plan, root: Path, spec_hash: str, run: dict) -> dict[str, list[dict]]:
    results, curves, samples = [], [], []
    for ev in plan.evaluations:
        verify_stages(root, [ev, ev.upstream["train"]])
        m = read_json(root / ev.out / "metrics.json")
        train_dir = root / ev.upstream["train"].out
        tmeta = read_json(train_dir / "meta.json")
        layer, seed = m["layer"], m["seed"]
        results.append(
            {
                "spec_hash": spec_hash,
                "layer": layer,
                "seed": seed,
                **{
                    k: m[k]
                    for k in (
                        "bridge_val_loss",
                        "recovery_ce",
                        "recovery_token_acc",
                        "recovery_clean_agreement",
                        "gen_ppl",
                        "distinct_1",
                        "distinct_2",
                        "distinct_3",
                        "diversity",
                        "unigram_entropy",
                        "samples_digest",
                    )
                },
                **{k: m.get(k) for k in MAUVE_KEYS},  # absent from metrics written before MAUVE
                "train_seconds": tmeta["seconds"],
                "train_tokens_per_s": tmeta["tokens_per_s"],
                "val_batch_losses": m["val_batch_losses"],
                **_prov(run),
            }
        )
        for point in read_json(train_dir / "curve.json"):
            curves.append(
                {
                    "spec_hash": spec_hash,
                    "layer": layer,
                    "seed": seed,
                    "step": point["step"],
                    "loss": point["loss"],
                    "lr": point.get("lr"),
                    "grad_norm": point.get("grad_norm"),
                }
            )
        with open(root / ev.out / "samples.jsonl") as f:
            for line in f:
                s = json.loads(line)
                samples.append(
                    {"spec_hash": spec_hash, "layer": layer, "seed": seed, "idx": s["index"], "text": s["text"]}
                )
    return check_rows({"bridge_results": results, "training_curves": curves, "samples": samples})


REFERENCE_COLUMNS = (*JUDGED_METRICS, "n_samples", "seq_len", "samples_digest")


def reference_rows(plan: Plan, root: Path, spec_hash: str, run: dict) -> dict[str, list[dict]]:
    """One reference_results row per (reference, bridge seed) from the reference stage's references.json."""
    if plan.reference is None:
        return {}
    verify_stages(root, [plan.reference])
    rows = [
        {
            "spec_hash": spec_hash,
            "reference": r["reference"],
            "seed": r["seed"],
            **{k: r[k] for k in REFERENCE_COLUMNS},
            **{k: r.get(k) for k in MAUVE_KEYS},
            **_prov(run),
        }
        for r in read_json(root / plan.reference.out / "references.json")
    ]
    return check_rows({"reference_results": rows})


def correlation_rows(plan: Plan, root: Path, spec_hash: str, run: dict, seed: int) -> dict[str, list[dict]]:
    """One correlations row per scored geometry space (stage outputs without `spaces` are the scalar space)."""
    if plan.correlate is None:
        return {}
    verify_stages(root, [plan.correlate])
    c = read_json(root / plan.correlate.out / "correlation.json")
    keys = (
        "spearman_rho",
        "spearman_lo",
        "spearman_hi",
        "kendall_tau",
        "kendall_lo",
        "kendall_hi",
        "selected_layer",
        "selected_rank",
        "best_layer",
        "in_top_k",
        "top_k",
        "n_layers",
        "n_seeds",
        "n_batches",
        "n_boot",
        "spearman_p",
        "kendall_p",
        "n_perm",
        "interval_method",
        "resampled",
    )
    chosen = c.get("space") or "scalar"
    by_space = c.get("spaces") or {chosen: c}
    return check_rows(
        {
            "correlations": [
                {
                    "spec_hash": spec_hash,
                    "space": space,
                    "selection_space": space == chosen,
                    **{k: r.get(k) for k in keys},
                    **_prov(run),
                    "seed": seed,
                }
                for space, r in sorted(by_space.items())
            ]
        }
    )


INTERFACE_METRICS = (
    "bridge_val_loss",
    "recovery_ce",
    "recovery_token_acc",
    "recovery_clean_agreement",
    "recovery_coverage",
    "gen_ppl",
    "gen_nll",
    "distinct_1",
    "distinct_2",
    "distinct_3",
    "diversity",
    "unigram_entropy",
    "samples_digest",
    *MAUVE_KEYS,
)


def interface_rows(plan: Plan, root: Path, spec_hash: str, run: dict) -> dict[str, list[dict]]:
    """One interface_results row per evaluation, the bridge's ('hidden') and each C3 baseline's, with its budget.

    Files from before interfaces existed lack the budget fields; a hidden bridge's are then its steps, its
    denoiser and a recovery budget of 0 (the pretrained upper stack), which is what they were."""
    rows = []
    for ev in [*plan.evaluations, *plan.baselines]:
        train = ev.upstream["train"]
        verify_stages(root, [ev, train])
        m = read_json(root / ev.out / "metrics.json")
        t = read_json(root / train.out / "meta.json")
        settings = train.params.get("interface") or {"name": "hidden"}
        rows.append(
            {
                "spec_hash": spec_hash,
                "interface": m.get("interface", "hidden"),
                "layer": m["layer"],
                "seed": m["seed"],
                **{k: m.get(k) for k in INTERFACE_METRICS},
                "diffusion_steps": t.get("diffusion_steps", t["steps"]),
                "denoiser_params": t["n_params"],
                "recovery_steps": t.get("recovery_steps", 0),
                "recovery_params": t.get("recovery_params", 0),
                "budget_matched": t.get("budget_matched", True),
                "train_seconds": t["seconds"],
                "recovery_seconds": t.get("recovery_seconds", 0.0),
                "eval_seconds": m.get("seconds"),
                "settings": settings,
                **_prov(run),
            }
        )
    return check_rows({"interface_results": rows})


FRONTIER_COLUMNS = (
    "interface",
    "layer",
    "seed",
    "temperature",
    "steps",
    *GEN_METRICS,
    "n_samples",
    "samples_digest",
)


def frontier_rows(plan: Plan, root: Path, spec_hash: str, run: dict) -> dict[str, list[dict]]:
    """One frontier_points row per point of each frontier stage's frontier.json (none without eval.frontier)."""
    if not plan.frontiers:
        return {}
    verify_stages(root, plan.frontiers)
    rows = [
        {"spec_hash": spec_hash, "stage": st.name, "point": i, **{k: r.get(k) for k in FRONTIER_COLUMNS}, **_prov(run)}
        for st in plan.frontiers
        for i, r in enumerate(read_json(root / st.out / "frontier.json"))
    ]
    return check_rows({"frontier_points": rows})
