"""The settings of generative augmentation: one recipe-level switch, ``augment: {kind: lm|gan|none, ...}``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fanbu.config import Strict


class FilterConfig(Strict):
    """Which generated texts are kept: the experts' agreement with the intended label, and deduplication."""

    threshold: float = Field(
        0.5, ge=0, le=1, description="Keep a text only when every expert gives its intended label at least this "
        "probability (a disagreeing expert vetoes); choose it on validation, never on test.",
    )
    require_argmax: bool = Field(True, description="Also require the intended label to be each expert's top label.")
    jaccard: float = Field(
        0.8, gt=0, le=1, description="Near-duplicate bar: a text whose token-set Jaccard with a real (or an earlier "
        "kept) text is at least this is dropped; exact duplicates (normalised text) always are.",
    )
    min_tokens: int = Field(5, ge=1, description="Drop generations shorter than this many words.")


class LMAugmentConfig(Strict):
    """Label-conditioned text from a causal LM prompted with k examples of the label."""

    generator: str = Field("package:SmolLM2-135M-Instruct", description="Causal LM source (package:NAME, dir, hub id).")
    shots: int = Field(4, ge=1, description="Examples of the label in each prompt.")
    per_label: int = Field(24, ge=1, description="Texts generated per label (before filtering).")
    max_new_tokens: int = Field(64, ge=4, description="New tokens per generated text.")
    example_words: int = Field(40, ge=5, description="Each prompt example is cut to this many words.")
    batch_size: int = Field(8, ge=1, description="Prompts generated together.")
    temperature: float = Field(0.9, gt=0, description="Sampling temperature.")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling mass.")
    max_prompt_tokens: int = Field(768, ge=32, description="Prompts are cut (from the left) to this many tokens.")
    filter: FilterConfig = Field(default_factory=FilterConfig, description="The experts' filter and deduplication.")


class GANConfig(Strict):
    """A conditional GAN (projection discriminator) in the frozen encoder's pooled-feature space."""

    noise: int = Field(32, ge=1, description="Width of the generator's noise input.")
    hidden: int = Field(256, ge=4, description="Hidden width of the generator and the discriminator.")
    steps: int = Field(600, ge=1, description="Adversarial steps (one discriminator and one generator update each).")
    batch_size: int = Field(64, ge=2, description="Real rows per step (drawn with replacement).")
    lr: float = Field(2e-4, gt=0, description="Adam learning rate of both networks.")
    per_label: int = Field(64, ge=1, description="Feature rows sampled per label for augmentation.")
    standardise: bool = Field(True, description="Train on per-dimension standardised features (mapped back on sampling).")


class AugmentConfig(Strict):
    """The recipe-level switch: ``none``, ``lm`` (generated text) or ``gan`` (generated features)."""

    kind: Literal["none", "lm", "gan"] = Field("none", description="Which generator enlarges the training set.")
    lm: LMAugmentConfig = Field(default_factory=LMAugmentConfig, description="Settings of kind 'lm'.")
    gan: GANConfig = Field(default_factory=GANConfig, description="Settings of kind 'gan'.")
    seed: int = Field(0, description="Seeds generation, the GAN and sampling.")

