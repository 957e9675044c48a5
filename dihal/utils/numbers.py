"""What counts as a number in a result: finite. NaN and ±inf are "no number", never a value to show or store."""

from __future__ import annotations

import math


def is_finite_number(v) -> bool:
    """True for an int or float that is finite (bool is not a number here)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def finite_or_none(v) -> float | None:
    """`v` as a float when it is a finite number, else None (NaN, ±inf and None all read as 'no number')."""
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None
