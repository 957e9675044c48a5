"""Stages forked from `dihal run`'s warm process (dihal.execute.zygote): the bytes fresh processes write, the
client's streams, directory, environment and exit status, and a stage run in place when no server answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dihal.cli import app
from dihal.execute import zygote
from dihal.execute.dvc import dvc
from tests.tiny import TINY, tiny_project, write_spec_from

pytestmark = pytest.mark.skipif(not zygote.enabled({}), reason="needs POSIX fork and socket.send_fds")


TIMINGS = ("seconds", "tokens_per_s")  # keys of a stage's JSON that measure the machine, not the result


def _untimed(value):
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if not k.endswith(TIMINGS)}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


def _outputs(root: Path) -> tuple[dict, set[str]]:
    """Every stage output's files (JSON read back without its timings, others by sha256), and how the stages'
    processes started."""
    files, starts = {}, set()
    for path in sorted((root / "artifacts").glob("*/*/manifest.json")):
        manifest = json.loads(path.read_text())
        files[str(path.parent.relative_to(root))] = {
            name: _untimed(json.loads((path.parent / name).read_text())) if name.endswith(".json") else f
            for name, f in manifest["files"].items()
        }
        if "runtime" in manifest:
            starts.add(manifest["runtime"]["start"])
    return files, starts


def test_forked_stages_write_the_bytes_fresh_processes_write(tmp_path, monkeypatch):
    with tiny_project(tmp_path) as root:
        spec = write_spec_from(TINY, root, "tiny")
        res = CliRunner().invoke(app, ["run", str(spec), "--no-report", "--project", str(root)])
        assert res.exit_code == 0, res.output
        forked, starts = _outputs(root)
        assert starts == {"fork"} and any(k.startswith("artifacts/train/") for k in forked)
        monkeypatch.setenv(zygote.ENV_SWITCH, "0")  # the same stages again, each a process of its own
        again = dvc(["repro", "-f"], root)
        assert again.returncode == 0, again.stdout + again.stderr
        fresh, starts = _outputs(root)
        assert starts == {"fresh"}
        assert fresh == forked


@pytest.fixture
def server(tmp_path):
    """A server beside a stand-in for DVC (a process that waits on stdin), as `dihal run` starts them."""
    sock_dir = tempfile.mkdtemp(prefix="dihal-z")
    holder = subprocess.Popen(
        zygote.launcher_argv(sock_dir, [sys.executable, "-c", "import sys; sys.stdin.read()"]),
        stdin=subprocess.PIPE,
        start_new_session=True,
    )
    path = os.path.join(sock_dir, zygote.SOCKET_NAME)
    deadline = time.monotonic() + 30
    while not os.path.exists(path) and time.monotonic() < deadline:  # bound before DVC would start
        time.sleep(0.05)
    yield path
    holder.stdin.close()
    holder.wait(timeout=30)


def _client(socket_path: str | None, args: list[str], cwd: Path, **env) -> subprocess.CompletedProcess:
    code = "import sys; from dihal.execute import zygote; c = zygote.delegate(sys.argv[1:]); sys.exit(99 if c is None else c)"
    environ = {k: v for k, v in os.environ.items() if k != zygote.ENV_SOCKET}
    if socket_path:
        environ[zygote.ENV_SOCKET] = socket_path
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, env={**environ, **env}, capture_output=True, text=True
    )


def test_the_child_writes_to_the_clients_streams_and_exits_with_its_code(server, tmp_path):
    ok = _client(server, ["dihal", "--version"], tmp_path)
    assert ok.returncode == 0 and ok.stdout.startswith("dihal ")
    bad = _client(server, ["dihal", "validate", "missing.yaml"], tmp_path)  # relative: the client's directory
    assert bad.returncode not in (0, 99) and "missing.yaml" in bad.stdout + bad.stderr


def test_the_child_prints_what_a_fresh_process_prints_in_the_clients_environment(server, tmp_path):
    fresh = subprocess.run(
        [str(Path(sys.executable).parent / "dihal"), "--help"],
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "44"},
        capture_output=True,
        text=True,
    )
    forked = _client(server, ["dihal", "--help"], tmp_path, COLUMNS="44")  # the server started with no COLUMNS
    assert forked.returncode == fresh.returncode == 0
    assert forked.stdout == fresh.stdout and max(map(len, forked.stdout.splitlines())) <= 44


def test_without_a_server_the_client_runs_the_stage_itself(tmp_path):
    assert _client(None, ["dihal", "--version"], tmp_path).returncode == 99
    assert _client(str(tmp_path / "nobody-listens"), ["dihal", "--version"], tmp_path).returncode == 99
