"""dihal's results seen through DVC alone: `dvc metrics show`, `dvc plots show`, `dvc exp show`, `dvc params diff`.

A tiny spec is run in a git-backed project (DVC's experiments need git), then only `dvc` commands are asked.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dihal.cli import app
from dihal.compile.plan import plan
from dihal.report.compare import compare
from dihal.spec.schema import load_spec
from dihal.stages.dvc_files import METRICS_DIR, PLOTS_DIR, dvc_fields, summary_metrics, summary_path
from tests.test_run_tiny import BASE
from tests.tiny import ledger_rows, save_tiny

ROOT = Path(__file__).resolve().parent.parent


def dvc(root: Path, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True, capture_output=True
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("dvcproject")
    save_tiny(root / "tiny")
    git(root, "init", "-q")
    spec = json.loads(json.dumps(BASE))
    spec["bridge"]["layers"] = [1, 2, 3]  # a sweep: every stage kind, correlate included
    (root / "tiny.yaml").write_text(yaml.safe_dump(spec))
    mp = pytest.MonkeyPatch()
    mp.chdir(root)
    result = CliRunner().invoke(app, ["run", str(root / "tiny.yaml"), "--no-report", "--project", str(root)])
    assert result.exit_code == 0, result.output
    yield root
    mp.undo()


def test_metrics_and_plots_live_outside_every_output_and_are_uncached():
    spec, _ = load_spec(ROOT / "specs" / "sweep.yaml")
    p = plan(spec, 30)
    outs = [str(s.out) for s in p.stages]
    for st in p.stages:
        entry = st.dvc_entry()
        assert str(st.config_path) in entry["deps"]
        assert entry.get("params") == (None if st.kind == "summary" else [{str(st.config_path): ["params"]}])
        files = [next(iter(m)) for m in entry.get("metrics", []) + entry.get("plots", [])]
        if st.kind in ("score", "select", "train", "evaluate", "correlate"):
            assert files and files[0] == str(METRICS_DIR / f"{st.name}.json")
        if st.kind == "summary":
            assert files == [str(METRICS_DIR / "summary-sweep.json")]
        assert all(not f.startswith(o + "/") for f in files for o in outs), "DVC refuses overlapping outputs"
        assert all(Path(f).parts[0] in (str(METRICS_DIR), str(PLOTS_DIR)) for f in files)
        assert all(v["cache"] is False for m in entry.get("metrics", []) + entry.get("plots", []) for v in m.values())
        assert st.config()["results"].get("metrics") == (files[0] if files else None)
    assert dvc_fields("extract", "extract-x", "c.json") == {"params": [{"c.json": ["params"]}]}


def test_dvc_metrics_show_has_g_ell_star_and_the_bridge_loss(project):
    shown = json.loads(dvc(project, "metrics", "show", "--json"))
    files = next(iter(shown.values()))["data"]  # the workspace's files (DVC keys the workspace as "" here)
    by_kind: dict[str, list[dict]] = {}
    for path, entry in files.items():
        by_kind.setdefault(Path(path).name.split("-")[0], []).append(entry["data"])
    score = by_kind["score"][0]
    assert "G" not in score and score["ell_star"] in (1, 2, 3)  # G per layer is a plot, not three metric columns
    profile = json.loads(next(project.glob("plots/score-*/geometry.json")).read_text())
    best = max(profile, key=lambda r: r["G"])
    assert score["ell_star"] == best["layer"] and score["G_at_ell_star"] == best["G"]
    assert 0 < score["argmax_share"] <= 1
    evals = by_kind["evaluate"]
    assert sorted(e["layer"] for e in evals) == [1, 2, 3] and all(e["bridge_val_loss"] > 0 for e in evals)
    corr = by_kind["correlate"][0]
    assert -1 <= corr["spearman_rho"] <= 1 and 0 < corr["spearman_p"] <= 1 and "kendall_tau" in corr
    # the DVC metrics are the stage outputs' own numbers
    metrics_json = next(project.glob("artifacts/evaluate/*/metrics.json"))
    stored = json.loads(metrics_json.read_text())
    match = [e for e in evals if e["layer"] == stored["layer"] and e["seed"] == stored["seed"]]
    assert match[0]["bridge_val_loss"] == stored["bridge_val_loss"]


def test_dvc_plots_show_finds_the_geometry_profile_curves_and_g_vs_loss(project):
    data = json.loads(dvc(project, "plots", "show", "--json"))["data"]
    names = {Path(p).name for p in data}
    assert {"geometry.json", "curve.json", "g_vs_loss.json"} <= names
    geometry = next(v for p, v in data.items() if p.endswith("geometry.json"))[0]["content"]["data"]["values"]
    assert sorted(r["layer"] for r in geometry) == [1, 2, 3] and all("G" in r for r in geometry)
    assert len([p for p in data if p.endswith("curve.json")]) == 3  # one training curve per (layer, seed)
    ell_star = json.loads(next(project.glob("metrics/score-*.json")).read_text())["ell_star"]
    assert [r["layer"] for r in geometry if r["ell_star"]] == [ell_star]  # the row the ℓ* marker is drawn at


def _page(project: Path) -> str:
    """`dvc plots show` as a user runs it: the page it writes, from the template dihal named in .dvc/config."""
    dvc(project, "plots", "show")
    return (project / "dvc_plots" / "index.html").read_text(encoding="utf-8")


def test_dvc_plots_show_writes_a_page_that_needs_no_network(project):
    page = _page(project)
    markup = re.sub(r"<script>.*?</script>", "", page, flags=re.S)  # inline code (vega's own strings) aside
    assert not re.search(r"\b(src|href)\s*=\s*[\"']?(https?:)?//", markup, flags=re.I), "a CDN or web link"
    assert "cdn.jsdelivr" not in page and page.count("vegaEmbed(") == 5  # geometry, 3 curves, C1
    assert 'var n="5.23.0"' in page  # vega-lite itself, inlined
    profile = json.loads(next(project.glob("plots/score-*/geometry.json")).read_text())
    for row in profile:  # the plot data, as DVC embedded it
        assert json.dumps(row["G"]) in page and json.dumps(row["z_kappa"]) in page
    assert json.dumps("z(κ) + z(σ) − z(r)") in page  # G's make-up (DVC escapes non-ASCII in the spec it embeds)
    assert "dihal_series" in page and "dihal_label" in page  # dihal's templates, not DVC's linear and scatter


def test_dvc_exp_show_and_params_diff_see_dihal_settings_and_results(project):
    git(project, "add", "dvc.yaml", "dvc.lock", ".dihal/stages", "metrics", "plots")
    git(project, "commit", "-qm", "tiny run")
    rows = json.loads(dvc(project, "exp", "show", "--json"))
    workspace = rows[0]["data"]
    metrics = {Path(p).name.split("-")[0]: v["data"] for p, v in workspace["metrics"].items()}
    assert "ell_star" in metrics["score"] and "bridge_val_loss" in metrics["evaluate"]
    params = {Path(p).name.split("-")[0]: v["data"] for p, v in workspace["params"].items()}
    assert params["score"]["params"]["geometry"]["k"] == BASE["geometry"]["k"]
    assert params["train"]["params"]["lr"] == 1e-3
    diff = json.loads(dvc(project, "params", "diff", "--all", "--json"))
    assert any("params.geometry.k" in keys for keys in diff.values())


@pytest.mark.browser
def test_dvc_plots_page_renders_offline_in_headless_chromium(project):
    """Every chart draws with the network cut: any http(s) request is aborted and would be counted."""
    from tests.test_report import BROWSER_ARGS, CHROMIUM, browser_missing

    if not Path(CHROMIUM).exists():
        browser_missing(f"needs Debian's chromium at {CHROMIUM} (apt-get install -y chromium)")
    try:
        from playwright import sync_api
    except ImportError:
        browser_missing("needs the playwright python package")
    page_file = project / "dvc_plots" / "index.html"
    _page(project)
    requests: list[str] = []
    errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 1300})
            page.route("http*://**", lambda route: (requests.append(route.request.url), route.abort()))
            page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            page.goto(page_file.resolve().as_uri(), wait_until="load")
            page.wait_for_function("document.querySelectorAll('.vega-embed .chart-wrapper > canvas').length === 5")
            sizes = page.eval_on_selector_all(
                ".vega-embed .chart-wrapper > canvas", "els => els.map(e => [e.clientWidth, e.clientHeight])"
            )
            assert all(w > 200 and h > 150 for w, h in sizes), sizes
            # the geometry chart draws the ℓ* marker: its red (#d62728) is in no series colour, so red pixels are it
            red, inked = page.eval_on_selector(
                "[id*=geometry] .chart-wrapper > canvas",
                "c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let r = 0, n = 0;"
                " for (let i = 0; i < d.length; i += 4) { if (d[i] < 250 || d[i + 1] < 250) n++;"
                " if (d[i] > 180 && d[i + 1] < 80 && d[i + 2] < 80) r++; } return [r, n]; }",
            )
            assert red > 50 and inked > 5000, (red, inked)
            page.screenshot(path=str(project / "dvc_plots.png"), full_page=True)
        finally:
            browser.close()
    assert requests == [] and errors == []


def test_summary_file_is_named_after_the_spec_whatever_its_characters():
    assert summary_path("quickstart") == Path("metrics/summary-quickstart.json")
    odd = summary_path("quickstart+bridge.steps=100,geometry.layers=[3,7]")  # a -S variant's name
    assert odd.parent == METRICS_DIR
    assert re.fullmatch(r"summary-quickstart_bridge\.steps_100_geometry\.layers__3_7_-[0-9a-f]{8}\.json", odd.name)
    assert summary_path("a b") != summary_path("a_b") != summary_path("a/b")  # the digest keeps them apart
    for name in ("../../etc/passwd", "x\ny", "é" * 120, "-rf"):
        path = summary_path(name)
        assert path.parent == METRICS_DIR and path.name.startswith("summary-") and len(path.name.encode()) < 160


def test_summary_means_over_seeds_and_leaves_out_what_was_not_measured():
    sel = {"layer": 2, "score": 0.5, "argmax_share": None}
    ev = [
        {"layer": 2, "seed": 1, "bridge_val_loss": 3.0, "gen_ppl": 30.0},
        {"layer": 2, "seed": 0, "bridge_val_loss": 1.0, "gen_ppl": 10.0},
        {"layer": 3, "seed": 0, "bridge_val_loss": 9.0, "gen_ppl": 90.0},  # not ℓ*
    ]
    refs = [{"reference": "real_text", "seed": s, "gen_ppl": p} for s, p in ((0, 40.0), (1, 60.0))]
    got = summary_metrics(sel, ev, refs, {"spearman_rho": 0.5, "spearman_p": 0.25, "selected_rank": None})
    assert got == {
        "summary": {
            "ell_star": 2,
            "G": 0.5,
            "val_loss": 2.0,
            "gen_ppl": 20.0,
            "s0": {"val_loss": 1.0, "gen_ppl": 10.0},
            "s1": {"val_loss": 3.0, "gen_ppl": 30.0},
            "real_text_ppl": 50.0,
            "c1_rho": 0.5,
            "c1_p": 0.25,
        }
    }
    assert summary_metrics({"layer": 7, "score": None}, ev, [], None) == {"summary": {"ell_star": 7}}


def test_summary_equals_the_ledger_and_dvc_alone_refreshes_it(project):
    """The summary DVC wrote holds the ledger's numbers for the same run; a bare `dvc repro` recreates it, running
    that one stage (which imports no torch) and nothing else."""
    path = project / "metrics" / "summary-tiny.json"
    got = json.loads(path.read_text())["summary"]
    _, rows = compare(project, ["tiny"])
    ledger = {label: values[0] for label, values in rows}
    assert got["ell_star"] == ledger["ℓ*"] and got["argmax_share"] == ledger["argmax share"]
    assert got["G"] == ledger["G at ℓ*"]
    assert got["val_loss"] == ledger["bridge val loss at ℓ*"] and got["gen_ppl"] == ledger["gen PPL at ℓ*"]
    assert got["real_text_ppl"] == ledger["real-text gen PPL"] and got["c1_rho"] == ledger["C1 Spearman ρ"]
    refs = ledger_rows(project, "SELECT reference, avg(gen_ppl) FROM reference_results GROUP BY reference")
    assert {f"{r}_ppl": v for r, v in refs} == {k: v for k, v in got.items() if k.endswith("_ppl") and k != "gen_ppl"}
    (c1,) = ledger_rows(project, "SELECT spearman_p, selected_rank FROM correlations WHERE selection_space")
    assert (got["c1_p"], got["c1_rank"]) == c1
    assert not [k for k in got if re.fullmatch(r"s\d+", k)], "one seed: no per-seed breakdown"

    (config,) = (project / ".dihal" / "stages").glob("summary-*.json")
    out = project / json.loads(config.read_text())["out"]
    before = path.read_text()
    path.unlink()
    shutil.rmtree(out)
    code = f"import sys; from dihal.stages import run_stage; run_stage({str(config)!r}); print(sorted(sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "torch" not in proc.stdout and "'numpy'" in proc.stdout, "the summary stage imports no torch"
    assert path.read_text() == before

    path.unlink()
    shutil.rmtree(out)
    proc = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=project, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # DVC runs it, or restores it from its run-cache (same deps, same command): either way only this stage
    touched = re.findall(r"(?:Running stage|Stage) '([^']+)'(?::| is cached)", proc.stdout + proc.stderr)
    assert [s.split("-")[0] for s in touched] == ["summary"], proc.stdout + proc.stderr
    assert path.read_text() == before


def test_dvc_exp_show_keeps_just_the_summary(project):
    """The docs' command: every summary column, nothing else (the dvc exp show of this run has hundreds)."""
    git(project, "add", "-A")
    git(project, "commit", "-qm", "summary")
    out = dvc(project, "exp", "show", "--csv", "--drop", ".*", "--keep", "Experiment|.*summary\\.")
    header = next(csv.reader(io.StringIO(out)))
    summary = json.loads((project / "metrics" / "summary-tiny.json").read_text())["summary"]
    assert header == ["Experiment", *(f"summary.{k}" for k in summary)]
    everything = next(csv.reader(io.StringIO(dvc(project, "exp", "show", "--csv"))))
    assert len(everything) > 10 * len(header)
