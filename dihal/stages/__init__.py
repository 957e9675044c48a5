"""The pipeline's stages. Each reads one frozen config and writes its DVC output directory."""

from __future__ import annotations

from pathlib import Path

# kind -> the function of its module (dihal.spec.kinds.STAGE_MODULES) that runs it; a test holds the keys equal to KINDS
RUNNERS: dict[str, str] = {
    "extract": "run",
    "score": "run_score",
    "select": "run_select",
    "targets": "run",
    "train": "run",
    "evaluate": "run",
    "correlate": "run",
    "reference": "run",
    "frontier": "run",
    "summary": "run",
}


def run_stage(config_path: Path | str) -> None:
    from importlib import import_module

    from dihal.spec.kinds import LIGHT_KINDS, STAGE_MODULES
    from dihal.stages.common import StageConfig

    cfg = StageConfig.read(config_path)
    if cfg.kind not in RUNNERS:
        raise ValueError(f"unknown stage kind {cfg.kind!r} in {config_path}")
    _check_code(config_path, cfg.kind)
    runtime = None
    if cfg.kind not in LIGHT_KINDS:  # a light stage only reads JSON: importing torch would be most of its time
        import torch

        from dihal.utils.threads import apply as apply_threads

        runtime = apply_threads()  # DIHAL_THREADS, the executor's num_cpus, or torch's default
        torch.use_deterministic_algorithms(True, warn_only=True)
    runner = getattr(import_module(f"dihal.stages.{STAGE_MODULES[cfg.kind]}"), RUNNERS[cfg.kind])
    # Upstream outputs are checked against their manifests before anything reads them, and this
    # stage's own output gets one once it is complete (dihal.stages.manifest; not part of any code hash).
    from dihal.stages import manifest

    manifest.verify_inputs(cfg)
    runner(cfg)
    manifest.write(cfg.out, cfg.kind, cfg.hash, runtime)


def _check_code(config_path: Path | str, kind: str) -> None:
    """Refuse to fill a stage's outputs with anything but what its name was compiled for.

    A stage name promises its outputs came from these params, these upstream outputs and this code
    (`dihal.stages.identity`). Two ways to break the promise are refused: code that changed since compile,
    and a config edited in place -- `dvc exp run -S <config>:params.…` would otherwise write numbers the
    ledger never sees into a directory named for other params. A config without a code hash (compiled by a
    dihal whose stage names did not include one) is run without either check.
    """
    import json

    from dihal.spec.hashing import digest
    from dihal.spec.plugins import GROUPS
    from dihal.stages.identity import code_hash, plugin_identity

    cfg = json.loads(Path(config_path).read_text())
    identity = cfg.get("identity") or {}
    want = identity.get("code")
    if want is None:
        return
    if want != code_hash(kind):
        raise RuntimeError(
            f"{config_path} was compiled for dihal {kind} code {want}, but this dihal's is "
            f"{code_hash(kind)}: run `dihal compile` (or `dihal run`) on the spec again, which "
            "gives the stage a new name instead of mixing outputs of two versions of the code"
        )
    if want_plugins := identity.get("plugins"):
        uses: dict[str, list[str]] = {}
        for entry in want_plugins:
            group, _, name = entry["entry_point"].partition(":")
            uses.setdefault({g: k for k, g in GROUPS.items()}[group], []).append(name)
        if (got_plugins := plugin_identity(uses)) != want_plugins:
            raise RuntimeError(
                f"{config_path} was compiled for plugin code {_plugins_line(want_plugins)}, but what is installed "
                f"is {_plugins_line(got_plugins)}: run `dihal compile` (or `dihal run`) on the spec again, which "
                "gives the stage a new name"
            )
    upstream = {k: Path(v).name for k, v in (cfg.get("inputs") or {}).items()}  # artifacts/<kind>/<hash>
    got = digest({"kind": kind, "params": cfg.get("params"), "upstream": upstream, "identity": identity})
    if got[: len(str(cfg.get("hash")))] != cfg.get("hash"):
        raise RuntimeError(
            f"{config_path} was edited after compile: its params hash to {got[:16]}, its name says "
            f"{cfg.get('hash')}. A stage config is compiled output, not a place for experiments (`dvc exp run -S` "
            "on it would file results the ledger never sees under the old name). Run a variant with "
            "`dihal run SPEC -S section.field=value`, or `dihal compile SPEC` to restore this config"
        )


def _plugins_line(entries: list[dict]) -> str:
    return ", ".join(f"{e['entry_point']} ({e['distribution']} {e['version']}, source {e['source']})" for e in entries)
