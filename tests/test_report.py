"""Tests for dihal.report: self-contained, escaped HTML reports rendered from the ledger.

The ledger here is built through dihal.ledger.store.writer/insert_rows with synthetic
rows shaped like what `ingest.py` writes (test data for the renderer only): a
geometry-only spec, and a 5-layer × 2-seed sweep whose name and description are
script injections, so escaping is exercised on every path a user string takes.
The browser test opens the pages in headless Chromium to prove they load with
no script errors, no dialogs and images that decode.
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
import re
from datetime import datetime, timedelta
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import duckdb
import pytest

from dihal.ledger.schema import RENAMED_COLUMNS
from dihal.ledger.store import SCHEMA, LedgerError, insert_rows, ledger_path, writer
from dihal.report import write_reports
from dihal.report.confidence import outlier_threshold, settings_lines, variant_layer
from dihal.spec.hashing import canonical_json, digest

EVIL = "<script>alert(1)</script>"
EVIL_DESC = "<img src=x onerror=alert(2)> layer sweep"
EVIL_SETTING = "<script>alert(3)</script>"
WARNING = "3 states carry 62% of layer 1's variance <b>after</b> rescaling"
SHARES = {1: 0.87, 2: 0.1, 3: 0.03}  # argmax share per layer of the sweep; the others are 0
T0 = datetime(2026, 5, 1, 12, 0, 0)
PACKAGES = {"python": "3.11.2", "dihal": "0.1.0", "torch": "2.13.0", "duckdb": "1.1.3"}


def _spec(name: str, semantic: dict, yaml_text: str, seen: datetime) -> dict:
    return {
        "spec_hash": digest(semantic),
        "name": name,
        "canonical_json": canonical_json(semantic),
        "yaml_text": yaml_text,
        "first_seen": seen,
        "last_seen": seen,
    }


def _run(h: str, name: str, run_id: str, status: str, start: datetime, error: str | None = None) -> dict:
    return {
        "run_id": run_id,
        "spec_hash": h,
        "spec_name": name,
        "git_revision": "0123456789abcdef" * 2 + "01234567",
        "code_version": "0.1.0+g0123456789ab",
        "packages": PACKAGES,
        "seed": 0,
        "host": "ci (x86_64, Linux)",
        "started_at": start,
        "ended_at": start + timedelta(minutes=3),
        "status": status,
        "error": error,
        "stages_run": 4,
        "stages_total": 6,
    }


def _geometry(h: str, layers: list[int], run_id: str) -> tuple[list[dict], dict]:
    kappa = {ell: 1.2 - 0.05 * ell + 0.02 * math.sin(ell) for ell in layers}
    sigma = {ell: 0.3 + 0.01 * ell for ell in layers}
    erank = {ell: 40.0 + 6.0 * ell for ell in layers}

    def z(d):
        m = sum(d.values()) / len(d)
        s = math.sqrt(sum((v - m) ** 2 for v in d.values()) / len(d))
        return {k: (v - m) / s for k, v in d.items()}

    zk, zs, zr = z(kappa), z(sigma), z(erank)
    score = {ell: zk[ell] + zs[ell] - zr[ell] for ell in layers}
    best = max(layers, key=lambda ell: score[ell])
    prov = {"run_id": run_id, "code_version": "0.1.0+g0123456789ab", "packages": PACKAGES, "seed": 0}
    rows = [
        {
            "spec_hash": h,
            "space": "bridge",
            "layer": ell,
            "space_best": ell == best,
            "kappa": kappa[ell],
            "sigma": sigma[ell],
            "r": erank[ell],
            "participation_ratio": erank[ell] / 3,
            "lambda_min_p": 0.01,
            "z_kappa": zk[ell],
            "z_sigma": zs[ell],
            "z_r": zr[ell],
            "g": score[ell],
            "selected": ell == best,
            "proxies": {
                "values": {"kappa": kappa[ell]},
                "z": {"kappa": zk[ell]},
                "weights": {"kappa": 1.0, "sigma": 1.0, "erank": -1.0},
            },
            **prov,
        }
        for ell in layers
    ]
    sel = {
        "spec_hash": h,
        "rule": "argmax",
        "layer": best,
        "g": score[best],
        "n_candidates": len(layers),
        "space": "bridge",
        **prov,
    }
    return rows, sel


def _with_trust(rows: list[dict], sel: dict) -> list[dict]:
    """Add the stability and massive-activation columns to a 5-layer spec; return its selection_stability rows."""
    for g in rows:
        ell = g["layer"]
        g.update(
            n_states=8120 - ell,
            norm_ratio_max=35.0 if ell == 1 else 4.0 + ell,
            n_over_threshold=3 if ell == 1 else 0,
            top_share_before=0.62 if ell == 1 else 0.01,
            top_share_after=0.04 if ell == 1 else 0.009,
            g_lo=g["g"] - 0.5,
            g_hi=g["g"] + 0.4,
            argmax_share=SHARES.get(ell, 0.0),
        )
    sel.update(
        argmax_share=0.87,
        n_boot=200,
        n_documents=119,
        block_start="<|endoftext|>",
        outlier_rule="drop>20x median norm",
        warning=WARNING,
    )
    common = {
        "spec_hash": sel["spec_hash"],
        "space": "bridge",
        "n_boot": 200,
        "n_documents": 119,
        "run_id": "sweep-run-2",
        "seed": 0,
    }
    stab = [
        {
            **common,
            "variant": "main",
            "layer": g["layer"],
            "g": g["g"],
            "g_lo": g["g_lo"],
            "g_hi": g["g_hi"],
            "argmax_share": g["argmax_share"],
            "selected": g["selected"],
            "top_share_after": g["top_share_after"],
            "settings": {},
        }
        for g in rows
    ]
    variants = (
        ("keep-outliers", 3, {"geometry": {"outliers": {"rule": "keep"}}}),  # '$\\frac{$' breaks mathtext
        ("bos $\\frac{$", 1, {"geometry": {"block_start": EVIL_SETTING, "n_tokens": 4096}}),
    )
    for variant, best, settings in variants:
        stab += [
            {
                **common,
                "variant": variant,
                "layer": g["layer"],
                "g": g["g"] + 3.0 * (g["layer"] == best),
                "g_lo": g["g"] - 1.0,
                "g_hi": g["g"] + 1.0,
                "argmax_share": 0.55 if g["layer"] == best else 0.1,
                "selected": g["layer"] == best,
                "top_share_after": 0.62 if variant == "keep-outliers" else 0.02,
                "settings": settings,
            }
            for g in rows
        ]
    return stab


def build_ledger(root: Path) -> dict[str, str]:
    geo_sem = {"backbone": {"source": "embedded"}, "bridge": None, "geometry": {"k": 16}, "seed": 0}
    sweep_sem = {
        "backbone": {"source": "embedded"},
        "bridge": {"layers": [1, 2, 3, 4, 5], "seeds": [0, 1]},
        "geometry": {"k": 16},
        "seed": 0,
    }
    geo = _spec("kjv-geometry", geo_sem, "name: kjv-geometry\nbridge: null\n", T0)
    yaml_text = f"name: '{EVIL}'\ndescription: '{EVIL_DESC}'\nbridge:\n  layers: [1, 2, 3, 4, 5]\n  seeds: [0, 1]\n"
    sweep = _spec(EVIL, sweep_sem, yaml_text, T0 + timedelta(hours=1))
    gh, sh = geo["spec_hash"], sweep["spec_hash"]
    with writer(root) as con:
        insert_rows(con, "specs", [geo, sweep])
        insert_rows(
            con,
            "runs",
            [
                _run(gh, geo["name"], "geo-run-1", "succeeded", T0),
                _run(sh, EVIL, "sweep-run-1", "failed", T0 + timedelta(hours=1), error="dvc repro failed: <b>boom</b>"),
                _run(sh, EVIL, "sweep-run-2", "succeeded", T0 + timedelta(hours=2)),
            ],
        )
        rows, sel = _geometry(gh, list(range(1, 30)), "geo-run-1")
        insert_rows(con, "layer_geometry", rows)
        insert_rows(con, "selections", [sel])
        rows, sel = _geometry(sh, [1, 2, 3, 4, 5], "sweep-run-2")
        insert_rows(con, "selection_stability", _with_trust(rows, sel))
        insert_rows(con, "layer_geometry", rows)
        insert_rows(con, "selections", [sel])
        results, curves, samples = [], [], []
        for ell in range(1, 6):
            for seed in (0, 1):
                loss = 0.2 + 0.05 * ell + 0.01 * seed
                results.append(
                    {
                        "spec_hash": sh,
                        "layer": ell,
                        "seed": seed,
                        "bridge_val_loss": loss,
                        "recovery_ce": 2.0 + ell * 0.3,
                        "recovery_token_acc": 0.6 - 0.05 * ell,
                        "recovery_clean_agreement": 0.7,
                        "gen_ppl": 80.0 + 20 * ell + seed,
                        "distinct_1": 0.4,
                        "distinct_2": 0.7,
                        "distinct_3": 0.85,
                        "diversity": 0.6,
                        "unigram_entropy": 5.1,
                        "samples_digest": f"d{ell}{seed}",
                        "train_seconds": 60.0,
                        "train_tokens_per_s": 900.0,
                        "val_batch_losses": [loss, loss + 0.01],
                        "run_id": "sweep-run-2",
                        "code_version": "0.1.0",
                        "packages": PACKAGES,
                    }
                )
                curves += [
                    {
                        "spec_hash": sh,
                        "layer": ell,
                        "seed": seed,
                        "step": step,
                        "loss": (1.5 + 0.1 * ell) * (0.97**step) + loss,
                        "lr": 1e-3,
                        "grad_norm": 1.0,
                    }
                    for step in range(0, 200, 10)
                ]
                samples += [
                    {
                        "spec_hash": sh,
                        "layer": ell,
                        "seed": seed,
                        "idx": i,
                        "text": f"And it came to pass <b>{ell}/{seed}/{i}</b> that the LORD spake",
                    }
                    for i in range(4)
                ]
        insert_rows(con, "bridge_results", results)
        insert_rows(con, "training_curves", curves)
        insert_rows(con, "samples", samples)
        insert_rows(
            con,
            "correlations",
            [
                {
                    "spec_hash": sh,
                    "space": "bridge",
                    "selection_space": True,
                    "spearman_rho": -0.9,
                    "spearman_lo": -1.0,
                    "spearman_hi": -0.6,
                    "kendall_tau": -0.8,
                    "kendall_lo": -1.0,
                    "kendall_hi": -0.4,
                    "selected_layer": sel["layer"],
                    "selected_rank": 1,
                    "best_layer": 1,
                    "in_top_k": True,
                    "top_k": 3,
                    "n_layers": 5,
                    "n_seeds": 2,
                    "n_batches": 2,
                    "n_boot": 1000,
                    "run_id": "sweep-run-2",
                    "code_version": "0.1.0",
                    "packages": PACKAGES,
                    "seed": 0,
                    "spearman_p": 0.012,
                    "kendall_p": 0.0004,
                    "n_perm": 10000,
                    "interval_method": "bca",
                    "resampled": "Seeds and validation batches, resampled <i>together</i> in each replicate.",
                }
            ],
        )
    return {"geometry": gh, "sweep": sh}


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.scripts: list[dict] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href", "action", "data", "poster"):
            if a.get(key) is not None:
                self.refs.append((tag, key, a[key]))
        if tag == "script":
            self.scripts.append(a)


def _refs(html: str) -> _Refs:
    p = _Refs()
    p.feed(html)
    return p


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, dict[str, str], dict[str, Path]]:
    root = tmp_path_factory.mktemp("project")
    hashes = build_ledger(root)
    paths = {kind: write_reports(root, h) for kind, h in hashes.items()}
    return root, hashes, paths


def test_reports_are_written(project):
    root, _, paths = project
    assert paths["geometry"] == root / "reports" / "kjv-geometry.html"
    assert paths["sweep"].parent == root / "reports" and paths["sweep"].name == "script-alert-1-script.html"
    for p in [*paths.values(), root / "reports" / "index.html"]:
        assert p.is_file() and p.stat().st_size > 1000
    assert not list((root / "reports").glob(".*.tmp"))


def test_reports_are_self_contained(project):
    root, _, paths = project
    for p in [*paths.values(), root / "reports" / "index.html"]:
        html = p.read_text(encoding="utf-8")
        refs = _refs(html)
        for tag, key, value in refs.refs:
            assert not re.match(r"\s*(https?:)?//", value, re.I), (p.name, tag, key, value)
            if tag == "img":
                assert value.startswith("data:image/png;base64,"), (p.name, value[:40])
                assert base64.b64decode(value.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
            if tag == "link":
                assert value.startswith("data:"), (p.name, value)
        assert all("src" not in s for s in refs.scripts), "no external scripts"
        assert not re.search(r"url\(\s*['\"]?(https?:)?//", html, re.I), "no external CSS resources"
        csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', html)
        assert csp and "default-src 'none'" in unescape(csp.group(1))


def test_malicious_strings_are_escaped(project):
    root, _, paths = project
    for p in (paths["sweep"], root / "reports" / "index.html"):
        html = p.read_text(encoding="utf-8")
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert "<script>alert" not in html.lower()
    sweep = paths["sweep"].read_text(encoding="utf-8")
    assert "&lt;img src=x onerror=alert(2)&gt;" in sweep and "<img src=x" not in sweep
    assert "&lt;b&gt;" in sweep and "<b>boom" not in sweep and "<b>1/0/0" not in sweep
    assert "&lt;script&gt;alert(3)&lt;/script&gt;" in sweep and "<b>after" not in sweep and "<i>together" not in sweep
    # the sweep page has no executable script at all; the index has exactly one, allowed by its hash
    assert _refs(sweep).scripts == []
    index = (root / "reports" / "index.html").read_text(encoding="utf-8")
    inline = re.findall(r"<script>(.*?)</script>", index, re.S)
    assert len(inline) == 1
    want = "'sha256-" + base64.b64encode(hashlib.sha256(inline[0].encode()).digest()).decode() + "'"
    assert want in unescape(index)


def test_sweep_report_content(project):
    _, hashes, paths = project
    html = paths["sweep"].read_text(encoding="utf-8")
    for anchor in (
        'id="geometry-plot"',
        'id="scatter-plot"',
        'id="curves-plot"',
        'id="bridge-table"',
        'id="provenance"',
        'id="spec-yaml"',
        'id="spec-json"',
        "(verified: matches",
    ):
        assert anchor in html, anchor
    assert hashes["sweep"] in html and "sweep-run-2" in html and "0.1.0+g0123456789ab" in html
    assert "torch" in html and "2.13.0" in html and "ci (x86_64, Linux)" in html
    assert html.count('class="sample"') == 5 * 3  # the first 3 samples of each of the 5 layers
    assert "-0.900" in html and "-0.800" in html and "[-1.000, -0.600]" in html
    body = html.split('id="bridge-table"')[1].split("</table>")[0]
    assert body.count("<tr") == 1 + 5 and body.count(" ± ") >= 5 * 9
    assert 'class="selected"' in body


def test_geometry_only_report(project):
    _, _, paths = project
    html = paths["geometry"].read_text(encoding="utf-8")
    assert 'id="geometry-plot"' in html and 'id="geometry-table"' in html
    geo = html.split('id="geometry-table"')[1].split("</table>")[0]
    assert geo.count("<tr") == 1 + 29 and geo.count('class="selected"') == 1
    for absent in ('id="bridge"', 'id="scatter-plot"', 'id="curves-plot"', 'id="c1"', *NEW_PANELS):
        assert absent not in html
    assert "succeeded" in html and "argmax share" not in html
    caption = html.split('id="geometry-caption"')[1].split("</figcaption>")[0]
    assert "in the bridge space: each channel standardised" in caption  # the space the proxies were measured in


NEW_PANELS = (
    'id="selection-warning"',
    'id="stability"',
    'id="stability-plot"',
    'id="outliers"',
    'id="sensitivity"',
    'id="spearman-p"',
)


def test_trust_in_selected_layer_panels(project):
    root, _, paths = project
    html = paths["sweep"].read_text(encoding="utf-8")
    for anchor in ('id="stability-plot"', 'id="outliers-plot"', 'id="sensitivity-plot"'):
        assert anchor in html, anchor
    # the warning is at the top, before any panel, and its text is escaped
    warning = html.split('id="selection-warning"')[1].split("</div>")[0]
    assert "3 states carry 62% of layer 1&#39;s variance &lt;b&gt;after&lt;/b&gt; rescaling" in warning
    assert html.index('id="selection-warning"') < html.index('id="geometry"')
    sentence = html.split('id="stability-sentence">')[1].split("</p>")[0]
    assert sentence.startswith("ℓ* = <b>1</b>, the argmax in <b>87%</b> of 200 document resamples of 119 documents;")
    assert "8119 states at ℓ*" in sentence and "blocks start with <code>&lt;|endoftext|&gt;</code>" in sentence
    assert "outliers: drop&gt;20x median norm." in sentence and "95% interval [+0.855, +1.755]" in sentence
    assert "fewer than half" not in sentence and "most frequent argmax" not in sentence
    assert "argmax in 87% of 200 resamples" in html  # the ℓ* card
    at = html.split('id="outliers-at-selected">')[1].split("</p>")[0]
    assert "35× the median" in at and "3 state(s) over the threshold" in at
    assert "62% of the variance before the rule and 4.0% after it" in at
    geo = html.split('id="geometry-table"')[1].split("</table>")[0]
    assert "argmax share" in geo and "top 0.1% after" in geo and ">87%<" in geo and ">[+0.85, +1.75]<" in geo
    # one sensitivity row per variant, the spec itself first; settings escaped, one line per changed field
    sens = html.split('id="sensitivity-table"')[1].split("</table>")[0]
    body = sens.split("<tbody>")[1].split("<tr")[1:]
    assert len(body) == 3
    assert "main" in body[0] and "the spec itself" in body[0] and 'class="selected"' in body[0]
    assert "keep-outliers" in body[2] and "<code>geometry.outliers.rule = keep</code>" in body[2]
    assert re.findall(r"<td[^>]*>([^<]*)</td>", body[2])[1:6] == ["3", "no", "55%", "+3.025", "62%"]
    assert "bos $\\frac{$" in body[1] and ">yes<" in body[1] and "<code>geometry.n_tokens = 4096</code>" in body[1]
    assert "<code>geometry.block_start = &lt;script&gt;alert(3)&lt;/script&gt;</code>" in body[1]
    # correlation: permutation p-values, interval method and what was resampled
    c1 = html.split('id="c1-facts"')[1].split("</dl>")[0]
    assert 'id="spearman-p">p = 0.012<' in c1 and 'id="kendall-p">p = 4.0e-04<' in c1 and "10000 permutations" in c1
    assert "95% bca bootstrap, 1000 replicates: Seeds and validation batches, resampled &lt;i&gt;together" in c1
    index = (root / "reports" / "index.html").read_text(encoding="utf-8")
    assert index.count("(87%)") == 1 and '"share": 0.87' in index


def test_unmigrated_ledger_renders(tmp_path):
    """A ledger written before the stability columns and table shipped, and never written since, still renders,
    its columns read under the names step 6 gave them (score -> g, erank -> r, z_erank -> z_r)."""
    path = ledger_path(tmp_path)
    path.parent.mkdir(parents=True)
    spec = _spec("old", {"seed": 3}, "name: old\n", T0)
    h = spec["spec_hash"]
    rows, sel = _geometry(h, [1, 2, 3], "o1")
    new = {"space", "space_best", "confidence"}  # columns added by later schema steps
    old_name = {now: before for before, now in RENAMED_COLUMNS.items()}
    rows = [{old_name.get(k, k): v for k, v in g.items() if k not in new} for g in rows]
    sel = {old_name.get(k, k): v for k, v in sel.items() if k not in new}
    con = duckdb.connect(str(path))
    try:
        for stmt in SCHEMA:
            if "selection_stability" not in stmt:
                con.execute(stmt)
        insert_rows(con, "specs", [spec])
        insert_rows(con, "runs", [_run(h, "old", "o1", "succeeded", T0)])
        insert_rows(con, "layer_geometry", rows)
        insert_rows(con, "selections", [sel])
        insert_rows(con, "correlations", [{"spec_hash": h, "spearman_rho": -0.5, "kendall_tau": -0.3, "n_layers": 3}])
    finally:
        con.close()
    html = write_reports(tmp_path, h).read_text(encoding="utf-8")
    assert 'id="geometry-plot"' in html and 'id="c1"' in html and "-0.500" in html
    assert f"{sel['score']:+.3f}" in html and f"<td>{rows[0]['z_erank']:+.2f}</td>" in html  # G at ℓ*, z(r): old names
    assert "in the scalar space: centred and rescaled by one scalar" in html  # rows from before spaces existed
    for absent in NEW_PANELS:
        assert absent not in html, absent
    assert "old.html" in (tmp_path / "reports" / "index.html").read_text(encoding="utf-8")


def test_trust_helpers():
    assert settings_lines({"geometry": {"outliers": {"rule": "keep", "threshold": 50}}, "seed": None}) == [
        "geometry.outliers.rule = keep",
        "geometry.outliers.threshold = 50",
        "seed = null",
    ]
    assert settings_lines(None) == [] and settings_lines({}) == [] and settings_lines("raw") == ["raw"]
    assert outlier_threshold("drop>20x median norm") == 20.0 and outlier_threshold("drop > 7.5× median") == 7.5
    assert outlier_threshold("keep") is None and outlier_threshold(None) is None
    assert variant_layer([{"layer": 1, "g": 2.0}, {"layer": 2, "g": 1.0, "selected": True}]) == 2
    assert variant_layer([{"layer": 1, "g": 1.0}, {"layer": 2, "g": 3.0}]) == 2 and variant_layer([]) is None


def test_index_lists_specs_with_working_links(project):
    root, hashes, paths = project
    index = root / "reports" / "index.html"
    html = index.read_text(encoding="utf-8")
    links = [v for tag, key, v in _refs(html).refs if tag == "a" and key == "href"]
    assert sorted(links) == sorted(p.name for p in paths.values())
    for link in links:
        assert (index.parent / link).is_file()
    for h in hashes.values():
        assert h[:12] in html
    assert 'id="index-table"' in html and "geometry only" in html and "-0.900" in html
    assert html.index(EVIL.replace("<", "&lt;").replace(">", "&gt;")) < html.index("kjv-geometry")  # newest first
    for p in paths.values():
        assert 'href="index.html"' in p.read_text(encoding="utf-8")


def test_unknown_hash_and_missing_ledger_raise(project, tmp_path):
    root, _, _ = project
    with pytest.raises(LedgerError, match="not in the ledger"):
        write_reports(root, "f" * 64)
    with pytest.raises(LedgerError):
        write_reports(tmp_path, "f" * 64)


def test_same_name_specs_get_distinct_files(tmp_path):
    specs = [
        _spec(name, {"seed": i}, f"name: {name}\n", T0 + timedelta(minutes=i))
        for i, name in enumerate(["dup", "dup", "index", "DUP", "///"])
    ]
    with writer(tmp_path) as con:
        insert_rows(con, "specs", specs)
    paths = [write_reports(tmp_path, s["spec_hash"]) for s in specs]
    names = [p.name for p in paths]
    assert names[0] == "dup.html" and names[1] == f"dup-{specs[1]['spec_hash'][:8]}.html"
    assert names[2] == f"index-{specs[2]['spec_hash'][:8]}.html"
    assert len({n.lower() for n in names}) == len(names)
    assert names[4] == f"{specs[4]['spec_hash'][:12]}.html"
    assert "no runs" in paths[0].read_text(encoding="utf-8")
    assert write_reports(tmp_path, specs[1]["spec_hash"]) == paths[1]  # stable on re-render
    index = (tmp_path / "reports" / "index.html").read_text(encoding="utf-8")
    assert index.count('class="pick"') == 5


BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


CHROMIUM = os.environ.get("DIHAL_CHROMIUM", "/usr/bin/chromium")


def browser_missing(reason: str) -> None:
    """Skip on a developer's machine; fail under CI (CI=true), where a green run must mean a report rendered."""
    if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason}; CI=true, so the report must render in a real browser (.ci/run installs chromium)")
    pytest.skip(reason)


