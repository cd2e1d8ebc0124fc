"""The one training loop and what terms plug into it."""

from fanbu.train.batching import BatchPlan, PlanItem, TaskData, TextPlan
from fanbu.train.checkpoint import latest_checkpoint
from fanbu.train.config import TrainConfig
from fanbu.train.loop import Trainer, TrainResult
from fanbu.train.seed import seed_everything
from fanbu.train.terms import (
    Batch,
    CausalLMLoss,
    LoopState,
    LossTerm,
    TaskLoss,
    causal_lm_forward,
    classifier_forward,
)

__all__ = [
    "Batch",
    "BatchPlan",
    "CausalLMLoss",
    "LoopState",
    "LossTerm",
    "PlanItem",
    "TaskData",
    "TaskLoss",
    "TextPlan",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "causal_lm_forward",
    "classifier_forward",
    "latest_checkpoint",
    "seed_everything",
]
