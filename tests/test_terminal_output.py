"""What dihal prints from data is data: no rich markup is interpreted, no control character reaches the
terminal, and JSON output is strict JSON.

Each hostile string below once did damage somewhere: `[/x]` in a spec name, a token or a query result made
rich raise (exit 1, the real error hidden), and an ESC sequence in a name cleared the screen and set the
window title from `dihal run`'s summary and `ledger runs --format csv`.
"""

from __future__ import annotations

import io
import json
import unicodedata
from types import SimpleNamespace

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from rich.console import Console
from typer.testing import CliRunner

from dihal.cli import app
from dihal.ledger import store as ledger
from dihal.report.summary import print_summary
from dihal.utils.terminal import clean, json_safe, shown, text

HOSTILE = [
    "x[/x]",
    "[red]styled[/red] [link=file:///etc/passwd]link[/link]",
    "evil\x1b[2J\x1b[31mRED\a\x1b]0;pwned-title\a",
    "csi\x9b31m c1",
    "\u202eevil\u202c rtl",
    "cr\roverwrite",
    "nul\x00 del\x7f",
    ":smile: :warning:",
]
BIDI = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
RAW = ("\x1b", "\x07", "\x9b", "\u202e", "\r", "\x00", "\x7f")


def _unsafe(s: str, newlines: bool = False) -> list[str]:
    """Characters in `s` that could steer a terminal."""
    keep = {"\n", "\t"} if newlines else set()
    return [c for c in s if (unicodedata.category(c) == "Cc" and c not in keep) or c in BIDI]


def _console() -> Console:
    return Console(file=io.StringIO(), width=10_000, color_system=None, emoji=False, highlight=False)


@settings(max_examples=300, deadline=None)
@given(st.text())
@example("\x1b[2J\u202e[/x]\n\t")
def test_clean_leaves_no_control_characters(s):
    assert _unsafe(clean(s)) == []
    assert _unsafe(clean(s, newlines=True), newlines=True) == []
    assert clean(clean(s)) == clean(clean(s))  # stable: cleaning escaped text changes nothing more
    if not _unsafe(s, newlines=True) and "\n" not in s and "\t" not in s:
        assert clean(s) == s  # ordinary text is left alone


@settings(max_examples=300, deadline=None)
@given(st.text())
@example("x[/x]")
@example("[bold]b[/bold] :smile:")
@example("\\[")  # a backslash before a bracket that is no tag: rich.markup.escape let rich drop it
@example("a\\[b] \\\\[/x] c\\")
def test_markup_gets_printed_as_the_cleaned_text(s):
    con = _console()
    con.print(f"[bold]{shown(s)}[/bold]", soft_wrap=True)
    assert con.file.getvalue() == clean(s) + "\n"
    con = _console()
    con.print(text(s), soft_wrap=True)
    assert con.file.getvalue() == clean(s) + "\n"


def test_json_safe_turns_non_finite_numbers_into_null():
    value = json_safe([float("nan"), {"a": float("inf"), "b": -float("inf"), "c": 1.5}, ("x\x1b", 2)])
    assert json.dumps(value, allow_nan=False) == '[null, {"a": null, "b": null, "c": 1.5}, ["x\\u001b", 2]]'


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A ledger whose names, settings, samples and errors are all hostile strings."""
    root = tmp_path_factory.mktemp("hostile")
    name, h = HOSTILE[0] + HOSTILE[2], "f" * 64
    with ledger.writer(root) as con:
        for i, s in enumerate(HOSTILE):
            con.execute(
                "INSERT INTO runs (run_id, spec_hash, spec_name, status, error, started_at) "
                "VALUES (?, ?, ?, 'failed', ?, now())",
                [f"r{i}", h, s, s],
            )
        con.execute("INSERT INTO specs (spec_hash, name) VALUES (?, ?)", [h, name])
        for layer in (1, 2):
            con.execute(
                "INSERT INTO layer_geometry (spec_hash, space, layer, g, selected) VALUES (?, 'bridge', ?, ?, ?)",
                [h, layer, float(layer), layer == 2],
            )
        con.execute(
            "INSERT INTO selections (spec_hash, space, rule, layer, g, block_start, outlier_rule, warning, "
            "confidence) VALUES (?, 'bridge', 'argmax', 2, 2.0, ?, ?, ?, ?)",
            [h, HOSTILE[0], HOSTILE[1], HOSTILE[2], HOSTILE[4]],
        )
        con.execute("INSERT INTO samples (spec_hash, layer, seed, idx, text) VALUES (?, 2, 0, 0, ?)", [h, HOSTILE[2]])
        con.execute("INSERT INTO bridge_results (spec_hash, layer, seed, bridge_val_loss) VALUES (?, 2, 0, 0.5)", [h])
    return SimpleNamespace(root=root, spec_hash=h, name=name)


def _assert_inert(output: str) -> None:
    for raw in RAW:
        assert raw not in output, (raw, output)


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_ledger_runs_prints_hostile_names_as_data(project, fmt):
    res = CliRunner().invoke(app, ["ledger", "runs", "--format", fmt, "--project", str(project.root)])
    assert res.exit_code == 0, res.output
    _assert_inert(res.output)
    if fmt == "json":
        rows = json.loads(res.output)
        assert {r["spec_name"] for r in rows} == set(HOSTILE)  # JSON escapes, so the data comes back exact
    else:
        assert "x[/x]" in res.output and "\\x1b[2J" in res.output


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_ledger_sql_output_is_inert_and_json_is_strict(project, fmt):
    sql = "SELECT '[/x]' AS markup, chr(27) || '[2J' AS esc, 'nan'::DOUBLE AS nan, 'inf'::DOUBLE AS inf, 1.5 AS x"
    res = CliRunner().invoke(app, ["ledger", "sql", sql, "--format", fmt, "--project", str(project.root)])
    assert res.exit_code == 0, res.output
    _assert_inert(res.output)
    assert "[/x]" in res.output
    if fmt == "json":

        def refuse(constant):
            raise ValueError(f"not JSON: {constant}")

        rows = json.loads(res.output, parse_constant=refuse)
        assert rows == [{"markup": "[/x]", "esc": "\x1b[2J", "nan": None, "inf": None, "x": 1.5}]


def test_gc_names_a_hostile_spec_instead_of_crashing(tmp_path):
    res = CliRunner().invoke(app, ["gc", "--drop", "x[/x]\x1b[2J", "--project", str(tmp_path)])
    assert res.exit_code == 2, res.output
    assert "x[/x]\\x1b[2J" in res.output and "\x1b" not in res.output


def test_run_summary_prints_hostile_ledger_values_as_data(project):
    con = _console()
    result = SimpleNamespace(
        spec_hash=project.spec_hash,
        spec=SimpleNamespace(name=project.name, geometry=SimpleNamespace(space="bridge")),
        stages_run=[],
        plan=SimpleNamespace(stages=[]),
        run_id="r0",
        report=None,
    )
    print_summary(con, project.root, result)
    output = con.file.getvalue()
    _assert_inert(output)
    for shown_as in ("x[/x]evil\\x1b[2J", "blocks start with x[/x]", "[red]styled[/red]", "\\u202eevil"):
        assert shown_as in output, (shown_as, output)
