"""`dvc plots show` in a dihal project: dihal's Vega-Lite templates, the rows they read, and the offline page.

The templates are held to golden files and filled by dvc_render itself (the code `dvc plots show` runs);
the page is held to the digests in its NOTICE.md; `install` is run against real `.dvc/config` files. The
end-to-end check (a real `dvc plots show` on a finished run, and the page in headless Chromium) is in
tests/test_dvc_native.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pytest
from dvc_render.vega import VegaRenderer

from dihal.compile import dvc_views, vendor_vega
from dihal.stages.dvc_files import PLOTS, correlate_results, score_results
from dihal.stages.plot_series import G_VS_LOSS_TEMPLATE, GEOMETRY_TEMPLATE, g_formula

GOLDEN = Path(__file__).parent / "golden" / "dvc_plots"
UPDATE = os.environ.get("DIHAL_UPDATE_GOLDEN") == "1"
ANCHOR = re.compile(r"<DVC_METRIC_[A-Z_]+>")


@pytest.mark.parametrize("name", sorted(dvc_views.TEMPLATES))
def test_templates_match_golden(name):
    text = dvc_views.template_text(name)
    golden = GOLDEN / f"{name}.json"
    if UPDATE:
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8"), f"regenerate with DIHAL_UPDATE_GOLDEN=1 if intended: {golden}"


def _scores(weights: dict | None = None) -> dict:
    layers = [1, 2, 3, 4]
    z = {
        "kappa": [1.2, 0.3, -0.4, -1.1],
        "sigma": [-0.5, 1.4, -0.2, -0.7],
        "erank": [0.9, -1.3, 0.1, 0.3],
    }
    weights = weights or {"kappa": 1.0, "sigma": 1.0, "erank": -1.0}
    g = [sum(w * z[p][i] for p, w in weights.items()) for i in range(4)]
    values = {
        str(la): {"kappa": 1.0 + i, "sigma": 0.9, "erank": 10.0 - i, "twonn": None} for i, la in enumerate(layers)
    }
    return {"layers": layers, "score": g, "z": z, "values": values, "best": layers[g.index(max(g))], "weights": weights}


def test_geometry_rows_mark_ell_star_and_say_what_g_is():
    scores = _scores()
    stability = {"layers": [1, 2, 3, 4], "argmax_share": [0.1, 0.7, 0.0, 0.2]}
    _, plots = score_results(scores, stability)
    rows = plots["geometry.json"]
    assert [r["layer"] for r in rows] == [1, 2, 3, 4] and all(isinstance(r["layer"], int) for r in rows)
    assert [r["layer"] for r in rows if r["ell_star"]] == [scores["best"]] == [2]
    assert {r["G_formula"] for r in rows} == {"z(κ) + z(σ) − z(r)"}
    assert rows[1]["z_kappa"] == 0.3 and rows[1]["z_erank"] == -1.3
    assert len({frozenset(r) for r in rows}) == 1, "DVC ignores a list whose rows differ in keys"
    assert rows[0]["twonn"] is None  # a missing number is kept as null, not dropped from some rows


def test_g_formula_follows_the_spec_weights():
    assert g_formula({"erank": -1, "sigma": 1, "kappa": 1}) == "z(κ) + z(σ) − z(r)"
    assert g_formula({"erank": -0.5, "kappa": 2}) == "2·z(κ) − 0.5·z(r)"
    assert g_formula({"twonn": -1}) == "−z(twonn)"
    assert g_formula({}) == "0"


def test_g_vs_loss_rows_mark_the_selected_layer():
    out = {"layers": [1, 2, 3], "selected_layer": 3}
    losses = {(1, 0): [1.0, 1.2], (2, 0): [0.5], (3, 0): [0.8], (3, 1): [0.6]}
    _, plots = correlate_results(out, {1: 0.1, 2: -0.3, 3: 0.9}, losses)
    rows = plots["g_vs_loss.json"]
    assert [r["ell_star"] for r in rows] == [False, False, True]
    assert rows[0]["bridge_val_loss"] == pytest.approx(1.1) and rows[2]["bridge_val_loss"] == pytest.approx(0.7)


def _filled(name: str, props: dict, rows: list[dict], tmp_path: Path) -> dict:
    """The spec `dvc plots show` would embed: dvc_render's VegaRenderer on the installed template."""
    tdir = tmp_path / ".dvc" / "plots"
    tdir.mkdir(parents=True, exist_ok=True)
    (tdir / f"{name}.json").write_text(dvc_views.template_text(name), encoding="utf-8")
    data = [{**r, "rev": "workspace"} for r in rows]
    renderer = VegaRenderer(data, "plots/x.json", **{**props, "template_dir": str(tdir)})
    return renderer.get_filled_template()


