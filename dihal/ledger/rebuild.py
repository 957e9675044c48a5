"""`dihal ledger rebuild`: re-create the ledger from the stage outputs under artifacts/ and the records.

The ledger is derived data. Result rows are what `dihal.ledger.ingest` makes of a spec's stage outputs, which
are content-addressed and never change; what the artifacts cannot say -- which specs exist, the YAML
as written, the backbone depth the stages were planned with, which run's provenance the result rows
carry, and the log of runs -- is in `dihal.ledger.records` (`ledger/specs/`, `ledger/runs.jsonl`). A rebuild
therefore gives the rows the runs wrote, provenance and timestamps included.

Sources, in order: the old ledger (when it exists and can be opened read-only), the records, and spec
files named on the command line (for specs that never left a record). A spec whose artifacts are
incomplete (deleted, `dvc gc`) keeps its result rows from the old ledger when there is one, and is named
either way. The new file is built next to the old one and swapped in; the old one is kept as
`dihal.duckdb.bak`.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from dihal.ledger import ingest, provenance, records
from dihal.ledger import store as ledger
from dihal.ledger.queue import replay_pending
from dihal.ledger.schema import current_names


@dataclass
class Rebuilt:
    path: Path
    from_artifacts: list[str] = field(default_factory=list)  # spec names whose results the artifacts gave
    carried: list[str] = field(default_factory=list)  # ... copied from the old ledger (artifacts incomplete)
    missing: list[str] = field(default_factory=list)  # ... lost: artifacts incomplete and no old ledger
    no_results: list[str] = field(default_factory=list)  # specs without a successful run (nothing to rebuild)
    n_runs: int = 0
    backup: Path | None = None


def _rows(con, sql: str, params: list | None = None) -> list[dict]:
    cur = con.execute(sql, params or [])
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def _open_old(path: Path, notify):
    """The old ledger, read-only, or None when there is none or it is damaged: every table a rebuild reads
    is read once here, so a file cut short fails now, is named, and the rebuild goes on from the records."""
    if not path.exists():
        return None
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.IOException as err:
        if "lock" in str(err).lower():
            raise ledger.LedgerBusy(
                f"the ledger {path} is open for writing in another process "
                f"({ledger.lock_holder(str(err))}): close it, then rebuild",
                "",
            ) from None
        return _damaged(path, err, notify)
    except duckdb.Error as err:
        return _damaged(path, err, notify)
    try:
        present = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        for table in ("specs", "runs", *ledger.RESULT_TABLES):
            if table in present:
                con.execute(f"SELECT * FROM {table}").fetchall()
    except duckdb.Error as err:
        con.close()
        return _damaged(path, err, notify)
    return con


def _damaged(path: Path, err: Exception, notify) -> None:
    first = str(err).splitlines()[0] if str(err) else type(err).__name__
    notify(
        f"rebuild: the ledger {path} is damaged ({first}); rebuilding from artifacts/ and the records in "
        f"ledger/ alone (the damaged file is kept as {path.name}.bak)"
    )
    return None


def _specs(root: Path, old, spec_files: list[tuple], notify) -> dict[str, dict]:
    """spec_hash -> specs row plus `depth` and `results_run`, merged from the old ledger, records and files."""
    out: dict[str, dict] = {}
    if old is not None:
        for r in _rows(old, "SELECT * FROM specs"):
            out[r["spec_hash"]] = {**r, "depth": None, "results_run": None}
    for rec in records.spec_records(root, notify):
        seen = {k: datetime.fromisoformat(rec[k]) for k in ("first_seen", "last_seen") if rec.get(k)}
        prior = out.get(rec["spec_hash"], {})
        out[rec["spec_hash"]] = {
            **prior,
            **{k: rec[k] for k in ("spec_hash", "name", "canonical_json", "yaml_text")},
            **seen,
            "depth": rec.get("depth"),
            "results_run": rec.get("results_run"),
        }
    now = datetime.now(UTC).replace(tzinfo=None)
    for spec, text, depth, h, canonical in spec_files:
        out.setdefault(
            h,
            {
                "spec_hash": h,
                "name": spec.name,
                "canonical_json": canonical,
                "yaml_text": text,
                "first_seen": now,
                "last_seen": now,
                "depth": depth,
                "results_run": None,
            },
        )
        if out[h].get("depth") is None:
            out[h]["depth"] = depth
    return out


def _runs(root: Path, old, notify) -> dict[str, dict]:
    runs = {r["run_id"]: r for r in _rows(old, "SELECT * FROM runs")} if old is not None else {}
    runs.update({r["run_id"]: r for r in records.run_rows(root, notify)})
    return runs


def _provenance(s: dict, runs: dict[str, dict], old) -> dict | None:
    """Whose provenance the spec's result rows carry: the run that last ingested them."""
    if s.get("results_run"):
        return s["results_run"]
    if old is not None:
        found = _rows(
            old, "SELECT run_id, code_version, packages FROM selections WHERE spec_hash = ?", [s["spec_hash"]]
        )
        if found:
            return {**found[0], "packages": json.loads(found[0]["packages"] or "{}")}
    done = sorted(
        (r for r in runs.values() if r["spec_hash"] == s["spec_hash"] and r["status"] == "succeeded"),
        key=lambda r: r["ended_at"],
    )
    if done:
        return {k: done[-1][k] for k in ("run_id", "code_version", "packages")}
    return None


