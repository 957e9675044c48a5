"""The DuckDB ledger: atomic ingestion, no lost rows under concurrent writers, read-only queries."""

from __future__ import annotations

import multiprocessing as mp

import pytest

from dihal.ledger import store as ledger


def _rows(spec_hash: str, n: int = 5) -> list[dict]:
    return [
        {
            "spec_hash": spec_hash,
            "space": "bridge",
            "layer": i,
            "kappa": float(i),
            "g": -float(i),
            "selected": i == 0,
            "run_id": "r",
            "code_version": "v",
            "packages": {"torch": "x"},
            "seed": 0,
        }
        for i in range(n)
    ]


def _ingest(root: str, spec_hash: str) -> None:
    with ledger.writer(root) as con:
        ledger.replace_results(con, spec_hash, {"layer_geometry": _rows(spec_hash)})


def test_concurrent_writers_lose_nothing(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_ingest, args=(str(tmp_path), f"h{i}")) for i in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert all(p.exitcode == 0 for p in procs)
    _, rows = ledger.query(tmp_path, "SELECT spec_hash, count(*) FROM layer_geometry GROUP BY 1 ORDER BY 1")
    assert rows == [(f"h{i}", 5) for i in range(6)]


def test_reingesting_replaces_instead_of_duplicating(tmp_path):
    _ingest(tmp_path, "a")
    _ingest(tmp_path, "a")
    assert ledger.query(tmp_path, "SELECT count(*) FROM layer_geometry")[1] == [(5,)]


def test_a_failure_mid_ingestion_rolls_back_everything(tmp_path):
    _ingest(tmp_path, "a")
    with pytest.raises(RuntimeError, match="boom"):
        with ledger.writer(tmp_path) as con:
            ledger.replace_results(con, "a", {"layer_geometry": _rows("a", 2)})
            raise RuntimeError("boom")
    assert ledger.query(tmp_path, "SELECT count(*) FROM layer_geometry WHERE spec_hash = 'a'")[1] == [(5,)]


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM layer_geometry",
        "CREATE TABLE x (a INT)",
        "UPDATE layer_geometry SET kappa = 0",
        "ATTACH 'other.db'",
    ],
)
def test_queries_cannot_write(tmp_path, sql):
    _ingest(tmp_path, "a")
    with pytest.raises(ledger.LedgerError, match="read-only|refused|failed"):
        ledger.query(tmp_path, sql)
    assert ledger.query(tmp_path, "SELECT sum(kappa) FROM layer_geometry")[1] == [(10.0,)]
    assert not (tmp_path / "other.db").exists()


# --- a reader holding the file, the queue, the schema version ----------------------------------------------------

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from datetime import datetime, timedelta  # noqa: E402

import duckdb  # noqa: E402

from dihal.ledger import queue as ledger_queue  # noqa: E402
from dihal.ledger import records  # noqa: E402

T0 = datetime(2026, 1, 1, 12, 0, 0, 123456)


