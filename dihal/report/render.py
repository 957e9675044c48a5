"""Render the ledger into self-contained HTML: one page per spec plus reports/index.html.

Why it is built this way:
- Jinja2 with autoescape forced on (the templates end in .j2, which
  `select_autoescape` would not recognise), so every name, description, YAML
  text, sample or error that came from a user or a model is shown as text and
  can never become markup. StrictUndefined turns a template typo into an error
  instead of a silently empty cell.
- One file per report, nothing fetched: figures are PNG data URIs, the CSS is
  inline, and a Content-Security-Policy meta tag forbids every external load.
  The index's one inline script is allowed by its sha256 hash only, so even an
  injected script element (there should be none) would not run.
- The ledger is read first and the connection closed before plotting, so a
  read-only handle (which blocks a writer) is held for milliseconds.
- Files are written to a temporary name and renamed, so a browser or a
  concurrent reader never sees half a report.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import importlib
import math
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock
from jinja2 import Environment, FileSystemBytecodeCache, FileSystemLoader, StrictUndefined
from markupsafe import Markup

import dihal.report.baselines as c3
import dihal.report.confidence as trust
from dihal import __version__
from dihal.ledger.store import reader
from dihal.report.data import GenStats, SpecReport, SpecSummary, all_slugs, load_spec, summarize
from dihal.report.rows import REFERENCES, SPACE_WORDS
from dihal.utils.atomic import write_atomic

TEMPLATES = Path(__file__).parent / "templates"
REPORTS_DIR = "reports"
FIGURE_CACHE = ".figures"  # under REPORTS_DIR: drawn figures, reused while their inputs are unchanged
METRIC_LABELS = {  # column -> (header, hint shown as the header's tooltip)
    "bridge_val_loss": (
        "bridge val loss",
        "x0-MSE on standardised validation targets over the t grid; lower is better",
    ),
    "recovery_ce": ("recovery CE", "cross-entropy of tokens decoded from once-denoised states; lower is better"),
    "recovery_token_acc": ("recovery acc", "token accuracy of the recovered states against the true next tokens"),
    "gen_ppl": ("gen PPL", "perplexity of generated text under the full backbone; lower is better"),
    "mauve": ("MAUVE", "generated against real text, on the judge's last hidden states; 1 = indistinguishable"),
    "distinct_1": ("dist-1", "distinct unigrams / unigrams"),
    "distinct_2": ("dist-2", "distinct bigrams / bigrams"),
    "distinct_3": ("dist-3", "distinct trigrams / trigrams"),
    "diversity": ("diversity", "product over n=2..4 of (1 - rep_n)"),
    "unigram_entropy": ("unigram H", "entropy of the unigram distribution of samples; low flags degenerate text"),
}


def _num(v, sig: int = 4) -> str:
    if v is None or isinstance(v, bool):
        return "—" if v is None else ("yes" if v else "no")
    if isinstance(v, int):
        return str(v)
    try:
        x = float(v)
    except (TypeError, ValueError):
        return str(v)
    return f"{x:.{sig}g}" if math.isfinite(x) else "—"


def _signed(v, digits: int = 3) -> str:
    if v is None or not math.isfinite(float(v)):
        return "—"
    text = f"{float(v):+.{digits}f}"
    return text[1:] if float(text) == 0 else text  # no "-0.00" for a value that rounds to zero


def _pm(pair) -> str:
    mean, sd = pair
    return _num(mean) if sd is None else f"{_num(mean)} ± {_num(sd, 2)}"


def _span(pair) -> str:
    """A (min, max) over seeds as '180–190'; a dash when missing, the one number when both ends agree."""
    lo, hi = pair
    if lo is None or hi is None:
        return "—"
    return _num(lo) if _num(lo) == _num(hi) else f"{_num(lo)}–{_num(hi)}"


def _pct(v) -> str:
    """A share in [0, 1] as a percentage: '87%', '0.4%'."""
    if v is None or isinstance(v, bool) or not math.isfinite(float(v)):
        return "—"
    x = 100 * float(v)
    return f"{x:.0f}%" if x >= 10 or x == 0 else f"{x:.1f}%"


def _pval(v) -> str:
    if v is None or isinstance(v, bool) or not math.isfinite(float(v)):
        return "—"
    return f"{float(v):.3f}" if float(v) >= 0.001 else f"{float(v):.1e}"


def _dt(v, seconds: bool = True) -> str:
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M") + " UTC"
    return "—" if v is None else str(v)


@functools.cache
def _env() -> Environment:
    """One environment per process, its compiled templates kept in Jinja's bytecode cache (a per-user folder
    under the temp dir, keyed by each template's source checksum): compiling them took a quarter of a warm
    `dihal run`."""
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        bytecode_cache=FileSystemBytecodeCache(),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(num=_num, signed=_signed, pm=_pm, dt=_dt, pct=_pct, pval=_pval, span=_span)
    return env


def _script_source(name: str) -> tuple[str, str]:
    """A static inline script and its CSP hash ('sha256-…' of the exact bytes between the tags)."""
    text = (TEMPLATES / name).read_text(encoding="utf-8")
    digest = base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")
    return text, f"'sha256-{digest}'"


def _csp(script_hash: str | None = None) -> str:
    scripts = script_hash or "'none'"
    return (
        f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src {scripts}; "
        "base-uri 'none'; form-action 'none'"
    )


def _rendered_at() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _facts(r: SpecReport) -> dict:
    """The numbers the header summarises, taken at ℓ* where the sweep trained it."""
    sel = r.selected_layer
    at = next((ls for ls in r.layers if ls.layer == sel), None)
    best = min(
        (ls for ls in r.layers if ls.stats["bridge_val_loss"][0] is not None),
        key=lambda ls: (ls.stats["bridge_val_loss"][0], ls.layer),
        default=None,
    )
    return {"at_selected": at, "best_by_loss": best}


def _standing(r: SpecReport) -> dict | None:
    """The 'where the bridge's samples stand' section: the bridge at ℓ* (every trained layer when ℓ* was not
    trained) next to the reference rows; None when the ledger holds no reference rows for the spec."""
    if not r.references:
        return None
    at = [g for g in r.bridge_gen if g.layer == r.selected_layer]
    bridge = at or r.bridge_gen
    return {
        "bridge": bridge,
        "references": r.references,
        "at_selected": bool(at),
        "descriptions": REFERENCES,
        "headline": standing_sentence(at[0] if at else None, r.references),
    }


def _plot_row(g: GenStats) -> tuple:
    """The numbers standing_figure draws for one row: who, n seeds, gen PPL mean/min/max, diversity mean/min/max."""
    return (
        g.layer if g.is_bridge else g.source,
        g.n_seeds,
        g.stats["gen_ppl"][0],
        *g.ranges["gen_ppl"],
        g.stats["diversity"][0],
        *g.ranges["diversity"],
    )


def standing_sentence(bridge: GenStats | None, references: list[GenStats]) -> Markup | None:
    """'gen PPL at ℓ* 185 (180–190 over 3 seeds); the backbone's own samples at T = 1: 41; …' as escaped HTML."""
    names = {
        "backbone_t1": "the backbone's own samples at T = 1",
        "backbone_greedy": "its greedy decoding",
        "real_text": "real held-out text",
    }
    parts = [
        Markup("{}: <b>{}</b>").format(names.get(g.source, g.source), _num(g.stats["gen_ppl"][0], 3))
        for g in references
        if g.stats["gen_ppl"][0] is not None
    ]
    if not parts:
        return None
    text = Markup("")
    if bridge is not None and bridge.stats["gen_ppl"][0] is not None:
        text = Markup("Gen PPL at ℓ* = {} is <b>{}</b>").format(bridge.layer, _num(bridge.stats["gen_ppl"][0], 3))
        if bridge.n_seeds > 1:
            text += Markup(" ({} over {} seeds)").format(_span(bridge.ranges["gen_ppl"]), bridge.n_seeds)
        text += Markup("; for comparison, ")
    else:
        text = Markup("Gen PPL of the references: ")
    return text + Markup("; ").join(parts) + "."


