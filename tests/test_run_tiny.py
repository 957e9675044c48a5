"""End to end on a tiny random Llama: real DVC, real DuckDB, real transformers, through the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dihal.cli import app
from tests.tiny import TINY, ledger_rows, save_tiny, stages_ran, write_spec_from

BASE = TINY  # other test modules import it from here
runner = CliRunner()


def write_spec(root: Path, name: str, **changes) -> Path:
    return write_spec_from(BASE, root, name, **changes)


def invoke(root: Path, *args: str):
    """A CLI call against the test project (every command used here takes --project)."""
    return runner.invoke(app, [*args, "--project", str(root)])


@pytest.fixture(scope="module")
def project(tmp_path_factory, monkeypatch_module):
    root = tmp_path_factory.mktemp("project")
    save_tiny(root / "tiny")
    monkeypatch_module.chdir(root)  # specs name the model and data relative to the project root
    return root


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def first_run(project):
    spec = write_spec(project, "tiny")
    result = invoke(project, "run", str(spec))
    assert result.exit_code == 0, result.output
    return spec, result


def test_run_computes_every_stage_and_fills_the_ledger(project, first_run):
    spec, result = first_run
    assert "ℓ*" in result.output and "ledger" in result.output
    geo = ledger_rows(
        project,
        "SELECT layer, kappa, sigma, r, g, selected FROM layer_geometry WHERE space = 'bridge' ORDER BY layer",
    )
    assert [r[0] for r in geo] == [1, 2, 3] and sum(r[5] for r in geo) == 1
    best = max(geo, key=lambda r: r[4])
    assert best[5], "the selected layer is the argmax of G in the spec's space (bridge by default)"
    spaces = ledger_rows(
        project,
        "SELECT space, count(*), count_if(space_best), count_if(selected) FROM "
        "layer_geometry GROUP BY space ORDER BY space",
    )
    assert spaces == [("bridge", 3, 1, 1), ("scalar", 3, 1, 1)]  # every space recorded; ℓ* marked in each
    tokens = ledger_rows(project, "SELECT top_channel_tokens FROM layer_geometry WHERE space = 'scalar'")
    assert all(json.loads(t)[0]["count"] >= 5 and "text" in json.loads(t)[0] for (t,) in tokens)
    bridge = ledger_rows(project, "SELECT layer, seed, bridge_val_loss, gen_ppl, recovery_ce FROM bridge_results")
    assert len(bridge) == 1 and bridge[0][0] == best[0] and all(v > 0 for v in bridge[0][2:])
    runs = ledger_rows(project, "SELECT status, stages_run, code_version, packages, seed FROM runs")
    assert runs == [("succeeded", 8, runs[0][2], runs[0][3], 0)]  # 6 + the reference and summary stages
    assert "torch" in json.loads(runs[0][3])
    assert (project / "reports" / "tiny.html").exists() and (project / "reports" / "index.html").exists()


def test_run_records_how_sure_the_selection_is(project, first_run):
    spec, result = first_run
    ((layer, share, n_boot, n_docs, start, rule, space, sentence),) = ledger_rows(
        project,
        "SELECT layer, argmax_share, n_boot, n_documents, block_start, outlier_rule, space, confidence FROM selections",
    )
    assert n_boot == 200 and 0 < share <= 1 and start == "<s>" and rule == "drop>20x median norm"
    assert space == "bridge" and sentence.startswith(f"ℓ* = {layer} (bridge space) is ")
    assert f"argmax in {share:.0%} of 200 document resamples" in result.output and sentence in result.output
    for name in ("bridge", "scalar"):
        shares = ledger_rows(
            project,
            "SELECT argmax_share, g_lo, g, g_hi, top_share_after, n_states FROM "
            f"layer_geometry WHERE space = '{name}' ORDER BY layer",
        )
        assert sum(r[0] for r in shares) == pytest.approx(1.0)
        assert all(r[1] <= r[3] and 0 <= r[4] <= 1 and r[5] > 0 for r in shares)
    stab = ledger_rows(
        project, "SELECT variant, space, count(*), sum(argmax_share) FROM selection_stability GROUP BY ALL ORDER BY ALL"
    )
    assert stab == [("main", "bridge", 3, pytest.approx(1.0)), ("main", "scalar", 3, pytest.approx(1.0))]
    assert n_docs >= 10  # the 35 blocks are spread over the geometry split's documents


def test_sensitivity_variants_report_their_own_selection(project, first_run):
    spec = write_spec(
        project,
        "tiny-sens",
        bridge=None,
        sensitivity=[
            {"name": "keep", "geometry": {"outliers": {"rule": "keep"}}},
            {"name": "bos-any", "data": {"block_align": "any"}},
        ],
    )
    result = invoke(project, "run", str(spec), "--no-report")
    assert result.exit_code == 0, result.output
    assert "sensitivity" in result.output
    rows = ledger_rows(
        project,
        "SELECT variant, count(*), sum(argmax_share), any_value(settings) FROM "
        "selection_stability s JOIN specs USING (spec_hash) WHERE name = 'tiny-sens' "
        "AND space = 'bridge' GROUP BY variant ORDER BY variant",
    )
    assert [r[0] for r in rows] == ["bos-any", "keep", "main"] and all(r[1] == 3 for r in rows)
    assert json.loads(rows[1][3]) == {"geometry": {"outliers": {"rule": "keep"}}}


def test_second_run_computes_nothing_and_adds_no_result_rows(project, first_run):
    spec, _ = first_run
    before = (
        ledger_rows(project, "SELECT count(*) FROM layer_geometry")[0][0]
        + ledger_rows(project, "SELECT count(*) FROM samples")[0][0]
    )
    result = invoke(project, "run", str(spec))
    assert result.exit_code == 0, result.output
    assert "everything up to date" in result.output
    after = (
        ledger_rows(project, "SELECT count(*) FROM layer_geometry")[0][0]
        + ledger_rows(project, "SELECT count(*) FROM samples")[0][0]
    )
    assert before == after
    assert ledger_rows(project, "SELECT stages_run FROM runs ORDER BY started_at")[-1] == (0,)


def test_a_reader_holding_the_ledger_queues_the_run_and_replay_writes_it(project, first_run, monkeypatch):
    """A notebook holds the ledger read-only during a run: the run waits, names it, queues its rows, exits 75."""
    from tests.test_ledger import held_read_only

    spec, _ = first_run
    monkeypatch.setenv("DIHAL_LEDGER_WAIT", "2")
    n_runs = ledger_rows(project, "SELECT count(*) FROM runs")[0][0]
    with held_read_only(project / "ledger" / "dihal.duckdb") as holder:
        result = invoke(project, "run", str(spec), "--no-report")
    assert result.exit_code == 75, result.output
    assert f"PID {holder.pid}" in result.output and "waiting up to 2 s" in result.output
    assert "results are safe in artifacts/" in result.output
    queued = list((project / "ledger" / "pending").glob("*.json"))
    assert len(queued) == 1 and json.loads(queued[0].read_text())["run"]["status"] == "succeeded"
    assert ledger_rows(project, "SELECT count(*) FROM runs")[0][0] == n_runs, "nothing was written meanwhile"
    res = invoke(project, "ledger", "replay")
    assert res.exit_code == 0 and "replayed 1 queued run" in res.output, res.output
    assert not queued[0].exists()
    assert ledger_rows(project, "SELECT count(*) FROM runs")[0][0] == n_runs + 1


def test_changing_k_reruns_score_and_select_but_not_extract(project, first_run):
    spec = write_spec(project, "tiny-k4", geometry__k=4)
    result = invoke(project, "run", str(spec), "--no-report")
    assert result.exit_code == 0, result.output
    kinds = [s.split("-")[0] for s in stages_ran(result.output)]
    assert "extract" not in kinds and kinds[:2] == ["score", "select"]


def test_same_spec_same_numbers(project, first_run):
    """Re-running a spec from scratch gives identical metrics (determinism)."""
    spec, _ = first_run
    first = ledger_rows(
        project,
        "SELECT bridge_val_loss, gen_ppl, samples_digest FROM bridge_results b "
        "JOIN specs s USING (spec_hash) WHERE s.name = 'tiny'",
    )
    shutil.rmtree(project / "artifacts")
    (project / "dvc.lock").unlink()
    shutil.rmtree(project / ".dvc" / "cache", ignore_errors=True)
    result = invoke(project, "run", str(spec), "--no-report")
    assert result.exit_code == 0, result.output
    again = ledger_rows(
        project,
        "SELECT bridge_val_loss, gen_ppl, samples_digest FROM bridge_results b "
        "JOIN specs s USING (spec_hash) WHERE s.name = 'tiny'",
    )
    assert again == first


def test_ledger_sql_formats_and_refuses_writes(project, first_run):
    h = ledger_rows(project, "SELECT spec_hash FROM specs WHERE name = 'tiny'")[0][0]
    res = invoke(
        project,
        "ledger",
        "sql",
        f"SELECT layer, g FROM layer_geometry WHERE spec_hash = '{h}' AND space = 'bridge' ORDER BY layer",
        "--format",
        "csv",
    )
    assert res.exit_code == 0 and res.output.splitlines()[0] == "layer,g" and len(res.output.splitlines()) == 4
    res = invoke(project, "ledger", "sql", "SELECT count(*) AS n FROM runs", "--format", "json")
    assert json.loads(res.output)[0]["n"] >= 1
    n = ledger_rows(project, "SELECT count(*) FROM runs")
    for bad in ("DELETE FROM runs", "DROP TABLE runs", "COPY runs TO 'leak.csv'"):
        res = invoke(project, "ledger", "sql", bad)
        assert res.exit_code == 1 and "read-only" in res.output
    assert ledger_rows(project, "SELECT count(*) FROM runs") == n and not (project / "leak.csv").exists()
    assert invoke(project, "ledger", "runs").exit_code == 0
    as_json = [invoke(project, *cmd, "--format", "json") for cmd in (("ledger", "runs"), ("runs",))]
    assert as_json[0].exit_code == as_json[1].exit_code == 0
    assert json.loads(as_json[1].output) == json.loads(as_json[0].output) and json.loads(as_json[1].output)


def test_a_failing_stage_is_recorded_and_earlier_results_survive(project, first_run):
    before = ledger_rows(project, "SELECT * FROM layer_geometry ORDER BY spec_hash, layer")
    spec = write_spec(project, "tiny-broken", bridge__n_train=100000)  # more training blocks than the corpus has
    result = invoke(project, "run", str(spec), "--no-report")
    assert result.exit_code == 1 and "fewer than" in result.output
    failed = ledger_rows(project, "SELECT status, error FROM runs WHERE status = 'failed'")
    assert failed and "fewer than" in failed[-1][1]
    assert ledger_rows(project, "SELECT * FROM layer_geometry ORDER BY spec_hash, layer") == before


def test_sample_prints_hybrid_text(project, first_run):
    spec, _ = first_run
    res = invoke(project, "sample", str(spec), "--n", "2", "--prompt", "And God")
    assert res.exit_code == 0, res.output
    assert res.output.count("And God") == 2


def test_small_sweep_correlates_and_reports(project, first_run):
    spec = write_spec(project, "tiny-sweep", bridge__layers=[1, 2, 3])
    result = invoke(project, "run", str(spec))
    assert result.exit_code == 0, result.output
    kinds = [s.split("-")[0] for s in stages_ran(result.output)]
    assert "extract" not in kinds and kinds.count("train") == 3 and kinds[-2:] == ["correlate", "summary"]
    rows = ledger_rows(
        project,
        "SELECT spearman_rho, spearman_lo, spearman_hi, best_layer, n_layers, spearman_p, interval_method, "
        "resampled, space, selection_space FROM correlations ORDER BY space",
    )
    assert [(r[8], r[9]) for r in rows] == [("bridge", True), ("scalar", False)]  # one C1 row per space
    for rho, lo, hi, best, n_layers, p, method, resampled, _, _ in rows:
        assert -1 <= lo <= rho <= hi <= 1 and best in (1, 2, 3) and n_layers == 3
        assert 0 < p <= 1 and method == "symmetric" and "geometry document-resamples" in resampled
    assert "C1 in the bridge space: Spearman" in result.output and "C1 in the scalar space" in result.output
    # each space's ρ, recomputed here from the ledger's own G and losses with scipy (a second computation)
    from scipy.stats import spearmanr

    h = ledger_rows(project, "SELECT spec_hash FROM specs WHERE name = 'tiny-sweep'")[0][0]
    loss = dict(
        ledger_rows(
            project, f"SELECT layer, avg(bridge_val_loss) FROM bridge_results WHERE spec_hash = '{h}' GROUP BY layer"
        )
    )
    for space, rho in [(r[8], r[0]) for r in rows]:
        g = dict(
            ledger_rows(project, f"SELECT layer, g FROM layer_geometry WHERE spec_hash = '{h}' AND space = '{space}'")
        )
        assert rho == pytest.approx(spearmanr([g[x] for x in (1, 2, 3)], [loss[x] for x in (1, 2, 3)])[0])
    html = (project / "reports" / "tiny-sweep.html").read_text()
    assert "data:image/png;base64" in html


def test_ctrl_c_mid_training_is_logged_and_loses_nothing(project, first_run):
    import os
    import signal
    import subprocess
    import sys
    import time

    before = ledger_rows(project, "SELECT * FROM layer_geometry ORDER BY spec_hash, layer")
    spec = write_spec(project, "tiny-interrupted", bridge__steps=100000)

    def as_in_a_terminal() -> None:
        # A shell's background job (CI under `cmd &`) inherits SIGINT *ignored*; a terminal's
        # foreground job does not. Restore the default so Python raises KeyboardInterrupt.
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen(
        [sys.executable, "-m", "dihal", "run", str(spec), "--no-report"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=as_in_a_terminal,
        env={**os.environ, "DIHAL_PROGRESS": "0"},
    )
    ckpts = project / "artifacts" / "checkpoints"
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and not any(ckpts.glob("*/ckpt.pt")):
            time.sleep(0.2)
        assert proc.poll() is None, proc.stdout.read().decode()
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends: the whole foreground process group
        out = proc.communicate(timeout=120)[0].decode()
    finally:
        if proc.poll() is None:  # never leave a 100000-step training behind
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, out
    status = ledger_rows(
        project, "SELECT r.status FROM runs r JOIN specs s USING (spec_hash) WHERE s.name = 'tiny-interrupted'"
    )
    assert status == [("interrupted",)]
    assert ledger_rows(project, "SELECT * FROM layer_geometry ORDER BY spec_hash, layer") == before
    shutil.rmtree(ckpts, ignore_errors=True)


LEDGER_TABLES = (
    "specs",
    "runs",
    "layer_geometry",
    "selections",
    "bridge_results",
    "training_curves",
    "samples",
    "correlations",
    "selection_stability",
    "reference_results",
)


def ledger_snapshot(root: Path) -> dict[str, list[str]]:
    """Every row of every table, as sorted reprs (NaN-safe, order-free)."""
    return {t: sorted(repr(r) for r in ledger_rows(root, f"SELECT * FROM {t}")) for t in LEDGER_TABLES}


def test_rebuild_recreates_the_ledger_from_artifacts_and_records(project, first_run):
    """Last: it needs the specs the tests above ran. Earlier tests deleted some specs' artifacts (tiny-k4's score,
    tiny-sens's variants); a rebuild must carry those rows over from the old ledger, or name them as lost."""
    before = ledger_snapshot(project)
    names = dict(ledger_rows(project, "SELECT spec_hash, name FROM specs"))
    res = invoke(project, "ledger", "rebuild")
    assert res.exit_code == 0, res.output
    assert ledger_snapshot(project) == before, "a rebuild next to the old ledger changes no row"
    assert (project / "ledger" / "dihal.duckdb.bak").exists()

    (project / "ledger" / "dihal.duckdb").unlink()
    (project / "ledger" / "dihal.duckdb.bak").unlink()
    res = invoke(project, "ledger", "rebuild")
    lost_line = next((ln for ln in res.output.splitlines() if "LOST" in ln), "")
    lost = {h for h, name in names.items() if f"{name} ({h[:12]})" in lost_line}
    assert res.exit_code == (1 if lost else 0), res.output
    assert {names[h] for h in lost} <= {"tiny-k4", "tiny-sens"}, res.output  # only what rmtree(artifacts) took
    after = ledger_snapshot(project)
    assert after["specs"] == before["specs"] and after["runs"] == before["runs"]
    for table in LEDGER_TABLES[2:]:
        kept = [r for r in before[table] if not any(repr(h) in r for h in lost)]
        assert after[table] == kept, table
    assert len(after["bridge_results"]) >= 4 and after["correlations"], "tiny and tiny-sweep came from artifacts/"


