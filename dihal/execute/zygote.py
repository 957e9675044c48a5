"""A warm process that forks `dihal stage` for `dihal run`, so a stage does not pay torch's and transformers'
imports each time.

Those imports are ~4 s of every stage that loads a model (torch ~1.1 s, transformers' model classes ~2.6 s,
measured on 2 cores): most of a small stage's wall time, and nearly all of a tiny model's. DVC starts each
stage as a fresh process and must keep doing so (`dvc repro` and `dvc exp run` work without dihal), so the
stage command stays `dihal stage CONFIG`; under `dihal run` that command only hands its arguments, working
directory, environment and standard streams to this process, which imports the libraries once (when the
first stage asks, so a run with nothing to compute never pays them) and forks a child per stage. The child
is what a fresh process would be: the client's streams on fds 0-2, its environment and directory, Python's
default signal handlers; the stage computes the same bytes (`tests/test_zygote.py` checks a run against
`dvc repro` of the same stages), and its manifest says it started as a fork (`dihal.stages.manifest`).

How it is wired (POSIX only; `DIHAL_ZYGOTE=0` turns it off):

- `dihal run` starts DVC as `python -m dihal.execute.zygote DIR -- python -m dvc repro ...`: this module binds
  the socket `DIR/s`, forks the server, and execs DVC in the original process. The server is in DVC's
  process group, so everything that stops DVC's group (`dihal.execute.signals.stop_group`, the `Watchdog`)
  stops the server and every stage it forked; it dies with DVC (`PR_SET_PDEATHSIG`).
- A stage command finding `DIHAL_ZYGOTE_SOCKET` connects and sends its request; it is answered with the
  child's PID, then the child's exit status, which it exits with (a child ended by a signal ends the client
  by the same signal). SIGTERM and SIGHUP sent to the client alone go on to the child; SIGINT only is noted
  there, since DVC's group gets it and the child is in that group. A client that dies (SIGKILL) closes its
  connection, and the child kills itself on that.
- Anything that keeps the server from answering (it failed to start, it is gone) makes the client run the
  stage in its own process, as it does under plain `dvc repro`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys

ENV_SWITCH = "DIHAL_ZYGOTE"  # "0": every stage starts as a fresh process
ENV_SOCKET = "DIHAL_ZYGOTE_SOCKET"  # set by `dihal run` for DVC and its stages: where the server listens
SOCKET_NAME = "s"
_HEADER = struct.Struct("!I")
# What the server imports before it forks: what a model stage would import first thing.
PRELOAD = (
    "torch",
    "transformers",
    "transformers.modeling_utils",
    "transformers.models.llama.modeling_llama",
    "dihal.stages",
    "dihal.stages.common",
    "dihal.backbone.loading",
)


def enabled(environ=os.environ) -> bool:
    return os.name == "posix" and hasattr(socket, "send_fds") and environ.get(ENV_SWITCH, "1").strip() != "0"


def launcher_argv(sock_dir: str, argv: list[str]) -> list[str]:
    """The command that runs `argv` (DVC) with a server beside it listening in `sock_dir`."""
    return [sys.executable, "-m", "dihal.execute.zygote", sock_dir, "--", *argv]


# -- the client: `dihal stage` under `dihal run` ------------------------------------------------------------


def _send(conn: socket.socket, message: dict) -> None:
    data = json.dumps(message).encode()
    conn.sendall(_HEADER.pack(len(data)) + data)


def _recv(conn: socket.socket) -> dict | None:
    """One message, or None when the other end closed first."""
    head = _recv_exact(conn, _HEADER.size)
    if head is None:
        return None
    body = _recv_exact(conn, _HEADER.unpack(head)[0])
    return None if body is None else json.loads(body)


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        try:
            chunk = conn.recv(n - len(buf))
        except InterruptedError:
            continue
        if not chunk:
            return None
        buf += chunk
    return buf


def delegate(argv: list[str]) -> int | None:
    """Run `argv` (a `dihal stage` command line) in a child of the server; its exit code, or None when there is
    no server to ask (the caller then runs the stage itself)."""
    path = os.environ.get(ENV_SOCKET)
    if not path or not enabled():
        return None
    interrupted: list[int] = []
    # The child, in DVC's group, gets its own SIGINT: this process only notes that one came.
    previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.append(signum))
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
        request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
        socket.send_fds(conn, [_HEADER.pack(len(request))], [0, 1, 2])
        conn.sendall(request)
        hello = _recv(conn)
    except OSError:
        hello = None
    if hello is None:  # no server, or it went away before it forked: nothing ran
        conn.close()
        signal.signal(signal.SIGINT, signal.SIG_DFL if interrupted else previous)
        if interrupted:  # stopped with the rest of DVC's group: so is this stage, before it starts
            os.kill(os.getpid(), signal.SIGINT)
        return None
    child = int(hello["pid"])

    def forward(signum, frame) -> None:
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, forward)
    try:
        status = _recv(conn)
    except OSError:
        status = None
    conn.close()
    status = status or {"signal": signal.SIGKILL}  # closed without a status: the child was killed
    if "signal" in status:
        signum = int(status["signal"])
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return 128 + signum  # not reached unless the signal is blocked
    return int(status["exit"])


# -- the server -----------------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: DVC gone, the server goes too
    except (OSError, AttributeError):
        pass


def _quiet_streams() -> None:
    """The server holds none of DVC's streams: `dihal run` reads DVC's output until every writer closes it."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def _preload() -> None:
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a missing optional module only makes the stage import it itself
            pass


