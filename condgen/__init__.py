"""condgen: multi-label conditional image generation on i-CLEVR-format data."""

__version__ = "0.1.0"
