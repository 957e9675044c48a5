"""dvc.yaml is the union of the registered specs' stages; `dihal gc` removes what none of them uses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from dihal.compile.plan import compile_spec
from dihal.compile.project import registered
from dihal.spec.schema import Spec, load_spec
from tests.test_run_tiny import invoke, write_spec
from tests.tiny import save_tiny

ROOT = Path(__file__).resolve().parent.parent


def stages(root: Path) -> dict:
    return yaml.safe_load((root / "dvc.yaml").read_text())["stages"]


def test_compiling_b_never_changes_a_and_a_recompiled_replaces_its_old_stages(tmp_path):
    a, _ = load_spec(ROOT / "specs" / "quickstart.yaml")
    b = a.model_copy(update={"name": "b", "geometry": a.geometry.model_copy(update={"k": 4})})
    pa = compile_spec(a, tmp_path, 30)
    before = stages(tmp_path)
    user = {"cmd": "python my_plot.py", "deps": ["artifacts"]}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {**before, "mine": user}}, sort_keys=False))
    pb = compile_spec(b, tmp_path, 30)
    after = stages(tmp_path)
    assert all(after[k] == v for k, v in before.items()), "A's stages are as they were"
    assert after["mine"] == user, "a hand-written stage is the user's"
    assert pb.extract.name == pa.extract.name and pb.score.name != pa.score.name
    assert [r["name"] for r in registered(tmp_path)] == ["b", "quickstart"]

    a2 = a.model_copy(update={"geometry": a.geometry.model_copy(update={"k": 8})})
    pa2 = compile_spec(a2, tmp_path, 30)
    now = stages(tmp_path)
    assert pa.score.name not in now, "A's old version leaves dvc.yaml when A is compiled again"
    assert pa2.score.name in now and pb.score.name in now and "mine" in now


def test_gc_refuses_an_unknown_name_and_changes_nothing(tmp_path):
    a, _ = load_spec(ROOT / "specs" / "quickstart.yaml")
    compile_spec(a, tmp_path, 30)
    before = (tmp_path / "dvc.yaml").read_text()
    res = invoke(tmp_path, "gc", "--keep", "quickstrat")
    assert res.exit_code == 2 and "not registered: quickstrat" in res.output
    assert (tmp_path / "dvc.yaml").read_text() == before and registered(tmp_path)


def test_gc_keeps_only_the_kept_spec_and_its_artifacts(tmp_path, monkeypatch):
    root = tmp_path / "proj"
    root.mkdir()
    save_tiny(root / "tiny")
    monkeypatch.chdir(root)
    spec_a = write_spec(root, "a", bridge=None)
    spec_b = write_spec(root, "b", bridge=None, geometry__k=4)  # shares a's extraction
    for spec in (spec_a, spec_b):
        res = invoke(root, "run", str(spec), "--no-report")
        assert res.exit_code == 0, res.output
    regs = {r["name"]: r["stages"] for r in registered(root)}
    a_stages, b_stages = set(regs["a"]), set(regs["b"])
    a_outs = {o for e in regs["a"].values() for o in e["outs"]}
    b_only = {o for n, e in regs["b"].items() if n not in a_stages for o in e["outs"]}
    assert b_only and all((root / o).is_dir() for o in a_outs | b_only)

    a_metrics = {p.name for p in (root / "metrics").glob("*.json")} & {f"{n}.json" for n in a_stages}
    assert (root / "metrics" / "summary-a.json").is_file() and (root / "metrics" / "summary-b.json").is_file()
    res = invoke(root, "gc", "--keep", str(spec_a))
    assert res.exit_code == 0, res.output
    assert "removed spec b" in res.output and all(f"removed artifact {o}" in res.output for o in b_only)
    assert set(stages(root)) == a_stages
    assert all((root / o).is_dir() for o in a_outs), "A's artifacts stay (the shared extraction too)"
    assert not any((root / o).exists() for o in b_only), "B's own artifacts are gone"
    assert not any((root / "metrics" / f"{n}.json").exists() for n in b_stages - a_stages)  # DVC metrics too
    assert all((root / "metrics" / m).exists() for m in a_metrics)
    assert not (root / "metrics" / "summary-b.json").exists(), "a dropped spec's summary goes with it"
    assert "removed artifact metrics/summary-b.json" in res.output
    assert json.loads((root / "metrics" / "summary-a.json").read_text())["summary"]["ell_star"] in (1, 2, 3)
    assert [r["name"] for r in registered(root)] == ["a"]
    assert set(yaml.safe_load((root / "dvc.lock").read_text())["stages"]) <= a_stages
    configs = {p.relative_to(root).as_posix() for p in (root / ".dihal" / "stages").glob("*.json")}
    assert configs == {e["deps"][0] for e in regs["a"].values()}
    status = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=root, capture_output=True, text=True)
    assert "up to date" in status.stdout, status.stdout  # `dvc repro` at the root: exactly A, nothing to do
    again = invoke(root, "run", str(spec_a), "--no-report")
    assert again.exit_code == 0 and "everything up to date" in again.output, again.output


def test_gc_without_arguments_removes_only_orphans(tmp_path):
    """A dvc.yaml from before the registry keeps its dihal stages through compiles; gc removes them."""
    legacy = {"cmd": "dihal stage .dihal/stages/score-0123456789abcdef.json", "outs": ["artifacts/score/0123"]}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"score-01234567": legacy}}))
    spec = Spec.model_validate({"name": "q", "geometry": {"layers": [1, 2]}})
    p = compile_spec(spec, tmp_path, 4)
    assert "score-01234567" in stages(tmp_path)
    orphan = tmp_path / "artifacts" / "score" / "deadbeefdeadbeef"
    orphan.mkdir(parents=True)
    kept = tmp_path / p.score.out
    kept.mkdir(parents=True)
    res = invoke(tmp_path, "gc")
    assert res.exit_code == 0, res.output
    assert not orphan.exists() and kept.is_dir() and [r["name"] for r in registered(tmp_path)] == ["q"]
    assert set(stages(tmp_path)) == {s.name for s in p.stages} and "removed stage score-01234567" in res.output
