"""PPO through Stable-Baselines3, with fanbu's policy as the artefact.

SB3 trains (its PPO is well kept and tested); fanbu keeps the weights. :func:`actor_of` copies the
actor of an SB3 ``ActorCriticPolicy`` (``mlp_extractor.policy_net`` then ``action_net``, the same
``Linear``/activation stack) into a :class:`~fanbu.rl.policy.PolicyMLP`, and :func:`load_actor` copies a
policy back in, so a general or meta-learned policy can start PPO fine-tuning. SB3's own zip
(``.save``/``.load``, cloudpickle) is never used: artefacts go through the module spine as safetensors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from fanbu.config import Strict
from fanbu.errors import ConfigError
from fanbu.rl.deps import require
from fanbu.rl.policy import ACTIVATIONS, PolicyConfig, PolicyMLP, check_compatible, new_policy
from fanbu.rl.variants import Variant

State = dict[str, Tensor]


class PPOConfig(Strict):
    """Stable-Baselines3 PPO settings (https://stable-baselines3.readthedocs.io/en/master/modules/ppo.html)."""

    total_steps: int = Field(50_000, ge=1, description="Environment steps of one PPO run (per expert).")
    n_envs: int = Field(4, ge=1, description="Environments stepped together (a multiple of the variants "
                        "trained on together, rounded up).")
    n_steps: int = Field(256, ge=2, description="Steps per environment per rollout.")
    batch_size: int = Field(64, ge=2, description="Minibatch size of the PPO update.")
    n_epochs: int = Field(10, ge=1, description="Passes over each rollout.")
    learning_rate: float = Field(3e-4, gt=0, description="Adam's learning rate.")
    gamma: float = Field(0.99, gt=0, le=1, description="Discount factor.")
    gae_lambda: float = Field(0.95, ge=0, le=1, description="GAE's lambda.")
    clip_range: float = Field(0.2, gt=0, description="PPO's clipping of the probability ratio.")
    ent_coef: float = Field(0.0, ge=0, description="Entropy bonus weight.")
    vf_coef: float = Field(0.5, ge=0, description="Value loss weight.")
    max_grad_norm: float = Field(0.5, gt=0, description="Gradient norm clip.")
    policy: PolicyConfig = Field(default_factory=PolicyConfig, description="Actor and critic hidden layers.")

    @model_validator(mode="after")
    def _check(self) -> PPOConfig:
        if self.batch_size > self.n_steps * self.n_envs:
            raise ValueError(f"batch_size {self.batch_size} is larger than a rollout (n_steps {self.n_steps} x "
                             f"n_envs {self.n_envs}); lower batch_size or raise n_steps")
        return self


def make_ppo(variants: Sequence[Variant], config: PPOConfig, seed: int, policy: PolicyConfig | None = None) -> Any:
    """An SB3 ``PPO`` stepping environments of ``variants`` in turn (env ``i`` is variant ``i mod n``)."""
    if not variants:
        raise ConfigError("PPO needs at least one variant to train on")
    if len({v.env_id for v in variants}) != 1:
        raise ConfigError(f"variants {[v.name for v in variants]} come from different environments; train one "
                          "family at a time")
    sb3 = require("stable_baselines3")
    vec_env = require("stable_baselines3.common.vec_env")
    count = len(variants)
    n_envs = -(-max(config.n_envs, count) // count) * count
    envs = vec_env.DummyVecEnv([variants[i % count].make for i in range(n_envs)])
    shape = policy or config.policy
    model = sb3.PPO(
        "MlpPolicy",
        envs,
        learning_rate=config.learning_rate,
        n_steps=config.n_steps,
        batch_size=config.batch_size,
        n_epochs=config.n_epochs,
        gamma=config.gamma,
        gae_lambda=config.gae_lambda,
        clip_range=config.clip_range,
        ent_coef=config.ent_coef,
        vf_coef=config.vf_coef,
        max_grad_norm=config.max_grad_norm,
        policy_kwargs={"net_arch": {"pi": list(shape.hidden), "vf": list(shape.hidden)},
                       "activation_fn": ACTIVATIONS[shape.activation]},
        seed=seed,
        device="cpu",
        verbose=0,
    )
    # a logger of our own, writing nowhere: SB3's default makes a fresh SB3-<time> folder in the temp
    # directory on every learn() and never removes it
    model.set_logger(require("stable_baselines3.common.logger").Logger(folder=None, output_formats=[]))
    return model


def _actor_linears(model: Any) -> list[nn.Linear]:
    extractor = model.policy.mlp_extractor.policy_net
    return [m for m in extractor if isinstance(m, nn.Linear)] + [model.policy.action_net]


def _sizes(model: Any) -> tuple[int, int]:
    return int(model.observation_space.shape[0]), int(model.action_space.n)


def actor_of(model: Any) -> PolicyMLP:
    """The actor of an SB3 PPO model as a new :class:`PolicyMLP` (weights copied, same greedy actions)."""
    linears = _actor_linears(model)
    activation = next(name for name, cls in ACTIVATIONS.items()
                      if isinstance(model.policy.mlp_extractor.policy_net[1], cls))
    obs_dim, n_actions = _sizes(model)
    policy = new_policy(obs_dim, n_actions, PolicyConfig(hidden=[m.out_features for m in linears[:-1]],
                                                         activation=activation))
    with torch.no_grad():
        for mine, theirs in zip(policy.linears(), linears, strict=True):
            mine.weight.copy_(theirs.weight)
            mine.bias.copy_(theirs.bias)
    return policy


def load_actor(model: Any, policy: PolicyMLP) -> None:
    """Copy ``policy``'s weights into the actor of an SB3 PPO model of the same shape."""
    check_compatible(policy, *_sizes(model), what="the policy", against="the PPO model")
    linears = _actor_linears(model)
    shapes = [tuple(m.weight.shape) for m in linears]
    mine = [tuple(m.weight.shape) for m in policy.linears()]
    if shapes != mine:
        raise ConfigError(f"the policy's layers {mine} do not match the PPO actor's {shapes}; build the PPO "
                          "model with the policy's hidden sizes (policy=PolicyConfig(hidden=...))")
    with torch.no_grad():
        for theirs, own in zip(linears, policy.linears(), strict=True):
            theirs.weight.copy_(own.weight)
            theirs.bias.copy_(own.bias)


def state_of(model: Any) -> State:
    """A detached copy of the whole actor-critic's weights (what Reptile averages)."""
    return {k: v.detach().clone() for k, v in model.policy.state_dict().items()}


def load_state(model: Any, state: Mapping[str, Tensor]) -> None:
    """Load an actor-critic state made by :func:`state_of` for a model of the same shape."""
    try:
        model.policy.load_state_dict(dict(state), strict=True)
    except RuntimeError as exc:
        raise ConfigError(f"the actor-critic weights do not fit this PPO model ({exc}); build it with the same "
                          "ppo.policy hidden sizes") from None


@dataclass
class PPOResult:
    """A finished PPO run: its actor, its whole actor-critic state and the environment steps it took."""

    actor: PolicyMLP
    state: State
    steps: int
    curve: list[tuple[int, float]] = field(default_factory=list)
    reached_at: int | None = None


Check = Callable[[PolicyMLP], float]


def _callback(check: Check, target: float, every: int) -> Any:
    base = require("stable_baselines3.common.callbacks").BaseCallback

    class ReachTarget(base):  # type: ignore[misc, valid-type]
        """After each PPO update (once ``every`` steps have passed since the last check), evaluate the
        updated actor; stop once it reaches ``target``. Checking after the update, not in the middle of a
        rollout, counts exactly the steps the evaluated policy cost."""

        def __init__(self) -> None:
            super().__init__()
            self.next_check = every
            self.curve: list[tuple[int, float]] = []
            self.reached_at: int | None = None

        def _after_update(self) -> None:
            if self.reached_at is not None or self.num_timesteps < self.next_check:
                return
            self.next_check = self.num_timesteps + every
            value = check(actor_of(self.model))
            self.curve.append((int(self.num_timesteps), value))
            if value >= target:
                self.reached_at = int(self.num_timesteps)

        def _on_rollout_start(self) -> None:  # the policy was just updated on the previous rollout
            self._after_update()

        def _on_training_end(self) -> None:  # the last update
            self._after_update()

        def _on_step(self) -> bool:
            return self.reached_at is None

    return ReachTarget()


def train_ppo(
    variants: Sequence[Variant],
    config: PPOConfig,
    seed: int,
    *,
    total_steps: int | None = None,
    init: Mapping[str, Tensor] | PolicyMLP | None = None,
    stop: tuple[Check, float, int] | None = None,
    freeze_actor: bool = False,
) -> PPOResult:
    """Train PPO on ``variants`` for ``total_steps`` (default ``config.total_steps``) environment steps.

    Args:
        init: Start from an actor-critic state (:func:`state_of`, e.g. a Reptile meta-init) or from a
            policy's actor (the critic then starts fresh, of the policy's hidden sizes).
        stop: ``(check, target, every)``: ``check(actor)`` is computed at step 0 and after each PPO update
            once ``every`` steps have passed since the last check (kept in the result's ``curve``); training
            stops at the first value ``>= target``, whose step count is ``reached_at``.
        freeze_actor: Train the critic alone (the actor's weights get no gradient and stay as they are):
            the value function of a fixed policy, e.g. before fine-tuning a policy that came without one.
    """
    policy_shape = None
    if isinstance(init, PolicyMLP):
        policy_shape = PolicyConfig(hidden=list(init.hidden), activation=init.activation)  # type: ignore[arg-type]
    model = make_ppo(variants, config, seed, policy_shape)
    if isinstance(init, PolicyMLP):
        load_actor(model, init)
    elif init is not None:
        load_state(model, init)
    if freeze_actor:
        for layer in _actor_linears(model):
            layer.requires_grad_(False)
    curve: list[tuple[int, float]] = []
    callback = None
    if stop is not None:
        check, target, every = stop
        value = check(actor_of(model))
        curve.append((0, value))
        if value >= target:
            return PPOResult(actor_of(model), state_of(model), 0, curve, reached_at=0)
        callback = _callback(check, target, every)
    model.learn(total_timesteps=total_steps or config.total_steps, callback=callback)
    reached = None
    if callback is not None:
        curve += callback.curve
        reached = callback.reached_at
    model.get_env().close()
    return PPOResult(actor_of(model), state_of(model), int(model.num_timesteps), curve, reached)


def actor_from_state(state: Mapping[str, Tensor], variant: Variant, config: PPOConfig) -> PolicyMLP:
    """The actor of an actor-critic state (:func:`state_of`) of ``config.policy``'s shape."""
    model = make_ppo([variant], config, 0)
    load_state(model, state)
    model.get_env().close()
    return actor_of(model)


def actor_critic_state(actor: PolicyMLP, variant: Variant, config: PPOConfig, seed: int) -> tuple[State, PPOConfig]:
    """An actor-critic whose actor is ``actor`` (a fresh critic of the same hidden sizes), and the PPO
    settings of that shape (``config`` with ``policy`` set to the actor's)."""
    shaped = config.model_copy(update={"policy": PolicyConfig(hidden=list(actor.hidden),
                                                              activation=actor.activation)})  # type: ignore[arg-type]
    model = make_ppo([variant], shaped, seed)
    load_actor(model, actor)
    state = state_of(model)
    model.get_env().close()
    return state, shaped


def fresh_state(variant: Variant, config: PPOConfig, seed: int) -> State:
    """A newly initialised actor-critic of ``config.policy``'s shape (SB3's initialisation, from ``seed``)."""
    model = make_ppo([variant], config, seed)
    state = state_of(model)
    model.get_env().close()
    return state
