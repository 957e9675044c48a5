"""The generated dvc.yaml, checked against golden files (as DVC's own tests do)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from dihal.compile.plan import compile_spec, plan
from dihal.spec.schema import load_spec

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("DIHAL_UPDATE_GOLDEN") == "1"


def compiled(spec_file: str, tmp_path: Path, n_layers: int = 30) -> str:
    spec, _ = load_spec(ROOT / "specs" / spec_file)
    compile_spec(spec, tmp_path, n_layers)
    return (tmp_path / "dvc.yaml").read_text()


@pytest.mark.parametrize("spec_file", ["quickstart.yaml", "sweep.yaml", "sensitivity.yaml", "c3.yaml"])
def test_dvc_yaml_matches_golden(spec_file, tmp_path):
    text = compiled(spec_file, tmp_path)
    golden = GOLDEN / spec_file.replace(".yaml", ".dvc.yaml")
    if UPDATE:
        golden.write_text(text)
    assert text == golden.read_text(), f"regenerate with DIHAL_UPDATE_GOLDEN=1 if the change is intended: {golden}"


def test_repository_dvc_yaml_is_the_compiled_quickstart(tmp_path):
    """`dvc repro` at the repo root runs exactly the quickstart's stages."""
    assert (ROOT / "dvc.yaml").read_text() == compiled("quickstart.yaml", tmp_path)
    for cfg in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].values():
        assert (ROOT / cfg["deps"][0]).exists(), f"{cfg['deps'][0]} must be committed for `dvc repro`"


def test_dag_order_and_shared_extraction(tmp_path):
    """quickstart and sweep agree on backbone, data and geometry: one extract (and score) stage serves both."""
    text = compiled("quickstart.yaml", tmp_path)
    stages = list(yaml.safe_load(text)["stages"])
    kinds = [s.split("-")[0] for s in stages]
    assert kinds == ["extract", "score", "select", "targets", "train", "evaluate", "reference", "summary"]
    text2 = compiled("sweep.yaml", tmp_path)  # merged into the same dvc.yaml
    merged = yaml.safe_load(text2)["stages"]
    assert set(stages) <= set(merged)
    quick = plan(load_spec(ROOT / "specs" / "quickstart.yaml")[0], 30)
    sweep = plan(load_spec(ROOT / "specs" / "sweep.yaml")[0], 30)
    assert sweep.extract.name == quick.extract.name and sweep.score.name == quick.score.name
    assert [s for s in merged if s.startswith("extract")] == [quick.extract.name], "one extraction, not two"
    assert [s for s in merged if s.startswith("score")] == [quick.score.name]
    assert str(quick.extract.out) in merged[sweep.score.name]["deps"]
    sweep_own = {s.name for s in sweep.stages if s.kind in ("targets", "train", "evaluate", "correlate")}
    assert sweep_own <= set(merged) and not sweep_own & set(stages)


def test_sweep_has_one_stage_per_layer_and_seed_and_adding_a_seed_adds_only_its_stages():
    spec, _ = load_spec(ROOT / "specs" / "sweep.yaml")
    p = plan(spec, 30)
    n = len(spec.bridge.layers) * len(spec.bridge_seeds)
    assert len(p.by_kind("train")) == n and len(p.by_kind("evaluate")) == n
    more = spec.model_copy(update={"bridge": spec.bridge.model_copy(update={"seeds": (*spec.bridge_seeds, 99)})})
    p2 = plan(more, 30)
    old = {s.name for s in p.stages if s.kind in ("targets", "train", "evaluate")}
    new = {s.name for s in p2.stages if s.kind in ("targets", "train", "evaluate")}
    assert old <= new and len(new - old) == 2 * len(spec.bridge.layers)


def test_adding_a_layer_keeps_every_trained_bridge():
    spec, _ = load_spec(ROOT / "specs" / "sweep.yaml")
    layers = spec.bridge.layers
    extra = next(x for x in range(1, 30) if x not in layers)
    more = spec.model_copy(
        update={"bridge": spec.bridge.model_copy(update={"layers": tuple(sorted((*layers, extra)))})}
    )
    old = {s.name for s in plan(spec, 30).stages if s.kind == "train"}
    new = {s.name for s in plan(more, 30).stages if s.kind == "train"}
    assert old <= new and len(new - old) == len(spec.bridge_seeds)


