"""The DuckDB ledger: every result, keyed by spec hash, with its provenance.

Stages write files (DVC outputs); the ledger is filled once at the end of a run,
in one transaction under a file lock, because DuckDB admits one writing process
and parallel runs must neither corrupt nor lose rows. Results are replaced per
spec hash (same spec → same rows, never duplicates); the runs table is the log of
every attempt, failed ones included. Queries go through a read-only connection
with external access disabled, so a query can neither change the ledger nor
write files.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

import duckdb
from filelock import FileLock

LEDGER_FILE = "dihal.duckdb"

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS specs (
        spec_hash VARCHAR PRIMARY KEY, name VARCHAR, canonical_json JSON, yaml_text VARCHAR,
        first_seen TIMESTAMP, last_seen TIMESTAMP)""",
    """CREATE TABLE IF NOT EXISTS runs (
        run_id VARCHAR PRIMARY KEY, spec_hash VARCHAR, spec_name VARCHAR, git_revision VARCHAR,
        code_version VARCHAR, packages JSON, seed INTEGER, host VARCHAR, started_at TIMESTAMP,
        ended_at TIMESTAMP, status VARCHAR, error VARCHAR, stages_run INTEGER, stages_total INTEGER)""",
    """CREATE TABLE IF NOT EXISTS layer_geometry (
        spec_hash VARCHAR, layer INTEGER, kappa DOUBLE, sigma DOUBLE, erank DOUBLE,
        participation_ratio DOUBLE, lambda_min_p DOUBLE, z_kappa DOUBLE, z_sigma DOUBLE, z_erank DOUBLE,
        score DOUBLE, selected BOOLEAN, proxies JSON, run_id VARCHAR, code_version VARCHAR,
        packages JSON, seed INTEGER, PRIMARY KEY (spec_hash, layer))""",
    """CREATE TABLE IF NOT EXISTS selections (
        spec_hash VARCHAR PRIMARY KEY, rule VARCHAR, layer INTEGER, score DOUBLE, n_candidates INTEGER,
        run_id VARCHAR, code_version VARCHAR, packages JSON, seed INTEGER)""",
    """CREATE TABLE IF NOT EXISTS bridge_results (
        spec_hash VARCHAR, layer INTEGER, seed INTEGER, bridge_val_loss DOUBLE, recovery_ce DOUBLE,
        recovery_token_acc DOUBLE, recovery_clean_agreement DOUBLE, gen_ppl DOUBLE, distinct_1 DOUBLE,
        distinct_2 DOUBLE, distinct_3 DOUBLE, diversity DOUBLE, unigram_entropy DOUBLE,
        samples_digest VARCHAR, train_seconds DOUBLE, train_tokens_per_s DOUBLE, val_batch_losses JSON,
        run_id VARCHAR, code_version VARCHAR, packages JSON, PRIMARY KEY (spec_hash, layer, seed))""",
    """CREATE TABLE IF NOT EXISTS training_curves (
        spec_hash VARCHAR, layer INTEGER, seed INTEGER, step INTEGER, loss DOUBLE, lr DOUBLE,
        grad_norm DOUBLE, PRIMARY KEY (spec_hash, layer, seed, step))""",
    """CREATE TABLE IF NOT EXISTS samples (
        spec_hash VARCHAR, layer INTEGER, seed INTEGER, idx INTEGER, text VARCHAR,
        PRIMARY KEY (spec_hash, layer, seed, idx))""",
    """CREATE TABLE IF NOT EXISTS correlations (
        spec_hash VARCHAR PRIMARY KEY, spearman_rho DOUBLE, spearman_lo DOUBLE, spearman_hi DOUBLE,
        kendall_tau DOUBLE, kendall_lo DOUBLE, kendall_hi DOUBLE, selected_layer INTEGER,
        selected_rank INTEGER, best_layer INTEGER, in_top_k BOOLEAN, top_k INTEGER, n_layers INTEGER,
        n_seeds INTEGER, n_batches INTEGER, n_boot INTEGER, run_id VARCHAR, code_version VARCHAR,
        packages JSON, seed INTEGER)""",
    # Per (variant, layer): G on the full geometry sample, its 95% document-bootstrap interval and the share
    # of replicates in which the layer is the argmax. variant 'main' is the spec itself; other variants are
    # the spec's `sensitivity` entries (geometry options changed, no bridge).
    """CREATE TABLE IF NOT EXISTS selection_stability (
        spec_hash VARCHAR, variant VARCHAR, layer INTEGER, score DOUBLE, g_lo DOUBLE, g_hi DOUBLE,
        argmax_share DOUBLE, selected BOOLEAN, n_boot INTEGER, n_documents INTEGER, top_share_after DOUBLE,
        settings JSON, run_id VARCHAR, code_version VARCHAR, packages JSON, seed INTEGER,
        PRIMARY KEY (spec_hash, variant, layer))""",
]
# Columns added after a table first shipped: an older ledger gains them (NULL in its old rows) on the next write.
MIGRATIONS = [
    ("layer_geometry", "n_states", "INTEGER"),  # states that entered the proxies, after the outlier rule
    ("layer_geometry", "norm_ratio_max", "DOUBLE"),  # max / median raw state norm
    ("layer_geometry", "n_over_threshold", "INTEGER"),  # states above outliers.threshold x median norm
    ("layer_geometry", "top_share_before", "DOUBLE"),  # variance share of the top 0.1% states, before the rule
    ("layer_geometry", "top_share_after", "DOUBLE"),  # ... and after it
    ("layer_geometry", "top_channel", "INTEGER"),  # coordinate with the most variance after the rule
    ("layer_geometry", "top_channel_share", "DOUBLE"),  # ... and its share of the layer's variance
    ("layer_geometry", "g_lo", "DOUBLE"),
    ("layer_geometry", "g_hi", "DOUBLE"),
    ("layer_geometry", "argmax_share", "DOUBLE"),
    ("selections", "argmax_share", "DOUBLE"),  # share of document resamples in which ℓ* is the argmax
    ("selections", "n_boot", "INTEGER"),
    ("selections", "n_documents", "INTEGER"),  # distinct documents in the geometry sample
    ("selections", "block_start", "VARCHAR"),  # the token every block starts with, as text
    ("selections", "outlier_rule", "VARCHAR"),  # e.g. 'drop>20x median norm'
    ("selections", "warning", "VARCHAR"),  # set when a handful of states dominates ℓ*'s variance
    ("correlations", "spearman_p", "DOUBLE"),  # permutation p-value over layers, two-sided
    ("correlations", "kendall_p", "DOUBLE"),
    ("correlations", "n_perm", "INTEGER"),
    ("correlations", "interval_method", "VARCHAR"),
    ("correlations", "resampled", "VARCHAR"),  # one sentence: what the interval resamples
]
RESULT_TABLES = ("layer_geometry", "selections", "bridge_results", "training_curves", "samples", "correlations",
                 "selection_stability")


