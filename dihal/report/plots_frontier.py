"""The frontier figure: gen PPL (log) against diversity, one line per (row, DDIM steps) through its temperatures.

Inputs are the tuples of `dihal.report.frontier.load_frontier`; interface names are looked up in the C3 figure's
styles and an unknown one is drawn as 'other interface …', never as the ledger's text (see `dihal.report.plots`).
"""

from __future__ import annotations

from matplotlib.figure import Figure

from dihal.report.plots import INTERFACE_STYLE, finite_number, ppl_diversity_axes, to_data_uri

BACKBONE_STYLE = ("backbone's own samples", "s", "#2e8b57")  # the reference curve: the reference stage's colour
DASHES = ("-", "--", ":", "-.")  # DDIM step counts, most steps solid


def frontier_figure(lines: list[tuple]) -> str | None:
    """`lines`: (interface, layer, steps, n_seeds, ((temperature, diversity, unigram entropy, gen PPL), ...))."""
    drawn = []
    for name, layer, steps, n, points in lines:
        pts = [p for p in points if finite_number(p[1]) and finite_number(p[3]) and p[3] > 0]
        if pts:
            drawn.append((name, layer, steps, n, pts))
    if not drawn:
        return None
    step_counts = sorted({d[2] for d in drawn if d[2] is not None}, reverse=True)
    dash = {k: DASHES[i % len(DASHES)] for i, k in enumerate(step_counts)}
    fig = Figure(figsize=(6.8, 4.6), layout="constrained")
    ax = fig.subplots()
    others: dict[str, int] = {}
    for name, layer, steps, n, pts in drawn:
        if name == "backbone":
            label, marker, color = BACKBONE_STYLE
        elif name in INTERFACE_STYLE:
            label, marker, color = INTERFACE_STYLE[name]
            label += f", ℓ = {layer}" if name == "hidden" else ""
        else:
            label, marker, color = f"other interface {others.setdefault(name, len(others) + 1)}", "P", "#8c564b"
        label += f", {steps} DDIM steps" if steps is not None else ", ancestral"
        label += f" ({n} seeds)" if n > 1 else ""
        xs, ys = [p[1] for p in pts], [p[3] for p in pts]
        style = "-" if steps is None else dash[steps]
        width = 2.0 if name in ("hidden", "backbone") else 1.2
        ax.plot(xs, ys, style, marker=marker, color=color, linewidth=width, markersize=5, label=label, zorder=3)
        for t, x, _, y in pts:
            ax.annotate(f"{t:g}", (x, y), fontsize=6.5, textcoords="offset points", xytext=(4, 3), color=color)
    ppl_diversity_axes(ax, "Frontiers over sampling temperature (labels: T; better: down and to the right)", 7)
    return to_data_uri(fig)
