"""Phi-3 / Phi-3.5 / Phi-4-mini: the base family's layout and block call, plus Phi-3's sliding window.

The rest is exact as the base runs it: the fused `qkv_proj` / `gate_up_proj` are split inside the
attention and MLP, the partial rotary (`partial_rotary_factor`, Phi-4-mini's 0.75) and LongRoPE's
short/long factors are applied by the shared `rotary_emb` (which picks the factor from the positions it is
given) and the attention's own `apply_rotary_pos_emb`. What the base would get wrong is the mask: with a
`sliding_window` set (Phi-3-mini-4k: 2047), HF masks keys older than the window, so the mask does too.
"""

from __future__ import annotations

from dihal.backbone.families.base import Family


class Phi3(Family):
    def windows(self) -> list[int | None]:
        window = getattr(self.config, "sliding_window", None)
        return [None if window is None else int(window)] * len(self.blocks)


FAMILY = Phi3
