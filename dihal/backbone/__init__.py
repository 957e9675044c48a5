"""Backbones: loading (embedded GGUF, HF id, local dir) and the block-level adapter."""

from dihal.backbone.adapter import BackboneAdapter, UnsupportedArchitecture
from dihal.backbone.loading import Backbone, BackboneError, backbone_depth, load_backbone

__all__ = ["Backbone", "BackboneAdapter", "BackboneError", "UnsupportedArchitecture", "backbone_depth", "load_backbone"]
