"""The CLI with typer's CliRunner: bad specs are refused before anything is computed or written."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dihal.cli import app

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def test_help_lists_the_commands():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in ("validate", "compile", "run", "plan", "sample", "report", "ledger"):
        assert cmd in res.output
    listed = [line.strip("│ ").split(" ")[0] for line in res.output.split("Commands")[-1].splitlines()]
    assert "plan" in listed and "stage" not in listed  # the internal command stays hidden


@pytest.mark.parametrize("spec", ["quickstart.yaml", "sweep.yaml", "llama-3.1-8b.yaml", "qwen3-8b.yaml"])
def test_shipped_specs_validate(spec):
    res = runner.invoke(app, ["validate", str(ROOT / "specs" / spec)])
    assert res.exit_code == 0, res.output
    assert "spec hash" in res.output


BAD = {
    "unknown key": ("name: x\ngeometry: {k: 16, kay: 3}\n", "geometry.kay", "unknown key"),
    "wrong type": ("name: x\nseed: zero\n", "seed", "'zero'"),
    "k=0": ("name: x\ngeometry: {k: 0}\n", "geometry.k", "greater than 0"),
    "layer beyond depth": ("name: x\ngeometry: {layers: [1, 2, 31]}\n", "geometry.layers[2]", "1..30"),
    "missing file": ("name: x\ndata: {source: text, paths: [nowhere.txt]}\n", "data.paths[0]", "nowhere.txt"),
    "not yaml": ("name: [unclosed\n", "<yaml>", "valid YAML"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_spec_names_field_value_and_expectation_and_writes_nothing(case, tmp_path, monkeypatch):
    text, path, detail = BAD[case]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text(text)
    for cmd in (["validate", "bad.yaml"], ["run", "bad.yaml", "--project", str(tmp_path)]):
        res = runner.invoke(app, cmd)
        assert res.exit_code == 2, res.output
        assert path in res.output and detail in res.output, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"], "nothing may be written"


def test_missing_spec_file(tmp_path):
    res = runner.invoke(app, ["validate", str(tmp_path / "none.yaml")])
    assert res.exit_code == 2 and "none.yaml" in res.output


def test_ledger_commands_without_a_ledger(tmp_path):
    res = runner.invoke(app, ["ledger", "sql", "SELECT 1", "--project", str(tmp_path)])
    assert res.exit_code == 1 and "no ledger" in res.output


def test_compile_writes_stages_without_computing(tmp_path):
    res = runner.invoke(app, ["compile", str(ROOT / "specs" / "quickstart.yaml"), "--project", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "dvc.yaml").exists() and not (tmp_path / "artifacts").exists()


# --- validate stays light; relative paths follow the spec file; shipped specs keep their identities ----------------

import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import yaml  # noqa: E402


def test_validate_imports_neither_torch_nor_transformers():
    code = (
        "import sys\nfrom dihal.cli import app\nsys.argv = ['dihal', 'validate', sys.argv[1]]\n"
        "try:\n    app()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', 'datasets', 'dvc'}))"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "specs" / "quickstart.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]", res.stdout


def test_the_torch_free_proxy_names_are_the_registry():
    from dihal.geometry.proxies import PROXIES
    from dihal.spec.geometry import BUILTIN, STANDARD, known_proxies
    from dihal.stages import score

    assert BUILTIN == {name: p.higher_is_better for name, p in PROXIES.items()}
    assert known_proxies() == set(PROXIES)
    assert STANDARD == score.STANDARD


def _model_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"num_hidden_layers": 4}))
    (path / "model.safetensors").write_bytes(b"")  # validate looks for a weights file, not into it
    return path


def test_relative_paths_resolve_against_the_spec_folder_from_any_directory(tmp_path, monkeypatch):
    root, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    _model_dir(root / "model")
    (root / "exp").mkdir()
    (root / "exp" / "corpus.txt").write_text(
        "In the beginning.\n\nAnd the earth.\n" * 1000
    )  # 34 kB: room for the sample
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # neither the project root nor the spec's folder
    body = {
        "backbone": {"source": "local", "id": "../model"},
        "data": {"source": "text", "paths": ["corpus.txt"]},
        "sensitivity": [{"name": "other", "data": {"paths": ["corpus.txt"], "max_documents": 1}}],
    }
    (root / "exp" / "spec.yaml").write_text(yaml.safe_dump({"name": "in-exp", **body}))
    at_root = {
        "backbone": {"source": "local", "id": "model"},
        "data": {"source": "text", "paths": ["exp/corpus.txt"]},
        "sensitivity": [{"name": "other", "data": {"paths": ["exp/corpus.txt"], "max_documents": 1}}],
    }
    (root / "same.yaml").write_text(yaml.safe_dump({"name": "at-root", **at_root}))
    hashes = []
    for spec in (root / "exp" / "spec.yaml", root / "same.yaml"):
        res = runner.invoke(app, ["validate", str(spec), "--project", str(root)])
        assert res.exit_code == 0, res.output
        hashes.append(res.output.split("spec hash ")[1].split(";")[0])
    assert hashes[0] == hashes[1], "the same files, named from two folders, are the same spec"
    res = runner.invoke(app, ["compile", str(root / "exp" / "spec.yaml"), "--project", str(root)])
    assert res.exit_code == 0, res.output
    extract = [json.loads(p.read_text()) for p in (root / ".dihal" / "stages").glob("extract-*.json")]
    assert sorted(tuple(c["params"]["data"]["paths"]) for c in extract) == [("exp/corpus.txt",)] * 2
    assert {c["params"]["backbone"]["id"] for c in extract} == {"model"}
    (root / "exp" / "corpus.txt").unlink()
    res = runner.invoke(app, ["validate", str(root / "exp" / "spec.yaml"), "--project", str(root)])
    assert res.exit_code == 2 and "data.paths[0]" in res.output
    assert str((root / "exp" / "corpus.txt").resolve()) in res.output.replace("\n", "")


def _validated_hash(args: list[str]) -> str:
    res = runner.invoke(app, ["validate", *args])
    assert res.exit_code == 0, res.output
    return res.output.split("spec hash ")[1].split(";")[0]


def test_one_spec_has_one_hash_whatever_the_working_directory_or_project_root(tmp_path, monkeypatch):
    """Issue 19 (8): `validate` from the spec's folder and `--project` elsewhere printed two hashes."""
    import shutil

    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "corpus.txt").write_text("In the beginning.\n\nAnd the earth.\n" * 1000)
    _model_dir(exp / "model")
    (exp / "spec.yaml").write_text(
        "name: x\nbackbone: {source: local, id: model}\ndata: {source: text, paths: [corpus.txt]}\n"
    )
    monkeypatch.chdir(exp)
    here = _validated_hash(["spec.yaml"])  # the project root is the working directory: the spec's folder
    proj = tmp_path / "proj"
    proj.mkdir()
    monkeypatch.chdir(tmp_path)
    elsewhere = _validated_hash([str(exp / "spec.yaml"), "--project", str(proj)])
    assert here == elsewhere
    moved = tmp_path / "moved"
    shutil.copytree(exp, moved)
    assert _validated_hash([str(moved / "spec.yaml"), "--project", str(moved)]) == here, "a copied tree, same files"
    (moved / "corpus.txt").write_text("Other words entirely.\n\n" * 2000)
    assert _validated_hash([str(moved / "spec.yaml"), "--project", str(moved)]) != here, "other bytes, other spec"
    shutil.copy(exp / "corpus.txt", moved / "corpus.txt")
    (moved / "model" / "model.safetensors").write_bytes(b"\0" * 8)  # other weights, same names
    assert _validated_hash([str(moved / "spec.yaml"), "--project", str(moved)]) != here, "other weights, other spec"