def _trust(r: SpecReport) -> dict:
    """The values of the 'how sure is ℓ*' panels (see trust.py); each is None or empty when the ledger lacks it."""
    profile = trust.profile(r)
    return {
        "stability": trust.stability_facts(r),
        "profile": profile,
        "outliers": trust.outlier_facts(r),
        "sensitivity": trust.sensitivity_rows(r),
        "corr": trust.correlation_p(r.correlation),
        "by_layer": {p["layer"]: p for p in profile},
        "has_outliers": any(g.get(c) is not None for g in r.geometry for c in trust.OUTLIER_COLUMNS),
        "warning": (r.selection or {}).get("warning") or None,
        "sentence": stability_sentence(trust.stability_facts(r)),
    }


def stability_sentence(f: dict | None) -> Markup | None:
    """'ℓ* = 4, the argmax in 87% of 200 document resamples of 119 documents; blocks …' as escaped HTML."""
    if not f:
        return None
    sample = " from ".join(
        x
        for x in (
            f"{f['n_blocks']} blocks" if f["n_blocks"] else "",
            f"{f['n_documents']} documents" if f["n_documents"] else "",
        )
        if x
    )
    text = Markup("ℓ* = <b>{}</b>").format(_num(f["layer"]))
    if f["rule"] and f["rule"] != "argmax":
        text += Markup(" (rule {})").format(f["rule"])
    if f["share"] is not None:
        text += Markup(", the argmax in <b>{}</b> of {}").format(
            _pct(f["share"]), f"{f['n_boot']} document resamples" if f["n_boot"] else "the document resamples"
        )
        text += Markup(" of {}").format(sample) if sample else ""
    elif sample:
        text += Markup("; the geometry sample holds {}").format(sample)
    if f["n_states"] is not None:
        text += Markup("; {} states at ℓ* after the outlier rule").format(_num(f["n_states"]))
    if f["block_start"]:
        text += Markup("; blocks start with <code>{}</code>").format(f["block_start"])
    if f["outlier_rule"]:
        text += Markup("; outliers: {}").format(f["outlier_rule"])
    text += "."
    if f["g_lo"] is not None and f["g_hi"] is not None:
        text += Markup(" G at ℓ* has the 95% interval [{}, {}].").format(_signed(f["g_lo"]), _signed(f["g_hi"]))
    if f["modal_layer"] is not None:
        text += Markup(" The most frequent argmax is layer {} ({} of resamples).").format(
            f["modal_layer"], _pct(f["modal_share"])
        )
    if f["share"] is not None and f["share"] < 0.5:
        text += Markup(' <span class="bad">ℓ* is the argmax in fewer than half of the resamples.</span>')
    return text


