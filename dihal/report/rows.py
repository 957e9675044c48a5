"""Reading the ledger for a report: rows as dicts, tables that may be absent, the reference texts."""

from __future__ import annotations

from dihal.ledger.schema import current_names
from dihal.utils.numbers import finite_or_none

REFERENCES = {  # reference_results.reference -> what it is; the report lists them in this order, unknown ones last
    "backbone_t1": "the backbone's own ancestral samples at temperature 1, same length and prefix as the bridge's",
    "backbone_greedy": "the backbone's greedy decoding from the same prompts",
    "real_text": "held-out validation blocks (real text)",
}

SPACE_WORDS = {  # geometry space -> what its states are, for captions (dihal.geometry.spaces defines them)
    "bridge": "each channel standardised, as the bridge's Standardizer is fit and its noise and loss live",
    "scalar": "centred and rescaled by one scalar per layer, rogue channels kept",
}

finite = finite_or_none  # NaN and None both mean 'no number' in a report; one sentinel keeps templates simple


def fetch(con, sql: str, params: list) -> list[dict]:
    """The rows of one query as dicts keyed by column name, under the current names even where the ledger has
    not been migrated since an older dihal wrote it (a report only reads: `dihal.ledger.schema.current_names`)."""
    cur = con.execute(sql, params)
    cols = list(current_names({d[0]: None for d in cur.description}))
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def space_of(row: dict) -> str:
    """The geometry space a row was measured in; rows from before spaces existed were all in the scalar one."""
    return row.get("space") or "scalar"


def has_table(con, table: str) -> bool:
    """A ledger written before a table shipped lacks it until its next write (see dihal.ledger.store)."""
    sql = "SELECT count(*) FROM information_schema.tables WHERE table_name = ?"
    return bool(con.execute(sql, [table]).fetchone()[0])