def test_dry_run_lists_the_stages_an_override_would_run_and_computes_nothing(project, first_run):
    spec, _ = first_run
    runs_before = ledger_rows(project, "SELECT count(*) FROM runs")[0][0]
    trained_before = sorted((project / "artifacts" / "train").iterdir())
    res = invoke(project, "run", str(spec), "--dry-run", "-S", "bridge.steps=12")
    assert res.exit_code == 0, res.output
    lines = [ln.split() for ln in res.output.splitlines() if ln.startswith("  ")]
    would = {name.split("-")[0] for name, *why in lines if why == ["would", "run"]}
    assert {"train", "evaluate"} <= would and not would & {"extract", "score", "select"}  # Locate is shared
    assert ledger_rows(project, "SELECT count(*) FROM runs")[0][0] == runs_before
    assert sorted((project / "artifacts" / "train").iterdir()) == trained_before


def test_an_override_runs_as_its_own_spec_recorded_in_full(project, first_run):
    spec, _ = first_run
    res = invoke(project, "run", str(spec), "-S", "bridge.steps=12")
    assert res.exit_code == 0, res.output
    assert not {s.split("-")[0] for s in stages_ran(res.output)} & {"extract", "score", "select"}
    ((name, text),) = ledger_rows(project, "SELECT name, yaml_text FROM specs WHERE name LIKE 'tiny+%'")
    assert name == "tiny+bridge.steps=12" and "# -S bridge.steps=12" in text
    assert yaml.safe_load(text)["bridge"]["steps"] == 12
    again = project / "from-ledger.yaml"
    again.write_text(text)  # the recorded YAML alone is the spec: same hash as the run's
    res = invoke(project, "validate", str(again))
    assert res.exit_code == 0, res.output
    (h,) = ledger_rows(project, f"SELECT spec_hash FROM specs WHERE name = '{name}'")[0]
    assert f"spec hash {h}" in res.output
    assert [p.name for p in (project / "reports").glob("*.yaml") if "# -S bridge.steps=12" in p.read_text()]


