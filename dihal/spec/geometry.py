"""The geometry proxies' names and sign conventions, importable without torch.

`dihal validate` must check `geometry.proxies` in well under a second, but the registry in
`dihal.geometry.proxies` lives in a package whose import pulls in torch (~1.5 s). The names are a
fact about the code, not about the tensors, so they are written down here as well; a test holds
this table equal to the registry (names and `higher_is_better`), so the two cannot drift.

A proxy or space an installed plugin declares (entry points, `dihal.spec.plugins`) is accepted by its
entry point's name, read from package metadata without importing the plugin; one registered at run time
with `register_proxy` in this process is accepted too, once something has imported the registry.
"""

from __future__ import annotations

import sys

from dihal.spec import plugins

# name -> higher_is_better (the sign it takes in G by default), as registered in dihal.geometry.builtin_proxies
BUILTIN: dict[str, bool] = {
    "kappa": True,
    "sigma": True,
    "erank": False,
    "twonn": False,
    "anisotropy": False,
}

# Always computed by the score stage, whatever the spec weights: `layer_geometry` has a column for each. The score
# stage and ingest both read it from here (ingest so that writing the ledger does not import the stages' torch).
STANDARD = ("kappa", "sigma", "erank")

# METHOD.md's G = z(kappa) + z(sigma) - z(erank): the spec's default `geometry.proxies` and score_layers' default
# weights. Written once here, where `dihal validate` can read it without torch.
DEFAULT_WEIGHTS: dict[str, float] = {"kappa": 1.0, "sigma": 1.0, "erank": -1.0}


# METHOD.md's defaults for the geometry sample's proxies and rules: the spec's defaults and the functions' (one home).
ANCHORS = 1024  # kappa's anchors
NEIGHBOURS = 16  # kappa's k nearest neighbours (exact)
PAIRS = 4096  # sigma's random pairs
RIDGE = 1e-3  # sigma's ridge: lambda = RIDGE * tr(Sigma) / d
OUTLIER_RULE = "drop"  # massive activations: drop, clip or keep
OUTLIER_THRESHOLD = 20.0  # ... above this multiple of the layer's median norm
BOOTSTRAP = 200  # document-bootstrap replicates of G

# The spaces a layer's states are measured in (dihal.geometry.spaces registers their code; a test holds the two
# equal). The default is the space the bridge denoises; every run also records the others in `geometry.spaces`.
SPACE_NAMES: tuple[str, ...] = ("bridge", "scalar")
DEFAULT_SPACE = "bridge"


def known_spaces() -> set[str]:
    """Every geometry space a spec may name: the built-in ones, installed plugins', any registered in this process."""
    names = set(SPACE_NAMES) | plugins.names("space")
    registry = sys.modules.get("dihal.geometry.spaces")
    if registry is not None:
        names |= set(registry.SPACES)
    return names


def known_proxies() -> set[str]:
    """Every proxy name a spec may use: the built-in ones, installed plugins', any registered in this process."""
    names = set(BUILTIN) | plugins.names("proxy")
    registry = sys.modules.get("dihal.geometry.registry")
    if registry is not None:
        names |= set(registry.PROXIES)
    return names
