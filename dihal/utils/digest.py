"""The sha256 of a file's bytes: how dihal names model files and checks stage outputs."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path | str) -> str:
    """Hex sha256 of the file, read in chunks (hashlib.file_digest: Python 3.11+, dihal's floor)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
