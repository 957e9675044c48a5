"""`dihal plan`: per-stage cost estimates from the config alone (no weights, no network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dihal.cli import app
from dihal.cost import denoiser_params
from dihal.cost.machine import critical_path, schedule

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def plan_json(spec: Path, *args: str) -> dict:
    res = runner.invoke(app, ["plan", str(spec), "--format", "json", "-C", str(ROOT), *args])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def variant(tmp_path: Path, name: str, base: str = "quickstart.yaml", **sections) -> Path:
    raw = yaml.safe_load((ROOT / "specs" / base).read_text())
    for section, changes in sections.items():
        raw[section] = {**raw.get(section, {}), **changes}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_quickstart_lists_every_stage_of_the_plan():
    from dihal.compile.plan import plan
    from dihal.cost.backbone import backbone_shape
    from dihal.spec.paths import load_project_spec

    spec, _ = load_project_spec(ROOT / "specs" / "quickstart.yaml", ROOT)
    expected = [st.name for st in plan(spec, backbone_shape(spec.backbone).layers).stages]
    got = plan_json(ROOT / "specs" / "quickstart.yaml")
    assert [s["name"] for s in got["stages"]] == expected
    assert {s["kind"] for s in got["stages"]} >= {
        "extract",
        "score",
        "select",
        "targets",
        "train",
        "evaluate",
        "reference",
        "summary",
    }
    for s in got["stages"]:
        assert s["flops"] > 0 and s["seconds"] >= 0, s
        if s["kind"] not in ("select", "correlate", "summary"):  # these process no tokens
            assert s["tokens"] > 0, s
    assert "embedded" in got["backbone"]["config_source"]
    assert got["backbone"]["layers"] == 30 and got["backbone"]["hidden_size"] == 576
    assert any("estimates" in a for a in got["assumptions"])


def test_table_output_names_assumptions():
    res = runner.invoke(app, ["plan", str(ROOT / "specs" / "quickstart.yaml"), "-C", str(ROOT), "--gpu", "l4"])
    assert res.exit_code == 0, res.output
    assert "Assumptions" in res.output and "utilisation" in res.output and "L4" in res.output


def _train_flops(doc: dict) -> list[float]:
    return [s["flops"] for s in doc["stages"] if s["kind"] == "train"]


def test_doubling_steps_doubles_train_flops(tmp_path):
    one = plan_json(variant(tmp_path, "a", bridge={"steps": 1500}))
    two = plan_json(variant(tmp_path, "b", bridge={"steps": 3000}))
    assert _train_flops(two)[0] == pytest.approx(2 * _train_flops(one)[0], rel=1e-12)


def test_more_sweep_layers_add_train_and_evaluate_stages(tmp_path):
    kinds = lambda d: [s["kind"] for s in d["stages"]]  # noqa: E731
    small = plan_json(variant(tmp_path, "s", bridge={"layers": [3, 5, 7], "seeds": [0, 1]}))
    big = plan_json(variant(tmp_path, "l", bridge={"layers": [3, 5, 7, 9, 11], "seeds": [0, 1]}))
    for k in ("train", "evaluate"):
        assert kinds(small).count(k) == 3 * 2 and kinds(big).count(k) == 5 * 2
    assert big["total"]["flops"] > small["total"]["flops"]
    assert big["sweep"]["is_this_spec"] and big["sweep"]["layers"] == [3, 5, 7, 9, 11]


def test_workers_shorten_the_schedule_but_not_below_the_longest_stage(tmp_path):
    spec = variant(tmp_path, "w", bridge={"layers": [3, 5, 7, 9], "seeds": [0, 1, 2]})
    one = plan_json(spec, "--gpu", "a100", "--workers", "1")
    three = plan_json(spec, "--gpu", "a100", "--workers", "3")
    longest = max(s["seconds"] for s in three["stages"])
    assert three["total"]["workers_s"] <= one["total"]["workers_s"]
    assert three["total"]["workers_s"] >= max(longest, three["total"]["critical_path_s"]) - 1e-9
    assert one["total"]["workers_s"] == pytest.approx(one["total"]["serial_s"])
    assert three["total"]["workers_s"] < 0.8 * one["total"]["workers_s"]  # 12 independent (layer, seed) pairs


def test_schedule_is_a_list_schedule_not_total_over_n():
    d = {"a": 4.0, "b": 1.0, "c": 1.0, "d": 1.0}
    deps = {"b": {"a"}, "c": {"a"}, "d": {"a"}}
    assert critical_path(d, deps) == 5.0
    assert schedule(d, deps, 3) == 5.0  # not 7 / 3
    assert schedule(d, deps, 1) == 7.0


@pytest.mark.parametrize("spec,layers", [("llama-3.1-8b.yaml", 32), ("qwen3-8b.yaml", 36)])
def test_paper_specs_plan_offline_at_8b_scale(spec, layers, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import dihal.backbone.depth as depth

    monkeypatch.setattr(depth, "cached_hub_config", lambda spec: None)  # as if not cached: the built-in table
    doc = plan_json(ROOT / "specs" / spec, "--gpu", "h100", "--workers", "8")
    bb = doc["backbone"]
    assert 7e9 <= bb["params"] <= 9e9
    assert bb["layers"] == layers and bb["hidden_size"] == 4096
    assert bb["weights_bytes"] == pytest.approx(16e9, rel=0.05)  # bf16
    assert "built-in table" in bb["config_source"]
    assert doc["total"]["workers_s"] < doc["total"]["serial_s"]


@pytest.mark.parametrize(
    "cfg",
    [
        dict(d_in=576, d_model=128, depth=3, heads=4, max_len=64),
        dict(d_in=96, d_model=64, depth=2, heads=2, max_len=32, time_cond="add", pos="learned"),
        dict(d_in=576, d_model=128, depth=3, heads=4, max_len=64, self_condition=True),
        dict(d_in=96, d_model=64, depth=2, heads=2, max_len=32, time_cond="add", self_condition=True),
    ],
)
def test_denoiser_formula_matches_the_module(cfg):
    from dihal.bridge.denoiser import Denoiser

    real = sum(p.numel() for p in Denoiser(**cfg).parameters())
    assert denoiser_params(**cfg) == real


def test_invalid_spec_exits_2_naming_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbridge: {steps: 0}\n")
    res = runner.invoke(app, ["plan", str(bad)])
    assert res.exit_code == 2
    assert "bridge.steps" in res.output


def test_a_cuda_spec_is_costed_on_a_gpu_unless_cpu_is_asked(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import dihal.backbone.depth as depth
    import dihal.cost.machine as machine

    monkeypatch.setattr(depth, "cached_hub_config", lambda spec: None)
    monkeypatch.setattr("shutil.which", lambda name: None)  # no nvidia-smi: the default GPU class
    spec = ROOT / "specs" / "llama-3.1-8b.yaml"
    default = plan_json(spec)
    assert default["machine"]["name"] == machine.GPUS[machine.DEFAULT_GPU]["name"]
    assert any("backbone.device is cuda" in a and "--gpu" in a for a in default["assumptions"])
    on_cpu = plan_json(spec, "--cpu")
    assert on_cpu["machine"]["name"] == "this machine (CPU)"
    assert on_cpu["total"]["serial_s"] > 100 * default["total"]["serial_s"]
    res = runner.invoke(app, ["plan", str(spec), "--cpu", "--gpu", "a100", "-C", str(ROOT)])
    assert res.exit_code == 1 and "--cpu and --gpu" in res.output


def test_every_geometry_space_is_costed_and_every_stage_pays_its_start(tmp_path):
    both = plan_json(ROOT / "specs" / "quickstart.yaml")
    one = plan_json(variant(tmp_path, "one", geometry={"spaces": ["bridge"]}))
    score = {d["kind"]: d for d in both["stages"]}["score"]
    score_one = {d["kind"]: d for d in one["stages"]}["score"]
    assert score["flops"] == pytest.approx(2 * score_one["flops"])
    from dihal.cost.machine import BACKBONE_START_S, START_S

    by_kind = {d["kind"]: d for d in both["stages"]}
    assert by_kind["select"]["seconds"] >= START_S  # a fresh process, even for an argmax
    assert by_kind["extract"]["seconds"] >= START_S + BACKBONE_START_S