def test_a_spec_naming_local_files_cannot_be_hashed_by_its_paths(tmp_path):
    from dihal.spec.hashing import by_content, from_record, hashed_text_of_record, record_json, spec_hash
    from dihal.spec.inputs import input_digests
    from dihal.spec.schema import Spec

    (tmp_path / "c.txt").write_text("a\n\nb\n")
    spec = Spec.model_validate({"name": "x", "data": {"source": "text", "paths": ["c.txt"]}})
    with pytest.raises(ValueError, match="data.paths"):
        spec_hash(spec)
    inputs = input_digests(spec, tmp_path)
    assert list(inputs) == ["c.txt"] and inputs["c.txt"].startswith("sha256:")
    h = spec_hash(spec, inputs)
    record = record_json(spec, inputs)
    fields, recorded = from_record(record)
    assert recorded == inputs and Spec.model_validate({**fields, "name": "x"}) == spec
    assert hashlib.sha256(hashed_text_of_record(record).encode()).hexdigest() == h  # what the report verifies
    assert by_content(fields, inputs)["data"]["paths"] == [inputs["c.txt"]]


@pytest.mark.parametrize("spec", ["quickstart.yaml", "sweep.yaml", "sensitivity.yaml"])
def test_compiling_shipped_specs_through_the_cli_matches_the_golden_dvc_yaml(spec, tmp_path, monkeypatch):
    """The path rule must not move a shipped spec's stage identities (specs/ is not the project root)."""
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["compile", str(ROOT / "specs" / spec), "--project", str(tmp_path / "p")])
    assert res.exit_code == 0, res.output
    golden = ROOT / "tests" / "golden" / spec.replace(".yaml", ".dvc.yaml")
    assert (tmp_path / "p" / "dvc.yaml").read_text() == golden.read_text()


def test_a_hub_backbone_depth_comes_from_the_cached_config_without_transformers(tmp_path):
    snap = tmp_path / "hub" / "models--org--tiny" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (snap / "config.json").write_text(json.dumps({"num_hidden_layers": 4}))
    (tmp_path / "hub" / "models--org--tiny" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--tiny" / "refs" / "main").write_text("a" * 40)
    (tmp_path / "hub.yaml").write_text("name: hub\nbackbone: {source: hf, id: org/tiny}\ngeometry: {layers: [1, 5]}\n")
    code = (
        "import sys\nfrom dihal.cli import app\nsys.argv = ['dihal', 'validate', sys.argv[1]]\n"
        "try:\n    app()\nexcept SystemExit as e:\n    print('exit', e.code)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers'}))"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "hub.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"},
    )
    assert "geometry.layers[1]" in res.stdout + res.stderr and "1..4" in res.stdout + res.stderr, (
        res.stdout + res.stderr
    )
    assert res.stdout.strip().splitlines()[-2:] == ["exit 2", "[]"], res.stdout
