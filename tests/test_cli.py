"""The CLI with typer's CliRunner: bad specs are refused before anything is computed or written."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from dihal.cli import app

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def test_help_lists_the_commands():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in ("validate", "compile", "run", "sample", "report", "ledger"):
        assert cmd in res.output
    assert "stage" not in res.output.split("Commands")[-1].split()  # internal command stays hidden


@pytest.mark.parametrize("spec", ["quickstart.yaml", "sweep.yaml", "llama-3.1-8b.yaml", "qwen3-8b.yaml"])
def test_shipped_specs_validate(spec):
    res = runner.invoke(app, ["validate", str(ROOT / "specs" / spec)])
    assert res.exit_code == 0, res.output
    assert "spec hash" in res.output


BAD = {
    "unknown key": ("name: x\ngeometry: {k: 16, kay: 3}\n", "geometry.kay", "unknown key"),
    "wrong type": ("name: x\nseed: zero\n", "seed", "'zero'"),
    "k=0": ("name: x\ngeometry: {k: 0}\n", "geometry.k", "greater than 0"),
    "layer beyond depth": ("name: x\ngeometry: {layers: [1, 2, 31]}\n", "geometry.layers[2]", "1..30"),
    "missing file": ("name: x\ndata: {source: text, paths: [nowhere.txt]}\n", "data.paths[0]", "nowhere.txt"),
    "not yaml": ("name: [unclosed\n", "<yaml>", "valid YAML"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_spec_names_field_value_and_expectation_and_writes_nothing(case, tmp_path, monkeypatch):
    text, path, detail = BAD[case]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text(text)
    for cmd in (["validate", "bad.yaml"], ["run", "bad.yaml", "--project", str(tmp_path)]):
        res = runner.invoke(app, cmd)
        assert res.exit_code == 2, res.output
        assert path in res.output and detail in res.output, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"], "nothing may be written"


def test_missing_spec_file(tmp_path):
    res = runner.invoke(app, ["validate", str(tmp_path / "none.yaml")])
    assert res.exit_code == 2 and "none.yaml" in res.output


def test_ledger_commands_without_a_ledger(tmp_path):
    res = runner.invoke(app, ["ledger", "sql", "SELECT 1", "--project", str(tmp_path)])
    assert res.exit_code == 1 and "no ledger" in res.output


def test_compile_writes_stages_without_computing(tmp_path):
    res = runner.invoke(app, ["compile", str(ROOT / "specs" / "quickstart.yaml"), "--project", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "dvc.yaml").exists() and not (tmp_path / "artifacts").exists()
