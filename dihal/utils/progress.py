"""Progress output of a long step, on stderr: a live tqdm bar on a terminal, plain lines in a log.

Stages run under `dvc repro`, whose output `dihal run` reads through a pipe, so a stage cannot tell where
its stderr ends up; the `dihal run` process can, and says so in `DIHAL_PROGRESS`:

- `bar` (also `1` or unset: a stage started by hand): tqdm's live bar, redrawn in place with `\\r`;
- `lines`: a plain line now and then with the count, elapsed time and ETA -- every 10 % of the work and
  at least every `DIHAL_PROGRESS_INTERVAL` seconds (default 30) while it advances, at most one per third
  of that interval, plus one when the step ends -- because a `\\r` redraw is unreadable in a log file;
- `0`: nothing (tests, CI).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable
from typing import TypeVar

from tqdm import tqdm as plain_tqdm
from tqdm.auto import tqdm

T = TypeVar("T")
STYLES = ("bar", "lines")
DEFAULT_INTERVAL = 30.0


def style() -> str | None:
    """`bar`, `lines`, or None when progress is off (`DIHAL_PROGRESS=0`)."""
    value = os.environ.get("DIHAL_PROGRESS", "1").strip().lower()
    if value == "0":
        return None
    return value if value in STYLES else "bar"


def enabled() -> bool:
    return style() is not None


def interval() -> float:
    """Seconds between two plain progress lines at most (`DIHAL_PROGRESS_INTERVAL`, default 30)."""
    try:
        return max(0.0, float(os.environ.get("DIHAL_PROGRESS_INTERVAL", DEFAULT_INTERVAL)))
    except ValueError:
        return DEFAULT_INTERVAL


def bar(
    iterable: Iterable[T] | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    initial: int = 0,
    leave: bool = True,
    enabled: bool | None = None,
) -> tqdm:
    """A progress bar in the style `DIHAL_PROGRESS` asks for. `enabled`: None follows `DIHAL_PROGRESS` (off at
    `0`); False shows nothing; True shows one even at `0` (a caller that already decided, as the trainers'
    `progress` argument does)."""
    kind = None if enabled is False else style() or ("bar" if enabled else None)
    common = {"total": total, "desc": desc, "unit": unit, "initial": initial, "leave": leave}
    if kind == "lines":
        return LineBar(iterable, **common)
    return tqdm(iterable, **common, disable=kind is None, file=sys.stderr, dynamic_ncols=True)


def log(message: str) -> None:
    print(f"[dihal] {message}", file=sys.stderr, flush=True)


def duration(seconds: float) -> str:
    """`4.2 s`, `42 s`, `3 min 05 s`, `2 h 07 min`: short enough for a progress line, exact enough to plan by."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class _Discard:
    """Where tqdm's own `\\r` redraws go in `lines` style: nowhere."""

    def write(self, s: str) -> int:
        return len(s)

    def flush(self) -> None:
        pass


class LineBar(plain_tqdm):
    """tqdm's counting, rate and ETA, shown as plain indented lines instead of a bar redrawn in place.

    tqdm calls `display` whenever it would redraw (at most every `mininterval`, and from its monitor thread
    when a step stalls); this decides whether that redraw is worth a line."""

    def __init__(self, iterable=None, **kwargs) -> None:
        self._every = interval()
        self._last_line = time.monotonic()
        self._last_decile = -1
        self._stream = sys.stderr
        super().__init__(iterable, file=_Discard(), mininterval=min(1.0, self._every), ascii=True, **kwargs)

    def display(self, msg=None, pos=None) -> bool:
        if msg == "":  # tqdm clearing a bar that does not stay (leave=False): there is nothing on screen
            return True
        final = self.disable  # tqdm marks a bar disabled before its closing display
        if self.n == self.initial and not final:
            return True  # the opening redraw: the stage's own announcement already says it started
        now = time.monotonic()
        decile = int(10 * self.n / self.total) if self.total else -1
        since = now - self._last_line
        due = since >= self._every or (decile > self._last_decile and since >= self._every / 3)
        if not final and (not due or (self.total and self.n >= self.total)):
            return True  # a full bar's last word is the closing line, which follows at once
        self._last_line, self._last_decile = now, decile
        try:
            print(self.line(final), file=self._stream, flush=True)
        except (OSError, ValueError):  # stderr went away: the stage goes on without its progress
            pass
        return True

    def line(self, final: bool = False) -> str:
        """`  bridge: 40% (400/1000 step), 12 s elapsed, ETA 18 s, loss=0.43` (or `… done in 30 s` at the end)."""
        d = self.format_dict
        n, total, elapsed, unit = d["n"], d["total"], d["elapsed"], d["unit"]
        count = f"{n:,}/{total:,} {unit}" if total else f"{n:,} {unit}"
        head = f"  {d['prefix'] or 'progress'}: " + (f"{100 * n / total:.0f}% ({count})" if total else count)
        if final:
            head += f", done in {duration(elapsed)}"
        else:
            head += f", {duration(elapsed)} elapsed"
            done = n - d["initial"]
            if total and done > 0 and n < total:
                head += f", ETA {duration(elapsed / done * (total - n))}"
        return head + (f", {d['postfix']}" if d["postfix"] else "")
