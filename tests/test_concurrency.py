"""Concurrent use of one project: two different specs run at once, readers while another process writes.

DuckDB admits one process with a writable connection and refuses every other process, readers included, so a
report rendered while another run ingests used to fail at once (a traceback after a succeeded run). Readers now
wait like writers (`dihal.ledger.store.connect_readonly`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from dihal.cli import app
from dihal.ledger import store as ledger
from tests.tiny import save_tiny, stages_ran, write_spec_from

# Small enough that a run takes seconds. Rounds 1-2: the two specs differ in their seed, so they share no stage;
# round 3: they share extract (same data and sample, different k), which DVC refuses to run from two processes
# at once -- the second run waits for the first (`dihal.execute.dvc.repro_waiting`).
BASE = {
    "name": "tiny",
    "backbone": {"source": "local", "id": "tiny"},
    "data": {"source": "kjv", "max_documents": 200},
    "geometry": {"seq_len": 16, "n_tokens": 512, "anchors": 64, "k": 8, "pairs": 256, "batch_size": 8, "n_boot": 20},
    "bridge": {
        "seq_len": 16,
        "n_train": 32,
        "n_val": 16,
        "d_model": 16,
        "depth": 1,
        "heads": 2,
        "steps": 10,
        "warmup": 2,
        "batch_size": 8,
        "checkpoint_every": 10,
    },
    "eval": {"n_samples": 2, "sampling_steps": 3, "n_boot": 20, "val_batches": 2},
}


def write_spec(root: Path, name: str, **changes) -> Path:
    return write_spec_from(BASE, root, name, **changes)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("concurrent")
    save_tiny(root / "tiny")
    return root  # a bare folder: round 1's two runs both find no DVC project and must not race `dvc init`


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "DIHAL_PROGRESS": "0", "DIHAL_LEDGER_WAIT": "120"}


def run_together(root: Path, specs: list[Path]) -> list[subprocess.CompletedProcess]:
    """`python -m dihal run SPEC` for every spec, started together, each in its own process."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "dihal", "run", str(s)],
            cwd=root,
            env=_env(),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for s in specs
    ]
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


def ledger_rows(root: Path, sql: str) -> list[tuple]:
    return ledger.query(root, sql)[1]


@pytest.mark.parametrize("round_", [1, 2, 3])
def test_two_specs_run_at_once_both_succeed_and_both_render_reports(project, round_):
    # round 1 locates ℓ* only, in a folder that is not a project yet; round 2 adds the bridge, so both specs change,
    # reuse their geometry stages, train and evaluate, and ingest at about the same time again; round 3 shares
    # the extract stage between the two specs
    names = [f"con{round_}-a", f"con{round_}-b"]
    if round_ == 3:
        specs = [
            write_spec(project, name, seed=3, bridge=None, geometry={**BASE["geometry"], "k": k})
            for name, k in zip(names, (8, 10))
        ]
    else:
        bridge = {} if round_ > 1 else {"bridge": None}
        specs = [write_spec(project, name, seed=seed, **bridge) for name, seed in zip(names, (1, 2))]
    t = time.monotonic()
    results = run_together(project, specs)
    elapsed = time.monotonic() - t
    for res in results:
        assert res.returncode == 0, f"{res.args}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
        assert "Traceback" not in res.stderr, res.stderr[-3000:]
    for path in (*(f"{n}.html" for n in names), "index.html"):
        assert (project / "reports" / path).is_file(), path
    index = (project / "reports" / "index.html").read_text()
    assert all(f"{n}.html" in index for n in names)
    runs = ledger_rows(project, "SELECT spec_name, status, count(*) FROM runs GROUP BY ALL ORDER BY 1")
    assert runs == [(f"con{r}-{x}", "succeeded", 1) for r in range(1, round_ + 1) for x in "ab"]
    selected = ledger_rows(project, "SELECT s.name FROM selections JOIN specs s USING (spec_hash) ORDER BY 1")
    assert selected == [(f"con{r}-{x}",) for r in range(1, round_ + 1) for x in "ab"]
    bridge = ledger_rows(project, "SELECT s.name FROM bridge_results JOIN specs s USING (spec_hash) ORDER BY 1")
    assert bridge == ([] if round_ == 1 else [("con2-a",), ("con2-b",)])
    if round_ == 3:  # one extract for both: whichever run came second found it computed
        ran = [stages_ran(res.stdout + res.stderr) for res in results]
        assert sum(any(name.startswith("extract-") for name in names) for names in ran) == 1, ran
    waited = sum("is open in another process" in res.stderr for res in results)
    shared = sum("another run holds a stage" in res.stderr for res in results)
    print(
        f"round {round_}: two concurrent runs took {elapsed:.1f} s; {waited} of them waited for the ledger, "
        f"{shared} for a shared stage"
    )


