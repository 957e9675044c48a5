"""The lines of `dvc repro`'s output that dihal recognises, each by an exact pattern.

Everything DVC and the stages print goes to the run's log in full; on the terminal, `dihal run` replaces
DVC's per-stage lines by its own `stage i/n ...` line, and leaves out DVC's advice and the library warnings
listed here, which say nothing a dihal user can act on. A line that matches nothing here is shown as it
came: an unknown warning or any error always reaches the user. Patterns are anchored at both ends so a
line that merely contains one of these phrases is never hidden.
"""

from __future__ import annotations

import re

# DVC's per-stage lines (dvc/stage/run.py, dvc/stage/__init__.py, dvc/stage/cache.py).
RUNNING = re.compile(r"Running stage '(?P<name>[^']+)':")
UNCHANGED = re.compile(r"(?:Stage )?'(?P<name>[^']+)' didn't change, skipping")
FROM_RUN_CACHE = re.compile(r"Stage '(?P<name>[^']+)' is cached - skipping run, checking out outputs")

# DVC's bookkeeping and advice after a repro (dvc/dvcfile.py, dvc/commands/repro.py, dvc/repo/scm_context.py).
DVC_CHATTER = [
    re.compile(r"> dihal stage \S+"),  # the stage's command, which the stage line stands for
    re.compile(r"(?:Generating|Updating) lock file '[^']+'"),
    re.compile(r"Use `dvc push` to send your updates to remote storage\."),
    re.compile(r"Data and pipelines are up to date\."),
]
# A hint is a header, then blank lines and tab-indented commands (`\tgit add dvc.lock …`).
HINT_HEADERS = [
    re.compile(r"To track the changes with git, run:"),
    re.compile(r"To enable auto staging, run:"),
]
HINT_BODY = re.compile(r"(?:\t.*)?")

# Library warnings known to be harmless here. Python prints a warning as its line and then the source line
# that raised it, indented by two spaces; both are left out.
KNOWN_WARNINGS = [
    # transformers >= 5 renames the cache argument; dihal's KV-cached sampling passes `past_key_values`,
    # which every supported version accepts (dihal/stages/reference.py).
    re.compile(
        r".+:\d+: FutureWarning: `past_key_values` is deprecated (?:and will be removed in|and removed starting "
        r"from) version \S+ for `[\w.]+`\. Use `cache` instead\."
    ),
]
WARNING_SOURCE = re.compile(r"  \S.*")

# What `-q` still shows: errors, failures and warnings, from DVC or a stage.
ALARMING = re.compile(r"(?i)\b(?:error|errors|exception|traceback|failed|fatal|warning|\w+Warning)\b")


def stage_event(line: str) -> tuple[str, str] | None:
    """(`ran` | `unchanged` | `cached`, stage name) when `line` is DVC saying what it does with a stage."""
    for event, pattern in (("ran", RUNNING), ("unchanged", UNCHANGED), ("cached", FROM_RUN_CACHE)):
        m = pattern.fullmatch(line)
        if m:
            return event, m.group("name")
    return None


def is_chatter(line: str) -> bool:
    return any(p.fullmatch(line) for p in DVC_CHATTER)


def is_hint_header(line: str) -> bool:
    return any(p.fullmatch(line) for p in HINT_HEADERS)


def is_known_warning(line: str) -> bool:
    return any(p.fullmatch(line) for p in KNOWN_WARNINGS)