@contextmanager
def held_read_only(path, seconds: float | None = None):
    """Another process (a notebook, the DuckDB CLI) holding the ledger open read-only, until released."""
    code = (
        "import duckdb, sys, time; c = duckdb.connect(sys.argv[1], read_only=True); print('held', flush=True); "
        "time.sleep(float(sys.argv[2])) if sys.argv[2] != 'stdin' else sys.stdin.read(); c.close()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(path), "stdin" if seconds is None else str(seconds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.stdin.close()
        proc.wait(30)


def _txn(spec_hash: str, run_id: str, minutes: int, kappa: float | None = 1.0, status: str = "succeeded") -> dict:
    ended = T0 + timedelta(minutes=minutes)
    spec = {
        "spec_hash": spec_hash,
        "name": f"spec-{spec_hash}",
        "canonical_json": json.dumps({"seed": 0}),
        "yaml_text": "name: x\n",
        "seen_at": ended,
    }
    run = {
        "run_id": run_id,
        "spec_hash": spec_hash,
        "spec_name": spec["name"],
        "git_revision": None,
        "code_version": "v",
        "packages": {"torch": "x"},
        "seed": 0,
        "host": "h",
        "started_at": ended,
        "ended_at": ended,
        "status": status,
        "error": None,
        "stages_run": 1,
        "stages_total": 1,
    }
    results = None
    if kappa is not None:
        rows = [{**r, "kappa": kappa, "run_id": run_id} for r in _rows(spec_hash, 3)]
        results = {"layer_geometry": rows}
    return ledger_queue.transaction(spec, run, results, depth=30)


def test_a_reader_makes_the_writer_wait_say_who_then_queue_and_the_next_writer_replays(tmp_path):
    _ingest(tmp_path, "old")
    messages: list[str] = []
    with held_read_only(ledger.ledger_path(tmp_path)) as holder:
        t = time.monotonic()
        with pytest.raises(ledger_queue.LedgerQueued) as info:
            ledger_queue.commit(tmp_path, _txn("a", "run-a", 0, kappa=7.0), wait=1.5, notify=messages.append)
        waited = time.monotonic() - t
    assert 1.5 <= waited < 10, waited
    assert len(messages) == 1, messages  # said once, not once per retry
    assert f"PID {holder.pid}" in messages[0] and "Close that connection" in messages[0]
    assert f"PID {holder.pid}" in str(info.value) and "artifacts/" in str(info.value)
    queued = tmp_path / "ledger" / "pending" / "run-a.json"
    assert info.value.path == queued and queued.exists()
    data = json.loads(queued.read_text())
    assert data["run"]["run_id"] == "run-a" and len(data["results"]["layer_geometry"]) == 3
    # the durable records were kept before DuckDB was tried
    assert records.read_spec_record(tmp_path, "a")["results_run"]["run_id"] == "run-a"
    assert [r["run_id"] for r in records.run_rows(tmp_path)] == ["run-a"]
    assert ledger.query(tmp_path, "SELECT count(*) FROM runs")[1] == [(0,)]

    replayed: list[str] = []
    ledger_queue.commit(tmp_path, _txn("b", "run-b", 5), notify=replayed.append)  # the reader is gone
    assert not queued.exists() and any("replayed queued run run-a" in m for m in replayed)
    assert ledger.query(tmp_path, "SELECT run_id, status FROM runs ORDER BY run_id")[1] == [
        ("run-a", "succeeded"),
        ("run-b", "succeeded"),
    ]
    assert ledger.query(tmp_path, "SELECT sum(kappa) FROM layer_geometry WHERE spec_hash = 'a'")[1] == [(21.0,)]
    assert ledger.query(tmp_path, "SELECT count(*) FROM layer_geometry WHERE spec_hash = 'old'")[1] == [(5,)]


def test_the_writer_goes_on_when_the_reader_closes_within_the_wait(tmp_path):
    _ingest(tmp_path, "old")
    messages: list[str] = []
    with held_read_only(ledger.ledger_path(tmp_path), seconds=1.0):
        t = time.monotonic()
        ledger_queue.commit(tmp_path, _txn("a", "run-a", 0), wait=30, notify=messages.append)
        waited = time.monotonic() - t
    assert 0.5 < waited < 20 and len(messages) == 1 and "waiting up to 30 s" in messages[0]
    assert not list((tmp_path / "ledger" / "pending").glob("*")) if (tmp_path / "ledger" / "pending").exists() else True
    assert ledger.query(tmp_path, "SELECT run_id FROM runs")[1] == [("run-a",)]


def test_the_wait_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("DIHAL_LEDGER_WAIT", "2.5")
    assert ledger.ledger_wait() == 2.5
    monkeypatch.setenv("DIHAL_LEDGER_WAIT", "soon")
    assert ledger.ledger_wait() == 60.0


def test_a_replayed_older_run_never_replaces_a_newer_runs_results(tmp_path):
    ledger_queue.commit(tmp_path, _txn("a", "new", 10, kappa=2.0))
    ledger_queue.queue(tmp_path, _txn("a", "old", 0, kappa=1.0))  # queued earlier, replayed only now
    with ledger_queue.writer(tmp_path, notify=lambda m: None):  # opening a writer replays the queue
        pass
    assert ledger.query(tmp_path, "SELECT DISTINCT kappa, run_id FROM layer_geometry")[1] == [(2.0, "new")]
    assert ledger.query(tmp_path, "SELECT run_id FROM runs ORDER BY ended_at")[1] == [("old",), ("new",)]


def test_a_pending_file_that_cannot_be_applied_stays_and_is_named(tmp_path):
    bad = ledger_queue.pending_dir(tmp_path) / "broken.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    messages: list[str] = []
    ledger_queue.commit(tmp_path, _txn("a", "run-a", 0), notify=messages.append)
    assert bad.exists() and any("broken.json" in m and "stays queued" in m for m in messages)
    assert ledger.query(tmp_path, "SELECT run_id FROM runs")[1] == [("run-a",)]


def test_an_unversioned_ledger_is_migrated_and_its_version_recorded(tmp_path):
    path = ledger.ledger_path(tmp_path)
    path.parent.mkdir(parents=True)
    con = duckdb.connect(str(path))  # a ledger as the first release wrote it: base tables, no migrated columns
    for stmt in ledger.SCHEMA:
        con.execute(stmt)
    con.execute("INSERT INTO selections (spec_hash, rule, layer) VALUES ('a', 'argmax', 3)")
    con.execute("INSERT INTO layer_geometry (spec_hash, layer, kappa) VALUES ('a', 1, 0.5), ('a', 2, 0.25)")
    con.execute("INSERT INTO correlations (spec_hash, spearman_rho) VALUES ('a', 0.52)")
    con.execute("INSERT INTO selection_stability (spec_hash, variant, layer, score) VALUES ('a', 'main', 1, 2.0)")
    con.close()
    _ingest(tmp_path, "b")
    versions = [(v,) for v in range(1, ledger.SCHEMA_VERSION + 1)]
    assert ledger.query(tmp_path, "SELECT version FROM schema_version ORDER BY 1")[1] == versions
    # step 5: rows from before geometry spaces were measured in the one-scalar space, and say so
    assert ledger.query(
        tmp_path, "SELECT space, layer, kappa FROM layer_geometry WHERE spec_hash = 'a' ORDER BY layer"
    )[1] == [("scalar", 1, 0.5), ("scalar", 2, 0.25)]
    assert ledger.query(tmp_path, "SELECT space, selection_space, spearman_rho FROM correlations")[1] == [
        ("scalar", True, 0.52)
    ]
    assert ledger.query(tmp_path, "SELECT space, g FROM selection_stability")[1] == [("scalar", 2.0)]  # step 6
    assert ledger.query(tmp_path, "SELECT space FROM selections")[1] == [("scalar",)]
    pk = ledger.query(
        tmp_path,
        "SELECT constraint_column_names FROM duckdb_constraints() WHERE table_name = "
        "'correlations' AND constraint_type = 'PRIMARY KEY'",
    )[1]
    assert pk == [(["spec_hash", "space"],)]
    assert ledger.query(tmp_path, "SELECT count(*) FROM reference_results")[1] == [(0,)]  # step 3 created it
    assert ledger.query(tmp_path, "SELECT count(*) FROM interface_results")[1] == [(0,)]  # step 4 created it
    assert ledger.query(tmp_path, "SELECT layer, argmax_share FROM selections")[1] == [(3, None)]
    cols = {
        c
        for (c,) in ledger.query(
            tmp_path, "SELECT column_name FROM information_schema.columns WHERE table_name = 'layer_geometry'"
        )[1]
    }
    assert {table_col for t, table_col, _ in ledger.MIGRATIONS if t == "layer_geometry"} <= cols
    _ingest(tmp_path, "c")  # a second writer finds the latest version and applies nothing twice
    assert ledger.query(tmp_path, "SELECT count(*) FROM schema_version")[1] == [(len(versions),)]


def test_a_ledger_from_before_mauve_gains_its_columns_and_keeps_its_rows(tmp_path):
    path = ledger.ledger_path(tmp_path)
    path.parent.mkdir(parents=True)
    con = duckdb.connect(str(path))  # a ledger brought to version 6, the last schema without MAUVE
    con.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMP, note VARCHAR)")
    for version, _, statements in ledger.SCHEMA_STEPS:
        if version <= 6:
            for stmt in statements:
                stmt(con) if callable(stmt) else con.execute(stmt)
            con.execute("INSERT INTO schema_version VALUES (?, NULL, 'old')", [version])
    con.execute("INSERT INTO bridge_results (spec_hash, layer, seed, gen_ppl) VALUES ('a', 3, 0, 263.4)")
    con.execute(
        "INSERT INTO reference_results (spec_hash, reference, seed, gen_ppl) VALUES ('a', 'real_text', 0, 47.8)"
    )
    con.execute(
        "INSERT INTO interface_results (spec_hash, interface, layer, seed, gen_ppl) VALUES ('a', 'hidden', 3, 0, 263.4)"
    )
    for table in ("bridge_results", "reference_results", "interface_results"):
        assert "mauve" not in {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}
    con.close()
    _ingest(tmp_path, "b")
    for table in ("bridge_results", "reference_results", "interface_results"):
        assert ledger.query(tmp_path, f"SELECT gen_ppl, mauve, mauve_lo, mauve_hi FROM {table}")[1] in (
            [(263.4, None, None, None)],
            [(47.8, None, None, None)],
        ), table
    with ledger.writer(tmp_path) as con:  # and a new row fills them
        row = {"spec_hash": "c", "reference": "backbone_t1", "seed": 0, "mauve": 0.4, "mauve_lo": 0.1, "mauve_hi": 0.7}
        ledger.replace_results(con, "c", {"reference_results": [row]})
    assert ledger.query(tmp_path, "SELECT mauve, mauve_lo, mauve_hi FROM reference_results WHERE spec_hash = 'c'")[
        1
    ] == [(0.4, 0.1, 0.7)]


