"""What `dihal run` shows of `dvc repro`'s output, and the run log that keeps all of it.

`dvc_repro` pumps DVC's combined output (DVC's own lines and every stage's stderr) into a `StageOutput`,
which it treats as a text stream. Each complete line goes to `.dihal/logs/run-<run id>.log` as it came;
what reaches the terminal depends on the verbosity:

- `normal`: DVC's line for a stage becomes `stage 5/7 train (ℓ = 3, seed 0): <stage name>` (the index counts
  the stages this run executes or checks, the rest is read from the compiled plan); DVC's bookkeeping and
  advice and the library warnings of `dihal.execute.known_output` are left out; everything else, any
  error and any other warning included, is shown.
- `quiet`: only errors, failures and warnings (the summary that follows prints the headline).
- `verbose`: every line as DVC printed it, with the `stage i/n` lines added.

Bars that a stage redraws in place with `\\r` (a terminal: `DIHAL_PROGRESS=bar`) are passed straight through
at normal and verbose verbosity, so they stay live; only the finished bar line is logged. Every line is
shown and logged through `clean`: stage output quotes tokens and names, which are data.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from dihal.execute import known_output as known
from dihal.utils.terminal import clean

VERBOSITIES = ("quiet", "normal", "verbose")
_BREAK = re.compile(r"[\r\n]")


def run_log_path(root: Path, run_id: str) -> Path:
    return Path(root) / ".dihal" / "logs" / f"run-{run_id}.log"


def _isatty(stream) -> bool:
    try:
        return bool(stream) and stream.isatty()
    except (AttributeError, OSError, ValueError):
        return False


def describe(stage, selected_layer: int | None = None) -> str:
    """`train (ℓ = 3, seed 0)`: the stage's kind and the layer, seed or interface it has, from its params."""
    p = stage.params
    targets = stage if stage.kind == "targets" else stage.upstream.get("targets")
    train = stage if stage.kind == "train" else stage.upstream.get("train")
    bits = []
    if stage.kind == "extract":
        bits.append(f"{len(p['geometry']['layers'])} layers")
    if targets is not None:
        layer = targets.params["layer"]
        if layer != "selected":
            bits.append(f"ℓ = {layer}")
        else:
            bits.append("ℓ*" if selected_layer is None else f"ℓ* = {selected_layer}")
    interface = (train.params.get("interface") or {}).get("name") if train is not None else None
    if interface:
        bits.append(str(interface))
    if stage.kind in ("train", "evaluate") or (stage.kind == "frontier" and train is not None):
        bits.append(f"seed {p['seed']}")
    if stage.kind == "frontier" and train is None:
        bits.append("backbone")
    return stage.kind + (f" ({', '.join(bits)})" if bits else "")


