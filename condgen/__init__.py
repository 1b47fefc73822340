"""condgen: multi-label conditional image generation on i-CLEVR-format data."""

__version__ = "0.1.0"


def load(folder, checkpoint: str = "best"):
    """A trained generator from a training run or a model folder (``condgen export``): ``.generate(["red sphere,
    cyan cube"], seed=0)`` returns images in [-1, 1]. See :class:`condgen.pipeline.Pipeline`."""
    from condgen.pipeline import load as load_pipeline  # torch loads only when a model does

    return load_pipeline(folder, checkpoint)
