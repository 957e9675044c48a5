"""A run's ledger transaction as data: applied now, or queued on disk and replayed by the next writer.

A run's results are safe in `artifacts/` the moment `dvc repro` ends; what can still fail is the
DuckDB write (another process holds the file, the run is interrupted while waiting for it). The
transaction -- the spec row, the run's `runs` row and its result rows -- is therefore plain JSON-able
data: `commit` first keeps the durable records (`dihal.ledger.records`: the spec record and the run log that
`dihal ledger rebuild` reads), then applies the transaction, and when the file cannot be opened it writes
`ledger/pending/<run_id>.json` instead. Every later writer replays pending files first, oldest first, so
the `runs` row is always written, just possibly later.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from dihal.ledger import records
from dihal.ledger import store as ledger
from dihal.utils.atomic import write_atomic
from dihal.utils.terminal import clean

FORMAT = 1
TIMESTAMPS = ("started_at", "ended_at", "first_seen", "last_seen")


class LedgerQueued(ledger.LedgerError):
    """The ledger could not be written; the transaction waits in `path` for the next writer."""

    def __init__(self, message: str, path: Path):
        super().__init__(message)
        self.path = path


def transaction(spec: dict, run: dict, results: dict[str, list[dict]] | None = None, depth: int | None = None) -> dict:
    """spec: a `specs` row (seen_at instead of first/last_seen); run: a `runs` row; results: table -> rows, or None
    for a run that produced none (failed, interrupted). `depth` (the backbone's block count) lets a rebuild plan
    the spec's stages again without reading the model."""
    return {"format": FORMAT, "spec": spec, "run": run, "results": results, "depth": depth}


def pending_dir(root: Path) -> Path:
    return Path(root) / "ledger" / "pending"


def apply(con, txn: dict) -> None:
    """Write one transaction's rows into an open write transaction."""
    spec, run = txn["spec"], txn["run"]
    con.execute(
        "INSERT INTO specs VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (spec_hash) DO UPDATE SET "
        # a replayed older run may arrive after a newer one: the newest run's labels win, the dates span both
        "name = CASE WHEN excluded.last_seen >= specs.last_seen THEN excluded.name ELSE specs.name END, "
        "yaml_text = CASE WHEN excluded.last_seen >= specs.last_seen THEN excluded.yaml_text ELSE specs.yaml_text END, "
        "first_seen = least(specs.first_seen, excluded.first_seen), last_seen = greatest(specs.last_seen, excluded.last_seen)",
        [spec["spec_hash"], spec["name"], spec["canonical_json"], spec["yaml_text"], spec["seen_at"], spec["seen_at"]],
    )
    if txn.get("results") is not None and not _superseded(con, run):
        ledger.replace_results(con, spec["spec_hash"], txn["results"])
    ledger.insert_rows(con, "runs", [run])


def _superseded(con, run: dict) -> bool:
    """A replayed run's results never replace those of a later successful run of the same spec."""
    newer = con.execute(
        "SELECT count(*) FROM runs WHERE spec_hash = ? AND status = 'succeeded' AND ended_at > ? AND run_id <> ?",
        [run["spec_hash"], run["ended_at"], run["run_id"]],
    ).fetchone()[0]
    return newer > 0


def _encode(obj):
    if isinstance(obj, datetime):
        return obj.isoformat()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _decode(txn: dict) -> dict:
    for row in (txn["spec"], txn["run"]):
        for key in (*TIMESTAMPS, "seen_at"):
            if isinstance(row.get(key), str):
                row[key] = datetime.fromisoformat(row[key])
    return txn


def queue(root: Path, txn: dict) -> Path:
    """Write the transaction to ledger/pending/<run_id>.json (atomically: a reader never sees half a file)."""
    path = pending_dir(root) / f"{txn['run']['run_id']}.json"
    write_atomic(path, json.dumps(txn, default=_encode, indent=1, allow_nan=True) + "\n")
    return path


def pending(root: Path) -> list[Path]:
    """Queued transactions, oldest run first (a replay must not let an older run's rows win)."""
    files = list(pending_dir(root).glob("*.json")) if pending_dir(root).is_dir() else []
    return sorted(files, key=lambda p: (_ended_at(p), p.name))


def _ended_at(path: Path) -> str:
    try:
        return str(json.loads(path.read_text())["run"]["ended_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def load(path: Path) -> dict:
    return _decode(json.loads(path.read_text()))


def replay_pending(con, root: Path, notify: Callable[[str], None]) -> int:
    """Apply every queued transaction, each in its own DuckDB transaction, and delete its file once committed.

    A file that cannot be applied (corrupt, or from an incompatible dihal) stays where it is and is named, so
    it is never silently dropped and never blocks the writer that found it."""
    done = 0
    for path in pending(root):
        try:
            txn = load(path)
            con.execute("BEGIN TRANSACTION")
            try:
                apply(con, txn)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        except Exception as err:  # noqa: BLE001 - reported, kept for a human
            notify(f"ledger: could not replay {path} ({type(err).__name__}: {err}); it stays queued")
            continue
        path.unlink()
        done += 1
        notify(
            f"ledger: replayed queued run {txn['run']['run_id']} ({txn['run']['status']}, spec "
            f"{txn['spec']['name']}) from {path}"
        )
    return done


@contextmanager
def writer(root: Path, *, wait: float | None = None, notify: Callable[[str], None] | None = None):
    """`store.writer` that first replays the transactions queued by writers that could not open the file."""
    say = notify or (lambda msg: print(clean(msg, newlines=True), file=sys.stderr, flush=True))
    with ledger.writer(root, wait=wait, notify=notify, prepare=lambda con: replay_pending(con, root, say)) as con:
        yield con


def commit(root: Path, txn: dict, *, wait: float | None = None, notify: Callable[[str], None] | None = None) -> None:
    """Keep the durable records, then write the transaction to the ledger, or queue it and raise LedgerQueued.

    Queues when the file cannot be opened for writing within `wait` (LedgerUnavailable) or the wait is
    interrupted (Ctrl-C: the file is queued, then KeyboardInterrupt propagates). Any other error is a bug and
    propagates with nothing queued."""
    with ledger.file_lock(root):
        records.save(root, txn)
        try:
            with writer(root, wait=wait, notify=notify) as con:
                apply(con, txn)
        except KeyboardInterrupt:
            queue(root, txn)
            raise
        except ledger.LedgerUnavailable as err:
            path = queue(root, txn)
            raise LedgerQueued(
                f"{err}.\nThe run's results are safe in artifacts/ and its ledger rows are queued in {path}: "
                "they are written by the next command that writes the ledger (close the other connection, then "
                "`dihal ledger replay`, or run any spec again).",
                path,
            ) from err
