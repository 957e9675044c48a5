"""`--executor ray`: the stages that need computing, as Ray tasks, concurrently where the DAG allows.

Which stages: `dvc status` names the changed ones; a stage runs when it changed or when any stage it
depends on (upstream or chain link) runs. Each runs as `dihal stage <config>` in a subprocess on a Ray
worker, with `cwd` the project root (which every worker must mount at the same path: checked first by
a probe task per node) and the resources `resources:` in the spec asks for its kind. As each one
completes the driver `dvc commit`s it (serially, one process), so `dvc.lock` is the record exactly as
after `dvc repro`: a later `dvc status` is clean, and an interrupted run resumes where it stopped.
Ray retries a task whose worker died or that failed (`--retries`, Ray's max_retries/retry_exceptions).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import ray

# Keys a Ray worker sets for the accelerators it was given: they win over the driver's environment.
_WORKER_KEYS = (
    "CUDA_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "HIP_VISIBLE_DEVICES",
    "NEURON_RT_VISIBLE_CORES",
    "ONEAPI_DEVICE_SELECTOR",
    "TPU_VISIBLE_CHIPS",
)
KILL_ONCE = "DIHAL_RAY_TEST_KILL_ONCE"  # tests: the first attempt of a stage of this kind kills its worker
TAIL_LINES = 30


class StageFailed(RuntimeError):
    """`dihal stage` exited non-zero on a worker; the message ends with its last lines of output."""

    def __init__(self, name: str, code: int, host: str, tail: str):
        super().__init__(f"stage {name} failed: exit {code} on {host}\n{tail}")
        self.name, self.code, self.host, self.tail = name, code, host, tail

    def __reduce__(self):
        return (StageFailed, (self.name, self.code, self.host, self.tail))


def _attempt(attempts: Path, name: str) -> int:
    """This attempt's number for the stage (1 = first), counted in the run's folder on the shared filesystem."""
    attempts.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        try:
            os.close(os.open(attempts / f"{name}.{n}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return n
        except FileExistsError:
            n += 1


def _kill_once(attempts: Path, kind: str, env: dict) -> None:
    if env.get(KILL_ONCE) != kind:
        return
    try:
        os.close(os.open(attempts / f"killed-{kind}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    os.kill(os.getpid(), signal.SIGKILL)  # the worker dies mid-task, as on a lost node


@ray.remote(num_cpus=0)
def _probe(stages_dir: str) -> tuple[str, bool]:
    return socket.gethostname(), os.path.isdir(stages_dir)


@ray.remote
def _run_stage(root: str, config: str, name: str, kind: str, env: dict, attempts: str, cpus: float) -> dict:
    """One stage on a worker: `dihal stage <config>` in the project root; raises StageFailed on a non-zero exit.
    The stage computes with the threads its task was granted (`dihal.utils.threads`), decided here on the worker."""
    from dihal.utils.threads import stage_env

    host, t0 = socket.gethostname(), time.time()
    n = _attempt(Path(attempts), name)
    _kill_once(Path(attempts), kind, env)
    env = {**env, **{k: os.environ[k] for k in _WORKER_KEYS if k in os.environ}, **stage_env(cpus, env)}
    proc = subprocess.Popen(
        ["dihal", "stage", config], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        out, _ = proc.communicate()
    except BaseException:  # cancelled (KeyboardInterrupt raised in the task): stop the stage too
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    text = out.decode(errors="replace")
    tail = "\n".join(text.splitlines()[-TAIL_LINES:])
    if proc.returncode != 0:
        raise StageFailed(name, proc.returncode, host, tail)
    return {"host": host, "seconds": time.time() - t0, "attempt": n, "tail": tail}


@dataclass
class RayExecutor:
    address: str | None = None  # None: a local cluster (ray.init(num_cpus=...)); "auto", "ray://host:10001"
    retries: int = 2
    num_cpus: int | None = None  # local cluster only; default $DIHAL_RAY_NUM_CPUS or all cores
    name: str = "ray"

    def run(self, plan, root: Path, *, spec=None, echo=None) -> tuple[int, str, list[str]]:
        from dihal.execute.dvc import env as _env

        root = Path(root).resolve()
        log = _Log(echo)
        todo = stages_to_run(plan, root)
        if not todo:
            log(f"ray: all {len(plan.stages)} stages up to date")
            return 0, log.text(), []
        started = self._connect()
        try:
            check_shared_fs(root)
            opts = {st.name: _options(spec, st.kind) for st in todo}
            check_fits(opts)
            return _schedule(todo, root, opts, _env("lines"), self.retries, log)  # output read back as text
        finally:
            if started:
                ray.shutdown()

    def _connect(self) -> bool:
        """Connect (or start a local cluster); True when this call started Ray and must shut it down."""
        if ray.is_initialized():
            return False
        if self.address:
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
        else:
            n = self.num_cpus or int(os.environ.get("DIHAL_RAY_NUM_CPUS", "0")) or os.cpu_count() or 1
            ray.init(num_cpus=n, include_dashboard=False, log_to_driver=False)
        return True


class _Log:
    """Progress lines on stderr (or `echo`; False = silent), kept for the output tail the runner reports."""

    def __init__(self, echo) -> None:
        self.echo, self.lines = (sys.stderr if echo is None else echo), []

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        if self.echo is not False:
            try:
                self.echo.write(line + "\n")
                self.echo.flush()
            except (OSError, ValueError):
                self.echo = False

    def text(self) -> str:
        return "\n".join(self.lines)[-4000:]


def _options(spec, kind: str) -> dict[str, float]:
    from dihal.spec.resources import stage_resources

    return stage_resources(spec, kind)


def changed_stages(names: list[str], root: Path) -> set[str]:
    """The stages among `names` that `dvc status` says are not up to date (no lock entry, changed deps/outs)."""
    from dihal.execute.dvc import dvc as _dvc

    proc = _dvc(["status", "--json", *names], root)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc status failed:\n{proc.stdout}{proc.stderr}")
    text = proc.stdout
    status = json.loads(text[text.index("{") :]) if "{" in text else {}
    return {key.rsplit(":", 1)[-1] for key in status}


def stages_to_run(plan, root: Path) -> list:
    """Plan stages (topological order) that changed, or that depend on a stage that runs."""
    changed = changed_stages([st.name for st in plan.stages], root)
    run: list = []
    names: set[str] = set()
    for st in plan.stages:
        deps = [*st.upstream.values(), *([st.link] if st.link else [])]
        if st.name in changed or any(d.name in names for d in deps):
            run.append(st)
            names.add(st.name)
    return run


def check_shared_fs(root: Path) -> list[str]:
    """One probe per alive node: the project's `.dihal/stages` must exist there at the same path."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    stages_dir = str(root / ".dihal" / "stages")
    nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
    refs = [
        _probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote(stages_dir)
        for n in nodes
    ] or [_probe.remote(stages_dir)]
    found = ray.get(refs, timeout=300)
    missing = sorted({host for host, ok in found if not ok})
    if missing:
        raise RuntimeError(
            f"{stages_dir} does not exist on Ray node(s) {', '.join(missing)}: the project must be "
            "on a filesystem every worker mounts at the same path (NFS, a shared volume)"
        )
    return sorted({host for host, _ in found})


