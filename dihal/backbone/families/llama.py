"""Llama 2/3, Mistral, Qwen2/2.5/3, SmolLM2/3: the base family as it is."""

from dihal.backbone.families.base import Family

FAMILY = Family
