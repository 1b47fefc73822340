"""Model folders: a run's generator as a self-describing, inference-only folder (:mod:`condgen.export.folder`), with
its default sampling, precision and model card decided by :func:`export` (`condgen export`)."""

from condgen.export.folder import export_model
from condgen.export.policy import ExportOptions, Half, export

__all__ = ["ExportOptions", "Half", "export", "export_model"]
