"""docs/spec.md is generated from the spec models' field descriptions: it must match them, and every field needs one."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Annotated, Union, get_args, get_origin

from pydantic import BaseModel

from dihal.spec.reference import COMMAND, render
from dihal.spec.schema import Spec

DOC = Path(__file__).resolve().parents[1] / "docs" / "spec.md"


def _models_in(tp) -> list[tuple[type[BaseModel], str]]:
    """The section models an annotation holds, with the path step into them (written independently of
    dihal.spec.reference, so that a walker bug there cannot hide an undescribed field here)."""
    if get_origin(tp) is Annotated:
        return _models_in(get_args(tp)[0])
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [(tp, "")]
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return [m for a in get_args(tp) for m in _models_in(a)]
    if origin in (tuple, list):
        return [(m, "[i]" + step) for a in get_args(tp) if a is not Ellipsis for m, step in _models_in(a)]
    if origin is dict:
        return [(m, ".<key>" + step) for m, step in _models_in(get_args(tp)[1])]
    return []


def _walk(model: type[BaseModel] = Spec, prefix: str = ""):
    for name, field in model.model_fields.items():
        path = prefix + name
        yield path, model, field
        for sub, step in _models_in(field.annotation):
            yield from _walk(sub, path + step + ".")


FIELDS = list(_walk())


def test_docs_spec_md_is_the_rendered_reference():
    assert DOC.is_file(), f"docs/spec.md is missing: generate it with `{COMMAND}`"
    assert DOC.read_text(encoding="utf-8") == render(), (
        f"docs/spec.md is out of date with the spec models: regenerate it with `{COMMAND}`"
    )


def test_the_walker_reaches_every_section():
    paths = [p for p, _, _ in FIELDS]
    assert len(paths) >= 60, len(paths)
    for path in (
        "name",
        "geometry.space",
        "geometry.outliers.threshold",
        "data.splits.train",
        "bridge.steps",
        "bridge.outliers.rule",
        "eval.t_grid",
        "sensitivity[i].name",
        "baselines.recovery_steps",
        "resources.<key>.gpus",
        "allow_large",
    ):
        assert path in paths, path


def test_every_field_has_a_description():
    missing = [f"{p} ({m.__name__})" for p, m, f in FIELDS if not (f.description or "").strip()]
    assert not missing, "fields without a Field(description=...): " + ", ".join(missing)


def test_the_reference_names_every_field():
    text = render()
    missing = [p for p, _, _ in FIELDS if f"`{p}`" not in text]
    assert not missing, missing