def test_dvc_render_fills_every_anchor_of_both_templates(tmp_path):
    _, geo = score_results(_scores(), None)
    spec = _filled(GEOMETRY_TEMPLATE, PLOTS["score"]["geometry.json"], geo["geometry.json"], tmp_path)
    text = json.dumps(spec, ensure_ascii=False)
    assert not ANCHOR.search(text), ANCHOR.findall(text)
    assert spec["data"]["values"][1]["ell_star"] is True and spec["title"]["text"].startswith("Geometry score G")
    fold = spec["layer"][0]["transform"][0]["fold"]
    assert fold[0] == "G" and {"z_kappa", "z_sigma", "z_erank"} <= set(fold)
    assert "'ℓ* = ' + datum.layer" in text  # the ℓ* label reads the x field DVC filled in
    assert spec["usermeta"]["embedOptions"]["actions"]["editor"] is False  # no link out to the online editor

    _, c1 = correlate_results({"layers": [1, 2], "selected_layer": 2}, {1: 0.1, 2: 0.4}, {(1, 0): [1.0], (2, 0): [0.5]})
    spec = _filled(G_VS_LOSS_TEMPLATE, PLOTS["correlate"]["g_vs_loss.json"], c1["g_vs_loss.json"], tmp_path)
    assert not ANCHOR.search(json.dumps(spec))
    assert spec["encoding"]["x"]["field"] == "G" and spec["encoding"]["y"]["field"] == "bridge_val_loss"


INLINED = re.compile(r"<script>/\* [\w-]+ [\d.]+ \(BSD-3-Clause\) \*/\n(.*?)\n</script>", flags=re.S)


def test_offline_page_inlines_the_noted_builds_and_loads_nothing():
    page = dvc_views.OFFLINE_PAGE.read_text(encoding="utf-8")
    notice = vendor_vega.NOTICE.read_text(encoding="utf-8")
    assert page.count("{plot_divs}") == 1 and "{scripts}" not in page  # DVC's CDN tags have nowhere to go
    markup = INLINED.sub("", page)  # the page without the libraries' code (whose strings may hold markup)
    assert "<script" not in markup.lower()
    assert not re.search(r"\b(src|href)\s*=", markup, flags=re.I)  # nothing loaded, nothing linked
    assert '<meta charset="utf-8">' in page  # ℓ, κ, σ in titles and legends
    scripts = INLINED.findall(page)
    assert len(scripts) == len(vendor_vega.LIBRARIES) == 3
    for (name, version, member, _), text in zip(vendor_vega.LIBRARIES, scripts):
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        assert f"| {name} | {version} | `{member.removeprefix('package/')}` |" in notice
        assert digest in notice, f"{name}: the inlined build is not the one NOTICE.md records"
        vendor_vega.check_inlinable(name, text)
    assert 'var n="5.23.0"' in scripts[1]  # vega-lite's own version string, as the notice says
    assert "BSD-3-Clause" in page and "University of Washington Interactive Data Lab" in page


def test_page_builder_refuses_a_build_that_would_break_the_page():
    with pytest.raises(SystemExit, match="</script"):
        vendor_vega.check_inlinable("x", "a='</SCRIPT>'")
    with pytest.raises(SystemExit, match="plot_divs"):
        vendor_vega.check_inlinable("x", "a='{plot_divs}'")


def _config(root: Path) -> str:
    return (root / ".dvc" / "config").read_text(encoding="utf-8")


def test_install_writes_the_templates_and_names_the_page_once(tmp_path):
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text("[core]\n    analytics = false\n", encoding="utf-8")
    changed = dvc_views.install(tmp_path)
    assert sorted(changed) == sorted(
        [
            ".dvc/config",
            ".dvc/plots/dihal_geometry.json",
            ".dvc/plots/dihal_g_vs_loss.json",
            ".dvc/plots/dihal_offline.html",
        ]
    )
    assert re.search(r"\[plots\]\s+html_template = plots/dihal_offline.html", _config(tmp_path))
    assert "analytics = false" in _config(tmp_path)
    assert dvc_views.install(tmp_path) == []  # nothing to do the second time
    (tmp_path / ".dvc" / "plots" / "dihal_geometry.json").write_text("{}", encoding="utf-8")
    assert dvc_views.install(tmp_path) == [".dvc/plots/dihal_geometry.json"]  # dihal's files follow its version


@pytest.mark.parametrize("where", ["config", "config.local"])
def test_install_leaves_a_page_the_user_named(tmp_path, where):
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text("[core]\n    analytics = false\n", encoding="utf-8")
    own = "[plots]\n    html_template = mine.html\n"
    (tmp_path / ".dvc" / where).write_text(
        (_config(tmp_path) if where == "config" else "") + own,
        encoding="utf-8",
    )
    before = _config(tmp_path)
    assert ".dvc/config" not in dvc_views.install(tmp_path)
    assert _config(tmp_path) == before


def test_each_training_curve_is_titled_with_its_stage():
    from dihal.compile.plan import plan
    from dihal.spec.schema import load_spec

    spec, _ = load_spec(Path(__file__).resolve().parent.parent / "specs" / "sweep.yaml")
    trains = [st for st in plan(spec, 30).stages if st.kind == "train"]
    titles = [next(iter(st.dvc_entry()["plots"][0].values()))["title"] for st in trains]
    assert len(set(titles)) == len(trains) > 1
    assert all(t == f"Bridge training loss, {st.name}" for t, st in zip(titles, trains))
