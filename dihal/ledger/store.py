"""The DuckDB ledger: every result, keyed by spec hash, with its provenance.

Stages write files (DVC outputs); the ledger is filled once at the end of a run,
in one transaction under a file lock, because DuckDB admits one writing process
and parallel runs must neither corrupt nor lose rows. Results are replaced per
spec hash (same spec → same rows, never duplicates); the runs table is the log of
every attempt, failed ones included. Queries go through a read-only connection
with external access disabled and its configuration locked, and only single
plain reads are accepted (`check_read_only`), so a query can neither change the
ledger, its session settings, nor touch files.

The ledger is derived data. Any other process that holds the file open -- even a
read-only notebook or the DuckDB CLI -- makes DuckDB refuse a writer, so a writer
waits for it with a bounded back-off (`DIHAL_LEDGER_WAIT` seconds), says once
which process holds the file, and then gives up cleanly: the caller queues its
transaction (`dihal.ledger.queue`) and the next writer replays it. DuckDB refuses
readers while another process writes, too, so readers (reports, `dihal ledger
sql`, a concurrent run's summary) wait the same way, then fail with a LedgerError.
Everything in the file can be re-created from `artifacts/` and the records under
`ledger/` (`dihal ledger rebuild`).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import duckdb
from filelock import FileLock

from dihal.utils.terminal import clean

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
# Tables added after the first schema, created by their own SCHEMA_STEPS entry (so existing ledgers gain them).
REFERENCE_SCHEMA = [
    # Per (reference, bridge seed): what the judge makes of text no bridge produced -- the backbone's own
    # samples (backbone_t1: temperature 1; backbone_greedy) and held-out validation blocks (real_text) --
    # with the bridge's prompts, length and text metrics, so a bridge's gen_ppl has a scale.
    """CREATE TABLE IF NOT EXISTS reference_results (
        spec_hash VARCHAR, reference VARCHAR, seed INTEGER, gen_ppl DOUBLE, gen_nll DOUBLE, distinct_1 DOUBLE,
        distinct_2 DOUBLE, distinct_3 DOUBLE, diversity DOUBLE, unigram_entropy DOUBLE, n_samples INTEGER,
        seq_len INTEGER, samples_digest VARCHAR, run_id VARCHAR, code_version VARCHAR, packages JSON,
        PRIMARY KEY (spec_hash, reference, seed))""",
]
INTERFACE_SCHEMA = [
    # C3: per (interface, layer, seed) one trained denoiser judged like the bridge. 'hidden' rows are the bridge's
    # own (also in bridge_results); the others are the baselines of dihal.interfaces, trained with the same
    # denoiser and protocol. The budget columns say what each row spent: diffusion steps and denoiser parameters
    # (matched across interfaces unless budget_matched is false), and its recovery part's steps and parameters.
    """CREATE TABLE IF NOT EXISTS interface_results (
        spec_hash VARCHAR, interface VARCHAR, layer INTEGER, seed INTEGER, bridge_val_loss DOUBLE,
        recovery_ce DOUBLE, recovery_token_acc DOUBLE, recovery_clean_agreement DOUBLE, recovery_coverage DOUBLE,
        gen_ppl DOUBLE, gen_nll DOUBLE, distinct_1 DOUBLE, distinct_2 DOUBLE, distinct_3 DOUBLE, diversity DOUBLE,
        unigram_entropy DOUBLE, samples_digest VARCHAR, diffusion_steps INTEGER, denoiser_params INTEGER,
        recovery_steps INTEGER, recovery_params INTEGER, budget_matched BOOLEAN, train_seconds DOUBLE,
        recovery_seconds DOUBLE, eval_seconds DOUBLE, settings JSON, run_id VARCHAR, code_version VARCHAR,
        packages JSON, PRIMARY KEY (spec_hash, interface, layer, seed))""",
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
# Geometry per space (dihal.geometry.spaces): layer_geometry, selection_stability and correlations gain `space` in
# their key. Rows written before spaces existed were measured in the one-scalar space, so they are labelled 'scalar'.
SPACE_COLUMNS = [
    ("layer_geometry", "space", "VARCHAR"),
    ("layer_geometry", "space_best", "BOOLEAN"),  # the layer is this space's argmax of G
    ("layer_geometry", "space_channel_share", "DOUBLE"),  # the largest channel's variance share, in this space
    ("layer_geometry", "top_direction_share", "DOUBLE"),  # the largest principal direction's share, in this space
    ("layer_geometry", "top_channel_tokens", "JSON"),  # the tokens that light top_channel most (geometry/channels.py)
    ("selection_stability", "space", "VARCHAR"),
    ("selections", "space", "VARCHAR"),  # the space ℓ* was chosen in
    ("selections", "confidence", "VARCHAR"),  # ℓ*'s argmax share and contenders, in words (dihal.analysis.verdicts)
    ("correlations", "space", "VARCHAR"),
    ("correlations", "selection_space", "BOOLEAN"),  # this row's space is the one ℓ* was chosen in
]
# MAUVE against held-out real text and its 95% bootstrap interval (dihal.analysis.mauve_metric), for every row the
# judge scores; NULL in rows measured before it (and for real_text when the pool left no block for its ceiling).
MAUVE_COLUMNS = [
    (table, column, "DOUBLE")
    for table in ("bridge_results", "reference_results", "interface_results")
    for column in ("mauve", "mauve_lo", "mauve_hi")
]
SPACE_KEYS = {
    "layer_geometry": ("spec_hash", "space", "layer"),
    "selection_stability": ("spec_hash", "variant", "space", "layer"),
    "correlations": ("spec_hash", "space"),
}


def _rekey(table: str, key: tuple[str, ...]):
    """A schema step that rebuilds `table` with primary key `key` (DuckDB cannot alter a primary key in place)."""

    def step(con) -> None:
        cols = con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? "
            "ORDER BY ordinal_position",
            [table],
        ).fetchall()
        defs = ", ".join(f'"{c}" {t}' for c, t in cols)
        con.execute(f"CREATE TABLE {table}__rekey ({defs}, PRIMARY KEY ({', '.join(key)}))")
        con.execute(f"INSERT INTO {table}__rekey SELECT * FROM {table}")
        con.execute(f"DROP TABLE {table}")
        con.execute(f"ALTER TABLE {table}__rekey RENAME TO {table}")

    return step


SPACE_STEP = [
    *[f"ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {c} {k}" for t, c, k in SPACE_COLUMNS],
    *[
        f"UPDATE {t} SET space = 'scalar' WHERE space IS NULL"
        for t in ("layer_geometry", "selection_stability", "selections", "correlations")
    ],
    "UPDATE correlations SET selection_space = true WHERE selection_space IS NULL",
    *[_rekey(t, key) for t, key in SPACE_KEYS.items()],
]
RESULT_TABLES = (
    "layer_geometry",
    "selections",
    "bridge_results",
    "training_curves",
    "samples",
    "correlations",
    "selection_stability",
    "reference_results",
    "interface_results",
)

# The schema's history. A ledger records in `schema_version` each version it was brought to, and a writer runs
# the steps above the highest one. A ledger without that table predates it (it may be at any point up to
# version 2) and runs every step: steps 1 and 2 are idempotent (CREATE ... IF NOT EXISTS, ADD COLUMN IF NOT
# EXISTS), which is what makes that safe. A schema change appends a step; a ledger written by a newer dihal
# (a version above SCHEMA_VERSION) is never written to.
SCHEMA_STEPS: list[tuple[int, str, list]] = [
    (1, "the tables, without the columns MIGRATIONS adds", SCHEMA),
    (
        2,
        "outlier diagnostics, stability intervals, permutation p-values (MIGRATIONS)",
        [f"ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {c} {k}" for t, c, k in MIGRATIONS],
    ),
    (3, "reference_results: the backbone's own samples and held-out text, judged like the bridge", REFERENCE_SCHEMA),
    (4, "interface_results: C3's interfaces (the bridge and its baselines) at a matched budget", INTERFACE_SCHEMA),
    (5, "geometry per space: `space` in the keys of layer_geometry, selection_stability and correlations", SPACE_STEP),
    (
        6,
        "MAUVE and its interval for bridge, reference and interface rows",
        [f"ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {c} {k}" for t, c, k in MAUVE_COLUMNS],
    ),
]
SCHEMA_VERSION = SCHEMA_STEPS[-1][0]
_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMP, note VARCHAR)"
)


class LedgerError(RuntimeError):
    pass


class LedgerUnavailable(LedgerError):
    """The ledger file could not be opened for writing (held by another process, or unreadable)."""


class LedgerBusy(LedgerUnavailable):
    """Another process held the file for the whole wait; `holder` names it as DuckDB reported it."""

    def __init__(self, message: str, holder: str):
        super().__init__(message)
        self.holder = holder


def schema_version(con) -> int:
    """The highest version recorded in the ledger; 0 for a ledger that predates the version table."""
    con.execute(_VERSION_TABLE)
    found = con.execute("SELECT max(version) FROM schema_version").fetchone()[0]
    return int(found or 0)


def ensure_schema(con) -> None:
    """Run the schema steps above the ledger's recorded version, and record each one applied."""
    found = schema_version(con)
    if found > SCHEMA_VERSION:
        raise LedgerUnavailable(
            f"the ledger has schema version {found}, newer than this dihal's {SCHEMA_VERSION}: "
            "upgrade dihal before writing to it"
        )
    now = datetime.now(UTC).replace(tzinfo=None)
    for version, note, statements in SCHEMA_STEPS:
        if version > found:
            for stmt in statements:
                stmt(con) if callable(stmt) else con.execute(stmt)
            con.execute("INSERT OR IGNORE INTO schema_version VALUES (?, ?, ?)", [version, now, note])


