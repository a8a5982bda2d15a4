"""Evaluation: metrics (pure functions) and inference helpers."""
from jaxseg.evaluation.semantic import (
    confusion_matrix, metrics_from_confusion, sliding_window_logits, window_starts)

__all__ = ["confusion_matrix", "metrics_from_confusion", "sliding_window_logits",
           "window_starts"]