def test_a_ledger_from_a_newer_dihal_is_not_written_and_the_run_is_queued(tmp_path):
    _ingest(tmp_path, "a")
    con = duckdb.connect(str(ledger.ledger_path(tmp_path)))
    con.execute("INSERT INTO schema_version VALUES (99, NULL, 'from the future')")
    con.close()
    with pytest.raises(ledger_queue.LedgerQueued, match="schema version 99"):
        ledger_queue.commit(tmp_path, _txn("b", "run-b", 0), notify=lambda m: None)
    assert (ledger_queue.pending_dir(tmp_path) / "run-b.json").exists()


def test_a_failed_run_whose_ledger_is_held_is_queued_once_and_says_where(tmp_path, monkeypatch, capsys):
    """The failure path tries the writer once (no second wait) and the RunFailed names the queued file."""
    from dihal.execute.runner import RunFailed, _record_failure

    _ingest(tmp_path, "old")
    monkeypatch.setenv("DIHAL_LEDGER_WAIT", "1")
    txn = _txn("a", "run-f", 0, kappa=None, status="failed")
    record = {k: v for k, v in txn["spec"].items() if k != "seen_at"}
    run = {k: v for k, v in txn["run"].items() if k not in ("ended_at", "status", "error", "stages_run")}
    with held_read_only(ledger.ledger_path(tmp_path)) as holder:
        t = time.monotonic()
        with pytest.raises(RunFailed, match="boom") as info:
            _record_failure(tmp_path, record, run, RuntimeError("boom"), [], None)
        waited = time.monotonic() - t
    assert 1 <= waited < 8, waited
    queued = ledger_queue.pending_dir(tmp_path) / "run-f.json"
    assert info.value.queued == queued and json.loads(queued.read_text())["run"]["status"] == "failed"
    err = capsys.readouterr().err
    assert err.count(f"PID {holder.pid}") == 2  # the notice while waiting, then where the row waits
