"""DVC as a subprocess: the environment stages run in, one `dvc` call, and `dvc repro` with its waiting.

Every executor and the runner call DVC through here, so how a stage's process is started (which `dihal`,
which variables) is decided once.
"""

from __future__ import annotations

import codecs
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from dihal.execute import signals, zygote
from dihal.utils.terminal import clean


def env(progress: str | None = None) -> dict[str, str]:
    """The environment DVC and its stages run in; `progress` (`bar` or `lines`) is how stages show progress
    unless the user chose (`DIHAL_PROGRESS` set to anything but 1), because only this process knows whether
    its stderr is a terminal: a stage's stderr is always DVC's pipe (`dihal.utils.progress`)."""
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)  # stage commands call `dihal`: use this interpreter's
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env.setdefault("DVC_NO_ANALYTICS", "1")
    # OpenMP threads that wait by spinning take a shared machine's cores from everything else and, beside any
    # other CPU-bound process, slow a stage ~6x (bench/contention.py); passive waiting keeps it near its fair
    # share. It changes scheduling, never a number. An OMP_WAIT_POLICY the user set is kept.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if progress is not None and env.get("DIHAL_PROGRESS", "1").strip() in ("1", ""):
        env["DIHAL_PROGRESS"] = progress
    return env


def progress_style(echo) -> str:
    """`bar` where `echo` is a terminal, else `lines`; a `StageOutput` says which itself (quiet: lines)."""
    chosen = getattr(echo, "progress_style", None)
    if chosen:
        return chosen
    try:
        return "bar" if echo and echo.isatty() else "lines"
    except (AttributeError, OSError, ValueError):
        return "lines"


def dvc(args: list[str], root: Path, check: bool = False) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True, env=env())
    if check and proc.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
    return proc


def dvc_repro(targets: list[str], root: Path, echo=None) -> tuple[int, str, list[str]]:
    """Run `dvc repro` on the targets, streaming its output; return (code, output tail, stages that ran).

    `echo` is where the output goes (default: stderr; False: nowhere): any text stream, usually the run's
    `StageOutput`, which decides what a person sees. The stages are told to draw live bars only when it is a
    terminal (`progress_style`). The tail and the stages that ran are read from DVC's raw output.

    DVC runs in a session of its own, so a signal meant for dihal (SIGTERM to its PID) never hits DVC
    mid-write; on any interruption (SIGINT, SIGTERM, SIGHUP: `dihal.execute.signals`) dihal ends DVC's whole
    group the way Ctrl-C would, so DVC releases its locks and no stage keeps computing, then re-raises."""
    if echo is None:  # resolved per call: tests and callers may have swapped sys.stderr; False = silent
        echo = sys.stderr
    chunks: list[bytes] = []

    def pump() -> None:
        nonlocal echo
        assert proc.stdout is not None
        decode = codecs.getincrementaldecoder("utf-8")(errors="replace").decode  # ℓ, █ may straddle chunks
        for chunk in iter(lambda: proc.stdout.read1(4096), b""):
            chunks.append(chunk)
            if echo is not False:
                try:
                    echo.write(decode(chunk))
                    echo.flush()
                except (OSError, ValueError):  # the terminal went away (SIGHUP): keep draining DVC's pipe
                    echo = False
                except Exception as bug:  # noqa: BLE001 - a filter's bug must never stop DVC's pipe draining
                    print(clean(f"dihal: showing DVC's output failed ({type(bug).__name__}: {bug})"), file=sys.stderr)
                    echo = False

    proc = guard = None
    t = threading.Thread(target=pump, daemon=True)
    argv, run_env, sock_dir = [sys.executable, "-m", "dvc", "repro", *targets], env(progress_style(echo)), None
    if zygote.enabled(run_env):  # stages fork from a warm process instead of importing torch each
        sock_dir = tempfile.mkdtemp(prefix="dihal-z")
        run_env[zygote.ENV_SOCKET] = os.path.join(sock_dir, zygote.SOCKET_NAME)
        argv = zygote.launcher_argv(sock_dir, argv)
    with signals.raise_on_signals():
        try:
            with signals.deferred():  # a signal landing mid-start is delivered once `proc` names the child
                proc = subprocess.Popen(
                    argv,
                    cwd=root,
                    env=run_env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=signals.child_setup(),
                )
                t.start()
                guard = signals.watchdog(proc.pid)  # stops DVC should dihal itself be SIGKILLed
            code = proc.wait()
        except BaseException:
            if proc is not None:
                signals.stop_group(proc)
            raise
        finally:
            if guard is not None:
                guard.release()
            if proc is not None:
                t.join(timeout=10)
                signals.release_dead_locks(root)
            if sock_dir is not None:
                shutil.rmtree(sock_dir, ignore_errors=True)
    text = b"".join(chunks).decode(errors="replace")
    ran = re.findall(r"Running stage '([^']+)'", text)
    return code, text[-4000:], ran


# DVC's words when another process holds a stage's rwlock entry or the repo lock.
_BUSY = re.compile(r"is busy, it is being blocked by|Unable to acquire lock")


def dvc_wait() -> float:
    """Seconds a run waits for another run computing a stage both share (`DIHAL_DVC_WAIT`, default 3600)."""
    try:
        return max(0.0, float(os.environ.get("DIHAL_DVC_WAIT", "3600")))
    except ValueError:
        return 3600.0


def repro_waiting(targets: list[str], root: Path, echo=None, sleep=time.sleep) -> tuple[int, str, list[str]]:
    """`dvc_repro`, again while another run holds a stage this spec shares (DVC refuses to run one stage
    from two processes and fails the second at once): once that run has computed it, DVC finds it done
    and goes on. Specs of one project share extract and score stages whenever their data and geometry
    agree, so two specs started together meet here often."""
    deadline, delay, ran_all = time.monotonic() + dvc_wait(), 2.0, []
    while True:
        code, tail, ran = dvc_repro(targets, root, echo=echo)
        ran_all += ran
        if code == 0 or not _BUSY.search(tail) or time.monotonic() >= deadline:
            return code, tail, ran_all
        signals.release_dead_locks(root)
        print(
            f"dihal: another run holds a stage this spec needs; trying again in {delay:.0f} s "
            f"(waiting up to {dvc_wait():g} s in all, DIHAL_DVC_WAIT)",
            file=sys.stderr,
            flush=True,
        )
        sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, 30.0)
