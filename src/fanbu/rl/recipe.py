"""The ``rl`` recipe: a family of environment variants and how its swarm of policies is trained and fed back."""

from __future__ import annotations

from pydantic import Field, field_validator

from fanbu.config import Strict
from fanbu.rl.adapt import AdaptationConfig
from fanbu.rl.distill import DistillConfig
from fanbu.rl.gate import ReturnGateConfig
from fanbu.rl.policy import PolicyConfig
from fanbu.rl.ppo import PPOConfig
from fanbu.rl.reptile import ReptileConfig
from fanbu.rl.variants import FAMILIES, FamilySpec


class RLRecipe(Strict):
    """Experts per training variant (PPO), a general policy by distillation and by merging, the gate on
    returns, and a Reptile meta-initialisation for held-out variants."""

    family: str | FamilySpec = Field("cartpole", description="A built-in family (cartpole, acrobot) or a "
                                     "family written out: name, env_id, train and held_out variants.")
    seed: int = Field(0, description="Seeds the shared initialisation, every PPO run and the rollouts.")
    ppo: PPOConfig = Field(default_factory=PPOConfig, description="The experts' PPO (and every PPO run's).")
    general: PolicyConfig = Field(default_factory=lambda: PolicyConfig(hidden=[128, 128]),
                                  description="The general (large) policy's shape, for distillation.")
    distill: DistillConfig = Field(default_factory=DistillConfig, description="Multi-teacher distillation.")
    reptile: ReptileConfig = Field(default_factory=ReptileConfig, description="The meta-initialisation.")
    adaptation: AdaptationConfig = Field(default_factory=AdaptationConfig,
                                         description="Steps-to-target on the held-out variants.")
    gate: ReturnGateConfig = Field(default_factory=ReturnGateConfig, description="The gate on returns.")
    episodes: int = Field(20, ge=1, description="Test episodes per variant for every reported return.")

    @field_validator("family")
    @classmethod
    def _known_family(cls, value: str | FamilySpec) -> str | FamilySpec:
        if isinstance(value, str) and value not in FAMILIES:
            raise ValueError(f"family {value!r} is not built in; use one of {', '.join(FAMILIES)}, or write the "
                             "family out (name, env_id, train, held_out)")
        return value

    def family_spec(self) -> FamilySpec:
        """The family this recipe names."""
        return FAMILIES[self.family] if isinstance(self.family, str) else self.family
