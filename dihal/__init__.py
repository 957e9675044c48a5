"""dihal: where should diffusion enter a language model? Locate, then replace."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """`dihal.run` and `dihal.results` (see dihal.api), imported on first use: `import dihal` stays instant."""
    if name in ("run", "results"):
        from dihal import api

        return getattr(api, name)
    raise AttributeError(f"module 'dihal' has no attribute {name!r}")
