"""Reading a spec file: UTF-8 text, bounded YAML, no duplicate keys.

A spec is small, hand-written text, so anything else is a mistake or an attack, and is
refused before it can cost time or memory: a file over 1 MiB, bytes that are not UTF-8,
nesting deeper than 32 levels (PyYAML's composer recurses), and aliases that expand to
more than 100,000 values (a 342-byte "billion laughs" file otherwise expands to 10^9).
YAML lets a later duplicate key silently win; here it is an error naming both lines.

YAML 1.1's other booleans (yes/no/on/off, y/n in some loaders) are refused: `seed: yes` would otherwise
run as seed 1 and `k: on` as k = 1, silently.

Nesting is checked on the event stream and the rest on PyYAML's node graph, all before any
Python object is built, so a bomb is measured, not expanded.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import yaml

from dihal.spec.errors import SpecError

MAX_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_VALUES = 100_000  # scalars, lists and mappings after alias expansion; the full default spec has ~100
_MERGE = "tag:yaml.org,2002:merge"
_BOOL = "tag:yaml.org,2002:bool"


class _Refused(Exception):
    def __init__(self, path: str, value: object, expected: str):
        super().__init__(expected)
        self.problem = (path, value, expected)


# libyaml when PyYAML has it (10-50x faster on hostile input); the pure-Python loader otherwise.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _check_depth(text: str) -> None:
    """Refuse deep nesting from the event stream, which is read lazily and without recursion: the
    composer that builds the node graph recurses once per level and must never see 100k levels."""
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise _Refused(
                    "<yaml>", f"line {event.start_mark.line + 1}", f"nesting at most {MAX_DEPTH} levels deep"
                )
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1


def _key(node: yaml.Node) -> str:
    return node.value if isinstance(node, yaml.ScalarNode) else f"<{node.id} key>"


def _check_graph(root: yaml.Node) -> None:
    """Duplicate keys (with their field path), recursive aliases, and the alias-expanded size."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node, path: str) -> int:
        nid = id(node)
        if nid in sizes:
            return sizes[nid]
        if nid in active:
            raise _Refused(
                path or "<root>", "an alias of itself", "no recursive aliases (an anchor used inside itself)"
            )
        active.add(nid)
        total = 1
        if node.tag == _BOOL and isinstance(node.value, str) and node.value.lower() not in ("true", "false"):
            raise _Refused(  # YAML 1.1 reads yes/no/on/off as booleans, and `seed: yes` would run as seed 1
                path or "<root>",
                node.value,
                "a number, true/false, or quoted text: YAML 1.1 reads yes/no/on/off as a boolean, which a "
                "number field would take as 1 or 0",
            )
        if isinstance(node, yaml.SequenceNode):
            for i, child in enumerate(node.value):
                total += size(child, f"{path}[{i}]")
        elif isinstance(node, yaml.MappingNode):
            seen: dict[str, yaml.Node] = {}
            for key_node, value_node in node.value:
                name = _key(key_node)
                sub = f"{path}.{name}" if path else name
                if key_node.tag != _MERGE:
                    if name in seen:
                        first = seen[name].start_mark.line + 1
                        raise _Refused(
                            sub,
                            f"a second value at line {key_node.start_mark.line + 1}",
                            f"each key once (first given at line {first}); remove one",
                        )
                    seen[name] = key_node
                total += size(key_node, sub) + size(value_node, sub)
        active.discard(nid)
        sizes[nid] = total
        if total > MAX_VALUES:
            raise _Refused(
                path or "<root>",
                f"more than {MAX_VALUES:,} values once aliases are expanded",
                "a spec without alias bombs (anchors/aliases may repeat small parts only)",
            )
        return total

    size(root, "")


def decode(data: bytes, source: str) -> str:
    if len(data) > MAX_BYTES:
        raise SpecError(
            source, [("<file>", f"more than {MAX_BYTES:,} bytes", f"a spec file of at most {MAX_BYTES:,} bytes")]
        )
    if b"\x00" in data:
        at = data.index(b"\x00")
        raise SpecError(source, [("<file>", f"a NUL byte at offset {at}", "a UTF-8 text file (this looks binary)")])
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        bad = data[err.start : err.start + 1]
        raise SpecError(
            source, [("<file>", f"byte 0x{bad.hex()} at line {line}", "UTF-8 text (re-save the file as UTF-8)")]
        ) from None


def parse_yaml(text: str, source: str) -> object:
    """The YAML document as Python data, or a SpecError; never a traceback, never an expanded bomb."""
    loader = None
    try:
        _check_depth(text)
        loader = _Loader(text)
        node = loader.get_single_node()
        if node is None:
            return None
        _check_graph(node)
        return loader.construct_document(node)
    except _Refused as r:
        raise SpecError(source, [r.problem]) from None
    except yaml.MarkedYAMLError as err:
        where = f"line {err.problem_mark.line + 1}, column {err.problem_mark.column + 1}" if err.problem_mark else "?"
        what = err.problem or err.context or "invalid YAML"
        if "nesting depth" in what:  # libyaml's own bound (1000 levels) met before ours
            raise SpecError(
                source,
                [
                    (
                        "<yaml>",
                        f"line {err.problem_mark.line + 1 if err.problem_mark else '?'}",
                        f"nesting at most {MAX_DEPTH} levels deep",
                    )
                ],
            ) from None
        context = f"{err.context}, " if err.context and err.problem else ""
        raise SpecError(source, [("<yaml>", where, f"valid YAML ({context}{what})")]) from None  # whole, not cut
    except ValueError as err:
        digits = re.search(r"value has (\d+) digits", str(err))
        if digits:  # an integer literal past Python's str -> int conversion limit
            raise SpecError(
                source,
                [
                    (
                        "<yaml>",
                        f"an integer of {digits.group(1)} digits",
                        "integers of at most 10 digits (the ledger stores 32-bit integers)",
                    )
                ],
            ) from None
        raise SpecError(
            source, [("<yaml>", type(err).__name__, f"valid YAML ({str(err).splitlines()[0][:120]})")]
        ) from None
    except (yaml.YAMLError, OverflowError, RecursionError) as err:
        raise SpecError(
            source, [("<yaml>", type(err).__name__, f"valid YAML ({str(err).splitlines()[0][:120]})")]
        ) from None
    finally:
        if loader is not None:
            loader.dispose()


def read_yaml(path: Path) -> tuple[object, str]:
    """Return the parsed document and the text as written (the ledger keeps both)."""
    try:
        if os.path.exists(path) and not os.path.isdir(path) and not stat.S_ISREG(os.stat(path).st_mode):
            # a FIFO would block the read forever, a device would stream: only a regular file is a spec
            raise SpecError(str(path), [("<file>", str(path), "a regular YAML spec file, not a FIFO or device")])
        with open(path, "rb") as f:  # bounded: a spec path may name a multi-GB file
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise SpecError(str(path), [("<file>", str(path), "a readable YAML spec file")]) from None
    except IsADirectoryError:
        raise SpecError(str(path), [("<file>", str(path), "a YAML spec file, not a directory")]) from None
    except OSError as err:
        raise SpecError(str(path), [("<file>", str(path), f"a readable file ({err.strerror})")]) from None
    text = decode(data, str(path))
    return parse_yaml(text, str(path)), text
