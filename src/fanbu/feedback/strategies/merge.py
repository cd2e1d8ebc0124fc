"""Weight merging of experts that share the large model's architecture: average, task arithmetic, TIES, DARE.

Task vectors are ``expert - champion`` per encoder tensor; PEFT's ``peft.utils.merge_utils`` combines
the stacked vectors, and the candidate is ``champion + scaling * merged``. fanbu adds what PEFT lacks:
experts worse than the champion on validation are left out (:mod:`fanbu.feedback.shared.weights`), each
domain's head comes from its expert (heads are not merged), held-out heads stay the champion's.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Literal

import torch
from peft.utils import merge_utils
from pydantic import Field, model_validator
from torch import Tensor

from fanbu.config import Strict
from fanbu.errors import ConfigError
from fanbu.feedback.shared.context import FeedbackContext, StrategyOutput, register_strategy
from fanbu.feedback.shared.weights import (
    SelectionConfig,
    plain_state,
    same_architecture_swarm,
    take_heads,
    validation_metrics,
)

Method = Literal["average", "task_arithmetic", "ties", "dare_linear", "dare_ties"]
SPARSE: tuple[str, ...] = ("ties", "dare_linear", "dare_ties")
SUMMING: tuple[str, ...] = ("average", "task_arithmetic", "dare_linear")
DEFAULT_DENSITY = 0.5


class MergeConfig(Strict):
    """How the selected experts' task vectors are combined."""

    method: Method = Field(
        "ties",
        description="average: uniform (or weighted) mean of the experts' weights (the baseline); "
        "task_arithmetic: champion + scaling * sum of weighted task vectors; ties: trim to density, "
        "elect signs, average the agreeing entries; dare_linear / dare_ties: random drop to density "
        "with rescaling, then a sum / TIES's sign election.",
    )
    weights: dict[str, float] | None = Field(
        None, description="Domain -> weight of its task vector; default 1.0 for every expert."
    )
    normalize: bool = Field(
        True,
        description="Divide the weights by their sum for the summing methods (average, task_arithmetic, "
        "dare_linear); TIES and DARE-TIES already average the agreeing entries, so they use the weights as given.",
    )
    scaling: float = Field(1.0, gt=0, description="lambda: the merged task vector is scaled by this.")
    density: float | None = Field(
        None, gt=0, le=1, description="Share of each task vector kept by ties / dare_*; default 0.5."
    )
    majority_sign: Literal["total", "frequency"] = Field(
        "total", description="TIES sign election: by summed magnitude (total) or by count (frequency)."
    )
    selection: SelectionConfig = Field(
        default_factory=SelectionConfig, description="Which experts take part."
    )

    @model_validator(mode="after")
    def _check(self) -> MergeConfig:
        if self.density is not None and self.method not in SPARSE:
            raise ValueError(f"density applies to {', '.join(SPARSE)}, not {self.method!r}; remove it")
        if self.method == "average" and self.scaling != 1.0:
            raise ValueError("average takes no scaling (it is a mean); use method: task_arithmetic to scale")
        if self.method == "average" and not self.normalize:
            raise ValueError(
                "average always normalises its weights; use task_arithmetic with normalize: false"
            )
        if self.weights is not None and any(w < 0 for w in self.weights.values()):
            raise ValueError(f"weights must be non-negative, got {self.weights}")
        return self

    @property
    def kept(self) -> float:
        """The density actually used by the sparse methods."""
        return DEFAULT_DENSITY if self.density is None else self.density


def merge_states(
    champion: Mapping[str, Tensor],
    experts: Sequence[Mapping[str, Tensor]],
    weights: Sequence[float],
    config: MergeConfig,
    seed: int = 0,
) -> dict[str, Tensor]:
    """``champion + scaling * merge(expert - champion)`` for every tensor, with PEFT's merge functions."""
    if not experts:
        raise ConfigError("merge: no expert weights to merge; select at least one expert")
    w = torch.tensor(list(weights), dtype=torch.float32)  # (experts,)
    if config.method in SUMMING and config.normalize:
        if float(w.sum()) <= 0:
            raise ConfigError(f"merge: the weights {list(weights)} sum to zero; give a positive weight")
        w = w / w.sum()
    merged: dict[str, Tensor] = {}
    with seeded_merge(seed):
        for key, base in champion.items():
            vectors = [(expert[key].float() - base.float()) for expert in experts]  # each like base
            delta = combine_vectors(vectors, w, config)  # like base
            merged[key] = (base.float() + config.scaling * delta).to(base.dtype)
    return merged


@contextmanager
def seeded_merge(seed: int) -> Iterator[None]:
    """Seed DARE's random drop with ``seed`` (the global generators are restored after) and silence
    PEFT's warning that a density of 1 prunes nothing."""
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(seed)
        warnings.filterwarnings("ignore", message="The density .* no pruning will be performed")
        yield


def combine_vectors(
    vectors: list[Tensor], weights: Tensor, config: MergeConfig, density: float | None = None
) -> Tensor:
    """PEFT's merge of same-shaped task vectors by ``config.method``; ``density`` overrides
    ``config.kept`` (1.0: the vectors are sparsified already)."""
    method, kept = config.method, config.kept if density is None else density
    if method in ("average", "task_arithmetic"):
        return merge_utils.task_arithmetic(vectors, weights)
    if method == "ties":
        return merge_utils.ties(vectors, weights, kept, config.majority_sign)
    if method == "dare_linear":
        return merge_utils.dare_linear(vectors, weights, kept)
    return merge_utils.dare_ties(vectors, weights, kept, config.majority_sign)


@register_strategy(
    "merge",
    summary="Merge same-architecture experts into the large model: average, task arithmetic, TIES, DARE "
    "(PEFT), with selection",
    reference="https://arxiv.org/abs/2306.01708 (TIES); https://arxiv.org/abs/2311.03099 (DARE); "
    "https://arxiv.org/abs/2212.04089 (task arithmetic)",
    config=MergeConfig,
    capabilities={"same_architecture"},
)
def merge_strategy(ctx: FeedbackContext, config: MergeConfig) -> StrategyOutput:
    """Merge the selected experts' encoders into a copy of the champion; heads come from the experts."""
    if config.weights is not None:
        unknown = sorted(set(config.weights) - set(ctx.domains))
        if unknown:
            raise ConfigError(f"merge.weights: no expert for {unknown}; experts: {ctx.domains}")
    selected, details = same_architecture_swarm(ctx, config.selection, "merge")
    weights = [1.0 if config.weights is None else config.weights.get(d, 1.0) for d in selected]
    merged = merge_states(
        plain_state(ctx.large), [plain_state(ctx.experts[d]) for d in selected], weights, config, ctx.seed
    )
    candidate = copy.deepcopy(ctx.large)
    missing, unexpected = candidate.model.encoder.load_state_dict(merged, strict=False)
    if unexpected or any(k in merged for k in missing):
        raise ConfigError(f"merge: merged weights do not fit the large model (unexpected {unexpected[:3]})")
    take_heads(candidate, ctx.experts, selected)
    details.update({"method": config.method, "weights": dict(zip(selected, weights, strict=True))})
    if config.method in SPARSE:
        details["density"] = config.kept
    return StrategyOutput(candidate, "merge", validation_metrics(ctx, candidate), details)
