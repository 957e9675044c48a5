"""Ending a run on a signal: SIGINT, SIGTERM and SIGHUP all stop the whole run cleanly.

Python turns only SIGINT into an exception; SIGTERM (`kill`, `timeout`, a batch scheduler) and SIGHUP
(a closed terminal) kill the interpreter on the spot, so `finally` blocks never run: `dvc repro` and
its stage keep computing as orphans, DVC's `.dvc/tmp/rwlock` still names them ("... is busy" on the
next run) and the ledger never hears the run ended. Inside `raise_on_signals()` all three raise
`Interrupted`, a KeyboardInterrupt, so every existing Ctrl-C path (log the run as `interrupted`,
re-raise) serves them too, and `stop_group` / `release_dead_locks` take DVC down the way Ctrl-C does.

What DVC does with signals (checked against dvc 3.x): while a stage command runs, `dvc repro` sets
SIGINT to SIG_IGN in itself and waits for the command, so SIGINT to DVC alone is ignored; SIGINT to
its whole process group interrupts the stage, DVC then fails the stage, releases its rwlock entries
and exits within a fraction of a second. SIGTERM or SIGHUP to DVC alone kills DVC, leaves its rwlock
entries and orphans the stage; to the group, kills both and still leaves the entries. Hence: DVC runs
in a session of its own, and is stopped with SIGINT to that group, then SIGKILL for what is left;
a `Watchdog` process does the same should dihal itself be SIGKILLed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

HANDLED = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
STOP_GRACE_S = 20.0  # DVC and the stage get this long to end on SIGINT before the group is SIGKILLed


class Interrupted(KeyboardInterrupt):
    """A signal asked the run to end. A KeyboardInterrupt, so Ctrl-C's handling applies to every signal."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signum)
        self.signum = signum

    def __str__(self) -> str:
        return f"interrupted by {signal_name(self.signum)}"


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def signum_of(err: BaseException) -> int:
    """The signal behind an interruption; a plain KeyboardInterrupt (Python's own SIGINT handler) is SIGINT."""
    return getattr(err, "signum", signal.SIGINT)


def describe(err: BaseException) -> str:
    """What the `runs` row says, e.g. "interrupted by SIGTERM"."""
    return f"interrupted by {signal_name(signum_of(err))}"


def exit_code(err: BaseException) -> int:
    """The shell's convention for death by signal: 128 + signum (130 INT, 143 TERM, 129 HUP)."""
    return 128 + signum_of(err)


def _raise(signum: int, frame) -> None:
    raise Interrupted(signum)


_active = threading.local()  # re-entry guard: the CLI and dvc_repro both open a scope


@contextmanager
def raise_on_signals(signums: tuple[int, ...] = HANDLED) -> Iterator[None]:
    """Within the block, the given signals raise `Interrupted`; the previous handlers come back on exit.

    Only the main thread can install handlers, so elsewhere (and inside an outer scope) this does nothing.
    A signal that was ignored when the scope opened stays ignored: `nohup` (SIGHUP) and a background job
    started by a non-interactive shell (SIGINT) ask for exactly that. Every signal raises, a second one
    during cleanup too: `stop_group` and the ledger's queue are written to survive that."""
    if threading.current_thread() is not threading.main_thread() or getattr(_active, "on", False):
        yield
        return
    previous = {}
    for s in signums:
        if signal.getsignal(s) is not signal.SIG_IGN:
            previous[s] = signal.signal(s, _raise)
    _active.on = True
    try:
        yield
    finally:
        _active.on = False
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


def child_setup() -> Callable[[], None] | None:
    """A `preexec_fn` for DVC: SIGINT back to its default, so DVC and its stage turn it into
    KeyboardInterrupt even when dihal itself was started with SIGINT ignored (Python installs its
    handler only when SIGINT is at SIG_DFL), and no signal blocked. None where there is no fork."""
    if os.name != "posix":
        return None

    def setup() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())

    return setup


@contextmanager
def deferred(signums: tuple[int, ...] = HANDLED) -> Iterator[None]:
    """Hold the signals back for a few statements (starting a child and naming it), then deliver them.

    A signal that lands between fork and `proc = Popen(...)` would otherwise leave a child nobody can stop."""
    if os.name != "posix" or threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, signums)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone already


def stop_group(proc: subprocess.Popen, grace: float = STOP_GRACE_S) -> None:
    """End `proc` and its whole process group (it must lead one: `start_new_session=True`).

    SIGINT first, the signal DVC and the stage clean up after (DVC drops its rwlock entries); after
    `grace` seconds, or at once when a second signal arrives meanwhile, SIGKILL for whatever is left
    (worker processes that outlive their parent included)."""
    if os.name != "posix":
        proc.kill()
        proc.wait()
        return
    _signal_group(proc.pid, signal.SIGINT)
    try:
        _wait_unreaped(proc, grace)
    except KeyboardInterrupt:
        pass  # asked again: stop waiting politely
    finally:
        _signal_group(proc.pid, signal.SIGKILL)  # unreaped, the leader keeps the group's number from reuse
        proc.wait()


