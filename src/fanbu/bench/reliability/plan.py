"""How much of each test the reliability bench runs, and the small recipes its fanbu commands run.

The registry under test is made by ``fanbu demo`` with the one-minute smoke settings (large v0 on
small slices of the built-in domains, one int8 small model per domain): accuracy is not what this
bench measures, the real tokenizer, ONNX runtime, registry and store are. The commands killed are a
``fanbu derive`` and a ``fanbu feedback`` of the same size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_TINY_TRAIN = {"epochs": 1, "batch_size": 8}
_SMALL_STAGES = [
    {"prune": {"layers": 1, "heads": 4, "hidden": 128, "ffn": 0.25, "vocab": 2000}},
    {"distill": {"train": _TINY_TRAIN}},
    {"quantize": {"check_texts": 4}},
]


@dataclass(frozen=True)
class ReliabilityPlan:
    """Counts per part; the full bench meets the issue's bars, ``--quick`` its quick ones."""

    quick: bool
    fuzz_requests: int
    loader_cases: int
    recipe_cases: int
    neighbour_rounds: int
    kills: int
    load_seconds: float
    capacity_requests: int
    load_fraction: float = 0.8
    max_text_chars: int = 20_000
    model: str = "comp.quantize"
    cascade: str = "comp"

    @classmethod
    def make(cls, quick: bool) -> ReliabilityPlan:
        if quick:
            return cls(True, fuzz_requests=2000, loader_cases=1000, recipe_cases=1000, neighbour_rounds=10,
                       kills=5, load_seconds=120.0, capacity_requests=300)
        return cls(False, fuzz_requests=10_000, loader_cases=2000, recipe_cases=2000, neighbour_rounds=50,
                   kills=20, load_seconds=600.0, capacity_requests=1000)

    def serve_overrides(self) -> list[str]:
        return [
            f"models=[{self.model}]",
            f"cascades={{{self.cascade}: {{small: {self.model}, large: large}}}}",
            f"limits.max_text_chars={self.max_text_chars}",
        ]


def demo_recipe() -> dict[str, Any]:
    """``fanbu demo`` on small slices, deriving the small models, no feedback."""
    return {
        "benchmark": {"max_public": 20, "max_validation": 10, "max_test": 20},
        "train": {"epochs": 1},
        "latency_iterations": 5,
        "derive": {"max_train": 24, "stages": _SMALL_STAGES},
        "feedback": {"enabled": False},
    }


def derive_recipe() -> dict[str, Any]:
    """``fanbu derive``: one small model for one domain from the champion."""
    return {
        "teacher": "large",
        "max_length": 64,
        "data": {"source": "default", "domains": ["rec"], "max_train": 24, "max_validation": 10,
                 "max_transfer": 24, "max_test": 20},
        "stages": _SMALL_STAGES,
    }


def feedback_recipe() -> dict[str, Any]:
    """``fanbu feedback``: two fine-tuned experts distilled into the champion, gated."""
    return {
        "champion": "large",
        "max_length": 64,
        # the gate and the report score every domain and held-out task: capped, or they take most of the
        # run
        "data": {"source": "default", "domains": ["comp", "rec"], "max_public": 24, "max_validation": 10,
                 "max_gate": 20, "max_test": 20},
        "experts": {"source": "derive",
                    "derive": {"max_train": 24, "stages": [{"finetune": {"mode": "full", "train": _TINY_TRAIN}}]}},
        "strategies": [{"swarm_distill": {"selection_tolerance": None, "train": _TINY_TRAIN}}],
    }
