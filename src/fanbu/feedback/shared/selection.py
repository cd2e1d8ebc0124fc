"""Expert selection: an expert that does worse than the champion on its own domain is left out.

This is what keeps a broken or poisoned expert (say, one trained on shuffled labels) out of the
swarm: its accuracy on the domain's validation slice falls below the champion's, and none of its
outputs reach the candidate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fanbu.feedback.shared.context import FeedbackContext


@dataclass(frozen=True)
class Selection:
    """Which experts take part, which were left out and why, and the accuracies compared.

    Attributes:
        kept: Domains whose expert teaches the candidate.
        excluded: Domain -> the reason its expert was left out.
        scores: Domain -> ``{"expert": acc, "champion": acc}`` on the domain's validation slice.
        unchecked: Domains kept without a check (no validation slice, or selection switched off).
    """

    kept: list[str]
    excluded: dict[str, str] = field(default_factory=dict)
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    unchecked: list[str] = field(default_factory=list)

    def as_details(self) -> dict[str, Any]:
        """A JSON-ready summary for :attr:`StrategyOutput.details`."""
        return {
            "kept": list(self.kept),
            "excluded": dict(self.excluded),
            "scores": {d: dict(s) for d, s in self.scores.items()},
            "unchecked": list(self.unchecked),
        }


def select_experts(ctx: FeedbackContext, tolerance: float | None) -> Selection:
    """Keep each expert unless its validation accuracy is below the champion's by more than ``tolerance``.

    Args:
        ctx: The feedback context; ``ctx.validation[domain]`` holds the slices compared.
        tolerance: Largest accepted accuracy deficit of an expert (0.02 = two points); ``None`` keeps
            every expert unchecked.
    """
    if tolerance is None:
        return Selection(kept=list(ctx.domains), unchecked=list(ctx.domains))
    kept, excluded, scores, unchecked = [], {}, {}, []
    for domain in ctx.domains:
        if domain not in ctx.validation or not ctx.validation[domain][0]:
            kept.append(domain)
            unchecked.append(domain)
            continue
        expert = ctx.validation_accuracy(domain, domain)
        champion = ctx.validation_accuracy("champion", domain)
        scores[domain] = {"expert": expert, "champion": champion}
        if expert < champion - tolerance:
            excluded[domain] = (
                f"validation accuracy {expert:.3f} is below the champion's {champion:.3f} by more than "
                f"the tolerance {tolerance:.3f}"
            )
        else:
            kept.append(domain)
    return Selection(kept, excluded, scores, unchecked)
