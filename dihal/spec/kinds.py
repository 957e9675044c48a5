"""The stage kinds, in pipeline order, and the module that runs each: the one table every layer reads.

A stage's kind names its DVC stage and output folder prefix (`score-<hash>`), its `resources` entry,
its code hash (the source of `dihal.stages.<module>` and what it imports) and its cost formula.
"""

from __future__ import annotations

# kind -> the module under dihal/stages/ that runs it (select runs in the score module, beside score)
STAGE_MODULES: dict[str, str] = {
    "extract": "extract",
    "score": "score",
    "select": "score",
    "targets": "targets",
    "train": "train",
    "evaluate": "evaluate",
    "correlate": "correlate",
    "reference": "reference",
    "frontier": "frontier",
    "summary": "summary",
}
KINDS: tuple[str, ...] = tuple(STAGE_MODULES)
# kinds that only read the JSON files of other stages: `dihal stage` runs them without importing torch
LIGHT_KINDS: frozenset[str] = frozenset({"summary"})
