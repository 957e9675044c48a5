"""A failed stage, told in one line: its traceback goes to `.dihal/logs/<stage>.log` instead of the terminal.

DVC prints whatever a stage writes, so a traceback would reach the user inside `dvc repro`'s output (and the
`runs` row's error, which keeps the lines naming an error). Kept outside `dihal.stages`, whose source is part
of every stage's code identity: how a failure is reported does not change what a stage computes.
"""

from __future__ import annotations

import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path


def log_path(config_path: Path | str) -> Path:
    """Where a stage's failure traceback goes: `.dihal/logs/<config stem>.log` beside `.dihal/stages/`."""
    config_path = Path(config_path)
    dihal_dir = config_path.parent.parent if config_path.parent.name == "stages" else Path(".dihal")
    return dihal_dir / "logs" / f"{config_path.stem}.log"


def failure_line(config_path: Path | str, err: BaseException) -> str:
    """Write the traceback of a failed stage to its log; return the one line to show for it."""
    name = Path(config_path).stem
    message = "; ".join(ln.strip() for ln in str(err).splitlines() if ln.strip()) or "(no message)"
    if len(message) > 1000:
        message = message[:997] + "..."
    log = log_path(config_path)
    text = f"stage {name} failed at {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC (config {config_path})\n" + "".join(
        traceback.format_exception(err)
    )
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        ignore = log.parent / ".gitignore"  # logs are per machine, never versioned
        if not ignore.exists():
            ignore.write_text("*\n")
        log.write_text(text)
        where = f"traceback in {log}"
    except OSError as write_err:  # an unwritable project: the traceback goes to stderr after all
        print(text, file=sys.stderr)
        where = f"traceback above; {log} could not be written: {write_err}"
    return f"stage {name} failed: {type(err).__name__}: {message} ({where})"
