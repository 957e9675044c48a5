"""The report's C3 section: the bridge's 'hidden' interface next to the continuous-diffusion baselines.

C3 claims that recovering the backbone's hidden state beats the usual interfaces at a matched training budget,
so a reader needs, side by side, what each interface produced and what it spent. Seeds are few (often 3), so
each mean carries a 95% t-interval rather than a bootstrap, which would be degenerate at that size; the budget
is shown per row because 'matched' is a claim the ledger records (budget_matched), not one the report assumes.
The headline is computed from the rows, so it can never disagree with the table beneath it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from markupsafe import Markup

from dihal.report.rows import REFERENCES, fetch, finite, has_table

INTERFACES = {  # interface_results.interface -> what it is; listed in this order, unknown ones last
    "hidden": "dihal's bridge: diffuse the backbone's hidden state at the layer, recover through its upper stack",
    "embedding_rounding": "Diffusion-LM: diffuse token embeddings, round each to its nearest token",
    "embedding_readout": "CDCD-style: diffuse token embeddings, read tokens out with a learned softmax",
    "latent_ae": "LD4LG-style: diffuse the latent of a trained autoencoder, decode it back to tokens",
}
METRICS = (
    "gen_ppl",
    "mauve",
    "diversity",
    "distinct_2",
    "unigram_entropy",
    "recovery_token_acc",
    "recovery_ce",
    "recovery_coverage",
)
REFERENCE_METRICS = ("gen_ppl", "mauve", "diversity", "distinct_2", "unigram_entropy")
BUDGET = ("diffusion_steps", "denoiser_params", "recovery_steps", "recovery_params")
SECONDS = ("train_seconds", "recovery_seconds", "eval_seconds")
INTERVAL_NOTE = "95% t-interval over seeds (mean ± t·sd/√n, n − 1 degrees of freedom); none with one seed"


@dataclass
class Row:
    """One (interface, layer) or one reference, over its seeds: metric -> (mean, lo, hi); lo/hi None for n = 1."""

    source: str
    layer: int | None  # None for a reference row
    n_seeds: int
    stats: dict[str, tuple[float | None, float | None, float | None]]
    budget: dict[str, tuple[int, ...]] = field(default_factory=dict)  # distinct values over seeds
    budget_matched: bool | None = None  # False when any seed's row says so; None when no row says
    seconds: dict[str, float | None] = field(default_factory=dict)  # mean over seeds

    @property
    def known(self) -> bool:
        return self.source in INTERFACES or (self.layer is None and self.source in REFERENCES)


@dataclass
class C3Section:
    interfaces: list[Row]
    references: list[Row]
    n_seeds: tuple[int, ...]  # distinct seed counts over the interface rows
    budget_consistent: bool  # every interface row spent the same diffusion steps on the same denoiser size
    headline: Markup | None
    descriptions: dict[str, str] = field(default_factory=lambda: dict(INTERFACES))
    interval_note: str = INTERVAL_NOTE


def t_interval(values: list) -> tuple[float | None, float | None, float | None]:
    xs = [x for x in (finite(v) for v in values) if x is not None]
    if not xs:
        return None, None, None
    mean = sum(xs) / len(xs)
    if len(xs) < 2:
        return mean, None, None
    from scipy.stats import t  # imported here: only a report with a C3 section pays for it

    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))
    half = float(t.ppf(0.975, len(xs) - 1)) * sd / math.sqrt(len(xs))
    return mean, mean - half, mean + half


def _order(names, known) -> list:
    order = list(known)
    return sorted(names, key=lambda k: (order.index(k[0]) if k[0] in order else len(order), str(k[0]), k[1] or 0))


def _interface_row(name: str, layer: int, rows: list[dict]) -> Row:
    flags = [r.get("budget_matched") for r in rows if r.get("budget_matched") is not None]
    return Row(
        source=name,
        layer=layer,
        n_seeds=len({r.get("seed") for r in rows}),
        stats={m: t_interval([r.get(m) for r in rows]) for m in METRICS},
        budget={b: tuple(sorted({int(r[b]) for r in rows if r.get(b) is not None})) for b in BUDGET},
        budget_matched=all(bool(f) for f in flags) if flags else None,
        seconds={s: t_interval([r.get(s) for r in rows])[0] for s in SECONDS},
    )


def load_c3(con, spec_hash: str) -> C3Section | None:
    """The spec's C3 section; None when the ledger predates interface_results or the spec ran no baseline."""
    if not has_table(con, "interface_results"):
        return None
    rows = fetch(
        con, "SELECT * FROM interface_results WHERE spec_hash = ? ORDER BY interface, layer, seed", [spec_hash]
    )
    if all(str(r["interface"]) == "hidden" for r in rows):
        return None
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        groups.setdefault((str(r["interface"]), r["layer"]), []).append(r)
    interfaces = [_interface_row(name, layer, groups[(name, layer)]) for name, layer in _order(groups, INTERFACES)]
    references = []
    if has_table(con, "reference_results"):
        by_ref: dict[str, list[dict]] = {}
        for r in fetch(
            con, "SELECT * FROM reference_results WHERE spec_hash = ? ORDER BY reference, seed", [spec_hash]
        ):
            by_ref.setdefault(str(r["reference"]), []).append(r)
        references = [
            Row(
                source=name,
                layer=None,
                n_seeds=len({r.get("seed") for r in by_ref[name]}),
                stats={m: t_interval([r.get(m) for r in by_ref[name]]) for m in REFERENCE_METRICS},
            )
            for name, _ in _order([(k, None) for k in by_ref], REFERENCES)
        ]
    spent = {(r.budget["diffusion_steps"], r.budget["denoiser_params"]) for r in interfaces}
    return C3Section(
        interfaces=interfaces,
        references=references,
        n_seeds=tuple(sorted({r.n_seeds for r in interfaces})),
        budget_consistent=len(spent) == 1 and all(len(v) <= 1 for pair in spent for v in pair),
        headline=headline(interfaces, references),
    )


