"""The settings of a domain-adaptation run, as one recipe: the shift, the frozen features, the method."""

from __future__ import annotations

from pydantic import Field

from fanbu.config import Strict
from fanbu.unlabeled.features import FeatureConfig
from fanbu.unlabeled.methods import AdaptConfig
from fanbu.unlabeled.shift import ShiftConfig


class AdaptationRecipe(Strict):
    """Domain adaptation from a labelled source to an unlabelled target."""

    shift: ShiftConfig = Field(default_factory=ShiftConfig, description="Source, target and the label mapping.")
    features: FeatureConfig = Field(default_factory=FeatureConfig, description="The frozen encoder's features.")
    adapt: AdaptConfig = Field(default_factory=AdaptConfig, description="The method and its training budget.")
