"""hcjax: posterior collapse in VAEs, in JAX."""

__version__ = "0.1.0"