@pytest.mark.parametrize("ci, outcome", [("true", pytest.fail.Exception), ("", pytest.skip.Exception)])
def test_a_missing_browser_fails_under_ci_and_skips_elsewhere(monkeypatch, ci, outcome):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="needs chromium"):
        browser_missing("needs chromium")


@pytest.mark.browser
def test_reports_in_headless_chromium(project):
    if not Path(CHROMIUM).exists():
        browser_missing(f"needs Debian's chromium at {CHROMIUM} (apt-get install -y chromium)")
    try:
        from playwright import sync_api
    except ImportError:
        browser_missing("needs the playwright python package")
    root, _, paths = project
    errors: list[str] = []
    dialogs: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

            page.goto(paths["sweep"].resolve().as_uri(), wait_until="load")
            for sel in (
                "#scatter-plot",
                "#geometry-plot",
                "#curves-plot",
                "#provenance",
                "#bridge-table",
                "#selection-warning",
                "#sensitivity-table",
            ):
                assert page.locator(sel).is_visible(), sel
            for img in (
                "#scatter-plot",
                "#geometry-plot",
                "#curves-plot",
                "#stability-plot",
                "#outliers-plot",
                "#sensitivity-plot",
            ):
                assert page.eval_on_selector(img, "el => el.complete && el.naturalWidth") > 0, img
            assert EVIL in page.locator("h1").inner_text()
            page.screenshot(path="/tmp/report.png", full_page=True)

            page.goto((root / "reports" / "index.html").resolve().as_uri(), wait_until="load")
            assert page.locator("#index-table").is_visible()
            assert page.locator("#index-table tbody tr").count() == 2
            page.click("#pick-all")
            assert page.locator("#compare-table tr").first.locator("td").count() == 2
            assert EVIL in page.locator("#compare-table").inner_text()
            page.click("#pick-none")
            assert page.locator("#compare-table").count() == 0
            page.locator("#index-table a").first.click()
            page.wait_for_load_state("load")
            assert page.url.endswith(".html") and page.locator("#provenance").is_visible()
        finally:
            browser.close()
    assert errors == []
    assert dialogs == []


