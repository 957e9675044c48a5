"""Schema step 6: the method's column names (G `g`, r `r`, z(r) `z_r`) and the `<table>_named` views.

A ledger that dihal left at schema version 5 (written here with the DDL of steps 1-5, which the schema keeps as
its history) migrates in place, in one transaction, with its values and keys; rows an older dihal queued, or
that a rebuild carries over from an old ledger, land under the new names; a query on a snapshot of an
unmigrated ledger sees the new names and leaves the file as it was.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from dihal.ledger import ingest, rebuild, schema
from dihal.ledger import queue as ledger_queue
from dihal.ledger import store as ledger
from dihal.ledger.console import run_query
from dihal.stages.common import NonFiniteMetricError

T0 = datetime(2026, 1, 1, 12, 0, 0)
OLD, NEW = "a" * 64, "b" * 64  # two hashes of the spec named 'quickstart': OLD seen first, NEW last


def _old_ledger(root: Path, version: int = 5) -> Path:
    """A ledger exactly as dihal left it at `version`: the DDL of steps 1..version, recorded, and some rows."""
    path = ledger.ledger_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    try:
        con.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMP, note VARCHAR)")
        for v, note, statements in schema.SCHEMA_STEPS[:version]:
            for stmt in statements:
                stmt(con) if callable(stmt) else con.execute(stmt)
            con.execute("INSERT INTO schema_version VALUES (?, ?, ?)", [v, T0, note])
        for h, seen in ((OLD, T0), (NEW, T0 + timedelta(days=1))):
            con.execute("INSERT INTO specs (spec_hash, name, last_seen) VALUES (?, 'quickstart', ?)", [h, seen])
        con.execute(
            "INSERT INTO layer_geometry (spec_hash, space, layer, kappa, sigma, erank, z_kappa, z_sigma, z_erank, "
            "score, g_lo, g_hi, selected) VALUES "
            f"('{NEW}', 'bridge', 1, 1.5, 0.9, 263.0, 4.54, -4.6, -0.5, 0.44, 0.24, 1.25, false), "
            f"('{NEW}', 'bridge', 2, 2.25, 0.96, 317.1, 1.17, -0.97, 1.41, -1.21, -1.78, -0.39, true), "
            f"('{OLD}', 'bridge', 1, 1.0, 1.0, 100.0, 0.0, 0.0, 0.0, 9.0, NULL, NULL, true)"
        )
        con.execute(
            f"INSERT INTO selections (spec_hash, rule, layer, score, space) VALUES ('{NEW}', 'argmax', 2, -1.21, 'bridge')"
        )
        con.execute(
            "INSERT INTO selection_stability (spec_hash, variant, space, layer, score, g_lo, g_hi) "
            f"VALUES ('{NEW}', 'main', 'bridge', 2, -1.21, -1.78, -0.39)"
        )
    finally:
        con.close()
    return path


def _columns(con, table: str) -> list[str]:
    sql = "SELECT column_name FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position"
    return [c for (c,) in con.execute(sql, [table]).fetchall()]


def _primary_keys(con) -> dict[str, list[str]]:
    sql = "SELECT table_name, constraint_column_names FROM duckdb_constraints() WHERE constraint_type = 'PRIMARY KEY'"
    return dict(con.execute(sql).fetchall())


def test_a_version_5_ledger_migrates_in_place_with_its_values_and_keys(tmp_path):
    path = _old_ledger(tmp_path)
    con = duckdb.connect(str(path), read_only=True)
    assert {"score", "erank", "z_erank"} <= set(_columns(con, "layer_geometry"))  # really the old layout
    keys_before = _primary_keys(con)
    con.close()

    with ledger.writer(tmp_path):  # any writer brings the file to the current schema first
        pass

    con = duckdb.connect(str(path), read_only=True)
    try:
        assert con.execute("SELECT max(version) FROM schema_version").fetchone()[0] == schema.SCHEMA_VERSION == 8
        for table, olds in schema.RENAMED_IN.items():
            cols = _columns(con, table)
            assert not set(olds) & set(cols), (table, cols)
            assert {schema.RENAMED_COLUMNS[o] for o in olds} <= set(cols)
        assert _primary_keys(con) == {**keys_before, "frontier_points": ["spec_hash", "stage", "point"]}  # step 8
        geo = con.execute(
            "SELECT layer, kappa, r, z_kappa, z_r, g, g_lo, g_hi, selected FROM layer_geometry "
            f"WHERE spec_hash = '{NEW}' ORDER BY layer"
        ).fetchall()
        assert geo == [
            (1, 1.5, 263.0, 4.54, -0.5, 0.44, 0.24, 1.25, False),
            (2, 2.25, 317.1, 1.17, 1.41, -1.21, -1.78, -0.39, True),
        ]
        assert con.execute("SELECT layer, g FROM selections").fetchall() == [(2, -1.21)]
        assert con.execute("SELECT layer, g, g_lo FROM selection_stability").fetchall() == [(2, -1.21, -1.78)]
    finally:
        con.close()


def test_each_result_table_has_a_named_view_that_shadows_no_table(tmp_path):
    _old_ledger(tmp_path)
    with ledger.writer(tmp_path):
        pass
    views = {v for (v,) in ledger.query(tmp_path, "SELECT view_name FROM duckdb_views() WHERE NOT internal")[1]}
    tables = {t for (t,) in ledger.query(tmp_path, "SELECT table_name FROM duckdb_tables()")[1]}
    assert views == {schema.named_view(t) for t in schema.RESULT_TABLES}
    assert not views & tables
    cols, rows = ledger.query(
        tmp_path,
        "SELECT * FROM layer_geometry_named WHERE spec_name = 'quickstart' ORDER BY spec_hash, layer",
    )
    assert cols[:3] == ["spec_name", "spec_is_latest", "spec_hash"] and "g" in cols and "r" in cols
    assert [(r[0], r[1], r[2], r[cols.index("layer")]) for r in rows] == [
        ("quickstart", False, OLD, 1),
        ("quickstart", True, NEW, 1),
        ("quickstart", True, NEW, 2),
    ]
    latest = ledger.query(
        tmp_path,
        "SELECT layer, g FROM layer_geometry_named WHERE spec_name = 'quickstart' AND spec_is_latest ORDER BY layer",
    )[1]
    assert latest == [(1, 0.44), (2, -1.21)]
    # a row whose spec has no specs row still shows, nameless
    with ledger.writer(tmp_path) as con:
        con.execute("INSERT INTO bridge_results (spec_hash, layer, seed, gen_ppl) VALUES ('orphan', 2, 0, 263.4)")
    assert ledger.query(tmp_path, "SELECT spec_name, spec_is_latest, gen_ppl FROM bridge_results_named")[1] == [
        (None, None, 263.4)
    ]


def test_a_migration_that_fails_leaves_the_file_as_it_was_and_the_run_queued(tmp_path):
    path = _old_ledger(tmp_path)
    con = duckdb.connect(str(path))
    con.execute("ALTER TABLE selection_stability ADD COLUMN g DOUBLE")  # a hand-made column step 6 collides with
    con.close()
    txn = ledger_queue.transaction(
        {"spec_hash": "c", "name": "c", "canonical_json": "{}", "yaml_text": "", "seen_at": T0},
        {"run_id": "run-c", "spec_hash": "c", "status": "succeeded", "ended_at": T0},
    )
    with pytest.raises(ledger_queue.LedgerQueued, match=r"step 6 .* failed.*the file is unchanged"):
        ledger_queue.commit(tmp_path, txn, notify=lambda m: None)
    con = duckdb.connect(str(path), read_only=True)
    try:
        assert con.execute("SELECT max(version) FROM schema_version").fetchone()[0] == 5
        assert {"erank", "z_erank", "score"} <= set(_columns(con, "layer_geometry"))  # renamed, then rolled back
        assert con.execute(
            f"SELECT erank, score FROM layer_geometry WHERE spec_hash = '{NEW}' AND layer = 2"
        ).fetchall() == [(317.1, -1.21)]
        assert not con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
    finally:
        con.close()
    assert (ledger_queue.pending_dir(tmp_path) / "run-c.json").exists()


def test_rows_an_older_dihal_queued_are_written_under_the_new_names(tmp_path):
    row = {"spec_hash": "q", "space": "bridge", "layer": 3, "erank": 250.5, "z_erank": -0.94, "score": 0.87}
    old_txn = ledger_queue.transaction(
        {"spec_hash": "q", "name": "quickstart", "canonical_json": "{}", "yaml_text": "", "seen_at": T0},
        {"run_id": "run-q", "spec_hash": "q", "status": "succeeded", "ended_at": T0},
        {"layer_geometry": [row], "selections": [{"spec_hash": "q", "layer": 3, "score": 0.87}]},
    )
    ledger_queue.queue(tmp_path, json.loads(json.dumps(old_txn, default=str)))
    with ledger_queue.writer(tmp_path, notify=lambda m: None):  # opening a writer replays the queue
        pass
    assert ledger.query(tmp_path, "SELECT layer, r, z_r, g FROM layer_geometry")[1] == [(3, 250.5, -0.94, 0.87)]
    assert ledger.query(tmp_path, "SELECT g FROM selections")[1] == [(0.87,)]


def test_a_rebuild_carries_an_old_ledgers_rows_under_the_new_names(tmp_path):
    old = duckdb.connect(str(_old_ledger(tmp_path)), read_only=True)
    new = duckdb.connect(str(tmp_path / "new.duckdb"))
    try:
        schema.ensure_schema(new)
        assert rebuild._carry(new, old, NEW)
        assert new.execute("SELECT layer, r, g FROM layer_geometry ORDER BY layer").fetchall() == [
            (1, 263.0, 0.44),
            (2, 317.1, -1.21),
        ]
        assert new.execute("SELECT g FROM selection_stability").fetchall() == [(-1.21,)]
    finally:
        old.close()
        new.close()


def test_a_query_on_an_unmigrated_ledger_sees_the_new_names_and_leaves_the_file_alone(tmp_path):
    path = _old_ledger(tmp_path)
    before = path.read_bytes()
    answer = run_query(
        tmp_path, "SELECT layer, g, r FROM layer_geometry_named WHERE spec_is_latest AND spec_name = 'quickstart'"
    )
    assert sorted(answer.rows) == [(1, 0.44, 263.0), (2, -1.21, 317.1)]
    assert path.read_bytes() == before  # the snapshot migrated, the ledger waits for its next writer


def test_a_non_finite_g_fails_the_ingest_under_its_new_name():
    for table in ("layer_geometry", "selection_stability", "selections"):
        with pytest.raises(NonFiniteMetricError, match=r"\bg\b"):
            ingest.check_rows({table: [{"spec_hash": "x", "layer": 1, "g": math.nan}]})


def test_the_readme_query_returns_the_latest_quickstarts_geometry(tmp_path):
    """README's first SQL example runs as written on a ledger holding two versions of 'quickstart'."""
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    sql = re.search(r'dihal ledger sql "([^"]+)"', readme).group(1)
    _old_ledger(tmp_path)
    with ledger.writer(tmp_path):
        pass
    cols, rows = ledger.query(tmp_path, sql)
    assert "layer" in cols and "g" in cols
    got = [(r[cols.index("layer")], r[cols.index("g")]) for r in rows]
    assert got == [(1, 0.44), (2, -1.21)]  # only NEW's rows: OLD was seen before it
