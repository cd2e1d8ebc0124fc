"""The domain-adaptation methods, one registration each: the loss terms each adds beside the task loss.

A method's implementation maps ``(settings, context)`` to its extra loss terms; the one loop sums them
with :class:`~fanbu.train.terms.TaskLoss` on the labelled source. ``self_training`` declares
``pseudo_labels``: it first trains on the source alone, then pseudo-labels the pool (see
:func:`fanbu.unlabeled.adapt.adapt`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from fanbu.config import Strict
from fanbu.registration import Catalog
from fanbu.train.adaptation import CoralLoss, DomainAdversarialLoss, MMDLoss, PseudoLabelLoss
from fanbu.train.alignment import DEFAULT_BANDWIDTHS
from fanbu.train.terms import LossTerm
from fanbu.unlabeled.pseudo import PseudoLabels

METHODS = Catalog(
    "adaptation method",
    field="adapt.method",
    capabilities={
        "uses_pool": "reads the unlabelled target pool while training",
        "pseudo_labels": "trains on the source first, then on confident pseudo-labels of the pool",
    },
)


class AdaptConfig(Strict):
    """How one domain-adaptation run trains: the method, its weight, and the loop's budget."""

    method: Literal["source_only", "dann", "coral", "mmd", "self_training"] = Field(
        "dann", description="Which method adds its loss terms to the source task loss."
    )
    steps: int = Field(600, ge=2, description="Optimiser steps of the whole run (every method gets the same).")
    batch_size: int = Field(32, ge=2, description="Labelled source rows per step.")
    target_batch_size: int = Field(32, ge=2, description="Unlabelled target rows per step (every method draws them).")
    lr: float = Field(1e-3, gt=0, description="Peak AdamW learning rate (linear warm-up and decay).")
    weight_decay: float = Field(0.01, ge=0, description="AdamW decoupled weight decay.")
    hidden: int = Field(256, ge=2, description="Width of the trainable bottleneck (the aligned features).")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout after the bottleneck.")
    dann_weight: float = Field(1.0, gt=0, description="DANN: weight of the domain classifier's loss.")
    dann_gamma: float = Field(10.0, gt=0, description="DANN: steepness of the reversal coefficient's 0 -> 1 rise.")
    dann_hidden: int = Field(256, ge=2, description="DANN: hidden width of the domain classifier.")
    coral_weight: float = Field(
        100.0, gt=0, description="CORAL: weight of the covariance distance (it is divided by 4 d^2, so small)."
    )
    mmd_weight: float = Field(1.0, gt=0, description="MMD: weight of the squared MMD.")
    mmd_bandwidths: tuple[float, ...] = Field(
        DEFAULT_BANDWIDTHS, min_length=1, description="MMD: Gaussian bandwidths, as multiples of the mean squared "
        "distance between the batches' rows.",
    )
    pseudo_weight: float = Field(1.0, gt=0, description="Self-training: weight of the pseudo-label cross-entropy.")
    warmup_share: float = Field(
        0.5, gt=0, lt=1, description="Self-training: share of the steps trained on the source alone before the pool "
        "is pseudo-labelled; the rest train on source + confident pseudo-labels.",
    )
    threshold: float | Literal["validation"] = Field(
        "validation", description="Self-training: keep pseudo-labels at least this confident; 'validation': the "
        "threshold that maximises right minus wrong predictions on the source validation split.",
    )
    seed: int = Field(0, description="Seeds initialisation, batch order and dropout.")

    @model_validator(mode="after")
    def _check(self) -> AdaptConfig:
        if any(b <= 0 for b in self.mmd_bandwidths):
            raise ValueError(f"mmd_bandwidths must be positive, got {list(self.mmd_bandwidths)}")
        if isinstance(self.threshold, float) and not 0 <= self.threshold <= 1:
            raise ValueError(f"threshold {self.threshold} must lie in [0, 1] (a probability) or be 'validation'")
        if self.method == "self_training" and not 1 <= int(self.steps * self.warmup_share) < self.steps:
            raise ValueError(
                f"self_training: steps {self.steps} x warmup_share {self.warmup_share} must leave at least one "
                "step in each phase; raise steps or move warmup_share towards 0.5"
            )
        return self


@dataclass(frozen=True)
class MethodContext:
    """What a method's terms are built from: the feature width, the run's steps, the pseudo-labels."""

    width: int
    steps: int
    pseudo: PseudoLabels | None = None


@METHODS.register("source_only", summary="The task loss on the labelled source alone (the baseline).",
                  reference="https://arxiv.org/abs/1409.7495 (the source-only baseline of DANN)", config=AdaptConfig)
def _source_only(config: AdaptConfig, context: MethodContext) -> list[LossTerm]:
    return []


@METHODS.register("dann", summary="A domain classifier behind gradient reversal makes features domain-invariant.",
                  reference="https://arxiv.org/abs/1409.7495", config=AdaptConfig, capabilities={"uses_pool"})
def _dann(config: AdaptConfig, context: MethodContext) -> list[LossTerm]:
    return [DomainAdversarialLoss(context.width, context.steps, config.dann_weight, config.dann_hidden,
                                  config.dann_gamma, seed=config.seed)]


@METHODS.register("coral", summary="Match the second-order statistics (covariances) of source and target features.",
                  reference="https://arxiv.org/abs/1607.01719", config=AdaptConfig, capabilities={"uses_pool"})
def _coral(config: AdaptConfig, context: MethodContext) -> list[LossTerm]:
    return [CoralLoss(config.coral_weight)]


@METHODS.register("mmd", summary="Minimise the multi-kernel Gaussian MMD between source and target features.",
                  reference="https://arxiv.org/abs/1502.02791", config=AdaptConfig, capabilities={"uses_pool"})
def _mmd(config: AdaptConfig, context: MethodContext) -> list[LossTerm]:
    return [MMDLoss(config.mmd_weight, tuple(config.mmd_bandwidths))]


@METHODS.register("self_training", summary="Train on the source, then on its confident pseudo-labels of the pool.",
                  reference="https://arxiv.org/abs/1908.09822 (self-training for unsupervised domain adaptation)",
                  config=AdaptConfig, capabilities={"uses_pool", "pseudo_labels"})
def _self_training(config: AdaptConfig, context: MethodContext) -> list[LossTerm]:
    if context.pseudo is None:
        return []  # phase 1: the source alone
    return [PseudoLabelLoss(context.pseudo.labels, config.pseudo_weight)]