_PLOT_MODULES = ("plots", "plots_geometry", "plots_frontier")


@functools.cache
def _plot_code() -> str:
    """Hash of the plotting code: a cached figure is reused only while the code that drew it is unchanged."""
    h = hashlib.sha256()
    for name in _PLOT_MODULES:
        h.update((Path(__file__).parent / f"{name}.py").read_bytes())
    return h.hexdigest()


_NOT_DRAWN = frozenset({"run_id", "code_version", "packages"})  # provenance: new every run, never plotted


def _drawn(obj):
    """`obj` without the provenance columns ledger rows carry, which change on every run but are never drawn."""
    if isinstance(obj, dict):
        return {k: _drawn(v) for k, v in obj.items() if k not in _NOT_DRAWN}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_drawn(v) for v in obj)
    return obj


def _figure(cache: Path | None, key: str, module: str, fn: str, *args) -> str | None:
    """The figure's data URI, drawn by dihal.report.<module>.<fn>(*args), or reused from `cache`.

    A run that computed nothing re-renders the report (its run list changed) but not its figures:
    each is stored under the spec's folder with a hash of its inputs and of the plotting code, so
    matplotlib is not even imported when nothing it would draw has changed. One file per figure and
    spec, overwritten when the inputs change, so the cache cannot grow without bound.
    """
    digest = hashlib.sha256(repr((module, fn, _drawn(args), _plot_code())).encode()).hexdigest()
    path = cache / f"{key}.{digest[:32]}.uri" if cache is not None else None
    if path is not None and path.is_file():
        return path.read_text() or None
    uri = getattr(importlib.import_module(f"dihal.report.{module}"), fn)(*args)
    if cache is not None:
        for old in cache.glob(f"{key}.*.uri"):
            old.unlink(missing_ok=True)
        write_atomic(path, uri or "")
    return uri


