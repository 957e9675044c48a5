"""The DuckDB ledger: atomic ingestion, no lost rows under concurrent writers, read-only queries."""

from __future__ import annotations

import multiprocessing as mp

import pytest

from dihal import ledger


def _rows(spec_hash: str, n: int = 5) -> list[dict]:
    return [{"spec_hash": spec_hash, "layer": i, "kappa": float(i), "score": -float(i), "selected": i == 0,
             "run_id": "r", "code_version": "v", "packages": {"torch": "x"}, "seed": 0} for i in range(n)]  # fmt: skip


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


@pytest.mark.parametrize("sql", ["DELETE FROM layer_geometry", "CREATE TABLE x (a INT)",
                                 "UPDATE layer_geometry SET kappa = 0", "ATTACH 'other.db'"])  # fmt: skip
def test_queries_cannot_write(tmp_path, sql):
    _ingest(tmp_path, "a")
    with pytest.raises(ledger.LedgerError, match="read-only|refused|failed"):
        ledger.query(tmp_path, sql)
    assert ledger.query(tmp_path, "SELECT sum(kappa) FROM layer_geometry")[1] == [(10.0,)]
    assert not (tmp_path / "other.db").exists()
