"""Multi-teacher policy distillation, DAgger-style: the swarm of experts teaches one general policy.

Each round, the student plays every training variant (with probability ``beta`` a step follows the
variant's expert instead, ``beta`` decaying round by round, so that later rounds visit the states the
student itself reaches: DAgger, Ross et al. 2011). Every visited state is labelled with *its own
variant's* expert's logits; the student is then trained on all states gathered so far with the
temperature-softened KL to those logits (Rusu et al. 2016, policy distillation), through fanbu's one
training loop (:class:`~fanbu.train.Trainer`). The student never sees a variant's identity, so what it
learns must hold for the whole family.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from pydantic import Field
from torch import Tensor, nn

from fanbu.config import Strict
from fanbu.errors import ConfigError
from fanbu.rl.policy import PolicyMLP, check_compatible, env_sizes
from fanbu.rl.variants import Variant
from fanbu.train import Batch, PlanItem, TrainConfig, Trainer
from fanbu.train.distill.losses import kd_loss

TASK = "policy"


def _student_train() -> TrainConfig:
    return TrainConfig(epochs=20, batch_size=128, lr=1e-3, weight_decay=0.0, warmup_ratio=0.0,
                       schedule="constant", max_grad_norm=1.0, progress=False, restore_best=False)


class DistillConfig(Strict):
    """How the general policy learns from the experts."""

    rounds: int = Field(4, ge=1, description="DAgger rounds: collect states, label them, retrain.")
    steps_per_variant: int = Field(1000, ge=1, description="States the student visits per variant per round.")
    beta: float = Field(1.0, ge=0, le=1, description="Share of steps that follow the expert in round 0 (its "
                        "states start the data set); later rounds use beta * beta_decay^round.")
    beta_decay: float = Field(0.5, ge=0, le=1, description="Factor on beta from one round to the next.")
    temperature: float = Field(1.0, gt=0, description="Softmax temperature of the KL to the experts' logits.")
    train: TrainConfig = Field(default_factory=_student_train,
                               description="The student's training on the aggregated states, each round.")


class StatePlan:
    """Batches of (state, expert logits) for the training loop; epoch ``e``'s order follows from (seed, e)."""

    def __init__(self, obs: Tensor, logits: Tensor, batch_size: int, seed: int) -> None:
        self.obs, self.logits = obs, logits  # (states, obs_dim), (states, n_actions)
        self.batch_size, self.seed = batch_size, seed

    def schedule(self, epoch: int) -> list[PlanItem]:
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.obs))
        return [PlanItem(TASK, tuple(int(i) for i in order[s: s + self.batch_size]))
                for s in range(0, len(order), self.batch_size)]

    def make(self, item: PlanItem) -> Batch:
        index = torch.tensor(item.indices, dtype=torch.long)
        return Batch({"obs": self.obs[index]}, {"teacher_logits": self.logits[index]}, TASK, index)


class PolicyDistillLoss:
    """``T^2 * KL(softmax(expert / T) || softmax(student / T))`` on a batch of states."""

    name = "kd"

    def __init__(self, temperature: float) -> None:
        self.temperature = temperature

    def losses(self, outputs: Mapping[str, Tensor], batch: Batch, model: nn.Module) -> Mapping[str, Tensor]:
        return {"kd": kd_loss(outputs["logits"], batch.targets["teacher_logits"], self.temperature)}


def policy_forward(model: nn.Module, batch: Batch) -> dict[str, Tensor]:
    """The loop's forward: the policy's logits on the batch's states."""
    return {"logits": model(batch.inputs["obs"])}  # (batch, n_actions)


@dataclass
class DistillResult:
    """Per round and variant, the student's greedy agreement with the expert on the states it visited;
    ``final``: the agreement on a last rollout of the student alone."""

    rounds: list[dict[str, float]] = field(default_factory=list)
    final: dict[str, float] = field(default_factory=dict)
    states: int = 0


def check_teachers(student: PolicyMLP, teachers: Mapping[str, PolicyMLP], variants: Sequence[Variant]) -> None:
    """Every variant has an expert, and the student, the experts and the environments fit one another."""
    missing = [v.name for v in variants if v.name not in teachers]
    if missing:
        raise ConfigError(f"no expert for variants {missing}; train one per training variant (experts: "
                          f"{sorted(teachers)})")
    for variant in variants:
        env = variant.make()
        sizes = env_sizes(env)
        env.close()
        check_compatible(student, *sizes, what="the student", against=f"variant {variant.name!r}")
        check_compatible(teachers[variant.name], student.obs_dim, student.n_actions,
                         what=f"expert {variant.name!r}", against="the student")


@torch.no_grad()
def collect(student: PolicyMLP, teacher: PolicyMLP, variant: Variant, steps: int, beta: float,
            rng: np.random.Generator) -> tuple[Tensor, Tensor, float]:
    """Play ``steps`` steps (expert's action with probability ``beta``); states, expert logits, agreement."""
    env = variant.make()
    states, agree = [], 0
    obs, _ = env.reset(seed=int(rng.integers(0, 2**31 - 1)))
    try:
        for _ in range(steps):
            x = torch.as_tensor(obs, dtype=torch.float32).reshape(1, -1)  # (1, obs_dim)
            mine, theirs = int(student(x).argmax()), int(teacher(x).argmax())
            agree += mine == theirs
            states.append(x)
            action = theirs if rng.random() < beta else mine
            obs, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                obs, _ = env.reset(seed=int(rng.integers(0, 2**31 - 1)))
    finally:
        env.close()
    obs_t = torch.cat(states)  # (steps, obs_dim)
    return obs_t, teacher(obs_t), agree / steps


def distill_policies(student: PolicyMLP, teachers: Mapping[str, PolicyMLP], variants: Sequence[Variant],
                     config: DistillConfig, seed: int = 0) -> DistillResult:
    """Train ``student`` in place on the experts' action distributions over DAgger-gathered states."""
    if not variants:
        raise ConfigError("distillation needs at least one training variant")
    check_teachers(student, teachers, variants)
    for teacher in teachers.values():
        teacher.eval()
    result = DistillResult()
    all_obs: list[Tensor] = []
    all_logits: list[Tensor] = []
    for round_ in range(config.rounds):
        beta = config.beta * config.beta_decay**round_
        student.eval()
        agreement = {}
        for index, variant in enumerate(variants):
            rng = np.random.default_rng([seed, round_, index])
            obs, logits, agree = collect(student, teachers[variant.name], variant,
                                         config.steps_per_variant, beta, rng)
            all_obs.append(obs)
            all_logits.append(logits)
            agreement[variant.name] = agree
        result.rounds.append(agreement)
        plan = StatePlan(torch.cat(all_obs), torch.cat(all_logits), config.train.batch_size, seed + round_)
        train = config.train.model_copy(update={"seed": config.train.seed + seed + round_})
        Trainer(student, plan, train, [PolicyDistillLoss(config.temperature)], forward=policy_forward,
                description=f"distil round {round_}").fit(resume=False)
    student.eval()
    for index, variant in enumerate(variants):
        rng = np.random.default_rng([seed, config.rounds, index])
        _, _, agree = collect(student, teachers[variant.name], variant, config.steps_per_variant, 0.0, rng)
        result.final[variant.name] = agree
    result.states = sum(len(o) for o in all_obs)
    return result
