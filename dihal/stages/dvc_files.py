"""dihal's results in DVC's own terms: params, metrics and plots, so `dvc params diff`,
`dvc metrics show`, `dvc plots show` and `dvc exp show` work without any dihal command.

- params: a stage's frozen config `.dihal/stages/<kind>-<hash>.json` is declared as a DVC
  params file with its `params` key (the settings that define the stage), so DVC shows them
  as `params.geometry.k`, `params.bridge.lr`, ...; the file stays a plain dep as well, so the
  rest of the config (inputs, identity) still invalidates the stage.
- metrics: `metrics/<stage-name>.json`, a few scalars per stage (score: ℓ*, its G and argmax
  share -- G per layer is a plot; select: the layer trained; train: the final logged loss; evaluate: the bridge
  metrics of one (layer, seed); correlate: ρ, τ and their p-values; reference: the judged perplexity and
  text metrics of each reference row). Each spec also gets one `metrics/summary-<spec name>.json` from its
  summary stage: its headline numbers under the key `summary`, so `dvc exp show --keep` can pick out every
  summary column with one pattern, and named after the spec rather than a stage hash, so the file keeps its
  name when the spec changes and `dvc metrics diff` pairs it across commits. The per-stage files stay: they
  hold what the summary leaves out (every layer and seed, τ, intervals, diversity).
- plots: `plots/<stage-name>/<file>.json`, lists of rows (score: the geometry profile per layer;
  train: the training curve; correlate: G against bridge loss per layer). The geometry and C1 plots
  name dihal's own Vega-Lite templates (`dihal.stages.plot_series` names them and the row fields they
  read, `dihal.compile.dvc_views` writes them): G with the z-scores it sums and a marker at ℓ*, and
  the C1 points labelled by layer.

Both live outside `artifacts/`, because DVC refuses an output inside another stage output, and
carry `cache: false`: they are small summaries of cached outputs (commit them with git if you
want `dvc metrics diff` across commits). They are written by the stage that owns them, from the
values it has just computed or stored, so they never disagree with `artifacts/` or the ledger.
Stage configs name their files under `results`; this module is the one place the names, the
fields and the plot axes are defined. It imports nothing heavy (the pipeline compiles without torch).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from dihal.stages import plot_series
from dihal.utils.numbers import finite_or_none

METRICS_DIR = Path("metrics")
PLOTS_DIR = Path("plots")

# kind -> plot file -> DVC plot properties (x, y, template)
PLOTS: dict[str, dict[str, dict]] = {
    "score": {
        "geometry.json": {
            "x": "layer",
            "y": "G",  # the templates fold in the proxies' z-scores (plot_series); DVC checks this field exists
            "template": plot_series.GEOMETRY_TEMPLATE,
            "title": "Geometry score G per layer, with the z-scores it sums; ℓ* marked",
            "x_label": "layer ℓ",
            "y_label": "z-score across the scored layers",
        }
    },
    "train": {
        "curve.json": {
            "x": "step",
            "y": "loss",
            "title": "Bridge training loss, {stage}",  # a sweep has one per (layer, seed): the stage name says which
            "x_label": "optimizer step",
            "y_label": "denoising loss",
        }
    },
    "correlate": {
        "g_vs_loss.json": {
            "x": "G",
            "y": "bridge_val_loss",
            "template": plot_series.G_VS_LOSS_TEMPLATE,
            "title": "C1: geometry score against bridge validation loss, one point per layer (ℓ* marked)",
            "x_label": "G",
            "y_label": "bridge validation loss (mean over seeds)",
        }
    },
}
HAS_METRICS = ("score", "select", "train", "evaluate", "correlate", "reference", "summary")
SUMMARY_KEY = "summary"  # the summary's one top-level key: its columns in `dvc exp show` all start `summary.`
# evaluate's metrics.json fields that are not metrics (lists, digests, timings)
_NOT_METRICS = {"val_batch_losses", "samples_digest", "seconds", "interface"}


def summary_path(spec_name: str) -> Path:
    """`metrics/summary-<spec name>.json`. A name may hold any character (`-S` overrides add `+`, `=`, `[`):
    each one outside [A-Za-z0-9_.-] becomes `_`, and such a name gets 8 hex digits of its sha256, so two names
    that differ only there keep two files."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", spec_name)
    if safe != spec_name:
        safe += "-" + hashlib.sha256(spec_name.encode()).hexdigest()[:8]
    return METRICS_DIR / f"summary-{safe}.json"


