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
import hashlib
import math
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from dihal import __version__
from dihal.ledger import reader
from dihal.report import plots
from dihal.report.data import SpecReport, SpecSummary, all_slugs, load_spec, summarize

TEMPLATES = Path(__file__).parent / "templates"
REPORTS_DIR = "reports"
METRIC_LABELS = {  # column -> (header, hint shown as the header's tooltip)
    "bridge_val_loss": ("bridge val loss", "x0-MSE on standardised validation targets over the t grid; lower is better"),
    "recovery_ce": ("recovery CE", "cross-entropy of tokens decoded from once-denoised states; lower is better"),
    "recovery_token_acc": ("recovery acc", "token accuracy of the recovered states against the true next tokens"),
    "gen_ppl": ("gen PPL", "perplexity of generated text under the full backbone; lower is better"),
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


def _dt(v, seconds: bool = True) -> str:
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M") + " UTC"
    return "—" if v is None else str(v)


def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)  # fmt: skip
    env.filters.update(num=_num, signed=_signed, pm=_pm, dt=_dt)
    return env


def _script_source(name: str) -> tuple[str, str]:
    """A static inline script and its CSP hash ('sha256-…' of the exact bytes between the tags)."""
    text = (TEMPLATES / name).read_text(encoding="utf-8")
    digest = base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")
    return text, f"'sha256-{digest}'"


def _csp(script_hash: str | None = None) -> str:
    scripts = script_hash or "'none'"
    return (f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src {scripts}; "
            "base-uri 'none'; form-action 'none'")  # fmt: skip


def _rendered_at() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _facts(r: SpecReport) -> dict:
    """The numbers the header summarises, taken at ℓ* where the sweep trained it."""
    sel = r.selected_layer
    at = next((ls for ls in r.layers if ls.layer == sel), None)
    best = min((ls for ls in r.layers if ls.stats["bridge_val_loss"][0] is not None),
               key=lambda ls: (ls.stats["bridge_val_loss"][0], ls.layer), default=None)  # fmt: skip
    return {"at_selected": at, "best_by_loss": best}


def render_spec(r: SpecReport, slug: str) -> str:
    sel = r.selected_layer
    figures = {
        "geometry": plots.geometry_figure(r.geometry, sel),
        "curves": plots.curves_figure(r.curves, sel),
        "scatter": plots.scatter_figure(r.layers, sel, r.correlation) if r.correlation else None,
    }
    prov = r.provenance_run or {}
    return _env().get_template("spec.j2").render(
        r=r, slug=slug, figures=figures, facts=_facts(r), metrics=METRIC_LABELS, prov=prov,
        packages=sorted((prov.get("packages") or {}).items()), csp=_csp(), rendered_at=_rendered_at(),
        version=__version__,
    )  # fmt: skip


def render_index(rows: list[SpecSummary], linked: set[str]) -> str:
    script, script_hash = _script_source("compare.js.j2")
    data = [
        {"hash": s.spec_hash, "name": s.name, "status": s.status, "date": _dt(s.date), "layer": s.selected_layer,
         "G": s.score_at_selected, "loss": s.loss_at_selected, "ppl": s.ppl_at_selected, "rho": s.rho,
         "tau": s.tau, "bridge": f"{s.n_bridge_layers} layer(s) × {s.n_seeds} seed(s)" if s.n_bridge_layers else "—"}
        for s in rows
    ]  # fmt: skip
    return _env().get_template("index.j2").render(
        rows=rows, linked=linked, data=data, script=script, csp=_csp(script_hash), rendered_at=_rendered_at(),
        version=__version__,
    )  # fmt: skip


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_reports(root: Path | str, spec_hash: str) -> Path:
    """Render reports/<slug>.html for that spec, re-render reports/index.html, return the spec report's path.

    Raises dihal.ledger.LedgerError when there is no ledger or the spec hash is not in it.
    """
    root = Path(root)
    with reader(root) as con:
        report = load_spec(con, spec_hash)
        slugs = all_slugs(con)
        rows = summarize(con)
    out_dir = root / REPORTS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{slugs[spec_hash]}.html"
    _atomic_write(path, render_spec(report, slugs[spec_hash]))
    linked = {s.slug for s in rows if (out_dir / f"{s.slug}.html").is_file()}
    _atomic_write(out_dir / "index.html", render_index(rows, linked))
    return path
