"""What dihal's DVC plot rows carry besides the numbers, so `dvc plots show` can draw a readable chart.

A stage-level plot in dvc.yaml has one `y` field, and its title and labels are fixed when the spec is
compiled. So the rows themselves say what a chart needs to mark and name: `ell_star` is true on the row of
ℓ* (the layer to mark), and the geometry rows' `G_formula` spells out how this spec's G is made of the
z-scores drawn beside it (the weights are the spec's `geometry.proxies`). The custom Vega-Lite templates
named here (written into `.dvc/plots/` by `dihal.compile.dvc_views`) read these fields.
"""

from __future__ import annotations

from dihal.spec.geometry import BUILTIN

# DVC looks a plot's `template` up in `.dvc/plots/<name>.json`
GEOMETRY_TEMPLATE = "dihal_geometry"
G_VS_LOSS_TEMPLATE = "dihal_g_vs_loss"

# how a proxy is written in the terminal table, the report and the charts
SYMBOLS = {"kappa": "κ", "sigma": "σ", "erank": "r"}


def z_field(proxy: str) -> str:
    """The row field holding a proxy's z-score across layers."""
    return f"z_{proxy}"


def z_label(proxy: str) -> str:
    return f"z({SYMBOLS.get(proxy, proxy)})"


def g_formula(weights: dict[str, float]) -> str:
    """G as a sum of z-scores, e.g. `z(κ) + z(σ) − z(r)` for weights {kappa: 1, sigma: 1, erank: -1}
    (built-in proxies in their usual order whatever order the weights come in, then the others by name)."""
    order = list(BUILTIN)
    rank = lambda proxy: (order.index(proxy) if proxy in order else len(order), proxy)
    parts = []
    for proxy, w in sorted(weights.items(), key=lambda kv: rank(kv[0])):
        w = float(w)
        size = "" if abs(w) == 1 else f"{abs(w):g}·"
        sign = "−" if w < 0 else "+"
        parts.append((sign, f"{size}{z_label(proxy)}"))
    if not parts:
        return "0"
    first_sign, first = parts[0]
    text = ("−" if first_sign == "−" else "") + first
    return text + "".join(f" {sign} {term}" for sign, term in parts[1:])
