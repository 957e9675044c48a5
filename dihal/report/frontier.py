"""The report's frontier section (`eval.frontier`): gen PPL against diversity as sampling loosens, per row.

A row's single evaluate point sits wherever its temperature put it; the frontier shows the whole curve, so a row
that looks better only because it is greedier (low PPL, repetitive text) is seen to lie on another's curve. Each
line is one row (the bridge at ℓ*, each C3 interface, the backbone's own samples) at one DDIM step count, its
points the temperatures in order, at the mean over seeds. The bridge at other swept layers is left out: the
chart compares interfaces, and ℓ* is the bridge the method picks (frontier_points keeps every layer's points).
"""

from __future__ import annotations

from dihal.report.rows import fetch, finite, has_table

BACKBONE = "backbone"  # frontier_points.interface of the backbone's own rows (dihal.stages.frontier.BACKBONE)


def _mean(values: list) -> float | None:
    got = [x for x in (finite(v) for v in values) if x is not None]
    return sum(got) / len(got) if got else None


def load_frontier(con, spec_hash: str, selected: int | None) -> list[tuple]:
    """The chart's lines: (interface, layer, steps, n_seeds, ((temperature, diversity, unigram entropy,
    gen PPL), ...)) in the order hidden, the other interfaces, the backbone; [] without a frontier or the table."""
    if not has_table(con, "frontier_points"):
        return []
    rows = fetch(
        con,
        "SELECT interface, layer, seed, temperature, steps, gen_ppl, diversity, unigram_entropy FROM frontier_points "
        "WHERE spec_hash = ? ORDER BY interface, layer, steps, temperature, seed",
        [spec_hash],
    )
    at_selected = any(r["interface"] == "hidden" and r["layer"] == selected for r in rows)
    groups: dict[tuple, dict[float, list[dict]]] = {}
    for r in rows:
        if r["interface"] == "hidden" and at_selected and r["layer"] != selected:
            continue
        groups.setdefault((str(r["interface"]), r["layer"], r["steps"]), {}).setdefault(r["temperature"], []).append(r)
    order = {"hidden": 0, BACKBONE: 2}
    lines = []
    for (name, layer, steps), by_t in sorted(
        groups.items(), key=lambda kv: (order.get(kv[0][0], 1), kv[0][0], kv[0][1] or 0, kv[0][2] or 0)
    ):
        points = tuple(
            (
                t,
                _mean([r["diversity"] for r in pts]),
                _mean([r["unigram_entropy"] for r in pts]),
                _mean([r["gen_ppl"] for r in pts]),
            )
            for t, pts in sorted(by_t.items())
        )
        n_seeds = max(len({r["seed"] for r in pts}) for pts in by_t.values())
        lines.append((name, layer, steps, n_seeds, points))
    return lines
