"""Progress output: one tqdm bar per long step, with ETA, on stderr.

Stages run under `dvc repro`, which passes stderr through, so bars show up in the
terminal of `dihal run`. `DIHAL_PROGRESS=0` silences them (tests, CI logs).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def enabled() -> bool:
    return os.environ.get("DIHAL_PROGRESS", "1") != "0"


def bar(iterable: Iterable[T] | None = None, *, total: int | None = None, desc: str = "", unit: str = "it") -> tqdm:
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled(), file=sys.stderr, dynamic_ncols=True)


def log(message: str) -> None:
    print(f"[dihal] {message}", file=sys.stderr, flush=True)