def check_fits(opts: dict[str, dict[str, float]]) -> None:
    """A stage asking more than any node has would wait forever: refuse it now."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    for name, o in opts.items():
        if not any(r.get("CPU", 0) >= o["num_cpus"] and r.get("GPU", 0) >= o["num_gpus"] for r in nodes):
            raise RuntimeError(
                f"stage {name} asks for {o['num_cpus']:g} CPU(s) and {o['num_gpus']:g} GPU(s) "
                f"(spec field resources), more than any node of the Ray cluster has"
            )


def _commit(names: list[str], root: Path) -> None:
    from dihal.execute.dvc import dvc as _dvc

    _dvc(["commit", "--force", "--quiet", *names], root, check=True)


def _schedule(todo: list, root: Path, opts: dict, env: dict, retries: int, log: _Log) -> tuple[int, str, list[str]]:
    """Submit each stage once the stages it needs are done; commit each as it completes; stop at a failure."""
    names = {st.name for st in todo}
    attempts = str(root / ".dihal" / "ray" / uuid.uuid4().hex[:12])
    pending, running, done, ran = list(todo), {}, set(), []
    failure: str | None = None
    t_run = time.monotonic()
    log(f"ray: {len(todo)} of the spec's stages to run, on {int(ray.cluster_resources().get('CPU', 0))} CPU(s)")

    def submit_ready() -> None:
        for st in list(pending):
            deps = [*st.upstream.values(), *([st.link] if st.link else [])]
            if all(d.name not in names or d.name in done for d in deps):
                pending.remove(st)
                ref = _run_stage.options(
                    **opts[st.name], max_retries=retries, retry_exceptions=True, name=st.name
                ).remote(str(root), str(st.config_path), st.name, st.kind, env, attempts, opts[st.name]["num_cpus"])
                running[ref] = (st, time.monotonic())
                log(
                    f"Running stage '{st.name}' (ray; cpus={opts[st.name]['num_cpus']:g}, "
                    f"gpus={opts[st.name]['num_gpus']:g})"
                )

    try:
        submit_ready()
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            ready += (
                ray.wait([r for r in running if r not in ready], num_returns=len(running) - 1, timeout=0)[0]
                if len(running) > 1
                else []
            )
            finished = []
            for ref in ready:
                st, t0 = running.pop(ref)
                try:
                    res = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - a stage that failed after its retries
                    cause = getattr(e, "cause", None)
                    msg = str(cause) if isinstance(cause, StageFailed) else f"stage {st.name} failed: {e}"
                    log(msg)
                    failure = failure or msg
                    continue
                if res["tail"]:
                    log(res["tail"])
                retried = f", attempt {res['attempt']} (retried)" if res["attempt"] > 1 else ""
                finished.append(st)
                done.add(st.name)
                log(
                    f"[{len(done)}/{len(todo)}] stage '{st.name}' done in {time.monotonic() - t0:.1f} s "
                    f"(stage {res['seconds']:.1f} s) on {res['host']}{retried}"
                )
            if failure is None:
                submit_ready()  # dependents start before the commit below, which only records
            if finished:
                _commit([st.name for st in finished], root)
                ran += [st.name for st in finished]
    except BaseException:  # Ctrl-C, SIGTERM: stop what runs; what completed is committed and is kept
        for ref in running:
            ray.cancel(ref, force=False)
        raise
    finally:
        if not env.get(KILL_ONCE):  # attempt counters only matter while the run lasts (tests read the marker)
            shutil.rmtree(attempts, ignore_errors=True)
    if failure:
        return 1, log.text() if failure in log.text() else (log.text() + "\n" + failure)[-4000:], ran
    log(f"ray: {len(ran)} stage(s) in {time.monotonic() - t_run:.1f} s")
    return 0, log.text(), ran
