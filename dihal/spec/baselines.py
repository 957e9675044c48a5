"""C3's part of the spec: which continuous-diffusion interfaces are trained next to the bridge, and the budget rule.

The comparison is only worth reading at a matched budget, so the baselines have no denoiser or training
fields of their own: every interface is trained with `bridge`'s denoiser (same width, depth, heads, time
conditioning, objective), recipe (self-conditioning, noise schedule, time sampling) and protocol (steps,
batch, learning rate, warm-up, seeds, training and validation blocks); a spec that tries to set one of those
under `baselines` is refused, naming the `bridge` field to set instead. What an interface adds is its recovery part -- the readout, the autoencoder -- and that budget is
reported next to the diffusion budget (both recorded per ledger row) and may not exceed it. The one setting
that changes the denoiser's parameter count is the latent's width (the denoiser's input and output
projections scale with it), so setting it, or a recovery budget above the diffusion budget, is refused
unless the spec says `unmatched: true`, which the rows then carry.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, field_validator, model_validator

from dihal.spec.section import NotBool, PosFloat, PosInt, Section

INTERFACES = ("embedding_rounding", "embedding_readout", "latent_ae")


def _known_interface(name: str) -> str:
    """A built-in baseline or one an installed plugin declares (entry point group dihal.interfaces)."""
    from dihal.spec import plugins

    known = set(INTERFACES) | plugins.names("interface")
    if name not in known:
        raise ValueError(plugins.unknown("interface", name, known))
    return name


Interface = Annotated[str, AfterValidator(_known_interface)]


# `bridge` fields every interface trains with: set under `baselines`, they would give one interface a recipe of
# its own, so they are refused there (by name) rather than reported as unknown keys.
SHARED_WITH_BRIDGE = (
    "d_model",
    "depth",
    "heads",
    "time_cond",
    "pos",
    "objective",
    "self_condition",
    "schedule",
    "schedule_shift",
    "time_sampling",
    "time_loc",
    "time_scale",
    "steps",
    "batch_size",
    "lr",
    "warmup",
    "weight_decay",
    "grad_clip",
    "seeds",
    "n_train",
    "n_val",
)


class BaselinesSpec(Section):
    """The interfaces compared with the hidden-state bridge (C3 in METHOD.md), all at the bridge's budget."""

    interfaces: tuple[Interface, ...] = Field(
        default=INTERFACES,
        min_length=1,
        description="trained next to the bridge ('hidden'): "
        + ", ".join(INTERFACES)
        + ", or one an installed plugin declares (entry point group dihal.interfaces)",
    )
    rounding: Literal["cosine", "l2"] = Field(default="cosine", description="embedding_rounding's nearest-row metric")
    recovery_steps: PosInt | None = Field(
        default=None, description="optimizer steps of the readout and of the autoencoder; default bridge.steps"
    )
    recovery_lr: PosFloat = Field(default=1e-3, description="peak learning rate of the readout and the autoencoder")
    recovery_batch_tokens: PosInt = Field(
        default=512, description="tokens per recovery step (the autoencoder takes them as whole blocks)"
    )
    latent_width: PosInt | None = Field(default=None, description="latent_ae's width; default the backbone's d")
    latent_d_model: PosInt = Field(default=128, description="the autoencoder's transformer width")
    latent_depth: PosInt = Field(default=2, description="the autoencoder's transformer blocks")
    latent_heads: PosInt = Field(default=4, description="the autoencoder's attention heads; must divide latent_d_model")
    latent_noise: Annotated[float, NotBool] = Field(
        default=0.1, ge=0, description="noise on the unit-RMS latent while the AE trains"
    )
    unmatched: bool = Field(default=False, description="permit a budget that breaks the match (rows say so)")

    @model_validator(mode="before")
    @classmethod
    def _no_recipe_of_their_own(cls, data: object) -> object:
        if isinstance(data, dict):
            own = [key for key in SHARED_WITH_BRIDGE if key in data]
            if own:
                raise ValueError(
                    f"baselines.{own[0]} = {data[own[0]]!r}: every interface trains with the bridge's denoiser, "
                    f"recipe and protocol (the matched budget); set bridge.{own[0]}, which applies to all of them"
                )
        return data

    @field_validator("interfaces")
    @classmethod
    def _distinct(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from dihal.spec import plugins

        if clash := plugins.shadowed("interface", v, [*INTERFACES, "hidden"]):
            raise ValueError(clash)
        if len(set(v)) != len(v):
            raise ValueError(f"interfaces must be distinct, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _heads(self) -> BaselinesSpec:
        if self.latent_d_model % self.latent_heads:
            raise ValueError(
                f"latent_d_model ({self.latent_d_model}) must be divisible by latent_heads ({self.latent_heads})"
            )
        return self


def baseline_problems(spec: BaseModel) -> list[tuple[str, object, str]]:
    """The matched-budget rule, checked at validate time (see the module docstring)."""
    b = spec.baselines
    if b is None:
        return []
    if spec.bridge is None:
        return [("bridge", None, "a bridge section: the baselines are trained with its denoiser and protocol")]
    if b.unmatched:
        return []
    why = "; set baselines.unmatched: true to compare at unequal budgets"
    problems: list[tuple[str, object, str]] = []
    if b.latent_width is not None:
        problems.append(
            (
                "baselines.latent_width",
                b.latent_width,
                "unset (the latent is then the backbone's d wide, so every interface's denoiser has the "
                "same parameter count)" + why,
            )
        )
    if b.recovery_steps is not None and b.recovery_steps > spec.bridge.steps:
        problems.append(
            (
                "baselines.recovery_steps",
                b.recovery_steps,
                f"at most bridge.steps ({spec.bridge.steps}): a recovery part may not train longer than "
                "the diffusion it serves" + why,
            )
        )
    return problems


# The baselines fields each interface's stages depend on: changing the autoencoder never re-runs rounding.
INTERFACE_KEYS = {
    "embedding_rounding": ["rounding"],
    "embedding_readout": ["recovery_steps", "recovery_lr", "recovery_batch_tokens"],
    "latent_ae": [
        "recovery_steps",
        "recovery_lr",
        "recovery_batch_tokens",
        "latent_width",
        "latent_d_model",
        "latent_depth",
        "latent_heads",
        "latent_noise",
    ],
}
# A plugin's interface (entry point group dihal.interfaces) may train a recovery part: its stages depend on these.
PLUGIN_INTERFACE_KEYS = ["recovery_steps", "recovery_lr", "recovery_batch_tokens"]


def interface_keys(name: str) -> list[str]:
    """The baselines fields an interface's train stage hashes (see INTERFACE_KEYS)."""
    return INTERFACE_KEYS.get(name, PLUGIN_INTERFACE_KEYS)


def recovery_steps(spec_baselines: dict, bridge_steps: int) -> int:
    return spec_baselines["recovery_steps"] or bridge_steps