def _result_tables(root: Path, s: dict, prov: dict) -> dict[str, list[dict]]:
    """The spec's result rows from its stage outputs, exactly as `dihal run` makes them (raises when missing)."""
    from dihal.compile.plan import plan as make_plan
    from dihal.spec.hashing import from_record, spec_hash
    from dihal.spec.schema import Spec

    fields, inputs = from_record(s["canonical_json"])
    spec = Spec.model_validate({**fields, "name": s["name"] or "rebuilt"})
    depth = s.get("depth")
    if depth is None and spec.geometry.layers is None:
        from dihal.backbone.depth import backbone_depth
        from dihal.spec.paths import at_root

        depth = backbone_depth(at_root(spec.backbone, root))
    h = s["spec_hash"]
    if spec_hash(spec, inputs) != h:
        raise ValueError("the recorded spec no longer validates to its hash under this dihal (changed defaults?)")
    p = make_plan(spec, depth)
    packages = prov["packages"] if isinstance(prov["packages"], dict) else json.loads(prov["packages"] or "{}")
    run = {"run_id": prov["run_id"], "code_version": prov["code_version"], "packages": packages}
    tables = {
        **ingest.geometry_rows(p, root, h, run, spec.seed, spec.geometry.warn_top_share),
        **ingest.bridge_rows(p, root, h, run),
        **ingest.correlation_rows(p, root, h, run, spec.seed),
    }
    if all((root / ev.out).exists() for ev in p.baselines):
        tables.update(ingest.interface_rows(p, root, h, run))
    if p.frontiers and all((root / st.out).exists() for st in p.frontiers):
        tables.update(ingest.frontier_rows(p, root, h, run))
    if p.reference is not None and not (root / p.reference.out).exists():
        return tables  # a run from before reference rows existed never made them: the old ledger's rows, if any, stay
    return {**tables, **ingest.reference_rows(p, root, h, run)}


def _carry(con, old, spec_hash: str, tables=ledger.RESULT_TABLES) -> bool:
    """Copy a spec's result rows from the old ledger (by column name: older schemas lack some columns, and name
    some as they were before step 6)."""
    copied = False
    for table in tables:
        try:
            rows = _rows(old, f"SELECT * FROM {table} WHERE spec_hash = ?", [spec_hash])
        except duckdb.CatalogException:
            continue  # the old ledger predates this table
        ledger.insert_rows(con, table, [current_names(row) for row in rows])  # an old ledger has old names
        copied = copied or bool(rows)
    return copied


def _discard(path: Path) -> None:
    for p in (path, Path(str(path) + ".wal")):
        p.unlink(missing_ok=True)


def rebuild(root: Path | str, spec_files: list[tuple] = (), notify=print) -> Rebuilt:
    """Re-create ledger/dihal.duckdb; `spec_files` are (spec, yaml text, depth, spec_hash, canonical json)."""
    root = Path(root).resolve()
    with ledger.file_lock(root) as path:
        old = _open_old(path, notify)
        new = path.with_name(f".{path.name}.rebuild")
        _discard(new)
        out = Rebuilt(path)
        con = duckdb.connect(str(new))
        try:
            ledger.ensure_schema(con)
            specs, runs = _specs(root, old, list(spec_files), notify), _runs(root, old, notify)
            con.execute("BEGIN TRANSACTION")
            for s in specs.values():
                con.execute(
                    "INSERT INTO specs VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        s["spec_hash"],
                        s["name"],
                        s["canonical_json"],
                        s["yaml_text"],
                        s.get("first_seen"),
                        s.get("last_seen"),
                    ],
                )
            ledger.insert_rows(con, "runs", list(runs.values()))
            out.n_runs = len(runs)
            for s in sorted(specs.values(), key=lambda s: (s["name"] or "", s["spec_hash"])):
                label = f"{s['name']} ({s['spec_hash'][:12]})"
                prov = _provenance(s, runs, old)
                named = any(h == s["spec_hash"] for *_, h, _c in spec_files)
                if prov is None and not named:
                    out.no_results.append(label)
                    continue
                prov = prov or {
                    "run_id": f"rebuild-{uuid.uuid4().hex[:9]}",
                    "code_version": provenance.code_version(),
                    "packages": provenance.package_versions(),
                }
                try:
                    tables = _result_tables(root, s, prov)
                    ledger.replace_results(con, s["spec_hash"], tables)
                    if old is not None:  # tables the artifacts cannot give (no reference stage output yet)
                        _carry(con, old, s["spec_hash"], [t for t in ledger.RESULT_TABLES if t not in tables])
                    out.from_artifacts.append(label)
                except (OSError, KeyError, ValueError, RuntimeError) as err:
                    if old is not None and _carry(con, old, s["spec_hash"]):
                        out.carried.append(label)
                    else:
                        out.missing.append(label)
                    notify(f"rebuild: {label}: stage outputs incomplete ({type(err).__name__}: {err})")
            con.execute("COMMIT")
            replay_pending(con, root, notify)  # queued runs are in the records already: this only clears the queue
        except BaseException:
            con.close()
            _discard(new)
            raise
        finally:
            if old is not None:
                old.close()
        con.close()
        if path.exists():
            out.backup = path.with_name(path.name + ".bak")
            _discard(out.backup)
            os.replace(path, out.backup)
            if Path(str(path) + ".wal").exists():  # never let the old file's log be replayed onto the new one
                os.replace(str(path) + ".wal", str(out.backup) + ".wal")
        os.replace(new, path)
        return out
