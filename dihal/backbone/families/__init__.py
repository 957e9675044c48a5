"""One module per architecture family: where its blocks, norms and head live, and how a block is called.

`family_for(model)` picks the module named by `dihal.backbone.support.FAMILIES` for the model's
`model_type`; `BackboneAdapter` then drives the explicit block loop through it. A decoder-only causal LM of
no known family gets `generic` (hooks on its own forward), with a one-line notice. A `model_type` an installed
plugin declares (entry point group `dihal.families`) gets the plugin's `Family` subclass, imported on first use.
"""

from __future__ import annotations

import importlib

from dihal.backbone.families.base import Family, PositionContext
from dihal.backbone.support import (
    GENERIC,
    PLUGIN,
    NotSupported,
    UnsupportedArchitecture,
    check_config,
    generic_notice,
)
from dihal.spec import plugins

__all__ = ["Family", "PositionContext", "family_for"]

_NOTICED: set[str] = set()


def family_for(model) -> Family:
    config = model.config.to_dict() if hasattr(model.config, "to_dict") else dict(vars(model.config))
    config["model_type"] = config.get("model_type") or getattr(model.config, "model_type", type(model).__name__)
    config["architectures"] = config.get("architectures") or [type(model).__name__]  # models built in code
    try:
        module = check_config(config)
    except NotSupported as err:
        raise UnsupportedArchitecture(f"{err} ({type(model).__name__})") from None
    if module == GENERIC and config["model_type"] not in _NOTICED:  # once per architecture and process
        from dihal.utils.progress import log

        _NOTICED.add(config["model_type"])
        log(generic_notice(config))
    if module == PLUGIN:
        return _plugin_family(config["model_type"])(model)
    return importlib.import_module(f"dihal.backbone.families.{module}").FAMILY(model)


def _plugin_family(model_type: str) -> type[Family]:
    plugin = plugins.find("family", model_type)
    cls = plugins.load(plugin)
    if not (isinstance(cls, type) and issubclass(cls, Family)):
        raise plugins.PluginError(
            f"{plugin.where} must name a subclass of dihal.backbone.families.base.Family; got {cls!r}"
        )
    return cls