def ledger_path(root: Path) -> Path:
    return Path(root) / "ledger" / LEDGER_FILE


def ledger_wait() -> float:
    """Seconds a writer waits for another process to release the file (`DIHAL_LEDGER_WAIT`, default 60)."""
    try:
        return max(0.0, float(os.environ.get("DIHAL_LEDGER_WAIT", "60")))
    except ValueError:
        return 60.0


def _stderr(msg: str) -> None:
    print(clean(msg, newlines=True), file=sys.stderr, flush=True)


def lock_holder(error_text: str) -> str:
    """'PID 123: python3 -m jupyter ...' from DuckDB's lock error, with the command line when /proc has it."""
    m = re.search(r"Conflicting lock is held in (.*?) \(PID (\d+)\)", error_text)
    if not m:
        return "another process"
    exe, pid = m.group(1), m.group(2)
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        cmd = ""
    cmd = cmd or exe
    return f"PID {pid}: {cmd[:117] + '...' if len(cmd) > 120 else cmd}"


def connect_writable(
    path: Path,
    wait: float | None = None,
    notify: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
):
    """Open the ledger for writing, waiting up to `wait` seconds (doubling back-off) while another process holds it.

    DuckDB's own error names the holding process; it is shown once, with what to do, so a user whose notebook
    holds the file can close it while the run waits instead of finding the run failed afterwards.
    """
    return _connect_waiting(path, "writing", {}, wait, notify, sleep)


