"""Evaluation core: classification metrics, perplexity, model size and speed.

Generic over models: metrics take class ids, perplexity takes any causal LM and tokenizer, and speed
takes a ``predict(texts)`` callable, so every model handle can be measured the same way.
"""

from fanbu.evaluate.metrics import (
    EvaluationError,
    accuracy,
    classification_metrics,
    macro_f1,
    perplexity,
)
from fanbu.evaluate.speed import (
    LatencyStats,
    measure_latency,
    measure_throughput,
    param_count,
    size_on_disk,
    speed_profile,
)

__all__ = [
    "EvaluationError",
    "LatencyStats",
    "accuracy",
    "classification_metrics",
    "macro_f1",
    "measure_latency",
    "measure_throughput",
    "param_count",
    "perplexity",
    "size_on_disk",
    "speed_profile",
]