def serve(listener: socket.socket, parent: int) -> None:
    _die_with_parent()
    if os.getppid() != parent:  # DVC ended before the death signal was armed
        os._exit(0)
    _quiet_streams()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel; clients get their status
    loaded = False
    while True:
        conn, _ = listener.accept()
        if not loaded:  # on the first stage, not before: a run with nothing to compute never pays the imports
            _preload()
            loaded = True
        try:
            head, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
            body = _recv_exact(conn, _HEADER.unpack(head)[0]) if len(head) == _HEADER.size else None
            request = json.loads(body) if body is not None and len(fds) == 3 else None
        except (OSError, ValueError):
            request, fds = None, []
        if request is None:
            for fd in fds:
                os.close(fd)
            conn.close()
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        if os.fork() == 0:
            listener.close()
            _child(conn, fds, request)  # never returns
        for fd in fds:
            os.close(fd)
        conn.close()


def _script(name: str):
    """The function the console script `name` runs (`dihal`), found as the script itself finds it."""
    from importlib.metadata import entry_points

    (script,) = entry_points(group="console_scripts", name=name)
    return script.load()


def _child(conn: socket.socket, fds: list[int], request: dict) -> None:
    import atexit
    import threading
    import traceback

    try:
        from dihal.stages.manifest import FORKED_ENV

        for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(s, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        for target, fd in zip((0, 1, 2), fds):
            os.dup2(fd, target)
            os.close(fd)
        sys.stdout.reconfigure(line_buffering=os.isatty(1))
        env = {**{k: v for k, v in request["env"].items() if k != ENV_SOCKET}, FORKED_ENV: "1"}
        os.environ.clear()
        os.environ.update(env)
        os.chdir(request["cwd"])
        sys.argv = list(request["argv"])
        done = threading.Event()

        def watch() -> None:  # the client died: so does its stage
            while True:
                try:
                    if conn.recv(1) == b"":
                        break
                except InterruptedError:
                    continue
                except OSError:
                    break
            if not done.is_set():
                os.kill(os.getpid(), signal.SIGKILL)

        _send(conn, {"pid": os.getpid()})
        threading.Thread(target=watch, daemon=True).start()
        try:
            _script(sys.argv[0])(args=sys.argv[1:], prog_name=sys.argv[0])
            code = {"exit": 0}
        except SystemExit as e:
            code = {"exit": e.code if isinstance(e.code, int) else (0 if e.code is None else 1)}
            if not isinstance(e.code, int | None):
                print(e.code, file=sys.stderr)
        except KeyboardInterrupt:
            traceback.print_exc()
            code = {"signal": signal.SIGINT}
        except BaseException:  # noqa: BLE001 - what a fresh interpreter would print for an uncaught error
            traceback.print_exc()
            code = {"exit": 1}
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        done.set()
        _send(conn, code)
    finally:
        os._exit(0)


def main(argv: list[str]) -> None:
    """`python -m dihal.execute.zygote DIR -- COMMAND...`: serve in a fork, exec COMMAND here."""
    sock_dir, sep, *command = argv
    if sep != "--" or not command:
        raise SystemExit("usage: python -m dihal.execute.zygote DIR -- COMMAND...")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(os.path.join(sock_dir, SOCKET_NAME))
        listener.listen(64)
    except OSError:  # e.g. a path over AF_UNIX's ~107 bytes: no server, every stage starts fresh
        listener.close()
        os.execv(command[0], command)
    parent = os.getpid()
    if os.fork() == 0:
        try:
            serve(listener, parent)
        finally:
            os._exit(0)
    listener.close()
    os.execv(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
