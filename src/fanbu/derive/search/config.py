"""Settings of the budgeted architecture search: the space of shapes, the budget, the trial count."""

from __future__ import annotations

from pydantic import Field, model_validator

from fanbu.config import Strict
from fanbu.errors import FanbuError


class SearchError(FanbuError):
    """The search cannot start, or no candidate fit the budget (the message says what to relax)."""


def _check_choices(name: str, values: list, low: float | None = None, high: float | None = None) -> None:
    """Reject an empty choice list, repeated choices and values outside ``[low, high]``."""
    if not values:
        raise ValueError(f"space.{name} needs at least one choice; list the values to try")
    if len(set(values)) != len(values):
        raise ValueError(f"space.{name} repeats a choice: {values}; list each value once")
    for value in values:
        if value is None:
            continue
        if low is not None and value < low or high is not None and value > high:
            bounds = f">= {low}" if high is None else f"in ({low}, {high}]"
            raise ValueError(f"space.{name}: choice {value} out of range; each must be {bounds}")


class SearchSpace(Strict):
    """The shapes a candidate student may take; each field lists the choices the search picks from."""

    layers: list[int] = Field(default=[1, 2, 3], description="Numbers of transformer layers to keep.")
    heads: list[int] = Field(default=[4, 6, 8, 12], description="Attention heads kept per layer.")
    head_dim: list[int] | None = Field(
        default=None, description="Width of each attention head; None keeps the teacher's."
    )
    ffn: list[float] = Field(
        default=[0.25, 0.5, 1.0], description="Fraction of FFN neurons kept per layer, each in (0, 1]."
    )
    vocab: list[int | None] = Field(
        default=[4000, 8000, 16000],
        description="Vocabulary sizes to trim to; None keeps the whole vocabulary.",
    )
    tie_hidden: bool | None = Field(
        default=None,
        description=(
            "Set each candidate's hidden width to heads x head_dim, as BERT requires (it derives its "
            "head size as hidden / heads). None: whenever a head width is known (space.head_dim, or "
            "head_dim in the base prune config), so give head_dim (e.g. [32] for MiniLM) when searching "
            "an encoder's heads; true: require it; false: never (causal LMs keep hidden as it is)."
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> SearchSpace:
        _check_choices("layers", self.layers, low=1)
        _check_choices("heads", self.heads, low=1)
        if self.head_dim is not None:
            _check_choices("head_dim", self.head_dim, low=1)
        _check_choices("ffn", self.ffn, low=0.0, high=1.0)
        if 0.0 in self.ffn:
            raise ValueError("space.ffn: 0.0 keeps no FFN neuron; each fraction must be in (0, 1]")
        _check_choices("vocab", self.vocab, low=1)
        return self

    def ties_hidden(self, base_head_dim: int | None) -> bool:
        """Whether candidates get ``hidden = heads x head_dim`` given the base config's head width."""
        if self.tie_hidden is None:
            return self.head_dim is not None or base_head_dim is not None
        return self.tie_hidden

    def choices(self) -> dict[str, list]:
        """The searched dimensions and their choices, as a ``PruneConfig`` field -> values mapping."""
        found: dict[str, list] = {"layers": self.layers, "heads": self.heads}
        if self.head_dim is not None:
            found["head_dim"] = self.head_dim
        found["ffn"] = self.ffn
        found["vocab"] = self.vocab
        return found


class Budget(Strict):
    """Limits a candidate must meet; over-budget candidates are dropped before any training."""

    max_params: int | None = Field(default=None, gt=0, description="Most parameters a student may have.")
    max_param_ratio: float | None = Field(
        default=None, gt=0.0, description="Most student parameters as a fraction of the teacher's."
    )
    max_latency_ms: float | None = Field(
        default=None, gt=0.0, description="Slowest batch-1 p50 latency on this CPU, in milliseconds."
    )

    @model_validator(mode="after")
    def _check(self) -> Budget:
        if self.max_params is None and self.max_param_ratio is None and self.max_latency_ms is None:
            raise ValueError(
                "budget: set at least one of max_params, max_param_ratio or max_latency_ms "
                "(e.g. max_param_ratio: 0.15)"
            )
        return self


class SearchConfig(Strict):
    """A budgeted search: how many trials, the seed, the space and the budget."""

    trials: int = Field(default=12, ge=1, description="Candidates to try (Optuna trials).")
    seed: int = Field(default=0, description="Seed of the TPE sampler; a seed gives the same trials.")
    timeout_s: float | None = Field(
        default=None, gt=0.0, description="Stop starting new trials after this many seconds."
    )
    space: SearchSpace = Field(default_factory=SearchSpace, description="Shapes to choose from.")
    budget: Budget = Field(description="Limits every candidate must meet.")
