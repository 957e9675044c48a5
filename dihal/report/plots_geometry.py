"""Figures of how far ℓ* can be trusted: bootstrap stability, massive activations, sensitivity variants.

Same conventions as `plots.py` (Agg canvas, no pyplot, PNG data URIs). Inputs
are the plain values of `trust.py`. The one string from the ledger that is drawn
is a sensitivity variant's name, in the legend, with mathtext parsing switched
off, so a `$` in a name is shown as a dollar sign and never parsed.
"""

from __future__ import annotations

import matplotlib
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from dihal.report.plots import ACCENT, LINE, finite_number, minor_label, style_axes, to_data_uri

MUTED = "#8a949e"
MAX_LABEL = 40  # characters of a variant name shown in a legend


def _mark(ax, selected: int | None, label: bool = False) -> None:
    if selected is not None:
        ax.axvline(selected, color=ACCENT, linestyle="--", linewidth=1.1, label=f"ℓ* = {selected}" if label else None)


def _percent_axis(ax) -> None:
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{100 * y:.0f}%"))


def _int_layers(ax) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def stability_figure(profile: list[dict], selected: int | None) -> str | None:
    """G per layer with its 95% document-bootstrap interval (top) and the argmax share per layer (bottom)."""
    scored = [p for p in profile if finite_number(p["g"])]
    shares = [p for p in profile if finite_number(p["argmax_share"])]
    if not scored and not shares:
        return None
    panels = [k for k, rows in (("g", scored), ("share", shares)) if rows]
    fig = Figure(figsize=(7.2, 1.5 + 1.3 * len(panels)), layout="constrained")
    axes = fig.subplots(
        len(panels), 1, sharex=True, squeeze=False, gridspec_kw={"height_ratios": [2, 1.2][: len(panels)]}
    )[:, 0]
    for ax, kind in zip(axes, panels):
        if kind == "g":
            xs = [p["layer"] for p in scored]
            ax.plot(xs, [p["g"] for p in scored], "-", color=LINE, linewidth=1.0, alpha=0.6)
            ci = [p for p in scored if finite_number(p["g_lo"]) and finite_number(p["g_hi"])]
            if ci:
                ax.vlines(
                    [p["layer"] for p in ci],
                    [p["g_lo"] for p in ci],
                    [p["g_hi"] for p in ci],
                    color=LINE,
                    linewidth=2.2,
                    alpha=0.45,
                    label="95% interval (document bootstrap)",
                )
            ax.plot(xs, [p["g"] for p in scored], "o", color=LINE, markersize=4, label="G on the full sample")
            at = [p for p in scored if p["layer"] == selected]
            if at:
                ax.plot([selected], [at[0]["g"]], "*", color=ACCENT, markersize=13, zorder=4)
            ax.set_ylabel("score G", fontsize=9)
        else:
            ax.bar(
                [p["layer"] for p in shares],
                [p["argmax_share"] for p in shares],
                width=0.7,
                color=[ACCENT if p["layer"] == selected else MUTED for p in shares],
            )
            ax.set_ylim(0, 1.02)
            _percent_axis(ax)
            ax.set_ylabel("argmax share", fontsize=9)
        _mark(ax, selected, label=kind == "g")
        style_axes(ax)
        _int_layers(ax)
    axes[0].legend(fontsize=7.5, frameon=False, loc="best")
    axes[-1].set_xlabel("layer", fontsize=9)
    return to_data_uri(fig)


