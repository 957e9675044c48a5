"""SIGTERM and SIGHUP end a `dihal run` as Ctrl-C does: DVC and its stage stop, DVC's locks are released,
the run is logged as interrupted, exit code 128 + signum, and the next run resumes to the same bytes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from dihal.execute.signals import Interrupted, describe, exit_code, raise_on_signals, release_dead_locks
from tests.test_run_tiny import write_spec
from tests.tiny import ledger_rows, save_tiny, stages_ran

ENV = {**os.environ, "DIHAL_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
STEPS = 1000  # long enough (several seconds) that the signal lands mid-training, not after it


def as_in_a_terminal() -> None:
    """Default dispositions, whatever this test runner inherited (a background job ignores SIGINT, nohup SIGHUP)."""
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_DFL)


class DihalRun:
    """`dihal run spec` in a session of its own, as a shell job would be, and every session it starts (DVC's)."""

    def __init__(self, root: Path, spec: Path):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dihal", "run", str(spec), "--no-report"],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=as_in_a_terminal,
            env=ENV,
        )
        self.sessions = {self.proc.pid}
        self.seen: list[psutil.Process] = []

    def look(self) -> list[psutil.Process]:
        """The descendants now; remembers them and their sessions for `survivors` and `kill_all`."""
        try:
            kids = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        for k in kids:
            try:
                self.sessions.add(os.getsid(k.pid))
            except OSError:
                continue
            if all(k.pid != s.pid for s in self.seen):
                self.seen.append(k)
        return kids

    def stages(self) -> list[psutil.Process]:
        """The `dihal stage` processes DVC runs."""
        found = []
        for p in self.look():
            try:
                if "stage" in p.cmdline():
                    found.append(p)
            except psutil.Error:
                continue
        return found

    def wait_until(self, done, what: str, timeout: float = 300) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline and self.proc.poll() is None and not done():
            self.look()
            time.sleep(0.1)
        self.look()
        assert self.proc.poll() is None, f"the run ended before {what}:\n{self.proc.stdout.read().decode()}"
        assert done(), f"timed out waiting for {what}"

    def survivors(self) -> list[str]:
        """Live (non-zombie) processes of any session it started, or that descended from it."""
        alive = []
        for p in psutil.process_iter(["pid", "status", "cmdline"]):
            try:
                if p.info["status"] == psutil.STATUS_ZOMBIE:
                    continue
                if os.getsid(p.pid) in self.sessions or any(p.pid == s.pid and p.is_running() for s in self.seen):
                    alive.append(f"{p.pid}: {' '.join(p.info['cmdline'] or [])}")
            except (OSError, psutil.Error):
                continue
        return alive

    def gone_within(self, seconds: float) -> list[str]:
        deadline = time.time() + seconds
        while (left := self.survivors()) and time.time() < deadline:
            time.sleep(0.1)
        return left

    def kill_all(self) -> None:
        """Never leave a training behind, whatever failed: every session it started, then what descended."""
        for sid in self.sessions:
            try:
                os.killpg(sid, signal.SIGKILL)
            except OSError:
                pass
        for p in self.seen:
            try:
                p.kill()
            except psutil.Error:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def digests(root: Path, kinds: tuple[str, ...]) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for k in kinds
        for p in sorted((root / "artifacts" / k).rglob("*"))
        if p.is_file()
    }


def run_rows(root: Path, name: str) -> list[tuple]:
    return ledger_rows(
        root, f"SELECT r.status, r.error FROM runs r JOIN specs s USING (spec_hash) WHERE s.name = '{name}'"
    )


def rwlock_entries(root: Path) -> dict:
    path = root / ".dvc" / "tmp" / "rwlock"
    lock = json.loads(path.read_text()) if path.exists() else {}
    return {mode: entries for mode, entries in lock.items() if entries}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("model") / "tiny")


def new_project(tmp_path_factory, model: Path, name: str) -> Path:
    root = tmp_path_factory.mktemp(name)
    shutil.copytree(model, root / "tiny")  # specs name the model relative to the project root
    return root


@pytest.fixture(scope="module")
def project(tmp_path_factory, model) -> Path:
    return new_project(tmp_path_factory, model, "project")


