"""The spec reference, rendered from the pydantic models' field descriptions so that it cannot drift.

    python -m dihal.spec.reference > docs/spec.md

`render()` walks `Spec` (nested sections, `X | None` sections, lists and maps of sections) and returns
Markdown: the spec-wide rules, then one table per section (field, type, default, description). A test
holds docs/spec.md equal to `render()` and every field to a description. Imports only pydantic and
dihal.spec modules (no torch): `dihal validate` stays fast.
"""

from __future__ import annotations

import json
import types
from collections.abc import Iterator
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from dihal.spec.hashing import HASHED_UNLESS_DEFAULT, HASHED_WHEN_SET
from dihal.spec.schema import LABEL_FIELDS, Spec
from dihal.spec.section import INT32_MAX

__all__ = ["models", "render", "rows"]

COMMAND = "python -m dihal.spec.reference > docs/spec.md"
NONE = "—"


def _strip(tp: Any) -> Any:
    """The annotation without Annotated's metadata."""
    return get_args(tp)[0] if get_origin(tp) is Annotated else tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _nested(tp: Any) -> tuple[type[BaseModel], str] | None:
    """The section model a field holds, and the path step into one of its items: '' (the section itself),
    '[i]' (a list of sections) or '.<key>' (a map of sections); None for a field that holds no section."""
    tp = _strip(tp)
    if _is_model(tp):
        return tp, ""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        found = [n for a in get_args(tp) if a is not type(None) and (n := _nested(a))]
        return found[0] if len(found) == 1 else None
    if origin in (tuple, list):
        args = [a for a in get_args(tp) if a is not Ellipsis]
        if len(args) == 1 and _is_model(_strip(args[0])):
            return _strip(args[0]), "[i]"
    if origin is dict and _is_model(_strip(get_args(tp)[1])):
        return _strip(get_args(tp)[1]), ".<key>"
    return None


def rows(model: type[BaseModel] = Spec, prefix: str = "") -> Iterator[tuple[str, FieldInfo, int]]:
    """Every field reachable from `model`, depth first in field order: (dotted path, field, depth)."""
    for name, field in model.model_fields.items():
        path = prefix + name
        yield path, field, path.count(".")
        inner = _nested(field.annotation)
        if inner is not None:
            sub, step = inner
            yield from rows(sub, path + step + ".")


def models(model: type[BaseModel] = Spec) -> list[type[BaseModel]]:
    """Every section model reachable from `model`, itself first."""
    out = [model]
    for field in model.model_fields.values():
        inner = _nested(field.annotation)
        if inner is not None:
            out += [m for m in models(inner[0]) if m not in out]
    return out


# --- type ---------------------------------------------------------------------------------------------


def _num(v: float) -> str:
    return f"{v:g}"


def _constraints(base: str, meta: list) -> str:
    bounds = {k: getattr(m, k) for m in meta for k in ("gt", "ge", "lt", "le") if getattr(m, k, None) is not None}
    if bounds.get("le") == INT32_MAX:  # every integer's bound: a spec-wide rule, not this field's
        del bounds["le"]
    lo = ("(", bounds["gt"]) if "gt" in bounds else ("[", bounds["ge"]) if "ge" in bounds else None
    hi = (")", bounds["lt"]) if "lt" in bounds else ("]", bounds["le"]) if "le" in bounds else None
    if lo and hi:
        base += f" in {lo[0]}{_num(lo[1])}, {_num(hi[1])}{hi[0]}"
    elif lo:
        base += f" {'>' if lo[0] == '(' else '≥'} {_num(lo[1])}"
    elif hi:
        base += f" {'<' if hi[0] == ')' else '≤'} {_num(hi[1])}"
    short = next((m.min_length for m in meta if getattr(m, "min_length", None) is not None), None)
    long = next((m.max_length for m in meta if getattr(m, "max_length", None) is not None), None)
    unit = "chars" if base.startswith("str") else "items"
    if short and long:
        base += f", {short}–{long} {unit}"
    elif short == 1:
        base = "non-empty " + base
    elif short:
        base += f", at least {short} {unit}"
    elif long:
        base += f", at most {long} {unit}"
    pattern = next((m.pattern for m in meta if getattr(m, "pattern", None)), None)
    if pattern:
        base += f" matching `{pattern}`"
    return base


