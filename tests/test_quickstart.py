"""The README's main job, on the real embedded backbone, end to end through DVC and DuckDB (minutes)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

ROOT = Path(__file__).resolve().parent.parent
DIHAL = [sys.executable, "-m", "dihal"]


def sh(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=1800)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A copy of the repository's specs and compiled pipeline, as a fresh clone would have them."""
    root = tmp_path_factory.mktemp("quickstart")
    for item in ("specs", "dvc.yaml", ".dihal", ".dvc", ".dvcignore", ".gitignore"):
        src = ROOT / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, root / item)
    shutil.rmtree(root / ".dvc" / "tmp", ignore_errors=True)
    shutil.rmtree(root / ".dvc" / "cache", ignore_errors=True)
    sh(["git", "init", "-q"], root)
    return root


@pytest.mark.slow
def test_quickstart_end_to_end(project):
    first = sh([*DIHAL, "run", "specs/quickstart.yaml"], project)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "ℓ*" in first.stdout and "stages run this time: 8 of 8" in first.stdout
    con = duckdb.connect(str(project / "ledger" / "dihal.duckdb"), read_only=True)
    spaces = con.execute("SELECT space, count(*) FROM layer_geometry GROUP BY space ORDER BY space").fetchall()
    geo = con.execute("SELECT layer, g, selected FROM layer_geometry WHERE space = 'bridge' ORDER BY layer").fetchall()
    bridge = con.execute("SELECT layer, bridge_val_loss, gen_ppl, recovery_ce FROM bridge_results").fetchall()
    refs = dict(con.execute("SELECT reference, gen_ppl FROM reference_results").fetchall())
    con.close()
    assert spaces == [("bridge", 29), ("scalar", 29)]  # both spaces scored; ℓ* chosen in the bridge's
    assert [g[0] for g in geo] == list(range(1, 30))
    selected = [g[0] for g in geo if g[2]]
    assert selected == [max(geo, key=lambda g: g[1])[0]]
    assert len(bridge) == 1 and bridge[0][0] == selected[0] and bridge[0][1] > 0 and bridge[0][2] > 1
    # the scale for the bridge's gen PPL: greedy text is the backbone's most likely, real text is not its own
    assert set(refs) == {"backbone_t1", "backbone_greedy", "real_text"}
    assert refs["backbone_greedy"] < refs["backbone_t1"] and all(v > 1 for v in refs.values())

    again = sh([*DIHAL, "run", "specs/quickstart.yaml"], project)
    assert again.returncode == 0 and "everything up to date" in again.stdout, again.stdout + again.stderr

    # `dvc repro` at the root sees the same stages, all up to date; `dvc dag` shows the chain.
    repro = sh([sys.executable, "-m", "dvc", "repro"], project)
    assert repro.returncode == 0 and "Running stage" not in repro.stdout, repro.stdout + repro.stderr
    dag = sh([sys.executable, "-m", "dvc", "dag", "--mermaid"], project)
    assert dag.returncode == 0
    labels = dict(re.findall(r'(node\d+)\["([^"]+)"\]', dag.stdout))
    edges = {
        (labels[a].split("-")[0], labels[b].split("-")[0]) for a, b in re.findall(r"(node\d+)-->(node\d+)", dag.stdout)
    }
    for edge in (("extract", "score"), ("score", "select"), ("select", "targets"), ("train", "evaluate")):
        assert edge in edges, dag.stdout

    sample = sh([*DIHAL, "sample", "specs/quickstart.yaml", "--n", "2", "--prompt", "In the beginning"], project)
    assert sample.returncode == 0 and sample.stdout.count("In the beginning") == 2, sample.stdout + sample.stderr
