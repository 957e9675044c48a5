"""`dihal ledger sql` lays a wide result out vertically (psql's `\\x`): by flag, and by itself when the table
would be wider than the terminal; the values stay data (escapes for control characters, markup as typed)."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from dihal.cli import app
from dihal.ledger import store as ledger

HOSTILE = "x[/x]\x1b[2J\nline two"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("vertical")
    with ledger.writer(root) as con:
        con.execute("INSERT INTO specs (spec_hash, name, last_seen) VALUES ('h1', 'quickstart', now())")
        ledger.insert_rows(
            con,
            "layer_geometry",
            [
                {"spec_hash": "h1", "space": "bridge", "layer": layer, "kappa": 1.5, "r": 250.5, "g": g}
                for layer, g in ((21, 0.16), (22, 0.871))
            ],
        )
        ledger.insert_rows(con, "samples", [{"spec_hash": "h1", "layer": 22, "seed": 0, "idx": 0, "text": HOSTILE}])
    return root


def sql(root, query: str, *flags: str):
    return CliRunner().invoke(app, ["ledger", "sql", query, *flags, "--project", str(root)])


def records(stdout: str) -> list[dict[str, str]]:
    """The rows of a vertical layout, each {column: value}; every line is a separator or `name | value`."""
    rows: list[dict[str, str]] = []
    for line in stdout.splitlines():
        if re.fullmatch(r"-\[ row \d+ \]-*", line):
            rows.append({})
        else:
            name, value = line.split(" | ", 1)
            rows[-1][name.rstrip()] = value
    return rows


def test_x_prints_one_line_per_field_and_a_separator_per_row(project):
    res = sql(project, "SELECT layer, g, kappa FROM layer_geometry ORDER BY layer", "-x")
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].startswith("-[ row 1 ]") and lines[4].startswith("-[ row 2 ]") and len(lines) == 8
    assert lines[1:4] == ["layer | 21", "g     | 0.16", "kappa | 1.5"]  # names padded to one width
    assert records(res.stdout) == [
        {"layer": "21", "g": "0.16", "kappa": "1.5"},
        {"layer": "22", "g": "0.871", "kappa": "1.5"},
    ]


def test_a_table_wider_than_the_terminal_turns_vertical_by_itself(project):
    wide = "SELECT * FROM layer_geometry_named WHERE spec_name = 'quickstart' ORDER BY layer"
    res = sql(project, wide)
    assert res.exit_code == 0, res.output
    got = records(res.stdout)
    assert [r["layer"] for r in got] == ["21", "22"] and got[1]["g"] == "0.871" and got[1]["spec_name"] == "quickstart"
    assert len(got[0]) > 30  # every column of the table, none cut off
    assert "wider than the terminal" in res.stderr
    narrow = sql(project, "SELECT layer, g FROM layer_geometry ORDER BY layer")
    assert "┃ layer ┃" in narrow.stdout and "-[ row" not in narrow.stdout and not narrow.stderr
    kept = sql(project, wide, "-X")  # --no-vertical: the table, however wide
    assert "-[ row" not in kept.stdout and "┃" in kept.stdout


def test_vertical_values_are_data(project):
    res = sql(project, "SELECT text, 'a' || chr(27) || '[31m' AS esc FROM samples", "--vertical")
    assert res.exit_code == 0, res.output
    assert "\x1b" not in res.stdout and "\nline two" not in res.stdout  # no escape sequence, no extra line
    assert records(res.stdout) == [{"text": "x[/x]\\x1b[2J\\nline two", "esc": "a\\x1b[31m"}]


def test_vertical_with_csv_or_json_is_refused_before_the_query(project):
    for fmt in ("csv", "json"):
        res = sql(project, "SELECT 1", "-x", "--format", fmt)
        assert res.exit_code == 2 and "--vertical" in res.output and f"--format {fmt}" in res.output, res.output