def test_export_writes_every_table_that_reads_back_equal_to_the_ledger(project, first_run, tmp_path):
    import duckdb

    res = invoke(project, "ledger", "export", str(tmp_path / "out"))
    assert res.exit_code == 0, res.output
    files = {p.stem: p for p in (tmp_path / "out").glob("*.parquet")}
    assert {"specs", "runs", "layer_geometry", "bridge_results", "samples"} <= set(files)
    con = duckdb.connect()
    for table in ("layer_geometry", "bridge_results"):
        got = con.execute(f"SELECT * FROM read_parquet('{files[table]}') ORDER BY ALL").fetchall()
        assert got == ledger_rows(project, f"SELECT * FROM {table} ORDER BY ALL")
    res = invoke(project, "ledger", "export", str(tmp_path / "csv"), "--format", "csv", "-t", "runs")
    assert res.exit_code == 0 and [p.name for p in (tmp_path / "csv").iterdir()] == ["runs.csv"]
    res = invoke(project, "ledger", "export", str(tmp_path / "x"), "-t", "nope")
    assert res.exit_code == 1 and "no table 'nope'" in res.output


def test_the_python_api_reads_results_without_blocking_a_run(project, first_run):
    import dihal
    from dihal.ledger.store import writer

    geo = dihal.results("layer_geometry", project=project)
    assert len(geo) == ledger_rows(project, "SELECT count(*) FROM layer_geometry")[0][0]
    assert {"layer", "g", "spec_hash"} <= set(geo.columns)
    everything = dihal.results(project=project)
    assert "bridge_results" in everything and "schema_version" not in everything
    with writer(project, wait=0):  # the frames came from a snapshot: nothing of the ledger is held by the notebook
        pass


