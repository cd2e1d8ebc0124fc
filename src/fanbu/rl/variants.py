"""Environments as domains: a family of Gymnasium environment variants, each variant an "industry".

A variant is a Gymnasium environment id plus physics parameters set on ``env.unwrapped`` after
``gymnasium.make`` (a longer pole, a heavier link, lower gravity). Each supported environment declares
the parameters it takes (:data:`ENVS`), with the attribute each one sets and the derived attributes
that must follow it (CartPole caches ``total_mass`` and ``polemass_length`` in its constructor). A
family has **training** variants, whose experience is private to their experts, and **held-out**
variants, which only adaptation sees. :data:`FAMILIES` holds the built-in ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, model_validator

from fanbu.config import Strict
from fanbu.errors import ConfigError
from fanbu.io import sha256_json
from fanbu.rl.deps import require


@dataclass(frozen=True)
class Parameter:
    """A physics setting of an environment: the attribute of ``env.unwrapped`` it sets, and why."""

    attribute: str
    description: str


def _cartpole_derived(env: Any) -> None:
    # CartPoleEnv computes these once in __init__ and steps with them
    env.total_mass = env.masspole + env.masscart
    env.polemass_length = env.masspole * env.length


@dataclass(frozen=True)
class EnvKind:
    """An environment fanbu can make variants of: its parameters and how derived attributes follow."""

    env_id: str
    parameters: Mapping[str, Parameter]
    derived: Callable[[Any], None] | None = None
    reference: str = ""


ENVS: dict[str, EnvKind] = {
    "CartPole-v1": EnvKind(
        "CartPole-v1",
        {
            "gravity": Parameter("gravity", "gravitational acceleration (m/s^2; 9.8)"),
            "cart_mass": Parameter("masscart", "mass of the cart (kg; 1.0)"),
            "pole_mass": Parameter("masspole", "mass of the pole (kg; 0.1)"),
            "pole_half_length": Parameter("length", "half the pole's length (m; 0.5)"),
            "force_mag": Parameter("force_mag", "force of a push (N; 10.0)"),
        },
        _cartpole_derived,
        "https://gymnasium.farama.org/environments/classic_control/cart_pole/",
    ),
    "Acrobot-v1": EnvKind(
        "Acrobot-v1",
        {
            "link_mass_1": Parameter("LINK_MASS_1", "mass of the upper link (kg; 1.0)"),
            "link_mass_2": Parameter("LINK_MASS_2", "mass of the lower link (kg; 1.0)"),
            "link_length_1": Parameter("LINK_LENGTH_1", "length of the upper link (m; 1.0)"),
            "link_com_pos_1": Parameter("LINK_COM_POS_1", "centre of mass of the upper link (m; 0.5)"),
            "link_com_pos_2": Parameter("LINK_COM_POS_2", "centre of mass of the lower link (m; 0.5)"),
            "link_moi": Parameter("LINK_MOI", "moment of inertia of both links (1.0)"),
        },
        None,
        "https://gymnasium.farama.org/environments/classic_control/acrobot/",
    ),
}


def env_problem(env_id: str) -> str | None:
    """Why ``env_id`` cannot be a family's environment (``None``: it can)."""
    if env_id in ENVS:
        return None
    return (f"env_id {env_id!r} is not an environment fanbu makes variants of; use one of "
            f"{', '.join(sorted(ENVS))}")


def parameter_problem(env_id: str, variant: str, params: Mapping[str, float]) -> str | None:
    """Why ``params`` cannot configure a variant of ``env_id`` (``None``: they can)."""
    problem = env_problem(env_id)
    if problem is not None:
        return problem
    known = ENVS[env_id].parameters
    for name, value in params.items():
        if name not in known:
            return (f"variant {variant!r}: {env_id} has no parameter {name!r}; valid parameters: "
                    f"{', '.join(sorted(known))}")
        if not value > 0:
            return f"variant {variant!r}: parameter {name!r} must be a positive number, got {value}"
    return None


class VariantSpec(Strict):
    """One industry: a name and the physics parameters that make its environment differ."""

    name: str = Field(min_length=1, description="The variant's name (its domain name in the registry).")
    params: dict[str, float] = Field(
        default_factory=dict,
        description="Parameter -> value (see fanbu.rl.variants.ENVS for each environment's parameters); "
        "an empty mapping is the environment as Gymnasium ships it.",
    )


