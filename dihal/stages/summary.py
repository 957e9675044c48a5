"""summary: one spec's headline numbers in one small DVC metrics file, `metrics/summary-<spec name>.json`.

It reads the outputs of the stages it depends on (select, every bridge evaluate, reference, correlate), never
the ledger, so a bare `dvc repro` or `dvc exp run` refreshes it like any other stage, and the numbers are the
ones `dihal run` then files in the ledger. It imports no torch (`dihal.spec.kinds.LIGHT_KINDS`): reading a few
JSON files should not cost a second of import. The fields are defined in `dihal.stages.dvc_files.summary_metrics`.
"""

from __future__ import annotations

import json
from pathlib import Path

from dihal.stages import dvc_files
from dihal.stages.common import StageConfig, read_json
from dihal.utils.atomic import write_atomic


def run(cfg: StageConfig) -> None:
    selection = read_json(cfg.inputs["select"] / "selection.json")
    evaluations = [
        read_json(d / "metrics.json") for role, d in sorted(cfg.inputs.items()) if role.startswith("evaluate")
    ]
    references = read_json(cfg.inputs["reference"] / "references.json") if "reference" in cfg.inputs else []
    correlation = read_json(cfg.inputs["correlate"] / "correlation.json") if "correlate" in cfg.inputs else None
    metrics = dvc_files.summary_metrics(selection, evaluations, references, correlation)
    # in reading order (ℓ*, the bridge, references, C1), which is the column order `dvc exp show` keeps
    text = json.dumps(metrics, indent=2, allow_nan=False) + "\n"
    write_atomic(cfg.out / "summary.json", text)
    write_atomic(Path(cfg.results["metrics"]), text)
