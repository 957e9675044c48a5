"""Damaged or unusual project state gets a message that names the file and the fix, never a traceback.

Each case was a traceback before: a truncated registry file (`JSONDecodeError`, no file named) blocked every
compile in the project; so did a YAML error in dvc.yaml; `gc --drop` read spec files with plain
`yaml.safe_load` (a list made it raise AttributeError, an alias bomb ran out of memory); a truncated ledger
made `ledger rebuild`, the recovery path, die opening it; a hand-edited `runs.jsonl` line made it raise
KeyError; and a project folder dihal cannot write ended in an OSError about a lock file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dihal.cli import app
from dihal.execute import runner
from dihal.ledger import records
from dihal.ledger import store as ledger
from dihal.ledger.rebuild import rebuild
from dihal.utils.state import EXIT_STATE

SPEC = "name: tiny-state\ngeometry: {layers: [1, 2, 3], n_tokens: 256, anchors: 128}\n"


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    root = tmp_path_factory.mktemp("state")
    (root / "spec.yaml").write_text(SPEC)
    res = _invoke("compile", root / "spec.yaml", "-C", root)
    assert res.exit_code == 0, res.output
    return root


def _damaged_copy(compiled: Path, tmp_path: Path) -> Path:
    root = tmp_path / "p"
    os.system(f"cp -r {compiled} {root}")  # noqa: S605 - a test copying its own fixture
    return root


def test_a_truncated_registry_file_is_named(compiled, tmp_path):
    root = _damaged_copy(compiled, tmp_path)
    reg = next((root / ".dihal" / "specs").glob("*.json"))
    reg.write_text(reg.read_text()[:40])
    for args in (("compile", root / "spec.yaml"), ("gc", "--dry-run")):
        res = _invoke(*args, "-C", root)
        assert res.exit_code == EXIT_STATE, res.output
        assert str(reg) in res.output and "delete it" in res.output and "Traceback" not in res.output
    reg.write_text("[1, 2]")
    res = _invoke("compile", root / "spec.yaml", "-C", root)
    assert res.exit_code == EXIT_STATE and "not a JSON dict" in res.output, res.output


def test_a_broken_dvc_yaml_is_named_with_its_line(compiled, tmp_path):
    root = _damaged_copy(compiled, tmp_path)
    (root / "dvc.yaml").write_text("stages:\n  a: [\n")
    res = _invoke("compile", root / "spec.yaml", "-C", root)
    assert res.exit_code == EXIT_STATE, res.output
    said = " ".join(res.output.split())  # rich wraps a long temp path's line anywhere, "line" and "3" included
    assert "dvc.yaml cannot be read" in said and "line 3" in said, res.output


def test_an_unwritable_project_is_a_message(tmp_path):
    (tmp_path / "spec.yaml").write_text(SPEC)
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    for args in (("compile", tmp_path / "spec.yaml"), ("gc", "--dry-run")):
        res = _invoke(*args, "-C", not_a_folder)
        assert res.exit_code == EXIT_STATE, res.output
        assert "cannot write to the project folder" in res.output and "Traceback" not in res.output


@pytest.mark.parametrize(
    "text, says",
    [
        ("- a\n- b\n", "not a spec"),
        (
            "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
            + "".join(
                f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
                for p, c in zip("abcdefgh", "bcdefghi")
            ),
            "not a readable spec",
        ),
        ("name: [unclosed\n", "not a readable spec"),
    ],
)
def test_gc_reads_spec_files_through_the_bounded_reader(compiled, tmp_path, text, says):
    spec = tmp_path / "arg.yaml"
    spec.write_text(text)
    res = _invoke("gc", "--drop", spec, "-C", compiled)
    assert res.exit_code == 2, res.output
    assert says in res.output and "Traceback" not in res.output


def test_rebuild_survives_a_truncated_ledger_and_bad_log_lines(tmp_path):
    root = tmp_path
    run = {"run_id": "r1", "spec_hash": "h" * 64, "spec_name": "s", "status": "failed", "started_at": None}
    with ledger.writer(root) as con:
        ledger.insert_rows(con, "runs", [run])
        for i in range(2000):  # enough incompressible rows that half the file is data
            con.execute("INSERT INTO runs (run_id, status, error) VALUES (?, 'failed', ?)", [f"x{i}", f"{i}" * 300])
    log = records.runs_log(root)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(json.dumps(run) + '\n{"run_id": 5}\nnot json\n[1]\n')
    path = ledger.ledger_path(root)
    os.truncate(path, path.stat().st_size // 2)
    said: list[str] = []
    res = rebuild(root, notify=said.append)
    assert res.n_runs == 1 and res.backup is not None
    assert any("is damaged" in s for s in said), said
    assert sum("skipped line" in s for s in said) == 3, said
    assert ledger.query(root, "SELECT run_id, status FROM runs")[1] == [("r1", "failed")]


def test_a_run_that_could_not_be_recorded_does_not_say_it_was(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(runner, "_commit", broken)
    run = {"run_id": "r9"}
    with pytest.raises(runner.RunFailed) as info:
        runner._record_failure(tmp_path, {}, run, RuntimeError("stage failed"), [], None)
    assert info.value.recorded is False and info.value.queued is None
