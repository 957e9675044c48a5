"""Extending dihal from another package: a tiny plugin distribution built here, installed with real pip into a
target directory, found through its entry points by `dihal validate`, the compiler and the `dihal stage`
subprocesses DVC starts, and part of the identity of the stages that use it."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.tiny import TINY, ledger_rows, save_tiny, write_spec_from

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "dihal-demo"
version = "0.1.0"

[project.entry-points."dihal.proxies"]
meanabs = "dihal_demo.proxy"
broken = "dihal_demo.broken"

[project.entry-points."dihal.interfaces"]
demo_hidden = "dihal_demo.iface:DemoHidden"

[project.entry-points."dihal.families"]
demo_llama = "dihal_demo.family:DemoFamily"

[tool.setuptools]
packages = ["dihal_demo"]
"""

PROXY = '''\
"""Mean absolute coordinate of the states in the layer's geometry space."""

import numpy as np

from dihal.geometry.registry import register_proxy
from dihal.geometry.stability import replicates


@register_proxy("meanabs", higher_is_better=False, description="mean |coordinate| in the geometry space")
def meanabs(ctx):
    return {"meanabs": float(ctx.x.abs().mean())}


@replicates("meanabs")
def _meanabs(rs):
    per_state = rs.ctx.x.abs().mean(dim=1).cpu().numpy()
    return {"meanabs": np.sqrt(rs.scale2) * (rs.state_w @ per_state) / rs.state_w.sum(axis=1)}
'''

