"""dihal: where should diffusion enter a language model? Locate, then replace."""

__version__ = "0.1.0"
