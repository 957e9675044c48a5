"""Hydra-style overrides, sweeps and `extends:` (issue 20): a variant is a new spec, never a silent edit."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from dihal.cli import app
from dihal.spec.errors import SpecError
from dihal.spec.hashing import spec_hash
from dihal.spec.overrides import apply, derived_name, expand, parse, read_spec_yaml
from dihal.spec.schema import parse_spec

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "specs" / "quickstart.yaml"
runner = CliRunner()


def test_a_value_is_read_as_yaml():
    assert parse("bridge.steps=100") == (["bridge", "steps"], 100)
    assert parse("geometry.layers=[3, 7]") == (["geometry", "layers"], [3, 7])
    assert parse_spec(apply({"name": "x"}, ["bridge.lr=1e-3"])).bridge.lr == 0.001  # as in a spec file
    assert parse("bridge=") == (["bridge"], None)
    assert parse("name=x,y") == (["name"], "x,y")  # commas are a sweep only with --multirun
    for bad in ("steps", "=1", "bridge..steps=1", "bridge.steps"):
        with pytest.raises(SpecError, match="KEY=VALUE"):
            parse(bad)


def test_apply_sets_nested_fields_and_makes_missing_sections():
    raw = {"name": "x", "bridge": {"steps": 5}, "sensitivity": [{"name": "a"}]}
    got = apply(raw, ["bridge.steps=7", "geometry.k=4", "sensitivity.0.name=b"])
    assert got == {"name": "x", "bridge": {"steps": 7}, "geometry": {"k": 4}, "sensitivity": [{"name": "b"}]}
    assert raw["bridge"]["steps"] == 5, "the input mapping is not changed"
    with pytest.raises(SpecError, match="index it 0..0"):
        apply(raw, ["sensitivity.3.name=b"])
    with pytest.raises(SpecError, match="not a section"):
        apply(raw, ["bridge.steps.x=1"])


def test_multirun_expands_the_product_of_comma_values():
    assert expand(["a=1,2", "b=[1,2],[3]"], multirun=True) == [
        ["a=1", "b=[1,2]"],
        ["a=1", "b=[3]"],
        ["a=2", "b=[1,2]"],
        ["a=2", "b=[3]"],
    ]
    assert expand(["a=1,2"], multirun=False) == [["a=1,2"]]
    assert expand(["s='x,y',z"], multirun=True) == [["s='x,y'"], ["s=z"]]


def test_the_derived_name_says_what_changed_and_stays_a_valid_name():
    assert (
        derived_name("q", ["bridge.steps=100", "geometry.layers=[3, 7]"]) == "q+bridge.steps=100,geometry.layers=[3,7]"
    )
    long = derived_name("q" * 100, [f"geometry.k={i}" for i in range(1, 20)])
    assert len(long) <= 120 and long.startswith("q" * 50)


FIELDS = {
    "bridge.steps": st.integers(51, 10_000),  # above the warmup (50)
    "bridge.lr": st.floats(1e-6, 1e-1),
    "geometry.k": st.integers(2, 64),
    "geometry.n_boot": st.integers(20, 500),
    "eval.temperature": st.floats(0.1, 2.0),
    "seed": st.integers(0, 10_000),
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(st.sampled_from(sorted(FIELDS)), st.integers(), min_size=1).flatmap(
        lambda keys: st.fixed_dictionaries({k: FIELDS[k] for k in keys})
    )
)
def test_any_valid_override_set_validates_and_hashes_deterministically(values):
    sets = [f"{k}={v!r}" for k, v in values.items()]
    raw, text = read_spec_yaml(QUICKSTART, sets)
    spec = parse_spec(raw, "q")
    again = parse_spec(yaml.safe_load(text), "q")  # the recorded YAML alone gives the same spec back
    assert spec == again and spec_hash(spec) == spec_hash(again)
    for key, value in values.items():
        section, _, field = key.rpartition(".")
        got = getattr(getattr(spec, section) if section else spec, field)
        assert got == pytest.approx(value)
    assert spec.name.startswith("quickstart+") and text.startswith("# derived from quickstart.yaml")


def test_no_override_keeps_the_file_as_written():
    raw, text = read_spec_yaml(QUICKSTART)
    assert text == QUICKSTART.read_text()


def test_extends_merges_onto_the_base_and_refuses_cycles(tmp_path):
    (tmp_path / "base.yaml").write_text("name: base\nseed: 3\nbridge: {steps: 50, lr: 0.001}\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nname: child\nbridge: {steps: 60}\n")
    raw, text = read_spec_yaml(tmp_path / "child.yaml")
    assert raw == {"name": "child", "seed": 3, "bridge": {"steps": 60, "lr": 0.001}}
    assert "extends" not in yaml.safe_load(text)
    (tmp_path / "a.yaml").write_text("extends: b.yaml\nname: a\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\nname: b\n")
    with pytest.raises(SpecError, match="without cycles"):
        read_spec_yaml(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: nowhere.yaml\nname: c\n")
    with pytest.raises(SpecError, match="readable YAML spec file"):
        read_spec_yaml(tmp_path / "c.yaml")


def test_cli_validate_takes_many_files_and_overrides(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: x\nbridge: {stepz: 3}\n")
    res = runner.invoke(app, ["validate", str(QUICKSTART), str(tmp_path / "bad.yaml"), "--project", str(tmp_path)])
    assert res.exit_code == 2
    assert "ok " in res.output and "did you mean 'steps'?" in res.output  # both files reported
    res = runner.invoke(
        app, ["validate", str(QUICKSTART), "-m", "-S", "bridge.steps=100,200", "--project", str(tmp_path)]
    )
    assert res.exit_code == 0, res.output
    hashes = [line.split("spec hash ")[1].split(";")[0] for line in res.output.splitlines() if "spec hash" in line]
    assert len(set(hashes)) == 2 and "quickstart+bridge.steps=200" in res.output


def test_cli_version():
    from dihal import __version__

    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"dihal {__version__}"
