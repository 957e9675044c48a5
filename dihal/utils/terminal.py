"""Text that came from data, made safe to print.

A spec's name, a corpus token, a generated sample, a SQL result or an error message that quotes any of
them is data, and data must never steer the terminal. Two things would let it: rich markup (`[/x]` makes
rich raise, `[red]` styles the rest of a line) and control characters (an ESC can clear the screen or set
the window title; a bidi override makes text read backwards). Every value dihal prints from data passes
through `clean` (plain output: CSV, stderr lines), `text` (rich table cells and titles) or `shown` (into
rich markup): control characters become their Python escapes (`\\x1b`, `\\u202e`), visible and
unambiguous, and markup is escaped.
"""

from __future__ import annotations

import math
import re
import sys
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.text import Text

__all__ = ["clean", "console", "escape_markup", "json_safe", "shown", "text"]

# C0 and C1 controls, DEL, and the invisible direction marks and overrides (Trojan Source, CVE-2021-42574).
# Newline and tab are kept only where a caller says a line break means something.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_BREAKS = re.compile(r"[\n\t]")


def _escaped(match: re.Match) -> str:
    return repr(match.group())[1:-1]  # '\x1b' -> \x1b, '\u202e' -> \u202e, '\r' -> \r


def clean(value: Any, *, newlines: bool = False) -> str:
    """`str(value)` with every control character replaced by its escape; `newlines=True` keeps \\n and \\t."""
    s = _CONTROL.sub(_escaped, str(value))
    return s if newlines else _BREAKS.sub(_escaped, s)


def shown(value: Any, *, newlines: bool = False) -> str:
    """`clean(value)` escaped for rich markup: safe to interpolate into a markup string."""
    return escape_markup(clean(value, newlines=newlines))


_BRACKET = re.compile(r"(\\*)\[")
_TAG_AT = re.compile(r"\[[a-z#/@][^[]*?]")  # what rich.markup.RE_TAGS reads as a tag, from its "["


def escape_markup(s: str) -> str:
    """`s` as rich markup that prints exactly `s`.

    rich.markup.escape misses one case: a backslash before a "[" that does not start a tag (`\\[`) is still
    read as an escape, so the backslash vanished from the printed text. Rich reads n backslashes before a
    tag-like "[x]" as n // 2 backslashes and, for odd n, a literal tag; before any other "[" it drops one
    backslash. So: 2n + 1 before a tag, n + 1 before any other "[", and trailing backslashes doubled, so they
    cannot escape the closing tag that follows (as rich's escape does)."""

    def one(m: re.Match) -> str:
        n = len(m.group(1))
        return "\\" * (2 * n + 1 if _TAG_AT.match(s, m.end() - 1) else n + 1) + "["

    out = _BRACKET.sub(one, s)
    trailing = len(out) - len(out.rstrip("\\"))
    return out + "\\" * trailing


def text(value: Any, *, newlines: bool = False, style: str = "") -> Text:
    """`clean(value)` as a rich Text, which rich never parses as markup (table cells, titles)."""
    return Text(clean(value, newlines=newlines), style=style)


def console(*, stderr: bool = False) -> Console:
    """The console dihal prints through. Emoji codes off: `:smile:` in a name is text, not an emoji. Piped
    output (CI logs, `| less`) gets a wide fixed width instead of rich's 80-column default."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, emoji=False, width=None if stream.isatty() else 160)


def json_safe(value: Any) -> Any:
    """`value` with decimals as numbers and every non-finite float as None, because JSON has no NaN or Infinity (`json.dumps` would
    write them anyway, and strict parsers reject the result). Strings stay as they are: `json.dumps` escapes
    control characters itself."""
    if isinstance(value, Decimal):  # DuckDB's DECIMAL (a literal such as 1.5): a number, not a string
        value = int(value) if value.is_finite() and value == value.to_integral_value() else float(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
