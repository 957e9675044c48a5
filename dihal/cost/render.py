"""The plan as a rich table (with its assumptions under it) or as JSON."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from dihal.cost import Estimate
from dihal.cost.backbone import BYTES
from dihal.utils.terminal import clean, shown, text


def si(v: float, unit: str = "") -> str:
    for scale, p in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.3g} {p}{unit}"
    return f"{v:.3g} {unit}".strip() if v else "0"


def duration(s: float) -> str:
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    if s < 86400:
        return f"{s / 3600:.1f} h"
    if s < 365 * 86400:
        return f"{s / 86400:.1f} d"
    return f"{s / (365 * 86400):.1f} years"


def print_plan(con: Console, est: Estimate) -> None:
    sh = est.shape
    con.print(
        f"[bold]{shown(est.spec_name)}[/bold]: backbone {sh.layers} blocks, d={sh.d}, "
        f"{si(sh.params)} params ({si(sh.params * BYTES[est.dtype], 'B')} "
        f"in {est.dtype}); config from {shown(sh.source)}",
        highlight=False,
        soft_wrap=True,
    )
    t = Table(title=f"estimated cost on {est.machine.name}", title_justify="left")
    for c in ("stage", "tokens", "FLOPs", "weights", "activations", "peak mem", "disk", "wall", "what"):
        t.add_column(c, justify="left" if c in ("stage", "what") else "right")
    for s in est.stages:
        t.add_row(
            text(s.name),
            si(s.tokens),
            si(s.flops),
            si(s.weights_bytes, "B"),
            si(s.activation_bytes, "B"),
            si(s.peak_bytes, "B"),
            si(s.disk_bytes, "B"),
            duration(s.seconds),
            text(s.note),
        )
    t.add_section()
    t.add_row(
        f"total ({len(est.stages)} stages)",
        si(sum(s.tokens for s in est.stages)),
        si(est.flops),
        "",
        "",
        si(est.peak_bytes, "B"),
        si(est.disk_bytes, "B"),
        duration(est.serial_s),
        "serial, one worker",
    )
    t.add_row(
        f"total, --workers {est.workers}",
        "",
        "",
        "",
        "",
        "",
        "",
        duration(est.parallel_s),
        f"list schedule; critical path {duration(est.critical_s)}",
    )
    sw = est.sweep
    if sw:
        what = "this spec's sweep" if sw["is_this_spec"] else "if swept over every candidate layer"
        t.add_row(
            f"sweep ({len(sw['layers'])} layers × {len(sw['seeds'])} seeds)",
            "",
            si(sw["flops"]),
            "",
            "",
            "",
            "",
            f"{duration(sw['serial_s'])} / {duration(sw['workers_s'])}",
            f"{what}: serial / --workers {est.workers}",
        )
    con.print(t)
    con.print("[bold]Assumptions[/bold]")
    for a in est.assumptions:
        con.print(f"  • {clean(a)}", highlight=False, soft_wrap=True, markup=False)
