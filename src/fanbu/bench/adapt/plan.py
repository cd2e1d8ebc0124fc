"""The settings ``fanbu bench adapt`` runs with: one validated model, quick and full.

Every setting is a field (``--set meta.iterations=100`` overrides it), so what the bench runs a user can
run with the same recipe: the meta-learning (:class:`~fanbu.meta.learn.MetaConfig`, one per method),
the adaptation (:class:`~fanbu.meta.adapt.AdaptConfig`), the forest
(:class:`~fanbu.meta.forest.MetaForestConfig`) and the data caps.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from fanbu.bench.adapt.search import SearchBenchSettings
from fanbu.config import Strict, load_recipe
from fanbu.data.builtin import FEEDBACK_GROUPS
from fanbu.meta.adapt import AdaptConfig
from fanbu.meta.forest import MetaForestConfig
from fanbu.meta.learn import MetaConfig
from fanbu.models.tokenize import Truncation

QUICK_SECONDS = 1800  # the budget for --quick on 2 cores
HELD_OUT = ("bbc-news", "reuters-r8")
SECTIONS = ("shots", "search")


class AdaptBenchSettings(Strict):
    """What ``fanbu bench adapt`` runs."""

    encoder: str = Field("package:all-MiniLM-L6-v2", description="The frozen large encoder (v0).")
    max_length: int = Field(256, ge=8, description="Tokens of each text the encoder reads.")
    truncation: Truncation = Field("head_tail", description="Which tokens of a long text it reads (head or head_tail).")
    domains: list[str] = Field(list(FEEDBACK_GROUPS), min_length=2,
                               description="Feedback domains: each is left out once, the others meta-train.")
    held_out: list[str] = Field(list(HELD_OUT), description="Held-out tasks, never meta-trained on.")
    shots: list[int] = Field([4, 8, 16, 32], min_length=1, description="k labelled examples per class.")
    draws: int = Field(5, ge=1, description="Draws of the k examples per (task, k) cell.")
    max_train_per_label: int | None = Field(None, ge=2, description="Cap of each label's train pool (None: all).")
    max_test_per_label: int | None = Field(None, ge=1, description="Cap of each label's test texts (None: all).")
    forest_max_per_label: int = Field(200, ge=2, description="Meta-training examples per label the forest grows on.")
    random_forest_trees: int = Field(200, ge=1, description="Trees of the scikit-learn random forest baseline.")
    scratch_features: int = Field(4096, ge=16, description="Hashed bag-of-words dimensions of the scratch row.")
    fomaml: MetaConfig = Field(MetaConfig(method="fomaml"), description="First-order MAML settings.")
    reptile: MetaConfig = Field(MetaConfig(method="reptile"), description="Reptile settings.")
    metasgd: MetaConfig = Field(MetaConfig(method="metasgd"), description="Meta-SGD settings (learned per-parameter "
                                "inner learning rates).")
    adapt: AdaptConfig = Field(AdaptConfig(), description="Adaptation of every top network (all init rows).")
    forest: MetaForestConfig = Field(MetaForestConfig(), description="The meta decision forest.")
    forest_regrow: int = Field(2, ge=1, description="Top levels the meta_forest_regrow row splits again on the k "
                               "examples (the same grown forest as meta_forest).")
    sections: list[str] = Field(list(SECTIONS), min_length=1,
                                description="shots: few-shot adaptation rows; search: warm vs cold architecture "
                                            "search and the swarm architecture.")
    search: SearchBenchSettings = Field(default_factory=SearchBenchSettings,
                                        description="The search section (seed technique 19).")

    @field_validator("shots")
    @classmethod
    def _shots(cls, shots: list[int]) -> list[int]:
        if any(k < 1 for k in shots):
            raise ValueError(f"shots {shots}: every k must be at least 1")
        return sorted(set(shots))

    @model_validator(mode="after")
    def _check(self) -> AdaptBenchSettings:
        if set(self.sections) - set(SECTIONS):
            raise ValueError(f"sections {self.sections}: choose from {', '.join(SECTIONS)}")
        if self.fomaml.method != "fomaml" or self.reptile.method != "reptile" or self.metasgd.method != "metasgd":
            raise ValueError("fomaml.method must be fomaml, reptile.method reptile and metasgd.method metasgd")
        unknown = [d for d in self.domains if d not in FEEDBACK_GROUPS]
        if unknown:
            raise ValueError(f"domains {unknown} are not feedback domains ({', '.join(FEEDBACK_GROUPS)})")
        bad = [h for h in self.held_out if h not in HELD_OUT]
        if bad:
            raise ValueError(f"held_out {bad}: choose from {', '.join(HELD_OUT)}")
        if self.forest_regrow > self.forest.depth:
            raise ValueError(f"forest_regrow {self.forest_regrow} exceeds forest.depth {self.forest.depth}")
        if self.max_train_per_label is not None and self.max_train_per_label < max(self.shots) + 2:
            raise ValueError(f"max_train_per_label {self.max_train_per_label} leaves fewer than k = {max(self.shots)} "
                             "train examples per label after validation is carved: raise it or lower shots")
        return self


_QUICK = {
    "max_length": 128, "max_train_per_label": 48, "max_test_per_label": 40, "forest_max_per_label": 43,
    "random_forest_trees": 100,
    "fomaml": {"method": "fomaml", "iterations": 150}, "reptile": {"method": "reptile", "iterations": 150},
    "metasgd": {"method": "metasgd", "iterations": 150},
    "adapt": {"selection_episodes": 3, "selection_query": 4},
    "forest": {"trees": 48},
    "search": {"domains": ["comp", "rec", "politics"], "examples_per_label": 60, "max_test_per_label": 40},
}


def bench_settings(quick: bool, draws: int | None = None, overrides: list[str] | None = None) -> AdaptBenchSettings:
    """The bench's settings (quick: capped texts, 128 tokens, fewer meta-iterations), overrides applied."""
    base = dict(_QUICK) if quick else {}
    if draws is not None:
        base["draws"] = draws
    return load_recipe(AdaptBenchSettings, None, overrides or [], base=base)
