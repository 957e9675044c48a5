"""`dihal run` as a person reads it, in real subprocess runs of the tiny spec in a git project (where DVC gives
its git advice): with stderr a file, each stage announced as `stage i/n kind`, progress as plain periodic lines,
no DVC advice (it is in the run log); `-q` prints the headline and no stage lines; `-v` prints DVC's own lines."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tiny import TINY, save_tiny, stages_ran, write_spec_from

pytestmark = pytest.mark.usefixtures("one_thread")
STAGE_LINE = re.compile(r"^stage (\d+)/(\d+) (\w+)(?: \(([^)]*)\))?: (\S+)$", re.M)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DIHAL_PROGRESS"}  # let `dihal run` decide
    return {**env, "DIHAL_PROGRESS_INTERVAL": "0", "OMP_NUM_THREADS": "1"}


def dihal_run(root: Path, *args: str) -> tuple[subprocess.CompletedProcess, str]:
    """`dihal run` with stderr going to a file, as under nohup or a batch scheduler; (process, stderr text)."""
    err = root / f"stderr-{len(list(root.glob('stderr-*')))}.txt"
    with open(err, "w") as f:
        proc = subprocess.run(
            [sys.executable, "-m", "dihal", "run", *args],
            cwd=root,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=f,
            text=True,
            timeout=900,
        )
    return proc, err.read_text()


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("output")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    save_tiny(root / "tiny")
    write_spec_from(TINY, root, "tiny")
    return root


@pytest.fixture(scope="module")
def first(project):
    proc, err = dihal_run(project, "tiny.yaml")
    assert proc.returncode == 0, proc.stdout + err
    return proc, err


def test_a_run_logged_to_a_file_announces_stages_and_shows_progress_lines(project, first):
    proc, err = first
    found = STAGE_LINE.findall(err)
    assert [(int(i), int(n)) for i, n, *_ in found] == [(i, 8) for i in range(1, 9)], err
    assert [kind for _, _, kind, _, _ in found] == [
        "extract",
        "score",
        "select",
        "targets",
        "train",
        "evaluate",
        "reference",
        "summary",
    ]
    said = {kind: what for _, _, kind, what, _ in found}
    assert said["train"] == "ℓ* = 1, seed 0" and said["targets"] == "ℓ* = 1"
    assert len(stages_ran(err)) == 8
    progress = re.findall(r"^  bridge: (\d+)% \(\d+/30 step\), [\d.]+ s elapsed, ETA [\d.]+ s", err, re.M)
    assert len(progress) >= 3 and re.search(r"^  bridge: 100% \(30/30 step\), done in ", err, re.M)
    assert "\r" not in err  # nothing redrawn in place: every line reads in a log
    for dvc_line in ("Running stage", "git add", "autostage", "dvc push", "lock file", "past_key_values"):
        assert dvc_line not in err, dvc_line
    (log,) = (project / ".dihal" / "logs").glob("run-*.log")
    text = log.read_text()
    assert "To track the changes with git, run:" in text and "\tgit add " in text and "dvc push" in text
    assert "Running stage 'train-" in text and "  bridge: 100% (30/30 step), done in " in text
    assert f"log: .dihal/logs/{log.name}" in proc.stdout


def test_quiet_prints_the_headline_and_no_stage_lines(project, first):
    proc, err = dihal_run(project, "tiny.yaml", "-q")
    assert proc.returncode == 0, proc.stdout + err
    assert proc.stdout.startswith("tiny: ℓ* = 1 (") and "stages run this time: 0 of 8" in proc.stdout
    assert "layer geometry" not in proc.stdout  # no tables
    assert not STAGE_LINE.search(err) and "up to date" not in err, err


def test_verbose_prints_dvc_lines_too(project, first):
    proc, err = dihal_run(project, "tiny.yaml", "-v", "-S", "bridge.steps=20", "--no-report")
    assert proc.returncode == 0, proc.stdout + err
    assert "Running stage 'train-" in err and "Stage 'extract-" in err and "didn't change, skipping" in err
    assert "Updating lock file 'dvc.lock'" in err and "> dihal stage .dihal/stages/train-" in err
    assert re.search(r"^stage 1/8 extract \(3 layers\): up to date$", err, re.M)
    assert re.search(r"^stage \d/8 train \(ℓ\* = 1, seed 0\): train-s0-[0-9a-f]{8}$", err, re.M)


def test_quiet_and_verbose_together_are_refused(project):
    proc, err = dihal_run(project, "tiny.yaml", "-q", "-v")
    assert proc.returncode == 2 and "--quiet and --verbose: choose one" in err