class StageOutput:
    """A write-only text stream that turns DVC's output into what a person reads (see the module's docstring)."""

    def __init__(self, plan, root: Path, dest: TextIO | bool, log_path: Path | None, verbosity: str = "normal"):
        if verbosity not in VERBOSITIES:
            raise ValueError(f"verbosity {verbosity!r}: expected one of {', '.join(VERBOSITIES)}")
        self.dest, self.verbosity, self.root, self.log_path = dest, verbosity, Path(root), log_path
        self.tty = _isatty(dest)
        # What the stages are told to print (`dihal.utils.progress`): a live bar only where a person watches one.
        self.progress_style = "bar" if self.tty and verbosity != "quiet" else "lines"
        self._plan = plan
        self._stages = {st.name: st for st in plan.stages}
        self._seen: dict[str, int] = {}
        self._buf, self._after_cr, self._frame_len, self._frame_text = "", False, 0, ""
        self._context: str | None = None  # "hint" or "warning": the lines that continue one
        self._log = self._open_log(log_path)

    @staticmethod
    def _open_log(path: Path | None):
        if path is None:
            return None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            ignore = path.parent / ".gitignore"  # logs are per machine, never versioned
            if not ignore.exists():
                ignore.write_text("*\n")
            f = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the run's length, closed by close()
            f.write(f"# dihal run output, started {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC\n")
            return f
        except OSError:
            return None  # an unwritable project fails the run elsewhere, saying so; the terminal still shows it

    # the stream interface `dvc_repro` uses
    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> int:
        self._buf += text
        while (m := _BREAK.search(self._buf)) is not None:
            segment, sep = self._buf[: m.start()], m.group()
            self._buf = self._buf[m.end() :]
            if sep == "\r":
                self._frame(segment)
            else:
                self._line(segment)
            self._after_cr = sep == "\r"
        if self._buf and self._after_cr:
            self._frame(self._buf)  # a bar's latest state, drawn before its next `\r` arrives
        return len(text)

    def flush(self) -> None:
        self._emit_flush()

    def close(self) -> None:
        if self._buf:
            self._line(self._buf)
            self._buf = ""
        if self._frame_len:
            self._emit("\n")
            self._frame_len, self._frame_text = 0, ""
        self._emit_flush()
        if self._log is not None:
            self._log.close()
            self._log = None

    # terminal
    def _emit(self, s: str) -> None:
        if self.dest is False:
            return
        try:
            self.dest.write(s)
        except (OSError, ValueError):  # the terminal went away (SIGHUP): keep logging
            self.dest = False

    def _emit_flush(self) -> None:
        if self.dest is not False:
            try:
                self.dest.flush()
            except (OSError, ValueError):
                self.dest = False

    def _frame(self, segment: str) -> None:
        """A bar redrawn in place: on a terminal, shown over the previous one; elsewhere, dropped."""
        if not self.tty or self.verbosity == "quiet" or not segment:
            return
        text = clean(segment, newlines=True)
        if text == self._frame_text:  # drawn already while its `\r` was still on the way
            return
        self._emit("\r" + text + " " * max(0, self._frame_len - len(text)))
        self._frame_len, self._frame_text = len(text), text

    def _line(self, segment: str) -> None:
        if self._log is not None:
            try:
                self._log.write(clean(segment, newlines=True) + "\n")
                self._log.flush()
            except (OSError, ValueError):
                self._log = None
        shown = self._decide(segment)
        if self._frame_len:
            if shown and self._after_cr:  # the line a bar ends with, or text printed over a cleared bar
                first = shown[0] + " " * max(0, self._frame_len - len(shown[0]))
                shown = [first, *shown[1:]]
                self._emit("\r")
            elif shown:
                self._emit("\n")
            elif self._after_cr:  # a hidden line whose start was drawn as a bar's state: wipe it
                self._emit("\r" + " " * self._frame_len + "\r")
            else:
                return
            self._frame_len, self._frame_text = 0, ""
        for text in shown:
            self._emit(text + "\n")

    # what a line becomes
    def _decide(self, segment: str) -> list[str]:
        line = segment.rstrip()
        event = known.stage_event(line)
        announce = self._announce(*event) if event else None
        if self.verbosity == "verbose":
            return [*([announce] if announce else []), clean(segment, newlines=True)]
        context, self._context = self._context, None
        if context == "hint" and known.HINT_BODY.fullmatch(line):
            self._context = "hint"
            return []
        if context == "warning" and known.WARNING_SOURCE.fullmatch(line):
            return []
        if known.is_hint_header(line):
            self._context = "hint"
            return []
        if known.is_known_warning(line):
            self._context = "warning"
            return []
        if self.verbosity == "quiet":
            return [clean(segment, newlines=True)] if known.ALARMING.search(line) else []
        if announce:
            return [announce]
        if not line or known.is_chatter(line):
            return []
        return [clean(segment, newlines=True)]

    def _announce(self, event: str, name: str) -> str | None:
        stage = self._stages.get(name)
        if stage is None:  # a stage of no plan of this run (a hand-written one): DVC's own line says it
            return None
        index = self._seen.setdefault(name, len(self._seen) + 1)
        what = describe(
            stage, self._selected_layer() if stage.kind in ("targets", "train", "evaluate", "frontier") else None
        )
        how = {"ran": name, "unchanged": "up to date", "cached": "restored from DVC's run cache"}[event]
        return clean(f"stage {index}/{len(self._stages)} {what}: {how}")

    def _selected_layer(self) -> int | None:
        """ℓ* once the select stage has written it (always, before a stage that trains at ℓ* starts)."""
        try:
            return int(json.loads((self.root / self._plan.select.out / "selection.json").read_text())["layer"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
