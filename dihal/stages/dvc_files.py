"""dihal's results in DVC's own terms: params, metrics and plots, so `dvc params diff`,
`dvc metrics show`, `dvc plots show` and `dvc exp show` work without any dihal command.

- params: a stage's frozen config `.dihal/stages/<kind>-<hash>.json` is declared as a DVC
  params file with its `params` key (the settings that define the stage), so DVC shows them
  as `params.geometry.k`, `params.bridge.lr`, ...; the file stays a plain dep as well, so the
  rest of the config (inputs, identity) still invalidates the stage.
- metrics: `metrics/<stage-name>.json`, a few scalars per stage (score: ℓ*, its G and argmax
  share -- G per layer is a plot; select: the layer trained; train: the final logged loss; evaluate: the bridge
  metrics of one (layer, seed); correlate: ρ, τ and their p-values; reference: the judged perplexity and
  text metrics of each reference row).
- plots: `plots/<stage-name>/<file>.json`, lists of rows (score: the geometry profile per layer;
  train: the training curve; correlate: G against bridge loss per layer).

Both live outside `artifacts/`, because DVC refuses an output inside another stage output, and
carry `cache: false`: they are small summaries of cached outputs (commit them with git if you
want `dvc metrics diff` across commits). They are written by the stage that owns them, from the
values it has just computed or stored, so they never disagree with `artifacts/` or the ledger.
Stage configs name their files under `results`; this module is the one place the names, the
fields and the plot axes are defined. It imports nothing heavy (the pipeline compiles without torch).
"""

from __future__ import annotations

from pathlib import Path

from dihal.utils.numbers import finite_or_none

METRICS_DIR = Path("metrics")
PLOTS_DIR = Path("plots")

# kind -> plot file -> DVC plot properties (x, y, template)
PLOTS: dict[str, dict[str, dict]] = {
    "score": {
        "geometry.json": {
            "x": "layer",
            "y": "G",
            "title": "Geometry score G per layer (the argmax is ℓ*)",
            "x_label": "layer ℓ",
            "y_label": "G = z(κ) − z(σ) + z(r)",
        }
    },
    "train": {
        "curve.json": {
            "x": "step",
            "y": "loss",
            "title": "Bridge training loss",
            "x_label": "optimizer step",
            "y_label": "denoising loss",
        }
    },
    "correlate": {
        "g_vs_loss.json": {
            "x": "G",
            "y": "bridge_val_loss",
            "template": "scatter",
            "title": "C1: geometry score against bridge validation loss, one point per layer",
            "x_label": "G",
            "y_label": "bridge validation loss (mean over seeds)",
        }
    },
}
HAS_METRICS = ("score", "select", "train", "evaluate", "correlate", "reference")
# evaluate's metrics.json fields that are not metrics (lists, digests, timings)
_NOT_METRICS = {"val_batch_losses", "samples_digest", "seconds", "interface"}


def results(kind: str, name: str) -> dict:
    """Where a stage writes its DVC metrics and plots (recorded in its config under `results`)."""
    out: dict = {}
    if kind in HAS_METRICS:
        out["metrics"] = str(METRICS_DIR / f"{name}.json")
    if kind in PLOTS:
        out["plots"] = {f: str(PLOTS_DIR / name / f) for f in PLOTS[kind]}
    return out


def dvc_fields(kind: str, name: str, config_path: Path | str) -> dict:
    """The `params`, `metrics` and `plots` entries of a stage in dvc.yaml."""
    res = results(kind, name)
    fields: dict = {"params": [{str(config_path): ["params"]}]}
    if "metrics" in res:
        fields["metrics"] = [{res["metrics"]: {"cache": False}}]
    if "plots" in res:
        fields["plots"] = [{path: {"cache": False, **PLOTS[kind][f]}} for f, path in res["plots"].items()]
    return fields


def score_results(scores: dict, stability: dict | None) -> tuple[dict, dict]:
    """(metrics, plots) of a score stage from its scores.json and stability.json contents."""
    layers, g = scores["layers"], scores["score"]
    share = dict(zip(stability["layers"], stability["argmax_share"])) if stability else {}
    best = scores["best"]
    # G per layer is a series, so it is a plot (geometry.json), not 29 metric columns in `dvc exp show`
    metrics = {"ell_star": best, "argmax_share": share.get(best), "G_at_ell_star": g[layers.index(best)]}
    if scores.get("spaces"):
        shares = (stability or {}).get("spaces") or {}
        metrics["by_space"] = {
            name: {
                "ell_star": b["best"],
                "argmax_share": dict(zip(shares[name]["layers"], shares[name]["argmax_share"])).get(b["best"])
                if shares.get(name)
                else None,
            }
            for name, b in sorted(scores["spaces"].items())
        }
    rows = []
    for i, layer in enumerate(layers):
        row = {"layer": layer, "G": g[i], **{f"z_{p}": z[i] for p, z in sorted(scores["z"].items())}}
        row.update({p: v for p, v in scores["values"][str(layer)].items() if isinstance(v, (int, float))})
        if share:
            row["argmax_share"] = share.get(layer)
        rows.append({k: finite_or_none(v) for k, v in row.items()})
    return metrics, {"geometry.json": rows}


def select_metrics(selection: dict) -> dict:
    return {k: selection[k] for k in ("layer", "score", "argmax_share", "rank_by_score")}


def train_results(curve: list[dict], meta: dict) -> tuple[dict, dict]:
    final = curve[-1]["loss"] if curve else None
    metrics = {"layer": meta["layer"], "seed": meta["seed"], "steps": meta["steps"], "final_loss": final}
    return metrics, {"curve.json": curve}


def evaluate_metrics(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in _NOT_METRICS and v is not None}


def reference_metrics(rows: list[dict]) -> dict:
    """reference -> s<seed> -> its judged perplexity, text metrics and MAUVE (the rows of references.json)."""
    keys = ("gen_ppl", "gen_nll", "distinct_1", "distinct_2", "distinct_3", "diversity", "unigram_entropy")
    keys += ("mauve", "mauve_lo", "mauve_hi")
    out: dict = {}
    for r in rows:
        out.setdefault(r["reference"], {})[f"s{r['seed']}"] = {k: r[k] for k in keys if r.get(k) is not None}
    return out


def correlate_results(out: dict, g: dict[int, float], losses: dict[tuple[int, int], list[float]]) -> tuple[dict, dict]:
    """(metrics, plots) of a correlate stage: ρ, τ, p, ℓ*'s rank; G against mean bridge loss per layer."""
    keys = (
        "spearman_rho",
        "spearman_lo",
        "spearman_hi",
        "spearman_p",
        "kendall_tau",
        "kendall_lo",
        "kendall_hi",
        "kendall_p",
        "best_layer",
        "selected_layer",
        "selected_rank",
        "in_top_k",
        "n_layers",
        "n_seeds",
    )
    metrics = {k: out.get(k) for k in keys}
    if out.get("spaces"):
        metrics["by_space"] = {
            name: {k: c.get(k) for k in ("spearman_rho", "spearman_p", "kendall_tau", "kendall_p")}
            for name, c in sorted(out["spaces"].items())
        }
    rows = []
    for layer in out["layers"]:
        per_seed = [sum(v) / len(v) for (la, _), v in sorted(losses.items()) if la == layer]
        rows.append({"layer": layer, "G": g[layer], "bridge_val_loss": sum(per_seed) / len(per_seed)})
    return metrics, {"g_vs_loss.json": rows}
