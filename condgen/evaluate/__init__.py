"""The multi-label evaluator, the course's top-k accuracy and a feature-space Fréchet distance."""

from condgen.evaluate.metrics import frechet_distance, set_scores, top_k_accuracy

__all__ = ["frechet_distance", "set_scores", "top_k_accuracy"]
