"""What a report shows, fetched from the ledger and shaped into plain Python values.

All SQL of the report lives here, so the plotting and rendering modules never
see a connection and can be tested on plain data. Everything goes through
`dihal.ledger.store.reader`, a read-only connection: rendering a report can never
change a result. Per-layer bridge numbers are aggregated here (mean and sample
sd over seeds) because claim C1 compares layers, not individual seeds.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime

import yaml

from dihal.ledger.store import LedgerError
from dihal.report.baselines import load_c3
from dihal.report.frontier import load_frontier
from dihal.report.rows import REFERENCES, fetch, finite, has_table, space_of
from dihal.spec.hashing import hashed_text_of_record
from dihal.stages.common import GEN_METRICS

BRIDGE_METRICS = (
    "bridge_val_loss",
    "recovery_ce",
    "recovery_token_acc",
    "gen_ppl",
    "mauve",
    "distinct_1",
    "distinct_2",
    "distinct_3",
    "diversity",
    "unigram_entropy",
)
SAMPLES_PER_LAYER = 3
# GEN_METRICS: the judged metrics of the bridge's and the reference rows; gen_nll exists only in reference_results
# and reads as missing on a bridge row, as MAUVE does on rows from before it.
RESERVED_SLUGS = {"index"}  # index.html is the ledger-wide page; no spec may overwrite it


@dataclass
class LayerStats:
    """One bridge layer, aggregated over seeds: metric -> (mean, sd or None with one seed)."""

    layer: int
    n_seeds: int
    stats: dict[str, tuple[float | None, float | None]]
    g: float | None  # G at this layer, when the layer was a geometry candidate


@dataclass
class GenStats:
    """Generation metrics of one source of text (the bridge at one layer, or one reference), aggregated over seeds.

    `stats`: metric -> (mean, sample sd or None with one seed); `ranges`: metric -> (min, max) over seeds.
    """

    source: str  # 'bridge' or the reference_results.reference value
    layer: int | None  # the bridge layer; None for a reference
    n_seeds: int
    stats: dict[str, tuple[float | None, float | None]]
    ranges: dict[str, tuple[float | None, float | None]]
    n_samples: tuple[int, ...] = ()  # distinct values over seeds (references only)
    seq_len: tuple[int, ...] = ()

    @property
    def is_bridge(self) -> bool:
        return self.layer is not None


@dataclass
class SpecReport:
    spec_hash: str
    name: str
    description: str
    yaml_text: str
    canonical_json: str
    canonical_pretty: str
    canonical_matches_hash: bool
    first_seen: datetime | None
    last_seen: datetime | None
    latest_run: dict | None
    provenance_run: dict | None  # latest succeeded run, or the latest run when none succeeded
    geometry: list[dict]
    proxy_weights: dict[str, float]
    selection: dict | None
    layers: list[LayerStats]
    curves: dict[tuple[int, int], tuple[list[int], list[float]]]
    samples: dict[int, list[dict]]
    correlation: dict | None
    runs: list[dict] = field(default_factory=list)
    # selection_stability: variant -> its rows by layer ('main' first); empty for ledgers without the table
    stability: dict[str, list[dict]] = field(default_factory=dict)
    # reference_results aggregated per reference (known ones first); empty for ledgers without the table
    references: list[GenStats] = field(default_factory=list)
    # the bridge's generation metrics per trained layer, with min-max over seeds, to set next to the references
    bridge_gen: list[GenStats] = field(default_factory=list)
    # claim C3's interfaces and budgets (dihal.report.baselines.C3Section); None without baselines or the table
    c3: object | None = None
    # eval.frontier's lines (dihal.report.frontier.load_frontier); empty without a frontier
    frontier: list[tuple] = field(default_factory=list)
    # the geometry space ℓ* was chosen in (`geometry` holds its rows); every scored space's rows and C1 rows
    space: str = "scalar"
    geometry_by_space: dict[str, list[dict]] = field(default_factory=dict)
    correlations: dict[str, dict] = field(default_factory=dict)

    @property
    def selected_layer(self) -> int | None:
        return self.selection["layer"] if self.selection else None


@dataclass
class SpecSummary:
    """One row of the index: the key numbers a reader compares across specs."""

    spec_hash: str
    name: str
    slug: str
    status: str | None
    date: datetime | None
    selected_layer: int | None
    selected_share: float | None  # share of document resamples in which ℓ* is the argmax
    g_at_selected: float | None
    loss_at_selected: float | None
    ppl_at_selected: float | None
    rho: float | None
    tau: float | None
    n_bridge_layers: int
    n_seeds: int


def _json(v):
    return json.loads(v) if isinstance(v, str) else v


def _stability(con, spec_hash: str, space: str) -> dict[str, list[dict]]:
    if not has_table(con, "selection_stability"):
        return {}
    out: dict[str, list[dict]] = {}
    sql = "SELECT * FROM selection_stability WHERE spec_hash = ? ORDER BY variant <> 'main', variant, layer"
    for row in fetch(con, sql, [spec_hash]):  # * and space_of: a ledger not yet at the space step lacks the column
        if space_of(row) != space:
            continue
        try:
            row["settings"] = _json(row.get("settings"))
        except ValueError:
            pass  # not JSON: shown as the text it is
        out.setdefault(row["variant"], []).append(row)
    return out


def _range(values: list) -> tuple[float | None, float | None]:
    xs = [x for x in (finite(v) for v in values) if x is not None]
    return (min(xs), max(xs)) if xs else (None, None)


def _gen_stats(source: str, layer: int | None, rows: list[dict]) -> GenStats:
    def distinct(col: str) -> tuple[int, ...]:
        return tuple(sorted({int(r[col]) for r in rows if r.get(col) is not None}))

    return GenStats(
        source=source,
        layer=layer,
        n_seeds=len({r.get("seed") for r in rows}),
        stats={m: _mean_sd([r.get(m) for r in rows]) for m in GEN_METRICS},
        ranges={m: _range([r.get(m) for r in rows]) for m in GEN_METRICS},
        n_samples=distinct("n_samples"),
        seq_len=distinct("seq_len"),
    )


def _references(con, spec_hash: str) -> list[GenStats]:
    """reference_results of the spec, one GenStats per reference; [] for a ledger written before the table shipped."""
    if not has_table(con, "reference_results"):
        return []
    by_ref: dict[str, list[dict]] = {}
    for row in fetch(con, "SELECT * FROM reference_results WHERE spec_hash = ? ORDER BY reference, seed", [spec_hash]):
        by_ref.setdefault(str(row["reference"]), []).append(row)
    order = list(REFERENCES)
    keys = sorted(by_ref, key=lambda k: (order.index(k) if k in order else len(order), k))
    return [_gen_stats(k, None, by_ref[k]) for k in keys]


def _mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    xs = [x for x in (finite(v) for v in values) if x is not None]
    if not xs:
        return None, None
    mean = sum(xs) / len(xs)
    if len(xs) < 2:
        return mean, None
    return mean, math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))


def base_slug(name: str, spec_hash: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:80]
    return slug or spec_hash[:12]


def assign_slugs(specs: list[tuple[str, str]]) -> dict[str, str]:
    """spec_hash -> file stem, unique case-insensitively (macOS and Windows file systems fold case).

    `specs` must be ordered by first_seen: the oldest spec keeps the plain name
    and later specs with the same name get a hash suffix, so adding a spec never
    renames an existing report.
    """
    taken: set[str] = set(RESERVED_SLUGS)
    out = {}
    for spec_hash, name in specs:
        slug = base_slug(name or "", spec_hash)
        if slug.lower() in taken:
            slug = f"{slug}-{spec_hash[:8]}"
            n = 8
            while slug.lower() in taken:  # pathological: two hashes sharing a prefix
                n += 4
                slug = f"{base_slug(name or '', spec_hash)}-{spec_hash[:n]}"
        taken.add(slug.lower())
        out[spec_hash] = slug
    return out


def all_slugs(con) -> dict[str, str]:
    specs = con.execute("SELECT spec_hash, name FROM specs ORDER BY first_seen NULLS LAST, spec_hash").fetchall()
    return assign_slugs(specs)


def _runs(con, spec_hash: str) -> list[dict]:
    rows = fetch(con, "SELECT * FROM runs WHERE spec_hash = ? ORDER BY started_at DESC NULLS LAST, run_id", [spec_hash])
    for r in rows:
        r["packages"] = _json(r.get("packages")) or {}
    return rows


def _description(yaml_text: str | None) -> str:
    """`description` is a label, kept out of the canonical JSON (and the hash); the YAML still holds it."""
    try:
        doc = yaml.safe_load(yaml_text or "")
    except yaml.YAMLError:
        return ""
    desc = doc.get("description") if isinstance(doc, dict) else None
    return str(desc).strip() if desc else ""


def _pretty_json(obj, indent: str = "") -> str:
    """Indented JSON for reading, with lists of scalars kept on one line (layer lists, t grids, seeds)."""
    inner = indent + "  "
    if isinstance(obj, dict) and obj:
        items = [
            f"{inner}{json.dumps(k, ensure_ascii=False)}: {_pretty_json(v, inner)}" for k, v in sorted(obj.items())
        ]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        return "[\n" + ",\n".join(inner + _pretty_json(v, inner) for v in obj) + "\n" + indent + "]"
    return json.dumps(obj, ensure_ascii=False)


def load_spec(con, spec_hash: str) -> SpecReport:
    specs = fetch(con, "SELECT * FROM specs WHERE spec_hash = ?", [spec_hash])
    if not specs:
        raise LedgerError(f"spec {spec_hash[:12]} is not in the ledger: run it first (`dihal run SPEC`)")
    spec = specs[0]
    runs = _runs(con, spec_hash)
    succeeded = [r for r in runs if r.get("status") == "succeeded"]

    selections = fetch(con, "SELECT * FROM selections WHERE spec_hash = ?", [spec_hash])
    selection = selections[0] if selections else None
    space = space_of(selection or {})
    by_space: dict[str, list[dict]] = {}
    weights: dict[str, float] = {}
    geometry_rows = fetch(con, "SELECT * FROM layer_geometry WHERE spec_hash = ?", [spec_hash])
    for g in sorted(geometry_rows, key=lambda g: (space_of(g), g["layer"])):
        g["proxies"] = _json(g.get("proxies")) or {}
        g["top_channel_tokens"] = _json(g.get("top_channel_tokens"))
        weights = weights or dict(g["proxies"].get("weights") or {})
        by_space.setdefault(space_of(g), []).append(g)
    geometry = by_space.get(space) or next(iter(by_space.values()), [])
    scores = {g["layer"]: finite(g.get("g")) for g in geometry}

    bridge = fetch(con, "SELECT * FROM bridge_results WHERE spec_hash = ? ORDER BY layer, seed", [spec_hash])
    by_layer: dict[int, list[dict]] = {}
    for b in bridge:
        by_layer.setdefault(b["layer"], []).append(b)
    layers = [
        LayerStats(layer, len(rows), {m: _mean_sd([r.get(m) for r in rows]) for m in BRIDGE_METRICS}, scores.get(layer))
        for layer, rows in sorted(by_layer.items())
    ]
    bridge_gen = [_gen_stats("bridge", layer, rows) for layer, rows in sorted(by_layer.items())]

    curves: dict[tuple[int, int], tuple[list[int], list[float]]] = {}
    for layer, seed, step, loss in con.execute(
        "SELECT layer, seed, step, loss FROM training_curves WHERE spec_hash = ? ORDER BY layer, seed, step",
        [spec_hash],
    ).fetchall():
        steps, losses = curves.setdefault((layer, seed), ([], []))
        steps.append(step)
        losses.append(loss)

    samples: dict[int, list[dict]] = {}
    for s in fetch(
        con, "SELECT layer, seed, idx, text FROM samples WHERE spec_hash = ? ORDER BY layer, seed, idx", [spec_hash]
    ):
        kept = samples.setdefault(s["layer"], [])
        if len(kept) < SAMPLES_PER_LAYER:
            kept.append(s)

    corr = sorted(
        fetch(con, "SELECT * FROM correlations WHERE spec_hash = ?", [spec_hash]),
        key=lambda r: (not r.get("selection_space", True), space_of(r)),
    )
    canonical = spec.get("canonical_json") or ""
    try:
        pretty = _pretty_json(json.loads(canonical))
        hashed = hashed_text_of_record(canonical)
    except (ValueError, TypeError, AttributeError):
        pretty = hashed = canonical
    return SpecReport(
        spec_hash=spec_hash,
        name=spec.get("name") or "",
        description=_description(spec.get("yaml_text")),
        yaml_text=spec.get("yaml_text") or "",
        canonical_json=hashed,
        canonical_pretty=pretty,
        canonical_matches_hash=hashlib.sha256(hashed.encode()).hexdigest() == spec_hash,
        first_seen=spec.get("first_seen"),
        last_seen=spec.get("last_seen"),
        latest_run=runs[0] if runs else None,
        provenance_run=(succeeded or runs or [None])[0],
        geometry=geometry,
        proxy_weights=weights,
        selection=selection,
        layers=layers,
        curves=curves,
        samples=samples,
        correlation=corr[0] if corr else None,
        runs=runs,
        stability=_stability(con, spec_hash, space),
        space=space,
        geometry_by_space=by_space,
        correlations={space_of(r): r for r in corr},
        references=_references(con, spec_hash),
        bridge_gen=bridge_gen,
        c3=load_c3(con, spec_hash),
        frontier=load_frontier(con, spec_hash, selection["layer"] if selection else None),
    )


def summarize(con) -> list[SpecSummary]:
    """Key numbers of every spec, newest activity first, for the index page."""
    slugs = all_slugs(con)
    specs = fetch(con, "SELECT spec_hash, name, last_seen FROM specs", [])
    latest = {
        r["spec_hash"]: r
        for r in fetch(
            con,
            """
        SELECT spec_hash, status, started_at FROM runs
        QUALIFY row_number() OVER (PARTITION BY spec_hash ORDER BY started_at DESC NULLS LAST, run_id) = 1""",
            [],
        )
    }
    selected = {r["spec_hash"]: r for r in fetch(con, "SELECT * FROM selections", [])}  # * : old ledgers lack columns
    corr = {r["spec_hash"]: r for r in fetch(con, "SELECT * FROM correlations", []) if r.get("selection_space", True)}
    at_sel = {
        r["spec_hash"]: r
        for r in fetch(
            con,
            """
        SELECT b.spec_hash, avg(b.bridge_val_loss) AS loss, avg(b.gen_ppl) AS ppl
        FROM bridge_results b JOIN selections s ON s.spec_hash = b.spec_hash AND s.layer = b.layer
        GROUP BY b.spec_hash""",
            [],
        )
    }
    shape = {
        r["spec_hash"]: r
        for r in fetch(
            con,
            """
        SELECT spec_hash, count(DISTINCT layer) AS n_layers, count(DISTINCT seed) AS n_seeds
        FROM bridge_results GROUP BY spec_hash""",
            [],
        )
    }
    out = []
    for s in specs:
        h = s["spec_hash"]
        run, sel, c, b, sh = (
            latest.get(h, {}),
            selected.get(h, {}),
            corr.get(h, {}),
            at_sel.get(h, {}),
            shape.get(h, {}),
        )
        out.append(
            SpecSummary(
                spec_hash=h,
                name=s.get("name") or "",
                slug=slugs[h],
                status=run.get("status"),
                date=run.get("started_at") or s.get("last_seen"),
                selected_layer=sel.get("layer"),
                selected_share=finite(sel.get("argmax_share")),
                g_at_selected=finite(sel.get("g")),
                loss_at_selected=finite(b.get("loss")),
                ppl_at_selected=finite(b.get("ppl")),
                rho=finite(c.get("spearman_rho")),
                tau=finite(c.get("kendall_tau")),
                n_bridge_layers=sh.get("n_layers", 0),
                n_seeds=sh.get("n_seeds", 0),
            )
        )
    out.sort(key=lambda r: (r.date is None, -(r.date.timestamp() if r.date else 0), r.name, r.spec_hash))
    return out