def type_name(tp: Any, meta: list | tuple = (), inside: bool = False) -> str:
    """A short human form of an annotation: int > 0, one of `a`, `b`, list of …, optional …"""
    meta = list(meta)
    if get_origin(tp) is Annotated:
        base, *extra = get_args(tp)
        for x in extra:
            meta += x.metadata if isinstance(x, FieldInfo) else [x]
        return type_name(base, meta, inside)
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        given = [a for a in args if a is not type(None)]
        text = " or ".join(type_name(a, inside=inside) for a in given)
        return _constraints(text if len(given) == len(args) else "optional " + text, meta)
    if origin is Literal:
        values = [f"`{v}`" for v in get_args(tp)]
        return values[0] if len(values) == 1 else "one of " + ", ".join(values)
    if origin in (tuple, list):
        args = [a for a in get_args(tp) if a is not Ellipsis]
        return _constraints("list of " + type_name(args[0], inside=True), meta)
    if origin is dict:
        key, value = get_args(tp)
        return _constraints(f"map {type_name(key, inside=True)} → {type_name(value, inside=True)}", meta)
    if tp is dict:
        return _constraints("map", meta)
    if _is_model(tp):
        return "{" + ", ".join(tp.model_fields) + "}" if inside else "section"
    return _constraints(getattr(tp, "__name__", str(tp)), meta)


# --- default ------------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def default_text(field: FieldInfo, own_table: bool = False) -> str:
    """JSON-ish default; — when required or None; a section with its own table points there."""
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return NONE
    else:
        value = field.default
    if value is None:
        return NONE
    if isinstance(value, BaseModel) and own_table:
        return "its fields' defaults (below)"
    return "`" + json.dumps(_jsonable(value), ensure_ascii=False) + "`"


# --- rules and tables ---------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(lines: list[str], entries: list[tuple[str, FieldInfo, bool]]) -> None:
    lines += ["| field | type | default | description |", "|---|---|---|---|"]
    for path, field, own_table in entries:
        cells = (
            f"`{path}`",
            type_name(field.annotation, field.metadata),
            default_text(field, own_table),
            field.description or "",
        )
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines.append("")


def _rules(paths: list[str]) -> list[str]:
    configs = [m.model_config for m in models()]
    out = []
    if all(c.get("extra") == "forbid" for c in configs):
        out.append("Unknown keys are errors, in every section: a typo is refused, never silently ignored.")
    if all(c.get("allow_inf_nan") is False for c in configs):
        out.append("Numbers must be finite: `.inf` and `.nan` are refused.")
    out.append(f"Integers are at most {INT32_MAX} (the ledger stores 32-bit integers).")
    labels = ", ".join(f"`{p}`" for p in paths if p in LABEL_FIELDS)
    out.append(
        f"Not part of the spec hash (labels: they name, permit or place a run, never change what it computes): "
        f"{labels}. The hash is taken over the validated spec, so key order, comments, `1e-3` vs `0.001` and "
        "spelled-out defaults do not change it. Local files (`data.paths`, a local `data.dataset`, a `local` "
        "backbone's model files) enter it by their content, never their path (`dihal/spec/inputs.py`)."
    )
    when_set = {(f"{s}.{n}" if s else n) for s, n in HASHED_WHEN_SET}
    out.append(
        "Hashed only when set (added after specs were first hashed, so earlier hashes stand): "
        + ", ".join(f"`{p}`" for p in paths if p in when_set)
        + "."
    )
    unless_default = {f"{s}.{n}" for s, n in HASHED_UNLESS_DEFAULT}
    out.append(
        "Hashed only when they differ from their default, which is what was computed before they existed: "
        + ", ".join(f"`{p}`" for p in paths if p in unless_default)
        + "."
    )
    out.append(
        "A value above a field's upper bound (`dihal/spec/limits.py`) is refused unless the field's path is "
        "listed under `allow_large`."
    )
    out.append(
        "`extends: base.yaml` (relative to the file) builds on another spec: mappings merge key by key, other "
        "values replace. `-S section.field=value` on the command line sets one field and names the result "
        "`<name>+section.field=value` (`dihal/spec/overrides.py`)."
    )
    return [f"- {r}" for r in out]


def render() -> str:
    """docs/spec.md: the spec-wide rules, then one table per section, from the models' field descriptions."""
    paths = [p for p, _, _ in rows()]
    lines = [
        "# Spec reference",
        "",
        f"<!-- Generated by `{COMMAND}` from the pydantic models in dihal/spec/. Do not edit by hand. -->",
        "",
        f"Generated by `{COMMAND}` from the field descriptions of the pydantic models in `dihal/spec/`; "
        "do not edit it by hand: change the models and regenerate (a test holds the two equal).",
        "",
        "## Rules for the whole spec",
        "",
        *_rules(paths),
        "",
        "## Top level",
        "",
    ]
    top = Spec.model_fields
    _table(lines, [(name, f, _nested(f.annotation) is not None) for name, f in top.items()])
    for name, field in top.items():
        inner = _nested(field.annotation)
        if inner is None:
            continue
        sub, step = inner
        lines += [f"## `{name}`", "", _cell(field.description or ""), ""]
        _table(lines, [(p, f, False) for p, f, _ in rows(sub, name + step + ".")])
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    print(render(), end="")
