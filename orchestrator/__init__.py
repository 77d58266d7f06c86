"""ftsweep: tune LLM fine-tuning hyper-parameters (distribution ``ftsweep``)."""

__version__ = "0.1.0"
__all__ = ["__version__"]
