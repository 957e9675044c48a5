"""Where a result came from: code revision, package versions (plugins a run uses included), host."""

from __future__ import annotations

import platform
import socket
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import dihal

PACKAGES = ("dihal", "torch", "transformers", "numpy", "scipy", "pydantic", "duckdb", "dvc", "datasets", "gguf")


def git_revision(root: Path | str = ".") -> str | None:
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return rev.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


@lru_cache(maxsize=1)
def code_version() -> str:
    """dihal's version plus the git revision of its own source when it runs from a checkout."""
    src = Path(dihal.__file__).resolve().parent.parent
    rev = git_revision(src) if (src / ".git").exists() else None
    return f"{dihal.__version__}+g{rev[:12]}{'.dirty' if rev.endswith('-dirty') else ''}" if rev else dihal.__version__


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def host() -> str:
    return f"{socket.gethostname()} ({platform.machine()}, {platform.system()})"


def plugin_versions(stages) -> dict[str, str]:
    """{distribution: version} of the plugins the stages use (`identity.plugins`, dihal.stages.identity), recorded
    beside the package versions so a result names the plugin code it came from."""
    out: dict[str, str] = {}
    for st in stages:
        for entry in (st.identity or {}).get("plugins", ()):
            out[entry["distribution"]] = entry["version"]
    return dict(sorted(out.items()))
