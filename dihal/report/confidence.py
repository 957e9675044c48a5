"""How far ℓ* can be trusted: the report's stability, massive-activation and sensitivity panels as plain values.

Everything here is shaped from a loaded `SpecReport` (no SQL, no figures). Every
input may be missing: ledgers written before the stability columns and the
`selection_stability` table shipped hold NULL (or nothing) there, and each
function then returns None or an empty list so the panel is simply left out.
Shares are fractions in [0, 1]; the templates print them as percentages.
"""

from __future__ import annotations

import json
import re

from dihal.report.data import SpecReport
from dihal.report.rows import finite as _finite

MAIN = "main"  # the selection_stability variant that is the spec itself
PROFILE_COLUMNS = ("g_lo", "g_hi", "argmax_share")
OUTLIER_COLUMNS = ("n_states", "norm_ratio_max", "n_over_threshold", "top_share_before", "top_share_after")
_THRESHOLD = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*(?:x|×)", re.I)


def _has_any(rows: list[dict], columns: tuple[str, ...]) -> bool:
    return any(_finite(row.get(c)) is not None for row in rows for c in columns)


def _at(rows: list[dict], layer) -> dict:
    return next((row for row in rows if row.get("layer") == layer), {}) if layer is not None else {}


def _first(*values):
    return next((v for v in values if v is not None), None)


def variant_layer(rows: list[dict]) -> int | None:
    """A variant's ℓ*: the row flagged selected, else the argmax of its G."""
    flagged = [row["layer"] for row in rows if row.get("selected")]
    if flagged:
        return flagged[0]
    scored = [row for row in rows if _finite(row.get("g")) is not None]
    return max(scored, key=lambda row: (row["g"], -row["layer"]))["layer"] if scored else None


def profile(r: SpecReport) -> list[dict]:
    """Per layer: G, its 95% document-bootstrap interval and argmax share (layer_geometry, else the 'main' variant)."""
    source = r.geometry if _has_any(r.geometry, PROFILE_COLUMNS) else r.stability.get(MAIN, [])
    if not _has_any(source, PROFILE_COLUMNS):
        return []
    return [
        {
            "layer": row["layer"],
            "g": _finite(row.get("g")),
            "g_lo": _finite(row.get("g_lo")),
            "g_hi": _finite(row.get("g_hi")),
            "argmax_share": _finite(row.get("argmax_share")),
        }
        for row in source
    ]


def stability_facts(r: SpecReport) -> dict | None:
    """The numbers of the sentence 'ℓ* = 4, the argmax in 87% of 200 document resamples …'; None when none exist."""
    sel, layer = r.selection or {}, r.selected_layer
    prof = profile(r)
    main = r.stability.get(MAIN, [])
    at_prof, at_main, at_geo = _at(prof, layer), _at(main, layer), _at(r.geometry, layer)
    facts = {
        "layer": layer,
        "rule": sel.get("rule"),
        "share": _first(_finite(sel.get("argmax_share")), at_prof.get("argmax_share")),
        "n_boot": _first(sel.get("n_boot"), at_main.get("n_boot")),
        "n_documents": _first(sel.get("n_documents"), at_main.get("n_documents")),
        "n_blocks": sel.get("n_blocks"),  # not a ledger column (yet): shown when a later schema adds it
        "n_states": at_geo.get("n_states"),
        "block_start": sel.get("block_start"),
        "outlier_rule": sel.get("outlier_rule"),
        "g_lo": at_prof.get("g_lo"),
        "g_hi": at_prof.get("g_hi"),
        "modal_layer": None,
        "modal_share": None,
    }
    shares = [row for row in prof if row["argmax_share"] is not None]
    if shares:
        modal = max(shares, key=lambda row: (row["argmax_share"], -row["layer"]))
        if modal["layer"] != layer:
            facts["modal_layer"], facts["modal_share"] = modal["layer"], modal["argmax_share"]
    informative = ("share", "n_boot", "n_documents", "n_states", "block_start", "outlier_rule", "g_lo", "g_hi")
    if not prof and all(facts[k] is None for k in informative):
        return None
    return facts


def outlier_threshold(rule: str | None) -> float | None:
    """The '20' of 'drop>20x median norm', for a reference line; None when the rule names no factor."""
    m = _THRESHOLD.search(rule or "")
    return float(m.group(1)) if m else None


def outlier_facts(r: SpecReport) -> dict | None:
    """Massive-activation diagnostics per layer and at ℓ*; None for ledgers that did not record them."""
    rows = [row for row in r.geometry if _has_any([row], OUTLIER_COLUMNS)]
    if not rows:
        return None
    at = _at(rows, r.selected_layer)
    rule = (r.selection or {}).get("outlier_rule")
    return {
        "rows": rows,
        "layer": r.selected_layer if at else None,
        "at": at,
        "rule": rule,
        "threshold": outlier_threshold(rule),
    }


def settings_lines(settings) -> list[str]:
    """A variant's settings as 'geometry.outliers.rule = keep' lines (dotted paths of the JSON object)."""
    if settings is None or settings == {}:
        return []
    if not isinstance(settings, dict):
        return [str(settings)]
    out: list[str] = []

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict) and value:
            for key, inner in sorted(value.items()):
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            out.append(f"{prefix} = {text}" if prefix else text)

    walk("", settings)
    return out


def sensitivity_rows(r: SpecReport) -> list[dict]:
    """One row per variant ('main' first) when the spec has sensitivity variants besides 'main'; else []."""
    if not any(name != MAIN for name in r.stability):
        return []
    main_layer = variant_layer(r.stability.get(MAIN, [])) if MAIN in r.stability else r.selected_layer
    out = []
    for name, rows in r.stability.items():
        layer = variant_layer(rows)
        at = _at(rows, layer)
        first = rows[0] if rows else {}
        out.append(
            {
                "variant": name,
                "main": name == MAIN,
                "settings": settings_lines(first.get("settings")),
                "layer": layer,
                "share": _finite(at.get("argmax_share")),
                "g": _finite(at.get("g")),
                "top_share_after": _finite(at.get("top_share_after")),
                "n_boot": first.get("n_boot"),
                "n_documents": first.get("n_documents"),
                "n_layers": len(rows),
                "agrees": None if layer is None or main_layer is None else layer == main_layer,
            }
        )
    return out


def correlation_p(corr: dict | None) -> dict:
    """p-values and interval description of the correlate stage, None where the ledger predates them."""
    corr = corr or {}
    return {
        "spearman_p": _finite(corr.get("spearman_p")),
        "kendall_p": _finite(corr.get("kendall_p")),
        "n_perm": corr.get("n_perm"),
        "interval_method": corr.get("interval_method"),
        "resampled": corr.get("resampled"),
    }