@contextmanager
def held_for_writing(path: Path, seconds: float):
    """Another process holding a writable DuckDB connection to the ledger for `seconds`."""
    code = (
        "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('held', flush=True); "
        "time.sleep(float(sys.argv[2])); c.close()"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.wait(30)


@pytest.fixture
def small_ledger(tmp_path):
    with ledger.writer(tmp_path) as con:
        con.execute("INSERT INTO runs (run_id, status) VALUES ('r1', 'succeeded')")
    return tmp_path


def test_a_reader_waits_while_another_process_writes_then_reads(small_ledger):
    messages: list[str] = []
    with held_for_writing(ledger.ledger_path(small_ledger), 1.0) as holder:
        t = time.monotonic()
        with ledger.reader(small_ledger, wait=30, notify=messages.append) as con:
            rows = con.execute("SELECT run_id FROM runs").fetchall()
        waited = time.monotonic() - t
    assert rows == [("r1",)]
    assert 0.3 < waited < 10, waited
    assert len(messages) == 1 and f"PID {holder.pid}" in messages[0], messages  # said once, naming the holder


def test_a_reader_gives_up_with_a_ledger_error_naming_the_holder(small_ledger):
    with held_for_writing(ledger.ledger_path(small_ledger), 1.5) as holder:
        t = time.monotonic()
        with pytest.raises(ledger.LedgerBusy) as info:
            with ledger.reader(small_ledger, wait=0.5, notify=lambda m: None):
                pass
        assert time.monotonic() - t < 1.4
    assert isinstance(info.value, ledger.LedgerError) and f"PID {holder.pid}" in str(info.value)
    assert "for reading" in str(info.value)


def test_ledger_sql_while_the_file_is_held_is_a_message_not_a_traceback(small_ledger, monkeypatch):
    monkeypatch.setenv("DIHAL_LEDGER_WAIT", "0.3")
    with held_for_writing(ledger.ledger_path(small_ledger), 1.0) as holder:
        res = CliRunner().invoke(app, ["ledger", "sql", "SELECT 1", "--project", str(small_ledger)])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output
    assert f"PID {holder.pid}" in res.output and "Traceback" not in res.output


def test_a_report_failure_after_a_succeeded_run_is_a_message_and_exit_1(tmp_path, monkeypatch):
    """No ledger at all makes the report (and the summary) raise LedgerError: the CLI says the run succeeded."""
    import dihal.execute.runner

    spec = write_spec(tmp_path, "fake")
    fake = SimpleNamespace(spec_hash="0" * 64, run_id="run-fake", spec=SimpleNamespace(name="fake"), report=None)
    monkeypatch.setattr(dihal.execute.runner, "run_spec", lambda path, project, **options: fake)
    res = CliRunner().invoke(app, ["run", str(spec), "--project", str(tmp_path)])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output
    assert "run run-fake succeeded" in res.output and "report failed" in res.output
    assert "summary failed" in res.output and "dihal report" in res.output
    assert "Traceback" not in res.output