def results(kind: str, name: str, spec_name: str | None = None) -> dict:
    """Where a stage writes its DVC metrics and plots (recorded in its config under `results`); a summary
    stage's file is named after its spec (`spec_name`), every other after the stage."""
    out: dict = {}
    if kind == "summary":
        if spec_name is None:
            raise ValueError(
                f"summary stage {name}: its metrics file is named after the spec, and no spec name was given"
            )
        out["metrics"] = str(summary_path(spec_name))
    elif kind in HAS_METRICS:
        out["metrics"] = str(METRICS_DIR / f"{name}.json")
    if kind in PLOTS:
        out["plots"] = {f: str(PLOTS_DIR / name / f) for f in PLOTS[kind]}
    return out


def _named(props: dict, stage: str) -> dict:
    return {**props, "title": props["title"].replace("{stage}", stage)}


def dvc_fields(kind: str, name: str, config_path: Path | str, spec_name: str | None = None) -> dict:
    """The `params`, `metrics` and `plots` entries of a stage in dvc.yaml. A summary stage declares no params:
    it has no settings of its own, and its config would only add columns to `dvc exp show`."""
    res = results(kind, name, spec_name)
    fields: dict = {} if kind == "summary" else {"params": [{str(config_path): ["params"]}]}
    if "metrics" in res:
        fields["metrics"] = [{res["metrics"]: {"cache": False}}]
    if "plots" in res:
        fields["plots"] = [{path: {"cache": False, **_named(PLOTS[kind][f], name)}} for f, path in res["plots"].items()]
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
    formula = plot_series.g_formula(scores.get("weights") or {p: 1.0 for p in scores["z"]})
    for i, layer in enumerate(layers):
        row = {"G": g[i], **{plot_series.z_field(p): z[i] for p, z in sorted(scores["z"].items())}}
        # a missing number stays as null: DVC drops a list whose rows do not all have the same keys
        row.update({p: v for p, v in scores["values"][str(layer)].items() if v is None or isinstance(v, (int, float))})
        if share:
            row["argmax_share"] = share.get(layer)
        row = {k: finite_or_none(v) for k, v in row.items()}
        rows.append({"layer": layer, **row, "ell_star": layer == best, "G_formula": formula})
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
    rows, selected = [], out.get("selected_layer")
    for layer in out["layers"]:
        per_seed = [sum(v) / len(v) for (la, _), v in sorted(losses.items()) if la == layer]
        mean = sum(per_seed) / len(per_seed)
        rows.append({"layer": layer, "G": g[layer], "bridge_val_loss": mean, "ell_star": layer == selected})
    return metrics, {"g_vs_loss.json": rows}


def _mean(values) -> float | None:
    """The mean of the values that were measured (None is "not measured", as NULL is to the ledger's avg)."""
    got = [v for v in values if v is not None]
    return sum(got) / len(got) if got else None


def summary_metrics(selection: dict, evaluations: list[dict], references: list[dict], correlation: dict | None) -> dict:
    """A spec's headline numbers, from its select, evaluate, reference and correlate outputs, computed as
    `dihal compare` computes them from the ledger. Short names, because each is a column header in
    `dvc exp show` behind `summary.`:

    - `ell_star`, `argmax_share`, `G`: ℓ*, the share of document resamples whose argmax of G it is, G at ℓ*;
    - `val_loss`, `gen_ppl`: the bridge at ℓ*, mean over seeds; `s<seed>.val_loss`, `s<seed>.gen_ppl` per seed
      when there are several;
    - `<reference>_ppl`: each reference row's gen PPL, mean over seeds (`backbone_greedy`, `backbone_t1`,
      `real_text`);
    - sweeps: `c1_rho`, `c1_p`, `c1_rank`: C1 in the space ℓ* was selected in (Spearman ρ of G against bridge
      loss, its permutation p-value, ℓ*'s rank by bridge loss among the swept layers).

    Numbers that do not exist (no bridge, ℓ* not swept, no bootstrap) are left out, not written as null."""
    layer = selection["layer"]
    out: dict = {"ell_star": layer, "argmax_share": selection.get("argmax_share"), "G": selection.get("score")}
    at = sorted((m for m in evaluations if m["layer"] == layer), key=lambda m: m["seed"])
    out["val_loss"] = _mean(m["bridge_val_loss"] for m in at)
    out["gen_ppl"] = _mean(m.get("gen_ppl") for m in at)
    if len(at) > 1:
        for m in at:
            out[f"s{m['seed']}"] = {"val_loss": m["bridge_val_loss"], "gen_ppl": m.get("gen_ppl")}
    for ref in sorted({r["reference"] for r in references}):
        out[f"{ref}_ppl"] = _mean(r["gen_ppl"] for r in references if r["reference"] == ref)
    if correlation is not None:
        out.update(
            c1_rho=correlation.get("spearman_rho"),
            c1_p=correlation.get("spearman_p"),
            c1_rank=correlation.get("selected_rank"),
        )
    return {SUMMARY_KEY: _drop_none(out)}


def _drop_none(d: dict) -> dict:
    return {k: _drop_none(v) if isinstance(v, dict) else v for k, v in d.items() if v is not None}