def test_sensitivity_variants_share_what_they_do_not_change():
    """Outlier-rule variants rescore the spec's own extraction; a block-start variant extracts anew."""
    spec, _ = load_spec(ROOT / "specs" / "sensitivity.yaml")
    p = plan(spec, 30)
    assert set(p.variants) == {v.name for v in spec.sensitivity}
    assert p.variants["keep-outliers"].upstream["extract"].hash == p.extract.hash
    assert p.variants["keep-outliers"].hash != p.score.hash
    assert p.variants["chat-marker-start"].upstream["extract"].hash != p.extract.hash
    names = [s.name for s in p.stages]
    assert len(names) == len(set(names))  # shared stages appear once
    assert all(v.name in p.targets for v in p.variants.values())
    assert p.variant_settings["unguarded"] == {
        "data": {"block_start": "bos", "block_align": "any"},
        "geometry": {"outliers": {"rule": "keep"}},
    }


def _below(stage) -> set[str]:
    out, todo = set(), [*stage.upstream.values(), *([stage.link] if stage.link else [])]
    while todo:
        s = todo.pop()
        if s.name not in out:
            out.add(s.name)
            todo += [*s.upstream.values(), *([s.link] if s.link else [])]
    return out


@pytest.mark.parametrize("name", ["quickstart.yaml", "sweep.yaml", "sensitivity.yaml", "c3.yaml", "c3.yaml+frontier"])
def test_repro_targets_are_the_ends_and_reach_every_stage(name):
    """`dvc repro` is asked for the graph's ends only (each named target costs DVC a collection): every stage of
    the spec is one of them or upstream of one, and no target is upstream of another."""
    file, _, extra = name.partition("+")
    spec = load_spec(ROOT / "specs" / file)[0]
    if extra:
        raw = spec.model_dump(mode="json")
        spec = type(spec).model_validate({**raw, "eval": {**raw["eval"], "frontier": {"temperatures": [0.5, 1.0]}}})
    p = plan(spec, 30)
    assert len(p.frontiers) == (len(p.evaluations) + len(p.baselines) + 1 if extra else 0)  # + the backbone's
    by_name = {s.name: s for s in p.stages}
    reached = set(p.targets).union(*(_below(by_name[t]) for t in p.targets))
    assert reached == set(by_name)
    assert not any(t in _below(by_name[u]) for t in p.targets for u in p.targets)


def test_summary_stage_entry_matches_golden(tmp_path):
    """One summary stage per spec, compiled last: it depends on select, every bridge evaluate, reference and
    correlate (nothing it does not read), declares no params, and writes metrics/summary-<spec name>.json."""
    stages = yaml.safe_load(compiled("sweep.yaml", tmp_path))["stages"]
    ((name, entry),) = [(k, v) for k, v in stages.items() if k.startswith("summary-")]
    assert list(stages)[-1] == name
    p = plan(load_spec(ROOT / "specs" / "sweep.yaml")[0], 30)
    read = [p.select, *p.evaluations, p.reference, p.correlate]
    assert entry["deps"][0] == str(p.summary.config_path) and set(entry["deps"][1:]) == {str(s.out) for s in read}
    assert entry["metrics"] == [{"metrics/summary-sweep.json": {"cache": False}}] and "params" not in entry
    assert p.targets[-1] == name, "dihal run asks DVC for it"
    text = yaml.safe_dump({name: entry}, sort_keys=False, width=120)
    golden = GOLDEN / "sweep.summary.yaml"
    if UPDATE:
        golden.write_text(text)
    assert text == golden.read_text(), f"regenerate with DIHAL_UPDATE_GOLDEN=1 if the change is intended: {golden}"


def test_locate_only_specs_get_a_summary_of_the_selection_alone():
    spec, _ = load_spec(ROOT / "specs" / "sensitivity.yaml")
    p = plan(spec, 30)
    assert set(p.summary.upstream) == {"select"} and p.summary.config()["results"] == {
        "metrics": "metrics/summary-sensitivity.json"
    }
