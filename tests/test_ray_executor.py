"""`dihal run --executor ray` on a real local Ray cluster (2 CPUs, loopback): same ledger rows as `dvc repro`,
DVC left clean, worker deaths retried. The tiny sweep of test_run_tiny (layers 1-3, seeds 0-1)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dihal.cli import app
from tests.tiny import TINY_SWEEP as BASE
from tests.tiny import ledger_rows, save_tiny, stages_ran, write_spec_from

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'dihal[ray]')")

ROWS = {
    "bridge": "SELECT layer, seed, bridge_val_loss, gen_ppl, recovery_ce, samples_digest FROM bridge_results "
    "ORDER BY layer, seed",
    "geometry": "SELECT layer, g FROM layer_geometry ORDER BY layer",
}
runner = CliRunner()


def rows(root: Path) -> dict[str, list[tuple]]:
    return {k: ledger_rows(root, q) for k, q in ROWS.items()}


def invoke(root: Path, *args: str):
    cwd = os.getcwd()
    os.chdir(root)
    try:
        return runner.invoke(app, [*args, "--project", str(root)])
    finally:
        os.chdir(cwd)


def dvc_status(root: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=root, capture_output=True, text=True)
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("model") / "tiny")


def new_project(tmp_path_factory, model: Path, name: str) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp(name)
    shutil.copytree(model, root / "tiny")
    return root, write_spec_from(BASE, root, "sweep")


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, model):
    root, spec = new_project(tmp_path_factory, model, "local")
    res = invoke(root, "run", str(spec), "--no-report")
    assert res.exit_code == 0, res.output
    return root, rows(root)


@pytest.fixture(scope="module")
def cluster():
    saved = os.environ.pop("RAY_ADDRESS", None)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield
    ray.shutdown()
    if saved is not None:
        os.environ["RAY_ADDRESS"] = saved


@pytest.fixture(scope="module")
def ray_run(tmp_path_factory, model, cluster):
    root, spec = new_project(tmp_path_factory, model, "ray")
    res = invoke(root, "run", str(spec), "--no-report", "--executor", "ray")
    assert res.exit_code == 0, res.output
    return root, spec, res


def test_ray_sweep_matches_dvc_repro_and_leaves_dvc_clean(local_run, ray_run):
    root, spec, res = ray_run
    kinds = [s.split("-")[0] for s in stages_ran(res.output)]
    assert kinds.count("train") == 6 and kinds.count("evaluate") == 6 and "correlate" in kinds
    assert rows(root) == local_run[1] and len(local_run[1]["bridge"]) == 6
    assert "up to date" in dvc_status(root)
    again = invoke(root, "run", str(spec), "--no-report", "--executor", "ray")
    assert again.exit_code == 0, again.output
    assert stages_ran(again.output) == [] and "stages up to date" in again.output
    assert ledger_rows(root, "SELECT stages_run FROM runs ORDER BY started_at DESC LIMIT 1") == [(0,)]


def test_a_killed_worker_is_retried_and_gives_the_same_rows(tmp_path_factory, local_run, ray_run, monkeypatch):
    src, _, _ = ray_run
    root = tmp_path_factory.mktemp("killed") / "p"
    shutil.copytree(src, root, ignore=shutil.ignore_patterns("dihal.duckdb*"))
    for kind in ("train", "evaluate", "correlate"):  # their outputs gone: DVC finds them changed, the rest is kept
        shutil.rmtree(root / "artifacts" / kind)
    monkeypatch.setenv("DIHAL_RAY_TEST_KILL_ONCE", "train")
    res = invoke(root, "run", str(root / "sweep.yaml"), "--no-report", "--executor", "ray")
    assert res.exit_code == 0, res.output
    kinds = [s.split("-")[0] for s in stages_ran(res.output)]
    assert "extract" not in kinds and "targets" not in kinds and kinds.count("train") == 6
    assert "(retried)" in res.output and list((root / ".dihal" / "ray").glob("*/killed-train"))
    assert rows(root) == local_run[1]
    assert "up to date" in dvc_status(root)


def test_resources_are_validated_and_not_hashed():
    from dihal.spec.hashing import spec_hash
    from dihal.spec.resources import stage_resources
    from dihal.spec.schema import SpecError, parse_spec

    plain = parse_spec({"name": "x"})
    asked = parse_spec({"name": "x", "resources": {"train": {"gpus": 1, "cpus": 4}, "extract": {"gpus": 0.5}}})
    assert spec_hash(plain) == spec_hash(asked)
    assert stage_resources(asked, "train") == {"num_cpus": 4.0, "num_gpus": 1.0}
    assert stage_resources(asked, "score") == {"num_cpus": 1.0, "num_gpus": 0.0}
    with pytest.raises(SpecError) as e:
        parse_spec({"name": "x", "resources": {"trian": {"gpus": 1}}})
    ((path, value, expected),) = e.value.problems
    assert path == "resources" and "trian" in str(value) and "'trian'" in expected and "train" in expected
    with pytest.raises(SpecError) as e:
        parse_spec({"name": "x", "resources": {"train": {"cpus": -1, "gpu": 1}}})
    assert {p for p, _, _ in e.value.problems} == {"resources.train.cpus", "resources.train.gpu"}


def test_ray_stays_optional():
    code = (
        "import sys; import dihal.cli, dihal.execute.runner, dihal.execute.executors; dihal.execute.executors.get('local'); "
        "assert 'ray' not in sys.modules; sys.modules['ray'] = None\n"
        "try:\n    dihal.execute.executors.get('ray')\n"
        "except dihal.execute.executors.ExecutorUnavailable as e:\n    print(e)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert 'pip install "dihal[ray]"' in out.stdout


def test_each_stage_computes_with_the_threads_its_task_was_granted(local_run, ray_run):
    """Ray grants each task num_cpus (1 by default): the stage records 1 thread; a local stage, torch's default."""
    import torch

    from dihal.spec.kinds import LIGHT_KINDS

    def threads(root: Path) -> set[int]:
        """Each computing stage's recorded thread count (a light stage imports no torch and records none)."""
        manifests = [json.loads(p.read_text()) for p in (root / "artifacts").glob("*/*/manifest.json")]
        assert {m["kind"] for m in manifests} - set(LIGHT_KINDS) and all(
            "runtime" in m for m in manifests if m["kind"] not in LIGHT_KINDS
        )
        return {m["runtime"]["threads"] for m in manifests if m["kind"] not in LIGHT_KINDS}

    ray_root, _, _ = ray_run
    assert threads(ray_root) == {1}
    assert threads(local_run[0]) == {torch.get_num_threads()}
