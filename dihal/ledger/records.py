"""The durable records next to the ledger, from which `dihal ledger rebuild` re-creates it.

The DuckDB file is derived data: result rows come from the stage outputs under `artifacts/`. What
the artifacts cannot say is kept here, written by every run before it touches DuckDB (under the
same file lock), as small text files a reader can never lock:

- `ledger/specs/<spec_hash>.json`: the spec as validated (canonical JSON, paths already resolved),
  the YAML as written, its name, first/last seen, the backbone depth the stages were planned with,
  and the provenance (run id, code version, packages) of the run whose result rows the ledger holds;
- `ledger/runs.jsonl`: one `runs` row per run, failed and interrupted ones included, append-only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from dihal.utils.atomic import write_atomic

SPEC_KEYS = ("spec_hash", "canonical_json")  # what a rebuild needs of a spec record
RUN_KEYS = ("run_id", "spec_hash", "status")  # ... and of a run


def _require_text(doc: object, keys: tuple[str, ...]) -> None:
    """ValueError unless `doc` is a dict whose `keys` all hold strings (what a rebuild reads of it)."""
    missing = [k for k in keys if not isinstance(doc, dict) or not isinstance(doc.get(k), str)]
    if missing:
        raise ValueError(f"{', '.join(missing)} missing or not text")


def specs_dir(root: Path) -> Path:
    return Path(root) / "ledger" / "specs"


def runs_log(root: Path) -> Path:
    return Path(root) / "ledger" / "runs.jsonl"


def _iso(v) -> str | None:
    return v.isoformat() if isinstance(v, datetime) else v


def _json(obj) -> str:
    return json.dumps(obj, default=_iso, ensure_ascii=False, allow_nan=True)


def read_spec_record(root: Path, spec_hash: str) -> dict | None:
    path = specs_dir(root) / f"{spec_hash}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def save(root: Path, txn: dict) -> None:
    """Update the spec's record and append the run to the run log (the caller holds the ledger's file lock)."""
    spec, run = txn["spec"], txn["run"]
    old = read_spec_record(root, spec["spec_hash"]) or {}
    seen = _iso(spec["seen_at"])
    newest = not old.get("last_seen") or seen >= old["last_seen"]
    rec = {
        "spec_hash": spec["spec_hash"],
        "name": spec["name"] if newest else old["name"],
        "canonical_json": spec["canonical_json"],
        "yaml_text": spec["yaml_text"] if newest else old["yaml_text"],
        "first_seen": min(filter(None, [old.get("first_seen"), seen])),
        "last_seen": max(filter(None, [old.get("last_seen"), seen])),
        "depth": txn.get("depth") if txn.get("depth") is not None else old.get("depth"),
        "results_run": old.get("results_run"),
    }
    prev = old.get("results_run") or {}
    if txn.get("results") is not None and _iso(run["ended_at"]) >= (prev.get("ended_at") or ""):
        rec["results_run"] = {
            "run_id": run["run_id"],
            "code_version": run["code_version"],
            "packages": run["packages"],
            "ended_at": _iso(run["ended_at"]),
        }
    write_atomic(specs_dir(root) / f"{spec['spec_hash']}.json", json.dumps(rec, default=_iso, indent=1) + "\n")
    log = runs_log(root)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as f:  # one short line per run, appended under the file lock
        f.write(_json(run) + "\n")


def spec_records(root: Path, notify: Callable[[str], None] | None = None) -> list[dict]:
    """Every readable spec record; a damaged one is skipped, and named through `notify`."""
    d = specs_dir(root)
    out = []
    for path in sorted(d.glob("*.json")) if d.is_dir() else []:
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
            _require_text(rec, SPEC_KEYS)
        except (OSError, ValueError) as err:
            if notify:  # the ledger's own specs table may still have the spec
                notify(f"rebuild: skipped the damaged spec record {path} ({type(err).__name__}: {err})")
            continue
        out.append(rec)
    return out


def run_rows(root: Path, notify: Callable[[str], None] | None = None) -> list[dict]:
    """Every run in the log (the last line wins for a run id), timestamps as datetimes. A line that is not a
    run (cut short by a crash mid-append, edited by hand) is skipped, and named through `notify`."""
    log = runs_log(root)
    rows: dict[str, dict] = {}
    if log.exists():
        for n, line in enumerate(log.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            try:
                row = json.loads(line)
                _require_text(row, RUN_KEYS)
                for key in ("started_at", "ended_at"):
                    if isinstance(row.get(key), str):
                        row[key] = datetime.fromisoformat(row[key])
            except ValueError as err:
                if notify and line.strip():
                    notify(f"rebuild: skipped line {n} of {log} ({type(err).__name__}: {err})")
                continue
            rows[row["run_id"]] = row
    return list(rows.values())