def ensure_schema(con) -> None:
    for stmt in SCHEMA:
        con.execute(stmt)
    for table, column, kind in MIGRATIONS:
        con.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {kind}")


class LedgerError(RuntimeError):
    pass


def ledger_path(root: Path) -> Path:
    return Path(root) / "ledger" / LEDGER_FILE


@contextmanager
def writer(root: Path):
    """A write transaction under the ledger's lock; rolled back on any error, so nothing half-written lands."""
    path = ledger_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=600):
        con = duckdb.connect(str(path))
        try:
            ensure_schema(con)
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        finally:
            con.close()


def insert_rows(con, table: str, rows: Iterable[dict]) -> int:
    rows = list(rows)
    if not rows:
        return 0
    cols = list(rows[0])
    sql = f"INSERT OR REPLACE INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})"
    con.executemany(sql, [[_cell(r[c]) for c in cols] for r in rows])
    return len(rows)


def _cell(v):
    return json.dumps(v) if isinstance(v, (dict, list)) else v


def replace_results(con, spec_hash: str, tables: dict[str, list[dict]]) -> None:
    for table in RESULT_TABLES:
        if table in tables:
            con.execute(f"DELETE FROM {table} WHERE spec_hash = ?", [spec_hash])
            insert_rows(con, table, tables[table])


@contextmanager
def reader(root: Path):
    path = ledger_path(root)
    if not path.exists():
        raise LedgerError(f"no ledger at {path} yet: `dihal run SPEC` creates it")
    try:
        con = duckdb.connect(str(path), read_only=True, config={"enable_external_access": False})
    except duckdb.IOException as err:
        raise LedgerError(f"could not open the ledger read-only ({err}); is a run ingesting right now?") from err
    try:
        yield con
    finally:
        con.close()


WRITE_HINT = "the ledger is opened read-only: statements that write (INSERT, UPDATE, DELETE, CREATE, COPY ...) are refused"


def query(root: Path, sql: str, params: list | None = None) -> tuple[list[str], list[tuple]]:
    with reader(root) as con:
        try:
            cur = con.execute(sql, params or [])
        except (duckdb.InvalidInputException, duckdb.PermissionException) as err:
            raise LedgerError(f"{WRITE_HINT}.\n  DuckDB said: {str(err).splitlines()[0]}") from None
        except duckdb.Error as err:
            raise LedgerError(f"query failed: {err}") from None
        if cur.description is None:
            return [], []
        return [d[0] for d in cur.description], cur.fetchall()
