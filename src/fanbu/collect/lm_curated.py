"""What LM curation produces and how it is configured: :class:`LMCurateConfig`, :class:`LMExample`.

:mod:`fanbu.collect.lm_curation` selects the examples from the logs; :mod:`fanbu.collect.lm_dataset`
writes and reads them.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field, field_validator

from fanbu.config import Strict
from fanbu.errors import ConfigError
from fanbu.io import check_path_name

LM_TIERS = ("corrected", "rated", "unrated")


class LMCurateConfig(Strict):
    """How ``fanbu collect`` turns logged generations, ratings and corrections into an LM dataset."""

    name: str = Field("collected-lm", min_length=1, description="Dataset name in the registry.")
    targets: list[str] | None = Field(
        None,
        description="Only generations clients asked of these served LMs or LM cascades (the request's "
        "`model`); default: all.",
    )
    min_rating: int = Field(
        3, ge=1, le=5, description="Completions rated below this (1-5) are dropped, unless corrected."
    )
    keep_unrated: bool = Field(True, description="Keep completions nobody rated (tier 'unrated').")
    quota: int = Field(5000, ge=1, description="Most examples (best tier first).")
    out: str | None = Field(None, description="Where the JSONL file goes (default: <home>/datasets).")

    @field_validator("name")
    @classmethod
    def _path_safe_name(cls, name: str) -> str:
        try:
            return check_path_name(name, "dataset name", nested=True)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None


@dataclass(frozen=True)
class LMExample:
    """One curated prompt-completion pair (the completion is the user's correction when there is one)."""

    prompt: str
    completion: str
    tier: str
    generation_id: str
    target: str
    endpoint: str

    @property
    def text(self) -> str:
        """Prompt and completion as one text, for plain language-model training."""
        return self.prompt + self.completion
