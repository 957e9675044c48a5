"""Backbones: loading (embedded GGUF, HF id, local dir) and the block-level adapter.

Names are resolved lazily (PEP 562) so that importing `dihal.backbone.depth` -- what `dihal validate`
needs -- does not drag torch and transformers in through this package's `__init__`.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "BackboneAdapter": "dihal.backbone.adapter",
    "UnsupportedArchitecture": "dihal.backbone.support",
    "Backbone": "dihal.backbone.loading",
    "load_backbone": "dihal.backbone.loading",
    "BackboneError": "dihal.backbone.depth",
    "backbone_depth": "dihal.backbone.depth",
}

__all__ = ["Backbone", "BackboneAdapter", "BackboneError", "UnsupportedArchitecture", "backbone_depth", "load_backbone"]


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'dihal.backbone' has no attribute {name!r}")
