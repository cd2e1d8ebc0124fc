"""反哺 / feed back: strategies that move the swarm's knowledge into the next large model, behind a gate."""

from fanbu.feedback import lm, strategies  # noqa: F401 (importing the strategy modules registers them)
from fanbu.feedback.shared.context import (
    STRATEGIES,
    FeedbackContext,
    Labeled,
    StrategyInfo,
    StrategyOutput,
    get_strategy,
    register_strategy,
)

__all__ = [
    "STRATEGIES",
    "FeedbackContext",
    "Labeled",
    "StrategyInfo",
    "StrategyOutput",
    "get_strategy",
    "register_strategy",
]
