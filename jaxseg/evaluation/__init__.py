"""Evaluation: metrics (pure functions) and inference helpers."""
from jaxseg.evaluation.instance import instance_metrics, mean_instance_metrics
from jaxseg.evaluation.semantic import (
    confusion_matrix, metrics_from_confusion, sliding_window_logits, window_starts)

__all__ = ["confusion_matrix", "instance_metrics", "mean_instance_metrics",
           "metrics_from_confusion", "sliding_window_logits", "window_starts"]
