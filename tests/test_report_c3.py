"""The report's C3 section: the bridge's 'hidden' interface next to the baselines, at a matched budget.

The ledger is the one tests/test_report.py builds, plus synthetic `interface_results` rows (test data for the
renderer only, shaped like what ingest.interface_rows writes) and the reference rows of
tests/test_report_reference.py. The numbers are chosen so that the headline is data-driven: latent_ae has the
lowest gen PPL but is far less diverse than real text, and the headline ranks it first anyway, with its diversity
next to it (no rule picks a winner).
"""

from __future__ import annotations

import base64
import math
import re

import pytest

from dihal.ledger.store import INTERFACE_SCHEMA, insert_rows, writer
from dihal.report import write_reports
from dihal.report.baselines import t_interval
from tests.test_report import PACKAGES, build_ledger
from tests.test_report_reference import add_references, reference_rows

# interface -> per seed (0, 1, 2): (gen_ppl, diversity)
VALUES = {
    "hidden": ((60.5, 0.78), (62.5, 0.80), (64.5, 0.79)),
    "embedding_rounding": ((300.4, 0.85), (320.4, 0.86), (340.4, 0.84)),
    "embedding_readout": ((50.1, 0.76), (52.1, 0.78), (54.1, 0.77)),
    "latent_ae": ((20.2, 0.40), (21.2, 0.42), (22.2, 0.41)),
}
MEANS = {"hidden": "62.5", "embedding_rounding": "320.4", "embedding_readout": "52.1", "latent_ae": "21.2"}


def interface_rows(spec_hash: str, values: dict = VALUES, layer: int = 1, unmatched: set = frozenset()) -> list:
    rows = []
    for name, per_seed in values.items():
        for seed, (ppl, div) in enumerate(per_seed):
            rounding = name == "embedding_rounding"
            rows.append(
                {
                    "spec_hash": spec_hash,
                    "interface": name,
                    "layer": layer,
                    "seed": seed,
                    "bridge_val_loss": 0.3,
                    "recovery_ce": None if rounding else 2.5 + 0.1 * seed,
                    "recovery_token_acc": 0.5 + 0.01 * seed,
                    "recovery_clean_agreement": 0.7,
                    "recovery_coverage": None if rounding else 0.99,
                    "gen_ppl": ppl,
                    "gen_nll": math.log(ppl),
                    "distinct_1": 0.4,
                    "distinct_2": 0.8,
                    "distinct_3": 0.9,
                    "diversity": div,
                    "unigram_entropy": 5.5,
                    "mauve": 0.5 + 0.01 * seed,
                    "mauve_lo": 0.2,
                    "mauve_hi": 0.8,
                    "samples_digest": f"{name}-{seed}",
                    "diffusion_steps": 2000,
                    "denoiser_params": 1_200_000,
                    "recovery_steps": 0 if name == "hidden" else 500,
                    "recovery_params": 0 if name == "hidden" else 40_000,
                    "budget_matched": (name, seed) not in unmatched,
                    "train_seconds": 100.0 + seed,
                    "recovery_seconds": 0.0 if name == "hidden" else 12.0,
                    "eval_seconds": 30.0,
                    "settings": {"name": name},
                    "run_id": "c3-run",
                    "code_version": "0.1.0",
                    "packages": PACKAGES,
                }
            )
    return rows


def add_interfaces(root, rows: list[dict]) -> None:
    with writer(root) as con:
        for stmt in INTERFACE_SCHEMA:
            con.execute(stmt)
        insert_rows(con, "interface_results", rows)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("c3")
    hashes = build_ledger(root)
    add_references(root, reference_rows(hashes["sweep"]))
    add_interfaces(root, interface_rows(hashes["sweep"]))
    add_interfaces(root, interface_rows(hashes["geometry"], {"hidden": VALUES["hidden"]}))  # no baselines
    paths = {kind: write_reports(root, h) for kind, h in hashes.items()}
    return root, hashes, paths


def _section(html: str) -> str:
    return html.split('<section id="c3">')[1].split("</section>")[0]


def _rows(section: str) -> tuple[list[str], list[str]]:
    table = section.split('id="c3-table"')[1].split("</table>")[0]
    bodies = table.split("<tbody")[1:]
    return bodies[0].split("<tr")[1:], (bodies[1].split("<tr")[1:] if len(bodies) > 1 else [])


def _cells(row: str) -> list[str]:
    return [c.strip() for c in re.findall(r"<td[^>]*>(?:<[ib]>)?([^<]*)", row)]


