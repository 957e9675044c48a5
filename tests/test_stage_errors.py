"""A failing stage is one line on the terminal (and in the `runs` row); its traceback goes to .dihal/logs/."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
import yaml
from typer.testing import CliRunner

from dihal.cli import app
from tests.tiny import save_tiny

runner = CliRunner()


def _bad_stage(root: Path) -> Path:
    stages = root / ".dihal" / "stages"
    stages.mkdir(parents=True)
    cfg = stages / "extract-0123456789abcdef.json"
    cfg.write_text(
        json.dumps({"kind": "nope", "hash": "0123456789abcdef", "params": {}, "inputs": {}, "out": "artifacts/x"})
    )
    return cfg


def test_a_failing_stage_prints_one_line_and_logs_the_traceback(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _bad_stage(tmp_path)
    res = runner.invoke(app, ["stage", ".dihal/stages/extract-0123456789abcdef.json"])
    assert res.exit_code == 1
    log = Path(".dihal/logs/extract-0123456789abcdef.log")
    assert res.stderr.splitlines() == [
        f"stage extract-0123456789abcdef failed: ValueError: unknown stage kind 'nope' in "
        f".dihal/stages/extract-0123456789abcdef.json (traceback in {log})"
    ]
    assert "Traceback" not in res.output
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "run_stage" in text and "ValueError" in text
    assert (log.parent / ".gitignore").read_text() == "*\n", "logs are never versioned"


def test_an_interrupt_is_not_turned_into_a_failure_line(tmp_path, monkeypatch):
    import dihal.stages

    def interrupted(_config):
        raise KeyboardInterrupt

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(dihal.stages, "run_stage", interrupted)
    res = runner.invoke(app, ["stage", str(_bad_stage(tmp_path))])
    assert res.exit_code != 0 and "failed:" not in res.output  # click's own handling of ^C, as before
    assert not (tmp_path / ".dihal" / "logs").exists()


def test_a_run_whose_stage_fails_shows_the_line_not_the_traceback(tmp_path, monkeypatch):
    """A local model whose weights file is damaged passes validate (a Llama config and a weights file are
    there; validate does not read weights) and fails in extract."""
    model = save_tiny(tmp_path / "model")
    for weights in model.glob("*.safetensors"):
        weights.write_bytes(b"not a safetensors file")
    spec = {
        "name": "broken",
        "backbone": {"source": "local", "id": "model"},
        "data": {"source": "kjv", "max_documents": 50},
        "geometry": {"seq_len": 16, "n_tokens": 256, "anchors": 32, "k": 4, "pairs": 64, "batch_size": 8},
        "bridge": None,
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["run", "spec.yaml", "--project", str(tmp_path), "--no-report"])
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("stage extract-") and " failed: " in ln]
    assert lines and "SafetensorError: Error while deserializing header" in lines[0], res.output
    log = Path(lines[0].rsplit("(traceback in ", 1)[1].rstrip(")"))
    assert "Traceback (most recent call last)" in (tmp_path / log).read_text()
    con = duckdb.connect(str(tmp_path / "ledger" / "dihal.duckdb"), read_only=True)
    try:
        (error,) = con.execute("SELECT error FROM runs WHERE status = 'failed'").fetchone()
    finally:
        con.close()
    assert "failed: SafetensorError: Error while deserializing header" in error and "Traceback" not in error, error


@pytest.mark.parametrize(
    "path, expected",
    [
        (".dihal/stages/a-1.json", ".dihal/logs/a-1.log"),
        ("p/.dihal/stages/b.json", "p/.dihal/logs/b.log"),
        ("elsewhere/c.json", ".dihal/logs/c.log"),
    ],
)
def test_log_path(path, expected):
    from dihal.execute.stage_log import log_path

    assert log_path(path) == Path(expected)