class FamilySpec(Strict):
    """A Gymnasium environment and its variants: training ones for experts, held-out ones for adaptation."""

    name: str = Field(min_length=1, description="The family's name.")
    env_id: str = Field(description="The Gymnasium environment id (CartPole-v1, Acrobot-v1).")
    train: list[VariantSpec] = Field(min_length=1, description="Variants with an expert each.")
    held_out: list[VariantSpec] = Field(
        default_factory=list, description="Variants no expert and no general policy trains on."
    )

    @model_validator(mode="after")
    def _check(self) -> FamilySpec:
        problem = env_problem(self.env_id)
        if problem is not None:
            raise ValueError(problem)
        names = [v.name for v in (*self.train, *self.held_out)]
        doubled = sorted({n for n in names if names.count(n) > 1})
        if doubled:
            raise ValueError(f"variant names {doubled} appear twice; give every variant its own name")
        for spec in (*self.train, *self.held_out):
            problem = parameter_problem(self.env_id, spec.name, spec.params)
            if problem is not None:
                raise ValueError(problem)
        return self

    def variants(self, which: str = "train") -> list[Variant]:
        """The ``train``, ``held_out`` or ``all`` variants, ready to make environments."""
        specs = {"train": self.train, "held_out": self.held_out, "all": [*self.train, *self.held_out]}
        if which not in specs:
            raise ConfigError(f"which={which!r}: use one of {', '.join(specs)}")
        return [Variant(self.env_id, s.name, dict(s.params)) for s in specs[which]]


@dataclass(frozen=True)
class Variant:
    """A made-to-order environment: ``make()`` returns a fresh Gymnasium env with the parameters set."""

    env_id: str
    name: str
    params: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problem = parameter_problem(self.env_id, self.name, self.params)
        if problem is not None:
            raise ConfigError(problem)

    @property
    def fingerprint(self) -> str:
        """sha256 of the environment id and parameters: the variant's data fingerprint in provenance."""
        return sha256_json({"env_id": self.env_id, "params": dict(sorted(self.params.items()))})

    def make(self) -> Any:
        """A new ``gymnasium.Env`` of this variant (wrappers as ``gymnasium.make`` gives them)."""
        gym = require("gymnasium")
        try:
            env = gym.make(self.env_id)
        except gym.error.Error as exc:
            raise ConfigError(f"env_id {self.env_id!r}: Gymnasium cannot make it ({exc}); check the id "
                              f"and the installed gymnasium {gym.__version__}") from None
        apply_parameters(env.unwrapped, self.env_id, self.params)
        return env


def apply_parameters(unwrapped: Any, env_id: str, params: Mapping[str, float]) -> None:
    """Set each parameter's attribute on ``unwrapped``, then the attributes derived from them.

    Raises:
        ConfigError: an unknown parameter, or an attribute this Gymnasium version's env lacks.
    """
    problem = parameter_problem(env_id, "(direct)", params)
    if problem is not None:
        raise ConfigError(problem)
    kind = ENVS[env_id]
    for name, value in params.items():
        attribute = kind.parameters[name].attribute
        if not isinstance(getattr(unwrapped, attribute, None), int | float):
            raise ConfigError(
                f"parameter {name!r}: {type(unwrapped).__name__} has no numeric attribute {attribute!r} in "
                "this Gymnasium version; pin the gymnasium the rl extra names, or drop the parameter"
            )
        setattr(unwrapped, attribute, float(value))
    if kind.derived is not None:
        kind.derived(unwrapped)


def _family(name: str, env_id: str, train: dict[str, dict[str, float]],
            held_out: dict[str, dict[str, float]]) -> FamilySpec:
    return FamilySpec(
        name=name,
        env_id=env_id,
        train=[VariantSpec(name=k, params=v) for k, v in train.items()],
        held_out=[VariantSpec(name=k, params=v) for k, v in held_out.items()],
    )


#: The built-in families: four training and two held-out variants each.
FAMILIES: dict[str, FamilySpec] = {
    "cartpole": _family(
        "cartpole",
        "CartPole-v1",
        train={
            "cartpole-short-pole": {"pole_half_length": 0.3},
            "cartpole-long-pole": {"pole_half_length": 0.9},
            "cartpole-heavy": {"pole_mass": 0.3, "cart_mass": 1.5},
            "cartpole-low-gravity": {"gravity": 5.0},
        },
        held_out={
            "cartpole-high-gravity-long": {"gravity": 12.0, "pole_half_length": 0.7},
            "cartpole-light-cart": {"cart_mass": 0.5, "pole_mass": 0.2},
        },
    ),
    "acrobot": _family(
        "acrobot",
        "Acrobot-v1",
        train={
            "acrobot-light-upper": {"link_mass_1": 0.7},
            "acrobot-heavy-lower": {"link_mass_2": 1.4},
            "acrobot-heavy-upper": {"link_mass_1": 1.3, "link_mass_2": 0.8},
            "acrobot-long-upper": {"link_length_1": 1.2, "link_com_pos_1": 0.6},
        },
        held_out={
            "acrobot-heavy-both": {"link_mass_1": 1.25, "link_mass_2": 1.25},
            "acrobot-light-lower": {"link_mass_2": 0.7},
        },
    ),
}


def family(name: str) -> FamilySpec:
    """A built-in family by name."""
    if name not in FAMILIES:
        raise ConfigError(f"family {name!r} is not built in; use one of {', '.join(FAMILIES)}, or describe "
                          "one in the recipe (name, env_id, train, held_out)")
    return FAMILIES[name]
