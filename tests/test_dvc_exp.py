"""`dvc exp run -S` on a compiled stage config cannot make the ledger lie (issue 20): the stage refuses to run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from dihal.cli import app
from tests.tiny import TINY, save_tiny, write_spec_from

runner = CliRunner()


def _sh(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=600)


def test_dvc_exp_run_setting_a_stage_param_is_refused_and_compile_restores_it(tmp_path, monkeypatch):
    root = tmp_path / "p"
    root.mkdir()
    save_tiny(root / "tiny")
    monkeypatch.chdir(root)
    _sh(root, "git", "init", "-q")
    spec = write_spec_from(TINY, root, "tiny")
    res = runner.invoke(app, ["compile", str(spec), "--project", str(root)])
    assert res.exit_code == 0, res.output
    _sh(root, "git", "add", "-A")
    _sh(root, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "compiled")
    (config,) = (root / ".dihal" / "stages").glob("score-*.json")
    rel = config.relative_to(root).as_posix()
    k = json.loads(config.read_text())["params"]["geometry"]["k"]

    got = _sh(root, sys.executable, "-m", "dvc", "exp", "run", "-S", f"{rel}:params.geometry.k={k + 1}")
    assert got.returncode != 0, got.stdout + got.stderr
    assert "edited after compile" in got.stdout + got.stderr
    assert "dihal run SPEC -S" in got.stdout + got.stderr  # says how to run the variant instead
    assert not list((root / "artifacts" / "score").glob("*/*")), "no score output under the old name"
    assert not (root / "ledger" / "dihal.duckdb").exists()

    res = runner.invoke(app, ["compile", str(spec), "--project", str(root)])
    assert res.exit_code == 0, res.output
    assert json.loads(config.read_text())["params"]["geometry"]["k"] == k, "compile writes the config back"
