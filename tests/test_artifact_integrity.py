"""Artifacts changed after their stage wrote them (issue 9, item 5): manifests, the `dihal run` pre-flight,
and a DVC cache that an in-place edit cannot reach. Real DVC, real DuckDB, the tiny random Llama."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dihal.cli import app
from dihal.stages import manifest
from dihal.stages.common import StageConfig
from dihal.stages.manifest import ArtifactCorrupted
from tests.tiny import ledger_rows, save_tiny, stages_ran

# geometry only: extract → score → select is the part of the pipeline the reported damage was in
SPEC = {
    "name": "tiny-integrity",
    "backbone": {"source": "local", "id": "tiny"},
    "data": {"source": "kjv", "max_documents": 200},
    "geometry": {"seq_len": 16, "n_tokens": 512, "anchors": 64, "k": 8, "pairs": 256, "batch_size": 8},
    "bridge": None,
}
GEOMETRY = "SELECT layer, kappa, sigma, r, g, selected, argmax_share FROM layer_geometry ORDER BY layer"
runner = CliRunner()


def dvc(root: Path, *args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def run(root: Path):
    result = runner.invoke(app, ["run", str(root / "spec.yaml"), "--no-report", "--project", str(root)])
    assert result.exit_code == 0, result.output
    return result


def damage(path: Path, size: int) -> None:
    """Truncate in place as root can: past the read-only bit, which is then put back (DVC trusts 0444 objects)."""
    mode = path.stat().st_mode
    os.chmod(path, 0o644)
    os.truncate(path, size)
    os.chmod(path, mode)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cache_object(root: Path, path: Path) -> Path:
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    return root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("integrity")
    save_tiny(root / "tiny")
    (root / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    mp = pytest.MonkeyPatch()
    mp.chdir(root)  # the spec names the model relative to the project root
    result = run(root)
    extract = next((root / "artifacts" / "extract").iterdir())
    layer = extract / "layer_003.npy"
    original = {
        "geometry": ledger_rows(root, GEOMETRY),
        "bytes": {p.name: digest(p) for p in extract.glob("*.npy")},
        "size": layer.stat().st_size,
    }
    yield root, extract, layer, original, result
    mp.undo()


def assert_as_original(root: Path, extract: Path, original: dict) -> None:
    assert {p.name: digest(p) for p in extract.glob("*.npy")} == original["bytes"]
    assert ledger_rows(root, GEOMETRY) == original["geometry"]
    assert "Data and pipelines are up to date." in dvc(root, "status")


def test_every_stage_output_has_a_manifest_that_dvc_tracks(project):
    root, extract, layer, original, _ = project
    for kind in ("extract", "score", "select"):
        (out,) = (root / "artifacts" / kind).iterdir()
        m = manifest.load(out)
        assert m["kind"] == kind and out.name.startswith(m["stage_hash"]) and manifest.problems(out) == []
        assert m["files"] and manifest.MANIFEST not in m["files"]
    files = manifest.load(extract)["files"]
    assert files["layer_003.npy"] == {"size": original["size"], "sha256": original["bytes"]["layer_003.npy"]}
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    (entry,) = [s for s in lock["stages"].values() if s["outs"][0]["path"] == str(extract.relative_to(root))]
    tree = json.loads(cache_object_by_md5(root, entry["outs"][0]["md5"]).read_text())
    assert manifest.MANIFEST in {e["relpath"] for e in tree}, "the manifest is part of the DVC out"


def cache_object_by_md5(root: Path, md5: str) -> Path:
    return root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def test_new_projects_copy_into_the_cache(project):
    root, extract, layer, _, _ = project
    assert "reflink,copy" in (root / ".dvc" / "config").read_text()
    assert layer.stat().st_nlink == 1, "an artifact is not its cache object"


def test_truncated_artifact_is_reported_and_restored_from_the_intact_cache(project):
    root, extract, layer, original, _ = project
    damage(layer, 1000)
    result = run(root)
    stage = f"extract-{extract.name[:8]}"
    assert (
        f"artifacts/extract/{extract.name}: layer_003.npy is 1000 bytes, expected {original['size']}"
        f" — restoring stage {stage}"
    ) in result.output
    assert stages_ran(result.output) == []  # the cache's copy is intact: nothing to recompute
    assert_as_original(root, extract, original)


@pytest.fixture
def hardlinked(project):
    """The tester's project: DVC on hard links (dihal's old default), so artifact and cache object are one file."""
    root = project[0]
    dvc(root, "config", "--local", "cache.type", "hardlink")
    dvc(root, "checkout", "--relink")
    assert project[2].stat().st_nlink == 2
    yield project
    dvc(root, "config", "--local", "--unset", "cache.type")
    dvc(root, "checkout", "--relink")


def test_truncation_that_reached_the_cache_recomputes_the_stage(hardlinked):
    root, extract, layer, original, _ = hardlinked
    obj = cache_object(root, layer)
    damage(layer, 1000)
    assert obj.stat().st_size == 1000, "with hard links the cache object is damaged too"
    result = run(root)
    stage = f"extract-{extract.name[:8]}"
    assert f"layer_003.npy is 1000 bytes, expected {original['size']} — recomputing stage {stage}" in result.output
    assert stage in stages_ran(result.output)
    assert_as_original(root, extract, original)
    assert obj.stat().st_size == original["size"], "the damaged cache object was replaced"


def test_deleted_output_is_not_checked_out_from_a_damaged_cache(hardlinked):
    root, extract, layer, original, _ = hardlinked
    damage(layer, 1000)
    for p in extract.iterdir():
        p.unlink()
    extract.rmdir()
    result = run(root)
    stage = f"extract-{extract.name[:8]}"
    assert (
        f"artifacts/extract/{extract.name}: the cached copy of layer_003.npy is 1000 bytes, expected "
        f"{original['size']} — recomputing stage {stage}"
    ) in result.output
    assert stage in stages_ran(result.output)
    assert_as_original(root, extract, original)


def test_a_stage_refuses_a_damaged_input_and_names_it(project):
    """What `dvc repro` alone meets: the score stage finds its extract input changed and stops, naming both."""
    from dihal.stages import run_stage

    root, extract, layer, original, _ = project
    (config,) = (root / ".dihal" / "stages").glob("score-*.json")
    damage(layer, 1000)
    try:
        with pytest.raises(ArtifactCorrupted) as err:
            run_stage(config)
        msg = str(err.value)
        assert f"stage score-{config.stem.split('-')[1][:8]}" in msg
        assert f"its input artifacts/extract/{extract.name} (output of stage extract-{extract.name[:8]})" in msg
        assert f"layer_003.npy is 1000 bytes, expected {original['size']}" in msg
    finally:
        run(root)
    assert_as_original(root, extract, original)


def test_ingest_refuses_a_changed_result_file(project):
    """A score file edited to the same size (a digit changed) is caught by its checksum before the ledger reads it."""
    root, *_ = project
    (score,) = (root / "artifacts" / "score").iterdir()
    path = score / "scores.json"
    text = path.read_text()
    i = next(i for i, c in enumerate(text) if c.isdigit() and c != "9")
    mode = path.stat().st_mode
    os.chmod(path, 0o644)
    path.write_text(text[:i] + str(int(text[i]) + 1) + text[i + 1 :])
    os.chmod(path, mode)
    with pytest.raises(ArtifactCorrupted, match=r"scores\.json has sha256 .* \(same size"):
        manifest.verify(score, "score-x")
    result = run(root)  # the pre-flight puts it right
    assert "scores.json has sha256" in result.output and manifest.problems(score) == []


# --- unit level -----------------------------------------------------------------------------------


def test_manifest_round_trip_and_what_it_catches(tmp_path):
    out = tmp_path / "artifacts" / "extract" / "abc"
    (out / "sub").mkdir(parents=True)
    (out / "meta.json").write_text('{"a": 1}\n')
    (out / "sub" / "big.bin").write_bytes(b"x" * 4096)
    manifest.write(out, "extract", "abc")
    m = manifest.load(out)
    assert m == {**manifest.describe(out), "kind": "extract", "stage_hash": "abc"}
    assert set(m["files"]) == {"meta.json", "sub/big.bin"} and manifest.problems(out) == []
    small = manifest.describe(out, hash_limit=100)["files"]
    assert "sha256" in small["meta.json"] and "sha256" not in small["sub/big.bin"]

    (out / "meta.json").write_text('{"a": 2}\n')  # same size, other bytes
    (out / "sub" / "big.bin").write_bytes(b"x" * 10)
    found = manifest.problems(out)
    assert found[0].startswith("meta.json has sha256") and found[1] == "sub/big.bin is 10 bytes, expected 4096"
    with pytest.raises(ArtifactCorrupted) as err:
        manifest.verify(out, "extract-abc")
    assert str(out) in str(err.value) and "extract-abc" in str(err.value) and err.value.problems == found
    (out / "sub" / "big.bin").unlink()
    assert "sub/big.bin is missing" in manifest.problems(out)


def test_outputs_without_a_manifest_are_accepted(tmp_path):
    (tmp_path / "old.npy").write_bytes(b"old")
    assert manifest.load(tmp_path) is None and manifest.problems(tmp_path) == []
    manifest.verify(tmp_path, "score-old")
    (tmp_path / manifest.MANIFEST).write_text("{not json")
    assert "cannot be read" in manifest.problems(tmp_path)[0], "a damaged manifest is not taken for none"


def test_verify_inputs_names_the_reading_and_the_writing_stage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    up = Path("artifacts/targets/1111222233334444")
    up.mkdir(parents=True)
    (up / "train_h.npy").write_bytes(b"\0" * 256)
    manifest.write(up, "targets", "1111222233334444")
    cfg = StageConfig(
        kind="train",
        hash="5555666677778888",
        params={},
        inputs={"targets": up},
        link=None,
        out=Path("artifacts/train/5555666677778888"),
        runtime={},
        results={"metrics": "metrics/train-L03-s0-55556666.json"},
    )
    manifest.verify_inputs(cfg)
    os.truncate(up / "train_h.npy", 100)
    with pytest.raises(ArtifactCorrupted) as err:
        manifest.verify_inputs(cfg)
    assert str(err.value).startswith(
        f"stage train-L03-s0-55556666 ({cfg.out}) cannot read its input {up} (output of stage targets-11112222)"
    )
    assert "train_h.npy is 100 bytes, expected 256" in str(err.value)


def test_projects_on_the_old_hardlink_default_are_switched(tmp_path):
    from dihal.execute.runner import ensure_project

    ensure_project(tmp_path)
    config = tmp_path / ".dvc" / "config"
    assert 'type = "reflink,copy"' in config.read_text()
    config.write_text(config.read_text().replace("reflink,copy", "hardlink,copy"))
    ensure_project(tmp_path)
    assert dvc(tmp_path, "config", "cache.type").strip() == "reflink,copy"
    dvc(tmp_path, "config", "cache.type", "symlink")  # a choice of the user's own is left alone
    ensure_project(tmp_path)
    assert dvc(tmp_path, "config", "cache.type").strip() == "symlink"
