"""`resources:` in a spec: what each stage kind asks of the machine it runs on (Ray executor).

    resources:
      train: {gpus: 1, cpus: 4}
      extract: {gpus: 1}

Kinds not named get `{cpus: 1, gpus: 0}`. The field changes where stages run, never what they
compute, so it is a label field (`dihal.spec.schema.LABEL_FIELDS`): not part of the spec hash or of any
stage's identity. `dvc repro` (`--executor local`) ignores it.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from dihal.spec.section import NotBool, Section

DEFAULT_CPUS = 1.0
DEFAULT_GPUS = 0.0


class StageResources(Section):
    """One stage kind's request: logical CPUs and GPUs (fractions allowed, as Ray's num_cpus/num_gpus)."""

    cpus: Annotated[float, NotBool] = Field(default=DEFAULT_CPUS, ge=0, le=1024, description="logical CPUs per stage")
    gpus: Annotated[float, NotBool] = Field(
        default=DEFAULT_GPUS, ge=0, le=64, description="GPUs per stage (fractions share one)"
    )


def stage_kinds() -> tuple[str, ...]:
    from dihal.spec.kinds import KINDS

    return KINDS


def _known_kinds(value: dict[str, StageResources]) -> dict[str, StageResources]:
    kinds = stage_kinds()
    unknown = [k for k in value if k not in kinds]
    if unknown:
        raise ValueError(
            f"unknown stage kind(s) {', '.join(repr(k) for k in unknown)}: "
            f"expected a mapping from stage kinds ({', '.join(kinds)}) to {{cpus, gpus}}"
        )
    return value


Resources = Annotated[dict[str, StageResources], AfterValidator(_known_kinds)]


def stage_resources(spec, kind: str) -> dict[str, float]:
    """Ray's options for one stage of `spec`: {"num_cpus": …, "num_gpus": …}."""
    r = (getattr(spec, "resources", None) or {}).get(kind) or StageResources()
    return {"num_cpus": float(r.cpus), "num_gpus": float(r.gpus)}
