"""Mistral: the base family, except that every layer attends within `sliding_window` (4096 in v0.1; None
from v0.2 on, which is plain causal). HF builds one sliding-window mask for all layers; so does this."""

from __future__ import annotations

from dihal.backbone.families.base import Family


class Mistral(Family):
    def windows(self) -> list[int | None]:
        window = getattr(self.config, "sliding_window", None)
        return [None if window is None else int(window)] * len(self.blocks)


FAMILY = Mistral