def test_the_python_api_runs_a_spec_given_as_a_mapping(project, first_run):
    import dihal

    result = dihal.run({**BASE, "name": "from-python"}, overrides=["eval.n_boot=60"], project=project)
    ((name,),) = ledger_rows(project, f"SELECT name FROM specs WHERE spec_hash = '{result.spec_hash}'")
    assert name == "from-python+eval.n_boot=60"
    assert not list(project.glob(".dihal-inline-*")), "the inline spec file is removed"


def test_the_summary_leads_with_a_one_line_answer_and_explains_its_columns(project, first_run):
    _, result = first_run
    (line,) = [ln for ln in result.output.splitlines() if ln.startswith("tiny: ℓ* = ")]
    (layer,) = ledger_rows(
        project, "SELECT layer FROM selections WHERE spec_hash IN (SELECT spec_hash FROM specs WHERE name = 'tiny')"
    )[0]
    assert line.startswith(f"tiny: ℓ* = {layer} (") and "gen PPL" in line and "× real text" in line
    assert "d-1..3: distinct n-grams" in result.output.replace("\n", " ")


def test_compare_puts_specs_side_by_side_by_name_or_hash_prefix(project, first_run):
    ((h, layer),) = ledger_rows(
        project,
        "SELECT s.spec_hash, sel.layer FROM specs s JOIN selections sel USING (spec_hash) WHERE s.name = 'tiny'",
    )
    res = invoke(project, "compare", "tiny", h[:10])
    assert res.exit_code == 0, res.output
    (row,) = [ln for ln in res.output.splitlines() if "ℓ*" in ln and "at" not in ln]
    assert row.split("│")[2].strip() == row.split("│")[3].strip() == str(layer)
    assert "gen PPL at ℓ*" in res.output and "real-text gen PPL" in res.output
    res = invoke(project, "compare", "tiny", "no-such-spec")
    assert res.exit_code == 1 and "no spec named 'no-such-spec'" in res.output


