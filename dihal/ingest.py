"""Turn a plan's stage outputs into ledger rows (pure: reads files, returns rows)."""

from __future__ import annotations

import json
from pathlib import Path

from dihal.pipeline import Plan
from dihal.stages.common import read_json
from dihal.stages.score import STANDARD


def _prov(run: dict) -> dict:
    return {"run_id": run["run_id"], "code_version": run["code_version"], "packages": run["packages"]}


def geometry_rows(plan: Plan, root: Path, spec_hash: str, run: dict, seed: int) -> dict[str, list[dict]]:
    scores = read_json(root / plan.score.out / "scores.json")
    sel = read_json(root / plan.select.out / "selection.json")
    rows = []
    for i, layer in enumerate(scores["layers"]):
        vals = scores["values"][str(layer)]
        z = {name: scores["z"][name][i] for name in scores["z"]}
        rows.append({
            "spec_hash": spec_hash, "layer": layer,
            **{p: vals.get(p) for p in STANDARD},
            "participation_ratio": vals.get("participation_ratio"), "lambda_min_p": vals.get("lambda_min_p"),
            **{f"z_{p}": z.get(p) for p in STANDARD},
            "score": scores["score"][i], "selected": layer == sel["layer"],
            "proxies": {"values": vals, "z": z, "weights": scores["weights"]},
            **_prov(run), "seed": seed,
        })  # fmt: skip
    selection = [{
        "spec_hash": spec_hash, "rule": sel["rule"], "layer": sel["layer"], "score": sel["score"],
        "n_candidates": len(scores["layers"]), **_prov(run), "seed": seed,
    }]  # fmt: skip
    return {"layer_geometry": rows, "selections": selection}


def bridge_rows(plan: Plan, root: Path, spec_hash: str, run: dict) -> dict[str, list[dict]]:
    results, curves, samples = [], [], []
    for ev in plan.evaluations:
        m = read_json(root / ev.out / "metrics.json")
        train_dir = root / ev.upstream["train"].out
        tmeta = read_json(train_dir / "meta.json")
        layer, seed = m["layer"], m["seed"]
        results.append({
            "spec_hash": spec_hash, "layer": layer, "seed": seed,
            **{k: m[k] for k in ("bridge_val_loss", "recovery_ce", "recovery_token_acc", "recovery_clean_agreement",
                                 "gen_ppl", "distinct_1", "distinct_2", "distinct_3", "diversity",
                                 "unigram_entropy", "samples_digest")},
            "train_seconds": tmeta["seconds"], "train_tokens_per_s": tmeta["tokens_per_s"],
            "val_batch_losses": m["val_batch_losses"], **_prov(run),
        })  # fmt: skip
        for point in read_json(train_dir / "curve.json"):
            curves.append({"spec_hash": spec_hash, "layer": layer, "seed": seed, "step": point["step"],
                           "loss": point["loss"], "lr": point.get("lr"), "grad_norm": point.get("grad_norm")})
        with open(root / ev.out / "samples.jsonl") as f:
            for line in f:
                s = json.loads(line)
                samples.append({"spec_hash": spec_hash, "layer": layer, "seed": seed, "idx": s["index"],
                                "text": s["text"]})  # fmt: skip
    return {"bridge_results": results, "training_curves": curves, "samples": samples}


def correlation_rows(plan: Plan, root: Path, spec_hash: str, run: dict, seed: int) -> dict[str, list[dict]]:
    if plan.correlate is None:
        return {}
    c = read_json(root / plan.correlate.out / "correlation.json")
    keys = ("spearman_rho", "spearman_lo", "spearman_hi", "kendall_tau", "kendall_lo", "kendall_hi",
            "selected_layer", "selected_rank", "best_layer", "in_top_k", "top_k", "n_layers", "n_seeds",
            "n_batches", "n_boot")  # fmt: skip
    return {"correlations": [{"spec_hash": spec_hash, **{k: c.get(k) for k in keys}, **_prov(run), "seed": seed}]}
