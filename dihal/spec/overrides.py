"""Variants of a spec without copying it: Hydra-style `-S key=value` overrides, sweeps, and `extends:`.

`-S bridge.steps=100` sets one field of the spec's YAML mapping before validation; the value is read as
YAML by the same bounded reader as a spec file, so `[1, 2]` is a list, `1e-3` a number, `null` unsets, and
`yes` is refused where a number is expected. A list *index* is a number (`sensitivity.0.name=x`).

With `multirun`, a value written `a,b,c` (commas outside brackets and quotes) is a sweep: one spec per
combination of the swept values, Hydra's `--multirun` rule. Without it the commas are part of the value.

A derived spec is named `<name>+<key>=<value>,…` so it gets its own registry entry, report and ledger
rows (the name is a label, so the hash changes only where a field does); its YAML -- the merged mapping,
under a comment naming its origin -- is what the ledger records as the spec's text, so any result can be
re-run from the ledger alone.

`extends: base.yaml` (relative to the extending file) deep-merges the spec onto the base: mappings merge
key by key, anything else (lists included) replaces. Relative paths in either file are relative to the
spec that was named on the command line. Chains are followed up to `MAX_EXTENDS` deep; a cycle is an error.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
from pathlib import Path

import yaml

from dihal.spec.errors import SpecError, short
from dihal.spec.reader import parse_yaml, read_yaml

KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.([A-Za-z_][A-Za-z0-9_]*|[0-9]+))*")
MAX_EXTENDS = 8
NAME_MAX = 120  # dihal.spec.schema.Spec.name


def _bad(text: str, expected: str) -> SpecError:
    return SpecError("-S", [("<override>", text, expected)])


def parse(text: str) -> tuple[list[str], object]:
    """`key.path=value` as (key parts, YAML value)."""
    key, eq, value = text.partition("=")
    key = key.strip()
    if not eq or not KEY.fullmatch(key):
        raise _bad(text, "KEY=VALUE with KEY a dotted spec field, e.g. bridge.steps=100 or geometry.layers=[3,7]")
    return key.split("."), parse_yaml(value, f"-S {key}") if value.strip() else None


def _split_top(value: str) -> list[str]:
    """`a,b,[c,d]` -> ['a', 'b', '[c,d]']: commas outside brackets, braces and quotes."""
    parts, depth, quote, cur = [], 0, "", []
    for ch in value:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return parts


def expand(overrides: list[str], multirun: bool = False) -> list[list[str]]:
    """The override sets to run: one, or with `multirun` the product of every comma-swept value."""
    if not multirun:
        return [list(overrides)]
    choices = []
    for text in overrides:
        key, eq, value = text.partition("=")
        choices.append([f"{key}={v}" for v in _split_top(value)] if eq else [text])
    return [list(combo) for combo in itertools.product(*choices)]


def apply(raw: dict, overrides: list[str]) -> dict:
    """A copy of the spec mapping with each override set (intermediate mappings made where missing)."""
    out = copy.deepcopy(raw)
    for text in overrides:
        parts, value = parse(text)
        node: object = out
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            where = ".".join(parts[: i + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise _bad(text, f"{'.'.join(parts[:i])} is a list of {len(node)}: index it 0..{len(node) - 1}")
                idx: int | str = int(part)
            elif isinstance(node, dict):
                idx = part
            else:
                raise _bad(text, f"{'.'.join(parts[:i])} holds {type(node).__name__}, not fields to set")
            if last:
                node[idx] = value  # type: ignore[index]
            else:
                child = node[idx] if (isinstance(node, list) or idx in node) else None  # type: ignore[operator,index]
                if child is None:
                    child = node[idx] = {}  # type: ignore[index]
                elif not isinstance(child, dict | list):
                    raise _bad(text, f"{where} is {short(child)}, not a section")
                node = child
    return out


def _compact(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), default=str)


def derived_name(name: str, overrides: list[str]) -> str:
    """`<name>+k=v,…`; too long for a name, `<name>+<digest of the overrides>`."""
    shown = ",".join(f"{'.'.join(p)}={_compact(v)}" for p, v in map(parse, overrides))
    full = f"{name}+{shown}"
    if len(full) <= NAME_MAX:
        return full
    tag = hashlib.sha256(shown.encode()).hexdigest()[:12]
    return f"{name[: NAME_MAX - len(tag) - 1]}+{tag}"


def _merge(base: object, top: object) -> object:
    if isinstance(base, dict) and isinstance(top, dict):
        return {**base, **{k: _merge(base[k], v) if k in base else v for k, v in top.items()}}
    return top


def _resolve_extends(raw: object, path: Path, seen: tuple[Path, ...]) -> object:
    if not isinstance(raw, dict) or "extends" not in raw:
        return raw
    parent = raw["extends"]
    if not isinstance(parent, str) or not parent:
        raise SpecError(str(path), [("extends", parent, "the path of a spec file to build on")])
    target = (path.parent / parent).resolve()
    if target in seen:
        raise SpecError(str(path), [("extends", parent, "a chain without cycles (this file is already in it)")])
    if len(seen) >= MAX_EXTENDS:
        raise SpecError(str(path), [("extends", parent, f"a chain of at most {MAX_EXTENDS} files")])
    base, _ = read_yaml(target)
    if not isinstance(base, dict):
        raise SpecError(str(target), [("<root>", base, "expected a mapping of spec fields")])
    base = _resolve_extends(base, target, (*seen, target))
    return _merge(base, {k: v for k, v in raw.items() if k != "extends"})


def read_spec_yaml(path: Path | str, overrides: list[str] | None = None) -> tuple[object, str]:
    """The spec mapping to validate and the YAML text to record: the file as written when nothing is
    derived (so its record and hash stay what they were), else the merged mapping under an origin comment."""
    path = Path(path)
    raw, text = read_yaml(path)
    merged = _resolve_extends(raw, path, (path.resolve(),))
    if merged is raw and not overrides:
        return raw, text
    if not isinstance(merged, dict):
        raise SpecError(str(path), [("<root>", merged, "expected a mapping of spec fields")])
    if overrides:
        merged = apply(merged, overrides)
        if isinstance(merged.get("name"), str) and merged["name"]:
            merged["name"] = derived_name(merged["name"], overrides)
    head = [f"# derived from {path.name}" + (" (extends resolved)" if "extends" in raw else "")]
    head += [f"# -S {o}" for o in overrides or []]
    body = yaml.safe_dump(merged, sort_keys=False, allow_unicode=True, width=100)
    return merged, "\n".join(head) + "\n" + body
