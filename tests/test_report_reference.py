"""The report's 'where the bridge's samples stand' section: the C3 reference rows next to the bridge's own.

The ledger is the one tests/test_report.py builds (a geometry-only spec and a 5-layer × 2-seed sweep whose ℓ*
is layer 1), plus synthetic `reference_results` rows shaped like what the reference stage writes (test data for
the renderer only). The table is created here with CREATE TABLE IF NOT EXISTS and its exact schema, so the test
holds whether or not the ledger already creates it.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from dihal.ledger.store import insert_rows, writer
from dihal.report import write_reports
from tests.test_report import PACKAGES, build_ledger

REFERENCE_TABLE = """CREATE TABLE IF NOT EXISTS reference_results (
    spec_hash VARCHAR, reference VARCHAR, seed INTEGER, gen_ppl DOUBLE, gen_nll DOUBLE, distinct_1 DOUBLE,
    distinct_2 DOUBLE, distinct_3 DOUBLE, diversity DOUBLE, unigram_entropy DOUBLE, n_samples INTEGER,
    seq_len INTEGER, samples_digest VARCHAR, run_id VARCHAR, code_version VARCHAR, packages JSON,
    PRIMARY KEY (spec_hash, reference, seed))"""
# reference -> per bridge seed (0, 1): (gen_ppl, diversity, distinct_2, unigram_entropy)
REFERENCE_VALUES = {
    "backbone_t1": ((38.2, 0.71, 0.88, 6.02), (41.7, 0.69, 0.86, 5.96)),
    "backbone_greedy": ((4.3, 0.12, 0.31, 4.10), (4.9, 0.14, 0.33, 4.18)),
    "real_text": ((27.5, 0.83, 0.93, 6.40), (29.1, 0.81, 0.91, 6.36)),
}


# reference -> per bridge seed (0, 1): MAUVE; each seed's interval is MAUVE - 0.2 .. MAUVE + 0.1
REFERENCE_MAUVE = {"backbone_t1": (0.7, 0.8), "backbone_greedy": (0.22, 0.24), "real_text": (0.85, 0.87)}


def _mauve(m: float | None) -> dict:
    if m is None:  # not measured
        return dict.fromkeys(("mauve", "mauve_lo", "mauve_hi"))
    return {"mauve": m, "mauve_lo": m - 0.2, "mauve_hi": m + 0.1}


def reference_rows(spec_hash: str, values: dict = REFERENCE_VALUES) -> list[dict]:
    import math

    rows = []
    for ref, per_seed in values.items():
        for seed, (ppl, div, d2, h) in enumerate(per_seed):
            rows.append(
                {
                    "spec_hash": spec_hash,
                    "reference": ref,
                    "seed": seed,
                    "gen_ppl": ppl,
                    "gen_nll": math.log(ppl),
                    "distinct_1": d2 - 0.3,
                    "distinct_2": d2,
                    "distinct_3": d2 + 0.04,
                    "diversity": div,
                    "unigram_entropy": h,
                    **_mauve(REFERENCE_MAUVE[ref][seed] if ref in REFERENCE_MAUVE else None),
                    "n_samples": 16,
                    "seq_len": 64,
                    "samples_digest": f"{ref}-{seed}",
                    "run_id": "ref-run",
                    "code_version": "0.1.0",
                    "packages": PACKAGES,
                }
            )
    return rows


def add_references(root: Path, rows: list[dict]) -> None:
    with writer(root) as con:
        con.execute(REFERENCE_TABLE)
        insert_rows(con, "reference_results", rows)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    hashes = build_ledger(root)
    add_references(root, reference_rows(hashes["sweep"]))
    paths = {kind: write_reports(root, h) for kind, h in hashes.items()}
    return root, hashes, paths


def _section(html: str) -> str:
    return html.split('<section id="standing">')[1].split("</section>")[0]


def _cells(row: str) -> list[str]:
    return re.findall(r"<td[^>]*>([^<]*)", row)


def test_section_shows_each_reference_and_the_bridge_at_selected_layer(project):
    _, _, paths = project
    html = paths["sweep"].read_text(encoding="utf-8")
    section = _section(html)
    assert html.index('id="bridge-table"') < html.index('id="standing"') < html.index('id="c1"')
    assert "unmodified backbone" in section
    for ref in REFERENCE_VALUES:
        assert f"<b>{ref}</b>" in section, ref  # each reference is said what it is
    assert "ancestral samples at temperature 1" in section and "greedy decoding" in section
    assert "held-out validation blocks" in section

    body = section.split('id="standing-table"')[1].split("<tbody>")[1].split("</tbody>")[0]
    rows = body.split("<tr")[1:]
    assert len(rows) == 1 + 3  # the bridge at ℓ* = 1, then one row per reference in a fixed order
    assert 'class="bridge selected"' in rows[0]
    # bridge at ℓ* = 1: gen_ppl 100 and 101 over seeds 0 and 1 (test_report.build_ledger)
    assert _cells(rows[0]) == ["bridge, layer 1 (ℓ*)", "2", "100.5", "100–101", "—", "0.6", "0.7", "5.1", "—"]
    assert _cells(rows[1]) == ["backbone_t1", "2", "39.95", "38.2–41.7", "0.75", "0.7", "0.87", "5.99", "16 × 64"]
    assert _cells(rows[2]) == ["backbone_greedy", "2", "4.6", "4.3–4.9", "0.23", "0.13", "0.32", "4.14", "16 × 64"]
    assert _cells(rows[3]) == ["real_text", "2", "28.3", "27.5–29.1", "0.86", "0.82", "0.92", "6.38", "16 × 64"]
    # MAUVE's bracket spans the per-seed 95% intervals: lowest lower end to highest upper end
    assert "[0.5, 0.9]" in rows[1] and "[0.02, 0.34]" in rows[2] and "[" not in _cells(rows[0])[4]
    assert 'title="range 0.69–0.71"' in rows[1]  # the other metrics' ranges are in the cell's tooltip

    sentence = section.split('id="standing-sentence">')[1].split("</p>")[0]
    assert sentence.startswith("Gen PPL at ℓ* = 1 is <b>100</b> (100–101 over 2 seeds); for comparison,")
    assert "T = 1: <b>40</b>" in sentence and "greedy decoding: <b>4.6</b>" in sentence
    assert "real held-out text: <b>28.3</b>" in sentence
    card = html.split('id="card-references">')[1].split("</div>")[0]
    assert card == "backbone_t1 40, backbone_greedy 4.6, real_text 28.3"

    img = section.split('id="standing-plot" src="')[1].split('"')[0]
    assert base64.b64decode(img.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


def test_spec_without_reference_rows_has_no_section(project):
    _, _, paths = project
    html = paths["geometry"].read_text(encoding="utf-8")
    assert 'id="standing"' not in html and 'id="standing-plot"' not in html and 'id="card-references"' not in html


def test_ledger_without_the_table_renders_without_the_section(tmp_path):
    hashes = build_ledger(tmp_path)
    with writer(tmp_path) as con:  # whether or not the ledger creates the table, this one predates it
        con.execute("DROP TABLE IF EXISTS reference_results")
    html = write_reports(tmp_path, hashes["sweep"]).read_text(encoding="utf-8")
    assert 'id="bridge-table"' in html and 'id="c1"' in html
    assert 'id="standing"' not in html and 'id="card-references"' not in html
    assert not list((tmp_path / "reports").rglob("standing.*.uri"))


def test_references_without_bridge_rows_and_unknown_names(tmp_path):
    """A spec with reference rows but no bridge rows lists the references only; a name the report does not know
    is shown escaped in the table and never drawn."""
    hashes = build_ledger(tmp_path)
    h = hashes["geometry"]
    values = {"real_text": ((30.0, 0.8, 0.9, 6.3),), "<b>mystery</b>": ((55.0, 0.5, 0.6, 5.0),)}
    add_references(tmp_path, reference_rows(h, values))
    html = write_reports(tmp_path, h).read_text(encoding="utf-8")
    section = _section(html)
    rows = section.split("<tbody>")[1].split("</tbody>")[0].split("<tr")[1:]
    assert len(rows) == 2 and 'class="bridge' not in section
    assert _cells(rows[0])[:4] == ["real_text", "1", "30", "30"]
    assert "&lt;b&gt;mystery&lt;/b&gt;" in rows[1] and "<b>mystery" not in html
    assert section.split('id="standing-sentence">')[1].startswith("Gen PPL of the references: ")
    assert 'id="standing-plot"' in section and 'id="card-references"' not in html  # no bridge card without ℓ* rows


def test_standing_figure_is_cached_and_redrawn_when_a_reference_changes(project, monkeypatch):
    from dihal.report import render

    root, hashes, _ = project
    h = hashes["sweep"]
    cache = root / "reports" / render.FIGURE_CACHE
    before = {p.name for p in cache.rglob("standing.*.uri")}
    assert len(before) == 1
    drawn: list[str] = []
    real_import = render.importlib.import_module

    def spy(name, *a, **k):
        drawn.append(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(render.importlib, "import_module", spy)
    render.write_reports(root, h)
    assert drawn == []  # nothing changed: every figure, this one included, comes from the cache
    with writer(root) as con:  # only provenance changes: still cached
        con.execute(
            "UPDATE reference_results SET run_id = 'ref-run-2', code_version = '0.2.0' WHERE spec_hash = ?", [h]
        )
    render.write_reports(root, h)
    assert drawn == []
    with writer(root) as con:
        con.execute(
            "UPDATE reference_results SET gen_ppl = 5.5 WHERE spec_hash = ? AND reference = "
            "'backbone_greedy' AND seed = 1",
            [h],
        )
    html = render.write_reports(root, h).read_text(encoding="utf-8")
    assert drawn == ["dihal.report.plots"]  # the one figure whose inputs changed is drawn again
    after = {p.name for p in cache.rglob("standing.*.uri")}
    assert len(after) == 1 and after != before
    assert "4.3–5.5" in _section(html)


def test_every_trained_layer_is_listed_when_selected_layer_was_not_trained(tmp_path):
    hashes = build_ledger(tmp_path)
    h = hashes["sweep"]
    add_references(tmp_path, reference_rows(h))
    with writer(tmp_path) as con:
        con.execute("DELETE FROM bridge_results WHERE spec_hash = ? AND layer = 1", [h])
    section = _section(write_reports(tmp_path, h).read_text(encoding="utf-8"))
    rows = section.split("<tbody>")[1].split("</tbody>")[0].split("<tr")[1:]
    assert [_cells(r)[0] for r in rows] == [*(f"bridge, layer {ell}" for ell in (2, 3, 4, 5)), *REFERENCE_VALUES]
    assert "ℓ* has no bridge rows; every trained layer is listed." in section
    assert section.split('id="standing-sentence">')[1].startswith("Gen PPL of the references: ")


@pytest.mark.browser
def test_standing_plot_loads_in_headless_chromium(project):
    from tests.test_report import BROWSER_ARGS, CHROMIUM, browser_missing

    if not Path(CHROMIUM).exists():
        browser_missing(f"needs Debian's chromium at {CHROMIUM} (apt-get install -y chromium)")
    try:
        from playwright import sync_api
    except ImportError:
        browser_missing("needs the playwright python package")
    _, _, paths = project
    errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(paths["sweep"].resolve().as_uri(), wait_until="load")
            assert page.locator("#standing-table").is_visible()
            assert page.locator("#standing-table tbody tr").count() == 4
            assert page.eval_on_selector("#standing-plot", "el => el.complete && el.naturalWidth") > 0
        finally:
            browser.close()
    assert errors == []
