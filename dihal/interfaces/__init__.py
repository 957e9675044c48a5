"""The continuous-diffusion interfaces C3 compares: one module each, found here by name.

hidden (dihal's bridge), embedding_rounding (Diffusion-LM), embedding_readout (CDCD), latent_ae (LD4LG).
The imports are written out (inside a function, so naming an interface loads no torch code) because stage
identities hash the modules a stage imports, found statically (`dihal.stages.identity`): an edit to any interface
must rename the train and evaluate stages.
"""

from __future__ import annotations

NAMES = ("hidden", "embedding_rounding", "embedding_readout", "latent_ae")


def interface_class(name: str):
    from dihal.interfaces import embedding_readout, embedding_rounding, hidden, latent_ae

    classes = {
        "hidden": hidden.HiddenInterface,
        "embedding_rounding": embedding_rounding.EmbeddingRounding,
        "embedding_readout": embedding_readout.EmbeddingReadout,
        "latent_ae": latent_ae.LatentInterface,
    }
    if name not in classes:
        raise ValueError(f"unknown interface {name!r}; known: {', '.join(NAMES)}")
    return classes[name]


def interface_from_state(adapter, saved: dict):
    """Rebuild a saved interface: {'name': ..., 'state': Interface.state()}."""
    return interface_class(saved["name"]).from_state(adapter, saved["state"])
