"""Atomic file writes: the one way dihal replaces a file that someone else may be reading.

A reader (DVC hashing an output, a browser on a report, a resumed training run on its
checkpoint, `dihal ledger replay` on a queued transaction) must see either the old file
or the new one, never half of one. So every write goes to a uniquely named temporary file
in the same folder (a rename is only atomic within one file system, and a unique name lets
two writers race without sharing a temp file), is flushed (and fsync'd where a torn file
would cost work: checkpoints), given ordinary permissions (mkstemp makes 0600 files, which
would hide reports from a web server) and renamed into place. On any error, the temporary
file is removed and the old file is left as it was.

Kept free of heavy imports: `dihal validate` and the ledger writer use it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

FILE_MODE = 0o644


@contextmanager
def atomic_open(path: Path | str, mode: str = "w", *, fsync: bool = False) -> Iterator[IO]:
    """Open a temporary file next to `path` for writing ("w" or "wb"); on success it replaces `path`."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: Path | str, data: str | bytes, *, fsync: bool = False) -> None:
    """Replace `path` with `data` (text is written as UTF-8) so that no reader ever sees half a file."""
    with atomic_open(path, "wb" if isinstance(data, bytes) else "w", fsync=fsync) as f:
        f.write(data)