def outliers_figure(rows: list[dict], selected: int | None, threshold: float | None) -> str | None:
    """Per layer: max/median norm ratio (log), states over the threshold, top-0.1% variance share before/after."""
    ratio = [
        (r["layer"], r["norm_ratio_max"])
        for r in rows
        if finite_number(r.get("norm_ratio_max")) and r["norm_ratio_max"] > 0
    ]
    over = [(r["layer"], r["n_over_threshold"]) for r in rows if finite_number(r.get("n_over_threshold"))]
    before = [(r["layer"], r["top_share_before"]) for r in rows if finite_number(r.get("top_share_before"))]
    after = [(r["layer"], r["top_share_after"]) for r in rows if finite_number(r.get("top_share_after"))]
    panels = [p for p, pts in (("ratio", ratio), ("over", over), ("share", before + after)) if pts]
    if not panels:
        return None
    fig = Figure(figsize=(3.1 * len(panels), 2.7), layout="constrained")
    axes = fig.subplots(1, len(panels), sharex=True, squeeze=False)[0]
    for ax, kind in zip(axes, panels):
        if kind == "ratio":
            ax.plot(*zip(*ratio), "-o", color=LINE, markersize=3.5, linewidth=1.3, label="max / median")
            if threshold is not None:
                ax.axhline(threshold, color="#555555", linestyle=":", linewidth=1.1, label=f"threshold {threshold:g}×")
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
            ax.yaxis.set_minor_formatter(FuncFormatter(minor_label))
            ax.set_title("max / median state norm (log)", fontsize=9.5)
        elif kind == "over":
            xs, ys = zip(*over)
            ax.bar(xs, ys, width=0.7, color=[ACCENT if x == selected else MUTED for x in xs])
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_title("states over the threshold", fontsize=9.5)
        else:
            if before:
                ax.plot(*zip(*before), "-o", color=MUTED, markersize=3.5, linewidth=1.3, label="before the rule")
            if after:
                ax.plot(*zip(*after), "-o", color=LINE, markersize=3.5, linewidth=1.3, label="after the rule")
            ax.set_ylim(bottom=0)
            _percent_axis(ax)
            ax.set_title("variance share of the top 0.1% states", fontsize=9.5)
        _mark(ax, selected, label=kind != "over")
        ax.set_xlabel("layer", fontsize=8)
        style_axes(ax)
        _int_layers(ax)
        if kind != "over":
            ax.legend(fontsize=7, frameon=False, loc="best")
    return to_data_uri(fig)


def _label(name: str) -> str:
    name = " ".join(str(name).split())
    return name if len(name) <= MAX_LABEL else name[: MAX_LABEL - 1] + "…"


def sensitivity_figure(variants: dict[str, list[dict]], layers: dict[str, int | None]) -> str | None:
    """G per layer for every variant: a line with its 95% interval as a band, each variant's ℓ* as a star."""
    series = {name: [r for r in rows if finite_number(r.get("g"))] for name, rows in variants.items()}
    series = {name: rows for name, rows in series.items() if rows}
    if not series:
        return None
    fig = Figure(figsize=(7.6, 3.9), layout="constrained")
    ax = fig.subplots()
    cmap = matplotlib.colormaps["tab10"]
    for i, (name, rows) in enumerate(series.items()):
        color = "#222222" if name == "main" else cmap(i % 10)
        xs = [r["layer"] for r in rows]
        label = _label(name) + (" (the spec)" if name == "main" else "")
        width = 1.8 if name == "main" else 1.2
        ax.plot(xs, [r["g"] for r in rows], "-o", color=color, markersize=3, linewidth=width, label=label)
        band = [r for r in rows if finite_number(r.get("g_lo")) and finite_number(r.get("g_hi"))]
        if band:
            ax.fill_between(
                [r["layer"] for r in band],
                [r["g_lo"] for r in band],
                [r["g_hi"] for r in band],
                color=color,
                alpha=0.12,
                linewidth=0,
            )
        at = [r for r in rows if r["layer"] == layers.get(name)]
        if at:
            ax.plot([at[0]["layer"]], [at[0]["g"]], "*", color=color, markersize=13, markeredgecolor="white", zorder=4)
    ax.plot([], [], "*", color="#555555", markersize=10, label="each variant's ℓ*")
    ax.set_xlabel("layer", fontsize=9)
    ax.set_ylabel("score G (bands: 95% interval)", fontsize=9)
    style_axes(ax)
    _int_layers(ax)
    legend = ax.legend(fontsize=7.5, frameon=False, loc="best")
    for text in legend.get_texts():
        text.set_parse_math(False)
    return to_data_uri(fig)