# What a read-only connection may do: nothing outside the ledger file (no file reads or writes, no extensions,
# no ATTACH) and no setting changes (profiling output, threads, optimizer ...), enforced by DuckDB itself.
READ_CONFIG = {"enable_external_access": False, "lock_configuration": True}
MAX_DELAY = 1.0  # longest pause between tries: a reader or writer notices a released file within a second


def connect_readonly(
    path: Path,
    wait: float | None = None,
    notify: Callable[[str], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
):
    """Open the ledger read-only, waiting like a writer while another process writes it.

    DuckDB lets one process hold a writable connection and refuses every other process, readers included, so
    a report rendered while a concurrent run ingests would otherwise fail at once; ingests are short
    transactions, so waiting for them is the right thing to do.
    """
    return _connect_waiting(path, "reading", READ_CONFIG, wait, notify, sleep)


def _connect_waiting(
    path: Path,
    purpose: str,
    config: dict,
    wait: float | None,
    notify: Callable[[str], None] | None,
    sleep: Callable[[float], None],
):
    """duckdb.connect, retried with a doubling back-off (capped at MAX_DELAY) while a lock conflict lasts.

    The holder is named once; after `wait` seconds the conflict becomes LedgerBusy, any other I/O error
    LedgerUnavailable -- never a raw duckdb exception."""
    wait = ledger_wait() if wait is None else wait
    notify = notify or _stderr
    deadline, delay, told = time.monotonic() + wait, 0.05, False
    while True:
        try:
            return duckdb.connect(str(path), read_only=purpose == "reading", config=config)
        except duckdb.IOException as err:
            text = str(err)
            if "lock" not in text.lower():
                raise LedgerUnavailable(f"could not open the ledger {path} for {purpose}: {text}") from None
            holder = lock_holder(text)
            left = deadline - time.monotonic()
            if left <= 0:
                raise LedgerBusy(
                    f"the ledger {path} stayed open in another process ({holder}) for {wait:g} s; "
                    f"could not open it for {purpose}",
                    holder,
                ) from None
            if not told:
                notify(
                    f"ledger: {path} is open in another process ({holder}). Close that connection (a notebook's "
                    f"duckdb.connect, the DuckDB CLI) if it is not a dihal run; waiting up to {wait:g} s "
                    f"(DIHAL_LEDGER_WAIT) before {purpose} ..."
                )
                told = True
            sleep(min(delay, left))
            delay = min(delay * 2, MAX_DELAY)


_LOCKS: dict[str, FileLock] = {}


@contextmanager
def file_lock(root: Path):
    """Serialises dihal's own writers (and the records they keep next to the ledger) across processes.

    One FileLock object per path, so that a holder may take it again (commit → writer) without deadlocking."""
    path = ledger_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = str(path.resolve()) + ".lock"
    lock = _LOCKS.setdefault(key, FileLock(key, timeout=600))
    with lock:
        yield path


@contextmanager
def writer(
    root: Path,
    *,
    wait: float | None = None,
    notify: Callable[[str], None] | None = None,
    prepare: Callable[[object], None] | None = None,
):
    """A write transaction under the ledger's lock; rolled back on any error, so nothing half-written lands.

    `prepare(con)` runs first, outside the transaction: `dihal.ledger.queue.writer` replays the transactions
    earlier writers queued there, so a queued run lands as soon as any writer gets through. Raises LedgerBusy
    when another process holds the file longer than `wait`.
    """
    with file_lock(root) as path:
        con = connect_writable(path, wait, notify)
        try:
            ensure_schema(con)
            if prepare is not None:
                prepare(con)
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        finally:
            con.close()


_BATCH = 256  # rows per INSERT: DuckDB's executemany binds row by row (~0.5 s of a warm quickstart run)


def insert_rows(con, table: str, rows: Iterable[dict]) -> int:
    """INSERT OR REPLACE rows (dicts with the same keys) in multi-row statements."""
    rows = list(rows)
    if not rows:
        return 0
    cols = list(rows[0])
    one = f"({', '.join('?' for _ in cols)})"
    head = f"INSERT OR REPLACE INTO {table} ({', '.join(cols)}) VALUES "
    for start in range(0, len(rows), _BATCH):
        chunk = rows[start : start + _BATCH]
        con.execute(head + ", ".join([one] * len(chunk)), [_cell(r[c]) for r in chunk for c in cols])
    return len(rows)


def _cell(v):
    return json.dumps(v) if isinstance(v, (dict, list)) else v


def replace_results(con, spec_hash: str, tables: dict[str, list[dict]]) -> None:
    for table in RESULT_TABLES:
        if table in tables:
            con.execute(f"DELETE FROM {table} WHERE spec_hash = ?", [spec_hash])
            insert_rows(con, table, tables[table])


@contextmanager
def reader(root: Path, *, wait: float | None = None, notify: Callable[[str], None] | None = None):
    """A read-only connection (see READ_CONFIG), waiting up to `wait` s while another process writes the file.

    Callers keep it open only while they fetch rows (render after closing), so a reader delays a concurrent
    writer by one short read at most."""
    path = ledger_path(root)
    if not path.exists():
        raise LedgerError(f"no ledger at {path} yet: `dihal run SPEC` creates it")
    con = connect_readonly(path, wait, notify)
    try:
        yield con
    finally:
        con.close()


WRITE_HINT = (
    "the ledger is opened read-only: statements that write (INSERT, UPDATE, DELETE, CREATE, COPY ...) are refused"
)

# PRAGMAs that only report (DuckDB rewrites each into a read of a table function); every other PRAGMA changes a
# setting or the file and is refused, as are SET, CALL, ATTACH, COPY, EXPORT, LOAD/INSTALL and the rest.
READ_PRAGMAS = frozenset(
    {
        "table_info",
        "show",
        "show_tables",
        "show_tables_expanded",
        "show_databases",
        "database_list",
        "database_size",
        "storage_info",
        "metadata_info",
        "version",
        "platform",
        "functions",
        "collations",
        "user_agent",
    }
)
READ_STATEMENTS = ("SELECT", "EXPLAIN")  # SELECT covers FROM-first, WITH, VALUES, SHOW, DESCRIBE, SUMMARIZE


def check_read_only(sql: str) -> None:
    """Refuse (LedgerError) anything but one plain read, classified by DuckDB's own parser, before it runs.

    The connection's settings (READ_CONFIG) stop writes, file access and setting changes too; this check is the
    first line: it refuses with a message that says why, and it refuses what those settings let through (a
    second statement, CALL, CHECKPOINT, PRAGMAs that are not settings)."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as err:
        raise LedgerError(f"query failed: {err}") from None
    except (TypeError, UnicodeError):  # bytes that are not UTF-8 (a shell passes them as surrogates)
        raise LedgerError("refused: the query is not valid UTF-8 text") from None
    if len(statements) != 1:
        raise LedgerError(
            f"refused: give exactly one read-only statement (got {len(statements)}); a PRAGMA or SET "
            "in front of a query would change the session's settings"
        )
    stmt = statements[0]
    kind = stmt.type.name
    if kind == "PRAGMA":
        m = re.match(r"\s*PRAGMA\s+(\w+)", stmt.query, re.IGNORECASE)
        name = m.group(1).lower() if m else "?"
        if name not in READ_PRAGMAS:
            raise LedgerError(f"{WRITE_HINT}; PRAGMA {name} is refused (allowed: {', '.join(sorted(READ_PRAGMAS))})")
    elif kind not in READ_STATEMENTS:
        hint = "; for a table function use SELECT * FROM f(...)" if kind == "CALL" else ""
        raise LedgerError(
            f"{WRITE_HINT}; a {kind} statement is refused: only SELECT (SHOW, DESCRIBE, ...), "
            f"EXPLAIN and read-only PRAGMAs run{hint}"
        )


def query_error(err: duckdb.Error) -> LedgerError:
    """A DuckDB error from a read-only query, as a LedgerError: a refused write or file access says why."""
    if isinstance(err, duckdb.InvalidInputException | duckdb.PermissionException):
        return LedgerError(f"{WRITE_HINT}.\n  DuckDB said: {str(err).splitlines()[0]}")
    return LedgerError(f"query failed: {err}")


def query(root: Path, sql: str, params: list | None = None) -> tuple[list[str], list[tuple]]:
    """Columns and rows of one read-only statement; anything else, or any DuckDB error, is a LedgerError."""
    check_read_only(sql)
    with reader(root) as con:
        try:
            cur = con.execute(sql, params or [])
            if cur.description is None:
                return [], []
            return [d[0] for d in cur.description], cur.fetchall()
        except duckdb.Error as err:
            raise query_error(err) from None