def _space_layers(r: SpecReport, space: str) -> list:
    """The bridge's per-layer stats with G taken from `space` (C1's panel for that space)."""
    g = {row["layer"]: row.get("g") for row in r.geometry_by_space.get(space, [])}
    return [dataclasses.replace(ls, g=g.get(ls.layer)) for ls in r.layers]


def c1_spaces(r: SpecReport) -> list[dict]:
    """One row per scored space: its C1 numbers, its own argmax and the verdict sentence (escaped by the template)."""
    from dihal.analysis.verdicts import c1_verdict

    rows = []
    for space, c in r.correlations.items():
        best = next((g["layer"] for g in r.geometry_by_space.get(space, []) if g.get("space_best")), None)
        rows.append(
            {
                "space": space,
                "c": c,
                "chosen": space == r.space,
                "argmax": best,
                "verdict": c1_verdict(
                    space,
                    c["spearman_rho"],
                    c.get("spearman_lo"),
                    c.get("spearman_hi"),
                    c.get("spearman_p"),
                    c.get("n_layers") or 0,
                    c.get("resampled"),
                ),
            }
        )
    return rows


def channel_sentence(r: SpecReport) -> str | None:
    """The dominant raw channel at ℓ* (or the layer where one channel holds the most) and the tokens behind it."""
    rows = [g for g in r.geometry if (g.get("top_channel_share") or 0) > 0.5]
    if not rows:
        return None
    at = next((g for g in rows if g["layer"] == r.selected_layer), None) or max(
        rows, key=lambda g: g["top_channel_share"]
    )
    toks = ", ".join(
        f"{t.get('text')!r} ×{t['count']} ({t['variance_share']:.0%})" for t in at.get("top_channel_tokens") or []
    )
    layers = [g["layer"] for g in rows]
    return (
        f"At layer {at['layer']}, raw channel {at['top_channel']} carries {at['top_channel_share']:.0%} of the "
        f"variance (one channel holds over half of it at layers {layers[0]}–{layers[-1]})"
        + (f"; the tokens that light it most: {toks}" if toks else "")
        + ". Standardised per channel, as the bridge sees it, it has unit variance like every other."
    )