def _num(v, sig: int = 3) -> str:
    return "—" if v is None else f"{v:.{sig}g}"


def _who(r: Row, many_layers: bool) -> Markup:
    return Markup("<b>{}</b>{}").format(r.source, f" (layer {r.layer})" if many_layers else "")


def headline(interfaces: list[Row], references: list[Row]) -> Markup | None:
    """The interfaces ranked by mean gen PPL, each with its diversity, and the reference rows after them.

    No winner is declared by a rule: low gen PPL alone rewards repetitive text (greedy decoding wins it), and
    a diversity "close to real text's" rewards noise just as well (shuffled corpus tokens have diversity
    ~0.99 against real text's ~0.90), so the sentence gives both numbers and the reader both anchors."""
    scored = [r for r in interfaces if r.stats["gen_ppl"][0] is not None]
    if not scored:
        return None
    many_layers = len({r.layer for r in interfaces}) > 1
    seeds = sorted({r.n_seeds for r in interfaces})
    n = str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]}"
    ranked = sorted(
        scored,
        key=lambda r: (
            r.stats["gen_ppl"][0],
            list(INTERFACES).index(r.source) if r.source in INTERFACES else len(INTERFACES),
            r.source,
        ),
    )

    def entry(r: Row) -> Markup:
        return Markup("{} {} (diversity {})").format(
            _who(r, many_layers), _num(r.stats["gen_ppl"][0]), _num(r.stats["diversity"][0])
        )

    text = Markup("On this spec's {} seed{}, mean gen PPL, lowest first: ").format(n, "" if seeds == [1] else "s")
    text += Markup(", ").join(entry(r) for r in ranked) + Markup(".")
    refs = [r for r in references if r.stats["gen_ppl"][0] is not None]
    if refs:
        text += (
            Markup(" By the same judge: ")
            + Markup(", ").join(
                Markup("{} {} (diversity {})").format(
                    r.source, _num(r.stats["gen_ppl"][0]), _num(r.stats["diversity"][0])
                )
                for r in refs
            )
            + Markup(".")
        )
    return text + Markup(
        " Low gen PPL at low diversity can be repetition; high diversity at high gen PPL can be noise: read both."
    )


def plot_rows(section: C3Section) -> tuple[list[tuple], list[tuple]]:
    """Plain numbers for plots.c3_figure; a name outside the known ones is passed as None (never drawn)."""

    def nums(r: Row) -> tuple:
        return (*r.stats["gen_ppl"], *r.stats["diversity"])

    pts = [(r.source if r.source in INTERFACES else None, r.layer, r.n_seeds, *nums(r)) for r in section.interfaces]
    refs = [
        (r.source if r.source in REFERENCES else None, r.n_seeds, r.stats["gen_ppl"][0]) for r in section.references
    ]
    return pts, refs
