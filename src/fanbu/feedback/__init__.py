"""反哺 / feed back: strategies that move the swarm's knowledge into the next large model, behind a gate."""

from fanbu.feedback import (  # noqa: F401 (importing a strategy module registers it)
    continual,
    graft,
    merge,
    moe,
    multitask,
    sequential,
    swarm,
)
from fanbu.feedback.base import (
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