def _wait_unreaped(proc: subprocess.Popen, timeout: float) -> None:
    """Wait up to `timeout` for `proc` to exit without reaping it (its PID, the group's, stays taken)."""
    if not hasattr(os, "waitid"):
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return
        except ChildProcessError:
            return  # reaped already
        time.sleep(0.05)


class Watchdog:
    """Stops a process group if dihal dies without doing so itself (SIGKILL, a crash of the interpreter).

    DVC runs in a session of its own, so `kill -9 <dihal>` or SIGKILL to dihal's group (`timeout -k`, a
    test's cleanup) would leave it computing. This small process, in a session of its own and deaf to
    the usual signals, holds the read end of a pipe only dihal can write to: when the pipe closes with
    nothing said, dihal is gone, and it ends the group as `stop_group` would (SIGINT, then SIGKILL).
    `release()` says "done" first, so a group dihal already ended, whose number may be reused, is left
    alone. A pipe rather than Linux's PR_SET_PDEATHSIG: DVC ignores SIGINT while a stage runs and dies
    on anything else without releasing its locks, so only a signal to the whole group stops it cleanly."""

    def __init__(self, pgid: int, grace: float = STOP_GRACE_S):
        read, self._write = os.pipe()  # both non-inheritable: DVC and the stages never hold them
        try:
            here = str(Path(__file__).resolve().parents[1])  # importable even from an uninstalled checkout
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))}
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dihal.execute.signals", str(read), str(pgid), str(grace)],
                pass_fds=(read,),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )
        except BaseException:
            os.close(self._write)
            raise
        finally:
            os.close(read)

    def release(self) -> None:
        """The group is dealt with (it ended, or `stop_group` ended it): the watchdog leaves it alone."""
        try:
            os.write(self._write, b"done")
        except OSError:
            pass
        os.close(self._write)
        self.proc.wait()


def _watch(fd: int, pgid: int, grace: float) -> None:
    """The watchdog process (`python -m dihal.execute.signals FD PGID GRACE`): wait for dihal's pipe to close; if it
    closed with nothing said, end the group as `stop_group` would."""
    for s in HANDLED:
        signal.signal(s, signal.SIG_IGN)
    said = b""
    while chunk := os.read(fd, 64):
        said += chunk
    if said or not _group_alive(pgid):
        return
    _signal_group(pgid, signal.SIGINT)
    deadline = time.monotonic() + grace
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _group_alive(pgid):
        _signal_group(pgid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def watchdog(pgid: int) -> Watchdog | None:
    """A `Watchdog` for the group where process groups exist (POSIX); None elsewhere."""
    return Watchdog(pgid) if os.name == "posix" else None


def release_dead_locks(root: Path) -> list[int]:
    """Drop `.dvc/tmp/rwlock` entries of processes that no longer exist; return their PIDs.

    DVC removes such entries itself only when they block what it is about to lock (and warns), so
    read entries of a killed DVC would pile up. Edited under DVC's own lock, with DVC's own reader,
    so a concurrent `dvc` in the same project never loses its entries. Best effort: on any problem
    (another DVC version, a corrupt file) the file is left for DVC to judge."""
    path = root / ".dvc" / "tmp" / "rwlock"
    try:
        dead = _dead_pids(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return []
    if not dead:
        return []
    try:
        from dvc.fs import localfs
        from dvc.rwlock import _edit_rwlock

        with _edit_rwlock(str(path.parent), localfs, False) as lock:
            for mode in ("read", "write"):
                for p, infos in list(lock[mode].items()):
                    if mode == "write":
                        if infos.get("pid") in dead:
                            del lock[mode][p]
                        continue
                    kept = [i for i in infos if i.get("pid") not in dead]
                    if kept:
                        lock[mode][p] = kept
                    else:
                        del lock[mode][p]
    except Exception:  # noqa: BLE001 - best effort, see above
        return []
    return sorted(dead)


def _dead_pids(lock: dict) -> set[int]:
    infos = list((lock.get("write") or {}).values())
    for readers in (lock.get("read") or {}).values():
        infos.extend(readers)
    pids = {int(i["pid"]) for i in infos if isinstance(i, dict) and "pid" in i}
    return {pid for pid in pids if not _alive(pid)}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


if __name__ == "__main__":
    _watch(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))