def test_section_lists_each_interface_then_the_references(project):
    _, _, paths = project
    html = paths["sweep"].read_text(encoding="utf-8")
    assert html.index('id="standing"') < html.index('id="c3"') < html.index('id="c1"')
    section = _section(html)
    interfaces, references = _rows(section)
    assert [_cells(r)[0] for r in interfaces] == list(VALUES)  # hidden first, then the baselines in fixed order
    for row, name in zip(interfaces, VALUES):
        cells = _cells(row)
        assert cells[1:4] == ["1", "3", MEANS[name]], name  # layer, seeds, mean gen PPL as the report formats it
        assert cells[4] == "0.51"  # mean MAUVE over seeds, next to gen PPL
        assert cells[11:14] == ["2000", "1200000", "0" if name == "hidden" else "500"]
        assert cells[15] == "yes"
    mean, lo, hi = t_interval([60.5, 62.5, 64.5])
    assert f"[{lo:.3g}, {hi:.3g}]" in interfaces[0] and lo < mean < hi  # the 95% t-interval over seeds
    assert "t-interval" in section and "Matched budget" in section and "learning rate" in section
    assert 'id="c3-budget-differs"' not in section and "not matched" not in section.split("<tbody")[1]
    assert [_cells(r)[0] for r in references] == ["backbone_t1", "backbone_greedy", "real_text"]
    assert _cells(references[2])[2:4] == ["2", "28.3"]  # real text: 2 seeds, mean gen PPL, no budget cells
    assert all(c == "" for c in _cells(references[2])[8:])


def test_missing_recovery_ce_of_rounding_shows_as_missing(project):
    _, _, paths = project
    interfaces, _ = _rows(_section(paths["sweep"].read_text(encoding="utf-8")))
    rounding = _cells(interfaces[1])
    assert rounding[0] == "embedding_rounding"
    assert rounding[9] == "—" and rounding[10] == "—"  # recovery CE and coverage: no distribution
    assert "None" not in interfaces[1] and "nan" not in interfaces[1].lower()
    assert _cells(interfaces[2])[9] == "2.6"  # readout's recovery CE: mean of 2.5, 2.6, 2.7


def test_headline_ranks_the_interfaces_by_gen_ppl_with_their_diversity(project):
    _, _, paths = project
    section = _section(paths["sweep"].read_text(encoding="utf-8"))
    sentence = section.split('id="c3-sentence">')[1].split("</p>")[0]
    assert sentence.startswith("On this spec's 3 seeds, mean gen PPL, lowest first: <b>latent_ae</b> 21.2 (diversity ")
    order = [sentence.index(f"<b>{n}</b>") for n in ("latent_ae", "embedding_readout", "hidden", "embedding_rounding")]
    assert order == sorted(order), "ranked by mean gen PPL, whatever the diversity"
    assert "By the same judge: backbone_t1" in sentence and "real_text 28.3" in sentence


def test_plot_is_embedded(project):
    _, _, paths = project
    section = _section(paths["sweep"].read_text(encoding="utf-8"))
    img = section.split('id="c3-plot" src="')[1].split('"')[0]
    assert base64.b64decode(img.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


def test_spec_with_only_hidden_rows_has_no_section(project):
    root, _, paths = project
    html = paths["geometry"].read_text(encoding="utf-8")
    assert 'id="c3"' not in html and 'id="c3-plot"' not in html
    assert not list((root / "reports").rglob("kjv-geometry/c3.*.uri"))


def test_ledger_without_the_table_renders_without_the_section(tmp_path):
    hashes = build_ledger(tmp_path)
    with writer(tmp_path) as con:  # whether or not the ledger creates the table, this one predates it
        con.execute("DROP TABLE IF EXISTS interface_results")
    html = write_reports(tmp_path, hashes["sweep"]).read_text(encoding="utf-8")
    assert 'id="bridge-table"' in html and 'id="c1"' in html and 'id="c3"' not in html


def test_unmatched_budget_is_flagged_and_a_hostile_name_is_escaped(tmp_path):
    """No reference rows here, so the headline names none; the hostile name has the lowest gen PPL,
    so it is named in the headline (escaped) and drawn as 'other interface', never as its text."""
    hashes = build_ledger(tmp_path)
    h = hashes["sweep"]
    evil = "<script>alert(9)</script>"
    values = {**VALUES, evil: ((10.0, 0.7), (11.0, 0.7), (12.0, 0.7))}
    rows = interface_rows(h, values, unmatched={("latent_ae", 2)})
    rows[0]["diffusion_steps"] = 1000  # hidden, seed 0: a different step count
    add_interfaces(tmp_path, rows)
    html = write_reports(tmp_path, h).read_text(encoding="utf-8")
    section = _section(html)
    interfaces, references = _rows(section)
    assert references == []
    assert [_cells(r)[0] for r in interfaces][-1] == "&lt;script&gt;alert(9)&lt;/script&gt;"  # unknown ones last
    assert "<script>alert(9)" not in html
    latent = next(r for r in interfaces if _cells(r)[0] == "latent_ae")
    assert '<span class="bad">not matched</span>' in latent and "fdecea" in latent
    assert sum('class="bad">not matched' in r for r in interfaces) == 1
    assert _cells(interfaces[0])[11] == "1000/2000" and 'id="c3-budget-differs"' in section
    sentence = section.split('id="c3-sentence">')[1].split("</p>")[0]
    assert sentence.startswith(
        "On this spec's 3 seeds, mean gen PPL, lowest first: <b>&lt;script&gt;alert(9)&lt;/script&gt;</b> 11 (diversity"
    )
    assert "By the same judge" not in sentence  # no reference rows
    assert 'id="c3-plot"' in section