def test_quickstart_and_degenerate_values_render(tmp_path):
    """One layer × one seed (no sd), missing metrics, NaN correlations and a failed latest run all render."""
    spec = _spec("quick start", {"seed": 7}, "name: quick start\ndescription: |\n  two\n  lines\n", T0)
    h = spec["spec_hash"]
    rows, sel = _geometry(h, [1, 2, 3], "q1")
    rows[0]["r"] = None
    with writer(tmp_path) as con:
        insert_rows(con, "specs", [spec])
        insert_rows(
            con,
            "runs",
            [
                _run(h, "quick start", "q1", "succeeded", T0),
                _run(h, "quick start", "q2", "failed", T0 + timedelta(hours=1), error="OOM"),
            ],
        )
        insert_rows(con, "layer_geometry", rows)
        insert_rows(con, "selections", [sel])
        insert_rows(
            con,
            "bridge_results",
            [
                {
                    "spec_hash": h,
                    "layer": sel["layer"],
                    "seed": 7,
                    "bridge_val_loss": 0.3,
                    "recovery_ce": None,
                    "gen_ppl": float("nan"),
                }
            ],
        )
        insert_rows(
            con,
            "correlations",
            [
                {
                    "spec_hash": h,
                    "space": "bridge",
                    "selection_space": True,
                    "spearman_rho": float("nan"),
                    "kendall_tau": None,
                    "selected_layer": sel["layer"],
                    "n_layers": 1,
                }
            ],
        )
    html = write_reports(tmp_path, h).read_text(encoding="utf-8")
    assert "quick-start" in write_reports(tmp_path, h).name
    assert "two\nlines" in html and "OOM" in html and 'class="badge failed"' in html
    assert "From the latest successful run" in html and "q1 (succeeded)" in html
    body = html.split('id="bridge-table"')[1].split("</table>")[0]
    assert "0.3<" in body and " ± " not in body and "—" in body
    assert 'id="geometry-plot"' in html and 'id="scatter-plot"' in html and 'id="curves-plot"' not in html
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)
    assert not re.search(r"\bnan\b", text, re.I), "NaN must read as a dash"


def test_figures_are_reused_while_their_inputs_are_unchanged(project, monkeypatch):
    """A warm run re-renders the report without drawing (or importing matplotlib for) unchanged figures."""
    import importlib

    from dihal.report import render

    root, hashes, _ = project
    h = next(iter(hashes.values()))
    first = render.write_reports(root, h).read_text()
    cache = root / "reports" / render.FIGURE_CACHE
    assert any(cache.rglob("*.uri"))
    real = importlib.import_module

    def no_plotting(name, *a, **k):
        if name.startswith("dihal.report.plots"):
            raise AssertionError(f"{name} imported although its figures are cached")
        return real(name, *a, **k)

    monkeypatch.setattr(render.importlib, "import_module", no_plotting)
    again = render.write_reports(root, h).read_text()
    strip = lambda html: re.sub(r"[Rr]endered[^<]*", "", html)  # noqa: E731
    assert strip(again) == strip(first)
    monkeypatch.setattr(render, "_plot_code", lambda: "other plotting code")
    with pytest.raises(AssertionError, match="imported although"):
        render.write_reports(root, h)  # new plotting code: figures are drawn again