MODULES = {
    "__init__.py": "",
    "proxy.py": PROXY,
    "broken.py": "import dihal_demo_missing_dependency  # noqa: F401\n",
    "iface.py": "from dihal.interfaces.hidden import HiddenInterface\n\n\n"
    "class DemoHidden(HiddenInterface):\n    name = 'demo_hidden'\n",
    "family.py": "from dihal.backbone.families.base import Family\n\n\nclass DemoFamily(Family):\n    pass\n",
}


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> Path:
    """The directory the demo distribution is installed into (pip --target), to put on PYTHONPATH."""
    src = tmp_path_factory.mktemp("dihal-demo-src")
    (src / "pyproject.toml").write_text(PYPROJECT)
    (src / "dihal_demo").mkdir()
    for name, text in MODULES.items():
        (src / "dihal_demo" / name).write_text(text)
    target = tmp_path_factory.mktemp("site")
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-q"]
    res = subprocess.run([*pip, "--target", str(target), str(src)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (target / "dihal_demo" / "proxy.py").is_file() and list(target.glob("dihal_demo-0.1.0.dist-info"))
    return target


def env_with(plugin: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(plugin), *filter(None, [env.get("PYTHONPATH")])])
    env["DIHAL_PROGRESS"] = "0"
    return env


def said(res: subprocess.CompletedProcess) -> str:
    """What a command printed, both streams, with line wrapping undone."""
    return " ".join((res.stdout + res.stderr).split())


def dihal(plugin: Path, root: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "dihal", *args]
    return subprocess.run(cmd, cwd=root, env=env_with(plugin), capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def in_process(plugin, monkeypatch):
    """The plugin on this process's path (and forgotten again afterwards)."""
    from dihal.spec import plugins

    monkeypatch.syspath_prepend(str(plugin))
    plugins.refresh()
    yield plugins
    plugins.refresh()


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("project")
    save_tiny(root / "tiny")
    return root


GEOMETRY = {**TINY["geometry"], "proxies": {"kappa": 1, "sigma": 1, "erank": -1, "meanabs": -1}}
LOCATE_ONLY = {k: v for k, v in TINY.items() if k not in ("bridge", "eval")}  # extract, score, select: seconds


def stage_names(root: Path, kind: str) -> list[str]:
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    return sorted(name for name in stages if name.startswith(f"{kind}-"))


def test_validate_accepts_plugin_names_and_refuses_unknown_ones_with_a_did_you_mean(plugin, tmp_path):
    good = write_spec_from(TINY, tmp_path, "good", geometry=GEOMETRY, baselines={"interfaces": ["demo_hidden"]})
    save_tiny(tmp_path / "tiny")
    res = dihal(plugin, tmp_path, "validate", str(good))
    assert res.returncode == 0, res.stdout + res.stderr
    typo = write_spec_from(TINY, tmp_path, "typo", geometry={**GEOMETRY, "proxies": {"meanab": 1}})
    res = dihal(plugin, tmp_path, "validate", str(typo))
    assert res.returncode == 2 and "unknown proxy 'meanab' (did you mean 'meanabs'?)" in said(res), said(res)
    assert "entry point group dihal.proxies" in said(res), "the message says where plugin names come from"
    iface = write_spec_from(TINY, tmp_path, "iface", baselines={"interfaces": ["demo_hiden"]})
    res = dihal(plugin, tmp_path, "validate", str(iface))
    assert res.returncode == 2 and "did you mean 'demo_hidden'?" in said(res), said(res)
    # without the plugin on the path its name is as unknown as a typo
    res = subprocess.run(
        [sys.executable, "-m", "dihal", "validate", str(good)], cwd=tmp_path, capture_output=True, text=True
    )
    assert res.returncode == 2 and "unknown proxy 'meanabs'" in said(res), said(res)


def test_validate_stays_torch_free_with_a_plugin_named(plugin, tmp_path):
    spec = write_spec_from(TINY, tmp_path, "good", geometry=GEOMETRY)
    save_tiny(tmp_path / "tiny")
    code = (
        "import sys\nfrom dihal.cli import app\nsys.argv = ['dihal', 'validate', sys.argv[1]]\n"
        "try:\n    app()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'dihal_demo'}))"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(spec)], cwd=tmp_path, env=env_with(plugin), capture_output=True, text=True
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]", "neither torch nor the plugin is imported to validate"


@pytest.fixture(scope="module")
def plugin_run(plugin, project):
    spec = write_spec_from(LOCATE_ONLY, project, "plug", geometry=GEOMETRY)
    res = dihal(plugin, project, "run", str(spec))
    assert res.returncode == 0, res.stdout + res.stderr
    return spec


def test_a_plugin_proxy_runs_in_the_stage_subprocesses_and_lands_in_the_ledger(project, plugin_run):
    import torch

    from dihal.geometry.outliers import apply_rule
    from dihal.geometry.spaces import to_space
    from dihal.stages.extract import layer_file

    rows = ledger_rows(project, "SELECT layer, space, proxies FROM layer_geometry ORDER BY space, layer")
    assert {(r[0], r[1]) for r in rows} == {(layer, s) for layer in (1, 2, 3) for s in ("bridge", "scalar")}
    (score,) = stage_names(project, "score")
    config = json.loads(
        next((project / ".dihal" / "stages").glob(f"score-{score.rsplit('-', 1)[1]}*.json")).read_text()
    )
    src = project / config["inputs"]["extract"]
    for layer, space, proxies in rows:
        recorded = json.loads(proxies)
        got = recorded["values"]["meanabs"]
        assert recorded["weights"]["meanabs"] == -1 and math.isfinite(recorded["z"]["meanabs"])
        states = np.load(src / layer_file(layer))
        kept, _, _ = apply_rule(states, "drop", 20.0)
        want = float(to_space(torch.as_tensor(kept, dtype=torch.float64), space).abs().mean())
        assert math.isclose(got, want, rel_tol=1e-9), (layer, space, got, want)
    (packages,) = ledger_rows(project, "SELECT packages FROM runs")[0]
    assert json.loads(packages)["dihal-demo"] == "0.1.0", "the run's provenance names the plugin's version"
    (used,) = config["identity"]["plugins"]
    assert used["entry_point"] == "dihal.proxies:meanabs" and used["distribution"] == "dihal-demo"
    assert used["version"] == "0.1.0" and re.fullmatch(r"[0-9a-f]{16}", used["source"])


def test_editing_the_plugin_renames_the_score_stage_and_refuses_the_old_config(plugin, project, plugin_run):
    (score_before,) = stage_names(project, "score")
    (extract_before,) = stage_names(project, "extract")
    old_config = next((project / ".dihal" / "stages").glob(f"score-{score_before.rsplit('-', 1)[1]}*.json"))
    proxy = plugin / "dihal_demo" / "proxy.py"
    original = proxy.read_text()
    try:
        proxy.write_text(original + "\n# an edit that changes no number still names other code\n")
        res = dihal(plugin, project, "compile", str(plugin_run))
        assert res.returncode == 0, res.stdout + res.stderr
        (score_after,) = stage_names(project, "score")
        assert score_after != score_before, "the score stage's name covers the plugin's source"
        assert stage_names(project, "extract") == [extract_before], "extract uses no plugin: it keeps its name"
        res = dihal(plugin, project, "stage", str(old_config))
        assert res.returncode == 1 and "compiled for plugin code dihal.proxies:meanabs" in said(res), said(res)
    finally:
        proxy.write_text(original)


def test_a_plugin_that_fails_to_import_is_named_not_traced(in_process):
    from dihal.geometry.proxies import ensure_proxies

    with pytest.raises(in_process.PluginError) as err:
        ensure_proxies(["kappa", "broken"])
    message = str(err.value)
    assert "entry point 'broken'" in message and "dihal-demo 0.1.0" in message and "dihal.proxies" in message
    assert "ModuleNotFoundError" in message and "dihal_demo_missing_dependency" in message
    with pytest.raises(ValueError, match=r"unknown proxy 'meanabz' \(did you mean 'meanabs'\?\)"):
        ensure_proxies(["meanabz"])


def test_interfaces_and_families_are_found_through_entry_points(in_process, tiny_llama, monkeypatch):
    from transformers import AutoModelForCausalLM

    from dihal.backbone import support
    from dihal.backbone.families import family_for
    from dihal.interfaces import interface_class

    assert interface_class("demo_hidden").__module__ == "dihal_demo.iface"
    config = {"model_type": "demo_llama", "architectures": ["DemoForCausalLM"]}
    assert support.check_config(config) == support.PLUGIN and "demo_llama" in support.supported_types()
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    monkeypatch.setattr(type(model.config), "model_type", "demo_llama")  # what config.to_dict() reports
    assert type(family_for(model)).__module__ == "dihal_demo.family"


def test_the_worked_example_in_the_docs_is_the_one_tested():
    """docs/extending.md shows this test's plugin: its pyproject and proxy module, verbatim."""
    doc = (Path(__file__).parent.parent / "docs" / "extending.md").read_text()
    assert textwrap.dedent(PROXY) in doc
    assert 'meanabs = "dihal_demo.proxy"' in doc and 'name = "dihal-demo"' in doc