def test_sigterm_mid_training_ends_the_whole_run_and_the_rerun_gives_the_same_bytes(tmp_path_factory, model, project):
    spec = write_spec(project, "tiny-term", bridge__steps=STEPS)
    ckpts = project / "artifacts" / "checkpoints"
    run = DihalRun(project, spec)
    try:
        run.wait_until(lambda: any(ckpts.glob("*/ckpt.pt")), "training wrote a checkpoint")
        assert run.stages(), "the training stage runs below dihal"
        done_before = digests(project, ("extract", "score", "select", "targets"))
        os.kill(run.proc.pid, signal.SIGTERM)  # dihal's PID only: what `kill`, `timeout` and schedulers send
        out = run.proc.communicate(timeout=120)[0].decode()
        left = run.gone_within(10)
    finally:
        run.kill_all()
    assert run.proc.returncode == 143, out
    assert "interrupted by SIGTERM" in out
    assert not left, f"left running after SIGTERM: {left}"
    assert run_rows(project, "tiny-term") == [("interrupted", "interrupted by SIGTERM")]
    assert rwlock_entries(project) == {}, "DVC's locks are released"
    assert done_before and digests(project, ("extract", "score", "select", "targets")) == done_before
    assert any(ckpts.glob("*/ckpt.pt")), "the checkpoint survives for the next run"

    again = subprocess.run(
        [sys.executable, "-m", "dihal", "run", str(spec), "--no-report"],
        cwd=project,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    ran = [s.split("-")[0] for s in stages_ran(again.stdout + again.stderr)]
    # the stages that had finished are not recomputed (reference may or may not have run before the signal)
    assert "train" in ran and not set(ran) & {"extract", "score", "select", "targets"}, "the completed stages were kept"
    (meta,) = [json.loads(p.read_text()) for p in (project / "artifacts" / "train").glob("*/meta.json")]
    assert meta["resumed_from"] and meta["resumed_from"] > 0, "the signal landed mid-training"

    reference = new_project(tmp_path_factory, model, "reference")
    spec_ref = write_spec(reference, "tiny-term", bridge__steps=STEPS)
    ref = subprocess.run(
        [sys.executable, "-m", "dihal", "run", str(spec_ref), "--no-report"],
        cwd=reference,
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )
    assert ref.returncode == 0, ref.stdout + ref.stderr
    assert _results(project) == _results(reference)


def _results(root: Path) -> dict:
    """What an interrupted-and-resumed run must reproduce exactly: files (bytes) and ledger rows, less timings."""
    files = digests(root, ("train", "evaluate"))
    for name in list(files):
        if name.endswith(("meta.json", "manifest.json")) or name.endswith("metrics.json"):
            files.pop(name)  # these hold seconds, tokens/s and resumed_from
    (metrics,) = [json.loads(p.read_text()) for p in (root / "artifacts" / "evaluate").glob("*/metrics.json")]
    metrics.pop("seconds")
    bridge = ledger_rows(root, "SELECT * EXCLUDE (run_id, train_seconds, train_tokens_per_s) FROM bridge_results")
    curves = ledger_rows(root, "SELECT * FROM training_curves ORDER BY step")
    samples = ledger_rows(root, "SELECT * FROM samples ORDER BY idx")
    return {"files": files, "metrics": metrics, "bridge": bridge, "curves": curves, "samples": samples}


def test_sighup_during_extract_ends_the_run_and_logs_it(project):
    spec = write_spec(project, "tiny-hup", bridge=None, data={"source": "kjv", "max_documents": 150})
    run = DihalRun(project, spec)
    try:
        run.wait_until(run.stages, "a stage started")
        os.kill(run.proc.pid, signal.SIGHUP)  # a closed terminal
        out = run.proc.communicate(timeout=120)[0].decode()
        left = run.gone_within(10)
    finally:
        run.kill_all()
    assert run.proc.returncode == 129, out
    assert not left, f"left running after SIGHUP: {left}"
    assert run_rows(project, "tiny-hup") == [("interrupted", "interrupted by SIGHUP")]
    assert rwlock_entries(project) == {}


def test_the_scope_raises_interrupted_and_restores_the_handlers():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    with pytest.raises(Interrupted) as caught:
        with raise_on_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    assert (caught.value.signum, exit_code(caught.value), describe(caught.value)) == (
        signal.SIGTERM,
        143,
        "interrupted by SIGTERM",
    )
    assert isinstance(caught.value, KeyboardInterrupt), "every Ctrl-C path handles it"
    assert {s: signal.getsignal(s) for s in before} == before
    assert (describe(KeyboardInterrupt()), exit_code(KeyboardInterrupt())) == ("interrupted by SIGINT", 130)


def test_an_ignored_signal_stays_ignored():
    """`nohup dihal run ...` asks for SIGHUP to be ignored: the scope respects that."""
    old = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with raise_on_signals():
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(0.2)
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, old)


def test_release_dead_locks_drops_only_dead_processes(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".dvc" / "tmp").mkdir(parents=True)
    me = {"pid": os.getpid(), "cmd": "dvc repro"}
    gone = {"pid": dead.pid, "cmd": "dvc repro"}
    lock = {"write": {"/p/out": gone, "/p/mine": me}, "read": {"/p/in": [gone, me], "/p/only-dead": [gone]}}
    (tmp_path / ".dvc" / "tmp" / "rwlock").write_text(json.dumps(lock))
    assert release_dead_locks(tmp_path) == [dead.pid]
    assert rwlock_entries(tmp_path) == {"write": {"/p/mine": me}, "read": {"/p/in": [me]}}
    assert release_dead_locks(tmp_path) == []


def test_sigkill_to_dihal_still_stops_dvc_and_its_stage(project):
    """Nothing can catch SIGKILL: the watchdog (`dihal.execute.signals.Watchdog`) ends DVC's group instead."""
    spec = write_spec(project, "tiny-kill", bridge__steps=100000, bridge__seq_len=12)
    ckpts = project / "artifacts" / "checkpoints"
    before = set(ckpts.glob("*/ckpt.pt"))
    run = DihalRun(project, spec)
    try:
        run.wait_until(lambda: set(ckpts.glob("*/ckpt.pt")) - before, "training wrote a checkpoint")
        assert run.stages()
        os.kill(run.proc.pid, signal.SIGKILL)
        run.proc.wait()
        left = run.gone_within(15)
    finally:
        run.kill_all()
    assert not left, f"left running after SIGKILL: {left}"
    assert rwlock_entries(project) == {}, "DVC, stopped with SIGINT, released its locks itself"
