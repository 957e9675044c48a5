"""The ledger's schema: its tables, the steps that brought it here, and the views a person queries.

The schema is kept as its history. `SCHEMA_STEPS` lists every change since the first release, and a ledger
records in `schema_version` each step it was brought to; a writer applies the steps above that, all in one
transaction, so an old file opens, migrates in place with its rows, or is left as it was. A fresh ledger runs
the same steps from the start, so the DDL below is the first release's (`score`, `erank` …) and later steps
add, rekey and rename: the current names are what `SCHEMA_STEPS` ends with (docs/ledger.md lists them).

Names. A quantity of the method (METHOD.md, docs/method.md) is stored under its symbol: κ `kappa`, σ `sigma`,
r `r`, G `g`, their z-scores `z_<symbol>` and G's interval `g_lo`/`g_hi`. Step 6 renamed the columns that said
otherwise (`RENAMED_COLUMNS`); a retired name is never used again, in any table, so a row written under an
old schema (a queued transaction, an old ledger a rebuild carries rows from, a report reading a ledger no
writer has migrated yet) reads under the current names by renaming its keys (`current_names`).
"""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb

from dihal.ledger.errors import LedgerUnavailable

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
# The result tables up to step 7, which made a view of each; a table added later makes its own in its step.
TABLES_TO_STEP_7 = (
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

# Step 6: the method's names. DuckDB renames a column in place (ALTER TABLE ... RENAME COLUMN) unless an index or
# key covers it; none of these is in a key, so no table is rebuilt (`_rekey` is the way for a key column).
RENAMED_COLUMNS = {"score": "g", "erank": "r", "z_erank": "z_r"}  # old name -> the method's symbol
RENAMED_IN = {
    "layer_geometry": ("erank", "z_erank", "score"),
    "selections": ("score",),
    "selection_stability": ("score",),
}
# The standard proxies (dihal.spec.geometry.STANDARD, named as a spec names them) -> their ledger column.
PROXY_COLUMNS = {"kappa": "kappa", "sigma": "sigma", "erank": "r"}
VIEW_SUFFIX = "_named"


def named_view(table: str) -> str:
    """The view of a result table that carries its spec's name: `bridge_results` -> `bridge_results_named`."""
    return table + VIEW_SUFFIX


def _view(table: str) -> str:
    """`<table>_named`: the spec's name and whether this hash is the one last seen under that name, then every
    column of the table (`t.*`, bound when queried, so a column a later step adds appears in the view too)."""
    return (
        f"CREATE OR REPLACE VIEW {named_view(table)} AS SELECT n.spec_name, n.spec_is_latest, t.* FROM {table} t "
        "LEFT JOIN (SELECT spec_hash, name AS spec_name, "
        "coalesce(last_seen = max(last_seen) OVER (PARTITION BY name), false) AS spec_is_latest FROM specs) n "
        "ON n.spec_hash = t.spec_hash"
    )


NAME_STEP = [
    *[
        f"ALTER TABLE {t} RENAME COLUMN {old} TO {RENAMED_COLUMNS[old]}"
        for t, olds in RENAMED_IN.items()
        for old in olds
    ],
    *[_view(t) for t in TABLES_TO_STEP_7],
]


# Step 7: MAUVE against held-out real text and its 95% bootstrap interval (dihal.analysis.mauve_metric), for every
# row the judge scores; NULL in rows measured before it (and for real_text when the pool left no block for its
# ceiling). The views are made again so they list the new columns on every DuckDB, whenever `t.*` is bound.
MAUVE_COLUMNS = [
    (table, column, "DOUBLE")
    for table in ("bridge_results", "reference_results", "interface_results")
    for column in ("mauve", "mauve_lo", "mauve_hi")
]
MAUVE_STEP = [
    *[f"ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {c} {k}" for t, c, k in MAUVE_COLUMNS],
    *[_view(t) for t in TABLES_TO_STEP_7],
]

# Step 8: eval.frontier (dihal.stages.frontier). One row per (frontier stage, point) of its frontier.json: a trained
# bridge (interface, layer, seed) or the backbone itself (interface 'backbone', layer and steps NULL) sampled at one
# temperature and DDIM step count, judged like every other generated text. `point` is the row's index in the
# stage's file (steps is NULL for the backbone, and a key column cannot be).
FRONTIER_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS frontier_points (
        spec_hash VARCHAR, stage VARCHAR, point INTEGER, interface VARCHAR, layer INTEGER, seed INTEGER,
        temperature DOUBLE, steps INTEGER, gen_ppl DOUBLE, gen_nll DOUBLE, distinct_1 DOUBLE, distinct_2 DOUBLE,
        distinct_3 DOUBLE, diversity DOUBLE, unigram_entropy DOUBLE, mauve DOUBLE, mauve_lo DOUBLE, mauve_hi DOUBLE,
        n_samples INTEGER, samples_digest VARCHAR, run_id VARCHAR, code_version VARCHAR, packages JSON,
        PRIMARY KEY (spec_hash, stage, point))""",
    _view("frontier_points"),
]
RESULT_TABLES = (*TABLES_TO_STEP_7, "frontier_points")


def current_names(row: dict) -> dict:
    """A row written under an older schema, keyed by the current column names (see RENAMED_COLUMNS)."""
    return {RENAMED_COLUMNS.get(k, k): v for k, v in row.items()}


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
        "the method's names (score -> g, erank -> r, z_erank -> z_r) and a <table>_named view per result table",
        NAME_STEP,
    ),
    (7, "MAUVE and its interval for bridge, reference and interface rows", MAUVE_STEP),
    (8, "frontier_points: gen PPL and diversity at each sampling temperature and DDIM step count", FRONTIER_SCHEMA),
]
SCHEMA_VERSION = SCHEMA_STEPS[-1][0]
_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMP, note VARCHAR)"
)


def schema_version(con) -> int:
    """The highest version recorded in the ledger; 0 for a ledger that predates the version table."""
    con.execute(_VERSION_TABLE)
    found = con.execute("SELECT max(version) FROM schema_version").fetchone()[0]
    return int(found or 0)


def ensure_schema(con) -> None:
    """Run the schema steps above the ledger's recorded version in one transaction, recording each one applied.

    A step that fails rolls every step back, so the file stays at the version it had, with its rows; the error
    is LedgerUnavailable, which makes a run queue its transaction instead of losing it."""
    con.execute("BEGIN TRANSACTION")
    try:
        found = schema_version(con)
        if found > SCHEMA_VERSION:
            raise LedgerUnavailable(
                f"the ledger has schema version {found}, newer than this dihal's {SCHEMA_VERSION}: "
                "upgrade dihal before writing to it"
            )
        now = datetime.now(UTC).replace(tzinfo=None)
        for version, note, statements in SCHEMA_STEPS:
            if version > found:
                try:
                    for stmt in statements:
                        stmt(con) if callable(stmt) else con.execute(stmt)
                except duckdb.Error as err:
                    raise LedgerUnavailable(
                        f"could not bring the ledger from schema version {found} to {SCHEMA_VERSION}: step "
                        f"{version} ({note}) failed: {str(err).splitlines()[0]}; the file is unchanged"
                    ) from None
                con.execute("INSERT OR IGNORE INTO schema_version VALUES (?, ?, ?)", [version, now, note])
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")
