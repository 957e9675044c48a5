"""`dihal compare A B …`: specs' headline numbers side by side, read from the ledger.

A spec is named by its name (the latest hash recorded under it) or a hash prefix; the columns are what a
reader compares first -- where diffusion enters, how sure that is, and what the bridge at ℓ* gives.
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

from dihal.ledger.console import snapshot
from dihal.ledger.store import READ_CONFIG, LedgerError
from dihal.report.rows import has_table

ROWS = [  # (label, SQL giving one value for spec_hash ?); the first table after FROM must exist for the row to have values
    ("spec hash", "SELECT left(spec_hash, 12) FROM specs WHERE spec_hash = ?"),
    ("ℓ*", "SELECT layer FROM selections WHERE spec_hash = ?"),
    ("space", "SELECT space FROM selections WHERE spec_hash = ?"),
    ("argmax share", "SELECT argmax_share FROM selections WHERE spec_hash = ?"),
    ("G at ℓ*", "SELECT g FROM selections WHERE spec_hash = ?"),
    (
        "bridge val loss at ℓ*",
        "SELECT avg(b.bridge_val_loss) FROM bridge_results b JOIN selections s USING (spec_hash) "
        "WHERE b.spec_hash = ? AND b.layer = s.layer",
    ),
    (
        "gen PPL at ℓ*",
        "SELECT avg(b.gen_ppl) FROM bridge_results b JOIN selections s USING (spec_hash) "
        "WHERE b.spec_hash = ? AND b.layer = s.layer",
    ),
    (
        "diversity at ℓ*",
        "SELECT avg(b.diversity) FROM bridge_results b JOIN selections s USING (spec_hash) "
        "WHERE b.spec_hash = ? AND b.layer = s.layer",
    ),
    ("real-text gen PPL", "SELECT avg(gen_ppl) FROM reference_results WHERE spec_hash = ? AND reference = 'real_text'"),
    (
        "C1 Spearman ρ",
        "SELECT spearman_rho FROM correlations WHERE spec_hash = ? ORDER BY NOT selection_space, space LIMIT 1",
    ),
]


def resolve(con, wanted: str) -> tuple[str, str]:
    """(spec_hash, name) of a spec named by its name (latest seen) or a hash prefix of at least 6 characters."""
    rows = con.execute(
        "SELECT spec_hash, name FROM specs WHERE name = ? ORDER BY last_seen DESC NULLS LAST LIMIT 1", [wanted]
    ).fetchall()
    if not rows and len(wanted) >= 6:
        rows = con.execute("SELECT spec_hash, name FROM specs WHERE starts_with(spec_hash, ?)", [wanted]).fetchall()
        if len(rows) > 1:
            raise LedgerError(f"{wanted!r} is the start of {len(rows)} spec hashes: give more of it")
    if not rows:
        raise LedgerError(f"no spec named {wanted!r} (or with a hash starting so) in the ledger: `dihal ledger runs`")
    return rows[0][0], rows[0][1]


def compare(root: Path, wanted: list[str]) -> tuple[list[str], list[tuple[str, list[object]]]]:
    """(spec names, [(row label, one value per spec)]); a value is None where a spec has no such result.
    One read-only connection to a snapshot (brought to the current schema, so a ledger an older dihal wrote
    answers under today's names), closed before anything is printed."""
    with snapshot(Path(root)) as copy:
        con = duckdb.connect(str(copy), read_only=True, config=READ_CONFIG)
        try:
            specs = [resolve(con, w) for w in wanted]
            rows = []
            for label, sql in ROWS:
                table = re.search(r"\bFROM (\w+)", sql).group(1)  # older ledgers may lack reference_results
                present = has_table(con, table)
                values = []
                for h, _ in specs:
                    got = con.execute(sql, [h]).fetchall() if present else []
                    values.append(got[0][0] if got else None)
                rows.append((label, values))
        finally:
            con.close()
    return [name for _, name in specs], rows
