"""A small categorical policy (observation -> action logits) as a fanbu model of kind ``module``.

:class:`PolicyMLP` is a plain MLP; :func:`build_policy` (marked with
:func:`~fanbu.models.module.module_factory`) rebuilds it from its JSON config, so a saved policy is a
``model.safetensors`` + ``module.json`` directory that :class:`~fanbu.models.module.ModuleHandle` and
:func:`~fanbu.models.load_handle` load like any other model, with its provenance beside it. Nothing is
pickled. :func:`check_compatible` is the one place that says whether a policy fits an environment or
another policy (observation size, number of actions).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from fanbu.config import Strict
from fanbu.errors import ConfigError, ModelError
from fanbu.models.artefact import Provenance
from fanbu.models.module import ModuleHandle, module_factory

FACTORY = "fanbu.rl.policy:build_policy"
ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}


class PolicyConfig(Strict):
    """The shape of a policy network (the observation and action sizes come from the environment)."""

    hidden: list[int] = Field(default_factory=lambda: [64, 64], min_length=1,
                              description="Widths of the hidden layers.")
    activation: Literal["tanh", "relu"] = Field("tanh", description="Activation after each hidden layer.")


class PolicyMLP(nn.Module):
    """``obs (batch, obs_dim) -> logits (batch, n_actions)`` through ``Linear``/activation layers."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: Sequence[int] = (64, 64),
                 activation: str = "tanh") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r}: use one of {', '.join(ACTIVATIONS)}")
        if obs_dim < 1 or n_actions < 2 or any(h < 1 for h in hidden):
            raise ValueError(f"obs_dim {obs_dim}, n_actions {n_actions}, hidden {list(hidden)}: sizes must be "
                             "positive and a categorical policy needs at least 2 actions")
        self.obs_dim, self.n_actions = obs_dim, n_actions
        self.hidden, self.activation = [int(h) for h in hidden], activation
        layers: list[nn.Module] = []
        width = obs_dim
        for size in hidden:
            layers += [nn.Linear(width, size), ACTIVATIONS[activation]()]
            width = size
        layers.append(nn.Linear(width, n_actions))
        self.net = nn.Sequential(*layers)

    def forward(self, obs: Tensor) -> Tensor:
        return self.net(obs.float())  # (batch, n_actions)

    def linears(self) -> list[nn.Linear]:
        """The linear layers in order, the action layer last."""
        return [m for m in self.net if isinstance(m, nn.Linear)]

    @torch.no_grad()
    def act(self, obs: Any) -> int:
        """The greedy action for one observation."""
        x = torch.as_tensor(obs, dtype=torch.float32).reshape(1, -1)  # (1, obs_dim)
        return int(self(x).argmax(dim=-1).item())


@module_factory
def build_policy(obs_dim: int, n_actions: int, hidden: list[int], activation: str = "tanh",
                 seed: int = 0) -> PolicyMLP:
    """Factory of :class:`PolicyMLP` (``fanbu.rl.policy:build_policy``), initialised from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return PolicyMLP(obs_dim, n_actions, hidden, activation)


def policy_config(policy: PolicyMLP) -> dict[str, Any]:
    """The JSON config :func:`build_policy` rebuilds ``policy``'s architecture from (weights are loaded
    over the initialisation, so no seed is kept)."""
    return {"obs_dim": policy.obs_dim, "n_actions": policy.n_actions, "hidden": list(policy.hidden),
            "activation": policy.activation}


def new_policy(obs_dim: int, n_actions: int, config: PolicyConfig | dict[str, Any] | None = None,
               seed: int = 0) -> PolicyMLP:
    """A freshly initialised policy of ``config``'s shape (a :class:`PolicyConfig` or its mapping)."""
    config = config if isinstance(config, PolicyConfig) else PolicyConfig.model_validate(config or {})
    return build_policy(obs_dim, n_actions, list(config.hidden), config.activation, seed)


def policy_handle(policy: PolicyMLP, provenance: Provenance | None = None) -> ModuleHandle:
    """``policy`` as a :class:`ModuleHandle` (what the registry saves and loads)."""
    return ModuleHandle(policy, policy_config(policy), FACTORY, provenance=provenance)


def save_policy(policy: PolicyMLP, path: str | Path, provenance: Provenance, overwrite: bool = False) -> Path:
    """Save ``policy`` with ``provenance`` through the module spine (safetensors, ``fanbu.json``)."""
    return policy_handle(policy).save(path, provenance, overwrite=overwrite)


def as_policy(handle: Any, what: str = "model") -> PolicyMLP:
    """The :class:`PolicyMLP` a loaded handle holds, or a :class:`ModelError` saying what it holds."""
    module = getattr(handle, "module", None)
    if not isinstance(handle, ModuleHandle) or not isinstance(module, PolicyMLP):
        held = type(module).__name__ if module is not None else type(handle).__name__
        raise ModelError(f"{what} holds a {held}, not a policy; give a model saved by fanbu.rl "
                         f"(factory {FACTORY})")
    return module


def load_policy(path: str | Path) -> tuple[PolicyMLP, Provenance]:
    """Load a saved policy and its provenance."""
    handle = ModuleHandle.load(path)
    return as_policy(handle, str(path)), handle.provenance or Provenance()


def check_compatible(policy: PolicyMLP, obs_dim: int, n_actions: int, what: str, against: str) -> None:
    """Refuse a policy whose observation size or number of actions differs from ``against``'s.

    Raises:
        ConfigError: naming both sizes, ``what`` (the policy's role) and ``against`` (the other side).
    """
    if policy.n_actions != n_actions:
        raise ConfigError(
            f"{what} has {policy.n_actions} actions but {against} has {n_actions}: the action spaces differ; "
            "use policies and environments of the same family (same env_id)"
        )
    if policy.obs_dim != obs_dim:
        raise ConfigError(
            f"{what} reads observations of size {policy.obs_dim} but {against} gives {obs_dim}; use policies "
            "and environments of the same family (same env_id)"
        )


def env_sizes(env: Any) -> tuple[int, int]:
    """``(obs_dim, n_actions)`` of a Gymnasium env with a flat Box observation and Discrete actions."""
    space = env.action_space
    if not hasattr(space, "n"):
        raise ConfigError(f"the environment's action space is {space}; fanbu's policies need a Discrete one")
    shape = env.observation_space.shape
    if shape is None or len(shape) != 1:
        raise ConfigError(f"the environment's observations have shape {shape}; fanbu's policies read flat "
                          "vectors (a 1-D Box)")
    return int(shape[0]), int(space.n)
