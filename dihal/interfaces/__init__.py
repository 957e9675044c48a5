"""The continuous-diffusion interfaces C3 compares: one module each, found here by name.

hidden (dihal's bridge), embedding_rounding (Diffusion-LM), embedding_readout (CDCD), latent_ae (LD4LG).
The imports are written out (inside a function, so naming an interface loads no torch code) because stage
identities hash the modules a stage imports, found statically (`dihal.stages.identity`): an edit to any interface
must rename the train and evaluate stages.

A name an installed plugin declares (entry point group `dihal.interfaces`, `dihal.spec.plugins`) names its
`Interface` subclass, imported the first time the name is asked for, in whichever process asks.
"""

from __future__ import annotations

from dihal.spec import plugins

NAMES = ("hidden", "embedding_rounding", "embedding_readout", "latent_ae")


def interface_class(name: str):
    from dihal.interfaces import embedding_readout, embedding_rounding, hidden, latent_ae

    classes = {
        "hidden": hidden.HiddenInterface,
        "embedding_rounding": embedding_rounding.EmbeddingRounding,
        "embedding_readout": embedding_readout.EmbeddingReadout,
        "latent_ae": latent_ae.LatentInterface,
    }
    if name in classes:
        return classes[name]
    return _plugin_class(name)


def _plugin_class(name: str):
    from dihal.interfaces.base import Interface

    plugin = plugins.find("interface", name)
    if plugin is None:
        raise ValueError(plugins.unknown("interface", name, {*NAMES, *plugins.names("interface")}))
    cls = plugins.load(plugin)
    if not (isinstance(cls, type) and issubclass(cls, Interface)) or cls.name != name:
        raise plugins.PluginError(
            f"{plugin.where} must name a subclass of dihal.interfaces.base.Interface whose `name` is {name!r}; "
            f"got {cls!r}"
        )
    return cls


def interface_from_state(adapter, saved: dict):
    """Rebuild a saved interface: {'name': ..., 'state': Interface.state()}."""
    return interface_class(saved["name"]).from_state(adapter, saved["state"])