def test_a_bridge_recipe_override_trains_and_samples_through_the_stages(project, first_run):
    import torch

    spec, _ = first_run
    recipe = ["bridge.self_condition=true", "bridge.schedule=shifted_cosine", "bridge.schedule_shift=2"]
    res = invoke(project, "run", str(spec), *[arg for kv in recipe for arg in ("-S", kv)])
    assert res.exit_code == 0, res.output
    assert sorted(s.split("-")[0] for s in stages_ran(res.output)) == ["evaluate", "summary", "train"]
    ((val, ppl, div),) = ledger_rows(
        project,
        "SELECT bridge_val_loss, gen_ppl, diversity FROM bridge_results JOIN specs USING (spec_hash) "
        "WHERE name LIKE 'tiny+bridge.self_condition%'",
    )
    assert 0 < val < 2 and ppl > 1 and div >= 0
    blobs = {p: torch.load(p / "bridge.pt", weights_only=True) for p in (project / "artifacts" / "train").iterdir()}
    ((train, blob),) = [(p, b) for p, b in blobs.items() if b.get("schedule", {}).get("name") == "shifted_cosine"]
    assert blob["schedule"] == {"name": "shifted_cosine", "shift": 2.0} and blob["denoiser_config"]["self_condition"]
    curve = [row["loss"] for row in json.loads((train / "curve.json").read_text())]
    assert curve[-1] < curve[0]
