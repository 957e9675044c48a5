"""How a spec problem is told: the field path, the bad value (shortened), what was expected.

Kept apart from the schema so that every reader of a spec -- the YAML reader, the schema, the
resource checks, the limits -- reports problems the same way. Values are shown with a bounded
`reprlib` repr: a value may be an alias-expanded structure or a megabyte-long string, and an
error message must never cost more than the spec it describes.
"""

from __future__ import annotations

import difflib
import reprlib
import typing

from pydantic import BaseModel, ValidationError

INT32_MAX = 2**31 - 1  # the ledger's INTEGER columns (seed, layer, step, ...) are 32-bit

_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxdict, _repr.maxlist, _repr.maxtuple, _repr.maxset = 2, 4, 4, 4, 4
_repr.maxstring, _repr.maxother, _repr.maxlong = 60, 60, 40


class SpecError(Exception):
    """A spec problem a user must fix: each item is (field path, bad value, what was expected)."""

    def __init__(self, source: str, problems: list[tuple[str, object, str]]):
        self.source = source
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        lines = [f"{self.source}: {len(self.problems)} problem(s) in the spec"]
        for path, value, expected in self.problems:
            lines.append(f"  {path}: got {short(value)} — {expected}")
        return "\n".join(lines)


def short(value: object) -> str:
    """A repr of at most ~80 characters that never walks more than a few items of a structure."""
    try:
        text = _repr.repr(value)
    except Exception:  # a value whose repr fails (an int past Python's digit limit): say what it is
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


def field_path(loc: tuple) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif "[" in str(item):
            continue  # a union branch label from pydantic ("tuple[int, ...]"), not part of the user's path
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "<root>"


_MISSING = object()


def _value_at(raw: object, loc: tuple) -> object:
    cur = raw
    for item in loc:
        if isinstance(cur, dict) and item in cur:
            cur = cur[item]
        elif isinstance(cur, (list, tuple)) and isinstance(item, int) and item < len(cur):
            cur = cur[item]
        else:
            return _MISSING
    return cur


def _message(e: dict) -> str:
    msg = e["msg"].removeprefix("Value error, ").replace("a valid tuple", "a list")
    ctx = e.get("ctx") or {}
    if e["type"] == "less_than_equal" and ctx.get("le") == INT32_MAX:
        return f"an integer at most {INT32_MAX} (the ledger stores 32-bit integers)"
    if e["type"] == "finite_number":
        return "a finite number (not .inf or .nan)"
    if e["type"] == "too_short":
        return f"a list of at least {ctx.get('min_length', 1)} item(s)"
    return msg


def _model_in(tp: object) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (`X`, `X | None`, `tuple[X, ...]`), if any."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    for arg in typing.get_args(tp):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _fields_at(model: type[BaseModel] | None, loc: tuple) -> list[str]:
    """The field names of the section at `loc` (list indices skipped), for did-you-mean."""
    cls: type[BaseModel] | None = model
    for part in loc:
        if cls is None:
            return []
        if isinstance(part, int):
            continue
        f = cls.model_fields.get(part)
        cls = _model_in(f.annotation) if f is not None else None
    return list(cls.model_fields) if cls is not None else []


def problems_of(
    err: ValidationError, raw: object, model: type[BaseModel] | None = None
) -> list[tuple[str, object, str]]:
    """Each validation error as (field path, value as written, what was expected); an unknown key names the
    closest field of its section when `model` (the spec's model) is given."""
    out = []
    for e in err.errors(include_url=False):
        loc = tuple(e["loc"])
        value = _value_at(raw, loc)
        msg = _message(e)
        if e["type"] == "extra_forbidden":
            parent = field_path(loc[:-1])
            msg = f"unknown key (not a field of {parent if loc[:-1] else 'the spec'})"
            close = difflib.get_close_matches(str(loc[-1]), _fields_at(model, loc[:-1]), n=1, cutoff=0.6)
            if close:
                msg += f"; did you mean {close[0]!r}?"
        elif e["type"] == "missing":
            value = "<missing>"
        out.append((field_path(loc), e.get("input") if value is _MISSING else value, msg, e["type"]))
    return _merge_union_branches(out)


def _merge_union_branches(found: list[tuple]) -> list[tuple[str, object, str]]:
    """A union field (a list or 'selected') fails once per branch: report it once.

    A branch error on a deeper path (`bridge.layers[0]`) is the real problem, so the
    literal branch's complaint about the parent is dropped; same-path branch errors
    are joined with "or".
    """
    merged: dict[str, tuple[str, object, str]] = {}
    for path, value, msg, kind in found:
        deeper = any(o[0].startswith(path + "[") or o[0].startswith(path + ".") for o in found if o[0] != path)
        if kind == "literal_error" and deeper:
            continue
        if path in merged:
            merged[path] = (path, value, merged[path][2] + " or " + msg.removeprefix("Input should be "))
        else:
            merged[path] = (path, value, msg)
    return list(merged.values())