def render_spec(r: SpecReport, slug: str, cache: Path | None = None) -> str:
    sel = r.selected_layer
    t = _trust(r)
    standing = _standing(r)
    sens = r.stability if t["sensitivity"] else {}
    fig = functools.partial(_figure, cache)
    figures = {
        "geometry": fig("geometry", "plots", "geometry_figure", r.geometry, sel),
        "stability": fig("stability", "plots_geometry", "stability_figure", t["profile"], sel),
        "outliers": fig(
            "outliers", "plots_geometry", "outliers_figure", t["outliers"]["rows"], sel, t["outliers"]["threshold"]
        )
        if t["outliers"]
        else None,
        "sensitivity": fig(
            "sensitivity",
            "plots_geometry",
            "sensitivity_figure",
            sens,
            {v["variant"]: v["layer"] for v in t["sensitivity"]},
        )
        if sens
        else None,
        "curves": fig("curves", "plots", "curves_figure", r.curves, sel),
        "scatter": fig("scatter", "plots", "scatter_figure", r.layers, sel, r.correlation, r.space)
        if r.correlation
        else None,
        **{
            f"scatter_{c['space']}": fig(
                f"scatter-{c['space']}",
                "plots",
                "scatter_figure",
                _space_layers(r, c["space"]),
                c["argmax"],
                c["c"],
                c["space"],
            )
            for c in c1_spaces(r)
            if not c["chosen"]
        },
        "standing": fig(
            "standing",
            "plots",
            "standing_figure",
            [_plot_row(g) for g in standing["bridge"]],
            [_plot_row(g) for g in standing["references"]],
            sel,
        )
        if standing
        else None,
        "c3": fig("c3", "plots", "c3_figure", *c3.plot_rows(r.c3)) if r.c3 else None,
        "frontier": fig("frontier", "plots_frontier", "frontier_figure", r.frontier) if r.frontier else None,
    }
    prov = r.provenance_run or {}
    return (
        _env()
        .get_template("spec.j2")
        .render(
            r=r,
            slug=slug,
            figures=figures,
            facts=_facts(r),
            trust=t,
            metrics=METRIC_LABELS,
            prov=prov,
            standing=standing,
            c1=c1_spaces(r),
            channel=channel_sentence(r),
            space_words=SPACE_WORDS,
            packages=sorted((prov.get("packages") or {}).items()),
            csp=_csp(),
            rendered_at=_rendered_at(),
            version=__version__,
        )
    )


def render_index(rows: list[SpecSummary], linked: set[str]) -> str:
    script, script_hash = _script_source("compare.js.j2")
    data = [
        {
            "hash": s.spec_hash,
            "name": s.name,
            "status": s.status,
            "date": _dt(s.date),
            "layer": s.selected_layer,
            "share": s.selected_share,
            "G": s.g_at_selected,
            "loss": s.loss_at_selected,
            "ppl": s.ppl_at_selected,
            "rho": s.rho,
            "tau": s.tau,
            "bridge": f"{s.n_bridge_layers} layer(s) × {s.n_seeds} seed(s)" if s.n_bridge_layers else "—",
        }
        for s in rows
    ]
    return (
        _env()
        .get_template("index.j2")
        .render(
            rows=rows,
            linked=linked,
            data=data,
            script=script,
            csp=_csp(script_hash),
            rendered_at=_rendered_at(),
            version=__version__,
        )
    )


def write_reports(root: Path | str, spec_hash: str) -> Path:
    """Render reports/<slug>.html (and the spec's recorded YAML as reports/<slug>.yaml) for that spec,
    re-render reports/index.html, return the spec report's path.

    Raises dihal.ledger.store.LedgerError when there is no ledger or the spec hash is not in it.
    """
    root = Path(root)
    with reader(root) as con:
        report = load_spec(con, spec_hash)
        slugs = all_slugs(con)
    out_dir = root / REPORTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{slugs[spec_hash]}.html"
    write_atomic(path, render_spec(report, slugs[spec_hash], out_dir / FIGURE_CACHE / slugs[spec_hash]))
    if report.yaml_text:  # the spec as recorded (a derived spec's merged YAML): re-runnable from here alone
        write_atomic(out_dir / f"{slugs[spec_hash]}.yaml", report.yaml_text)
    write_index(root)
    return path


def write_index(root: Path) -> None:
    """Re-render reports/index.html from the ledger and the spec pages on disk.

    Two runs finishing together each write their own page, then the index: without the lock, the one that read
    the ledger and listed the pages first could write last and drop the other's link. Under it, whichever
    writes last has read after both pages existed.
    """
    out_dir = root / REPORTS_DIR
    lock = root / ".dihal" / "index.lock"
    lock.parent.mkdir(exist_ok=True)
    with FileLock(str(lock), timeout=600):
        with reader(root) as con:
            rows = summarize(con)
        linked = {s.slug for s in rows if (out_dir / f"{s.slug}.html").is_file()}
        write_atomic(out_dir / "index.html", render_index(rows, linked))
