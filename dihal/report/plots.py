"""The report's figures, as PNG data URIs so a report is one file that opens offline.

Figures are built on `matplotlib.figure.Figure` with the Agg canvas directly,
never through pyplot: no global figure state, no GUI backend picked from the
environment, nothing left open when a figure is done. Inputs are plain numbers
(see `data.py`); no string from a spec or the ledger is drawn, so nothing a
user typed can reach matplotlib's mathtext parser.
"""

from __future__ import annotations

import base64
import io
import math

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from dihal.report.data import LayerStats
from dihal.utils.numbers import is_finite_number

ACCENT = "#c0392b"  # l* everywhere
LINE = "#2c5d8a"
DPI = 110
PROXY_PANELS = (  # (column, axis label, which way is better)
    ("kappa", r"local compactness $\kappa$", "higher is better"),
    ("sigma", r"global stiffness $\sigma$", "higher is better"),
    ("r", r"effective rank $r$", "lower is better"),
    ("g", r"score $G$", "higher is better"),
)


finite_number = is_finite_number


def style_axes(ax) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(True, color="#e3e3e3", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.tick_params(labelsize=8)


def to_data_uri(fig: Figure) -> str:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def geometry_figure(geometry: list[dict], selected: int | None) -> str | None:
    """κ, σ, r and G against layer as small multiples, with ℓ* as a vertical line in each."""
    panels = [p for p in PROXY_PANELS if any(finite_number(g.get(p[0])) for g in geometry)]
    if not panels:
        return None
    fig = Figure(figsize=(2.75 * len(panels), 2.6), layout="constrained")
    axes = fig.subplots(1, len(panels), sharex=True, squeeze=False)[0]
    for ax, (col, label, better) in zip(axes, panels):
        pts = [(g["layer"], g[col]) for g in geometry if finite_number(g.get(col))]
        xs, ys = zip(*pts)
        color = ACCENT if col == "g" else LINE
        ax.plot(xs, ys, "-o", color=color, markersize=3.5, linewidth=1.4)
        if selected is not None:
            ax.axvline(selected, color=ACCENT, linestyle="--", linewidth=1.1, label=r"$\ell^*$" f" = {selected}")
        ax.set_title(label, fontsize=9.5)
        ax.set_xlabel(f"layer ({better})", fontsize=8)
        style_axes(ax)
    if selected is not None:
        axes[-1].legend(fontsize=8, frameon=False, loc="best")
    return to_data_uri(fig)


def curves_figure(curves: dict[tuple[int, int], tuple[list[int], list[float]]], selected: int | None) -> str | None:
    """Training loss vs step, one line per (layer, seed): colour encodes layer, dash style the seed."""
    curves = {k: v for k, v in curves.items() if any(finite_number(y) and y > 0 for y in v[1])}
    if not curves:
        return None
    layers = sorted({layer for layer, _ in curves})
    seeds = sorted({seed for _, seed in curves})
    dashes = ["-", "--", ":", "-."]
    fig = Figure(figsize=(7.2, 3.4), layout="constrained")
    ax = fig.subplots()
    cmap = matplotlib.colormaps["viridis"]
    for (layer, seed), (steps, losses) in sorted(curves.items()):
        pts = [(s, y) for s, y in zip(steps, losses) if finite_number(y) and y > 0]
        if not pts:
            continue
        i = layers.index(layer)
        color = ACCENT if layer == selected else cmap(0.1 + 0.75 * i / max(1, len(layers) - 1))
        xs, ys = zip(*pts)
        ax.plot(xs, ys, dashes[seeds.index(seed) % len(dashes)], color=color, linewidth=1.2, alpha=0.9)
    for i, layer in enumerate(layers):  # legend: colour = layer, then line style = seed
        color = ACCENT if layer == selected else cmap(0.1 + 0.75 * i / max(1, len(layers) - 1))
        ax.plot([], [], "-", color=color, label=f"layer {layer}" + (" (ℓ*)" if layer == selected else ""))
    if len(seeds) > 1:
        for i, seed in enumerate(seeds):
            ax.plot([], [], dashes[i % len(dashes)], color="#666666", label=f"seed {seed}")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
    lo, hi = ax.get_ylim()
    if hi / lo < 300:  # under ~2.5 decades, label 2, 3 and 5 of each decade too; more would crowd the axis
        ax.yaxis.set_minor_formatter(FuncFormatter(minor_label))
    ax.set_xlabel("training step", fontsize=9)
    ax.set_ylabel("training loss (log scale)", fontsize=9)
    style_axes(ax)
    ax.legend(fontsize=7.5, frameon=False, ncol=1 + (len(layers) + len(seeds)) // 10, loc="upper right")
    return to_data_uri(fig)


def minor_label(y: float, _pos) -> str:
    mantissa = round(y / 10 ** math.floor(math.log10(y)), 3) if y > 0 else 0
    return f"{y:g}" if mantissa in (2, 3, 5) else ""


def log_ppl_axis(ax) -> None:
    """Gen PPL spans orders of magnitude (greedy ~1.5, real text ~50, noise ~1e4): a log axis with plain labels,
    some headroom, and minor labels only where the span is short enough for them to be read."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo / 1.3, hi * 1.3)
    if hi / lo < 300:
        ax.yaxis.set_minor_formatter(FuncFormatter(minor_label))


def ppl_diversity_axes(ax, title: str, legend_size: float) -> None:
    """Gen PPL (log) against diversity, as every quality chart of the report draws them, so the C3 chart and the
    frontier read on the same axes."""
    log_ppl_axis(ax)
    ax.set_xlabel("diversity  Π(1 − rep_n), n = 2..4  (higher is better)", fontsize=9)
    ax.set_ylabel("gen PPL under the unmodified backbone (log; lower is better)", fontsize=9)
    ax.set_title(title, fontsize=9.5)
    style_axes(ax)
    ax.legend(fontsize=legend_size, frameon=True, framealpha=0.9, loc="best")


def _fmt(v: float | None) -> str:
    return f"{v:+.2f}" if finite_number(v) else "n/a"


def scatter_figure(layers: list[LayerStats], selected: int | None, corr: dict, space: str | None = None) -> str | None:
    """Claim C1 at a glance: G (in `space`) against bridge_val_loss, one point per layer, error bars over seeds."""
    pts = [
        (ls.layer, ls.g, *ls.stats["bridge_val_loss"])
        for ls in layers
        if finite_number(ls.g) and finite_number(ls.stats["bridge_val_loss"][0])
    ]
    if not pts:
        return None
    fig = Figure(figsize=(6.2, 4.2), layout="constrained")
    ax = fig.subplots()
    for layer, g, mean, sd in pts:
        is_sel = layer == selected
        ax.errorbar(
            g,
            mean,
            yerr=sd if finite_number(sd) else None,
            fmt="*" if is_sel else "o",
            color=ACCENT if is_sel else LINE,
            markersize=13 if is_sel else 6,
            capsize=3,
            elinewidth=1,
            zorder=3 if is_sel else 2,
        )
        ax.annotate(
            f"{layer}",
            (g, mean),
            textcoords="offset points",
            xytext=(6, 5),
            fontsize=8,
            color=ACCENT if is_sel else "#333333",
            fontweight="bold" if is_sel else "normal",
        )
    ax.plot([], [], "o", color=LINE, label="layer (mean ± sd over seeds)")
    if any(p[0] == selected for p in pts):
        ax.plot([], [], "*", color=ACCENT, markersize=11, label=r"selected layer $\ell^*$" f" = {selected}")
    rho, tau = corr.get("spearman_rho"), corr.get("kendall_tau")
    ax.plot(
        [],
        [],
        " ",
        label=f"Spearman ρ = {_fmt(rho)}  95% [{_fmt(corr.get('spearman_lo'))}, {_fmt(corr.get('spearman_hi'))}]",
    )
    ax.plot(
        [],
        [],
        " ",
        label=f"Kendall τ = {_fmt(tau)}  95% [{_fmt(corr.get('kendall_lo'))}, {_fmt(corr.get('kendall_hi'))}]",
    )
    where = f" ({space} space)" if space else ""
    ax.set_title(
        f"G{where} vs bridge validation loss: ρ = {_fmt(rho)}, τ = {_fmt(tau)} (C1 predicts < 0)", fontsize=9.5
    )
    ax.set_xlabel(f"geometry score G{where} (higher = more diffusion-friendly)", fontsize=9)
    ax.set_ylabel("bridge_val_loss (lower is better)", fontsize=9)
    style_axes(ax)
    ax.legend(fontsize=7.5, frameon=True, framealpha=0.9, loc="best")
    return to_data_uri(fig)


REFERENCE_STYLE = {  # reference_results.reference -> (legend label, marker, colour); fixed text, never the ledger's
    "backbone_t1": ("backbone samples, T = 1", "s", "#2e8b57"),
    "backbone_greedy": ("backbone greedy", "^", "#7f7f7f"),
    "real_text": ("real held-out text", "D", "#222222"),
}
OTHER_REFERENCE = ("o", "#8e44ad")


def _span(mean: float, lo, hi) -> list[list[float]] | None:
    """Asymmetric error bar from a (min, max) over seeds; None when there is no spread to draw."""
    if not (finite_number(lo) and finite_number(hi)) or hi <= lo:
        return None
    return [[max(0.0, mean - lo)], [max(0.0, hi - mean)]]


def standing_figure(bridge: list[tuple], references: list[tuple], selected: int | None) -> str | None:
    """Where the bridge's samples stand: gen PPL (log) against diversity, the bridge next to the reference texts.

    `bridge`: (layer, n_seeds, ppl mean, ppl min, ppl max, diversity mean, min, max) per layer shown;
    `references`: (reference, n_seeds, the same six numbers). Bars span min-max over seeds. A reference without
    a diversity is drawn as a horizontal line only; its name is looked up in REFERENCE_STYLE, never drawn as is.
    """
    refs = [r for r in references if finite_number(r[2]) and r[2] > 0]
    pts = [b for b in bridge if finite_number(b[2]) and b[2] > 0 and finite_number(b[5])]
    if not refs or not (pts or any(finite_number(r[5]) for r in refs)):
        return None
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    n_other = 0
    for ref, n, ppl, plo, phi, div, dlo, dhi in refs:
        if ref in REFERENCE_STYLE:
            label, marker, color = REFERENCE_STYLE[ref]
        else:
            n_other += 1
            label, (marker, color) = f"other reference {n_other}", OTHER_REFERENCE
        label = f"{label}: {ppl:.3g}" + (f" ({n} seeds)" if n > 1 else "")
        ax.axhline(ppl, color=color, linestyle=":", linewidth=1.0, alpha=0.8, zorder=1)
        if finite_number(div):
            ax.errorbar(
                div,
                ppl,
                xerr=_span(div, dlo, dhi),
                yerr=_span(ppl, plo, phi),
                fmt=marker,
                color=color,
                markersize=7,
                capsize=3,
                elinewidth=1,
                zorder=2,
                label=label,
            )
        else:
            ax.plot([], [], ":", color=color, label=label + " (no diversity)")
    for layer, n, ppl, plo, phi, div, dlo, dhi in pts:
        is_sel = layer == selected
        label = (r"bridge at $\ell^*$" f" = {layer}" if is_sel else f"bridge, layer {layer}") + f": {ppl:.3g}"
        ax.errorbar(
            div,
            ppl,
            xerr=_span(div, dlo, dhi),
            yerr=_span(ppl, plo, phi),
            fmt="*" if is_sel else "o",
            color=ACCENT if is_sel else LINE,
            markersize=14 if is_sel else 7,
            capsize=3,
            elinewidth=1,
            zorder=3,
            label=label + (f" ({n} seeds)" if n > 1 else ""),
        )
    log_ppl_axis(ax)
    ax.set_xlabel("diversity  Π(1 − rep_n), n = 2..4  (higher = less repetitive)", fontsize=9)
    ax.set_ylabel("gen PPL under the unmodified backbone (log)", fontsize=9)
    style_axes(ax)
    ax.legend(fontsize=7.5, frameon=True, framealpha=0.9, loc="best")
    return to_data_uri(fig)


INTERFACE_STYLE = {  # interface_results.interface -> (legend label, marker, colour); fixed text, never the ledger's
    "hidden": ("hidden (dihal bridge)", "*", ACCENT),
    "embedding_rounding": ("embedding + rounding", "o", "#1f77b4"),
    "embedding_readout": ("embedding + readout", "s", "#ff7f0e"),
    "latent_ae": ("autoencoder latent", "^", "#9467bd"),
}


def _ci(mean: float, lo, hi, floor: float = 0.0) -> list[list[float]] | None:
    """Error bar from a 95% interval over seeds, clipped at `floor` (a log axis cannot draw below 0)."""
    if not (finite_number(lo) and finite_number(hi)) or hi <= lo:
        return None
    return [[max(0.0, mean - max(lo, floor))], [max(0.0, hi - mean)]]


def c3_figure(interfaces: list[tuple], references: list[tuple]) -> str | None:
    """Claim C3 at a glance: gen PPL (log) against diversity, one point per (interface, layer), references as lines.

    `interfaces`: (known name or None, layer, n_seeds, ppl mean, lo, hi, diversity mean, lo, hi), bars the 95%
    t-interval over seeds; `references`: (known name or None, n_seeds, ppl mean). Names are looked up in
    INTERFACE_STYLE / REFERENCE_STYLE; an unknown one is drawn as 'other …', never as the ledger's text.
    """
    pts = [p for p in interfaces if finite_number(p[3]) and p[3] > 0 and finite_number(p[6])]
    if not pts:
        return None
    layers = {p[1] for p in pts}
    fig = Figure(figsize=(6.6, 4.4), layout="constrained")
    ax = fig.subplots()
    n_other = 0
    for name, layer, n, ppl, plo, phi, div, dlo, dhi in pts:
        if name in INTERFACE_STYLE:
            label, marker, color = INTERFACE_STYLE[name]
        else:
            n_other += 1
            label, marker, color = f"other interface {n_other}", "P", "#8c564b"
        ax.annotate(
            label.split(" (")[0] + (f", ℓ{layer}" if len(layers) > 1 else ""),
            (div, ppl),
            fontsize=7.5,
            textcoords="offset points",
            xytext=(7, 6),
            color=color,
        )
        label += (f", layer {layer}" if len(layers) > 1 else "") + f": {ppl:.3g}" + (f" ({n} seeds)" if n > 1 else "")
        ax.errorbar(
            div,
            ppl,
            xerr=_ci(div, dlo, dhi),
            yerr=_ci(ppl, plo, phi, floor=ppl / 1e3),
            fmt=marker,
            color=color,
            markersize=13 if name == "hidden" else 7,
            capsize=3,
            elinewidth=1,
            zorder=3,
            label=label,
        )
    n_other = 0
    for name, n, ppl in references:
        if not (finite_number(ppl) and ppl > 0):
            continue
        if name in REFERENCE_STYLE:
            label, _, color = REFERENCE_STYLE[name]
        else:
            n_other += 1
            label, color = f"other reference {n_other}", OTHER_REFERENCE[1]
        ax.axhline(
            ppl,
            color=color,
            linestyle="--",
            linewidth=1.0,
            alpha=0.85,
            zorder=1,
            label=f"{label}: {ppl:.3g}" + (f" ({n} seeds)" if n > 1 else ""),
        )
    ppl_diversity_axes(ax, "C3: interfaces at a matched budget (better: down and to the right)", 7.5)
    return to_data_uri(fig)
