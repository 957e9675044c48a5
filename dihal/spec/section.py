"""What every spec section shares: strictness and the integer and float types the ledger can store."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from dihal.spec.errors import INT32_MAX


def _not_bool(value: object) -> object:
    """pydantic reads true as 1 for a number field; a number field given true or false is a mistake."""
    if isinstance(value, bool):
        raise ValueError("a number, not true/false")
    return value


NotBool = BeforeValidator(_not_bool)
# Every integer fits the ledger's 32-bit INTEGER columns; larger ones are refused here, not at ingest.
PosInt = Annotated[int, NotBool, Field(gt=0, le=INT32_MAX)]
NonNegInt = Annotated[int, NotBool, Field(ge=0, le=INT32_MAX)]
PosFloat = Annotated[float, NotBool, Field(gt=0)]
Prob = Annotated[float, NotBool, Field(gt=0, lt=1)]


class Section(BaseModel):
    # Finite floats only: .inf/.nan cannot be hashed (canonical JSON) and would only fail later, mid-run.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)
