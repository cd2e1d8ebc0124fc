"""Generative augmentation: label-conditioned text from a causal LM (filtered by experts, deduplicated
against the real data) and a conditional GAN in pooled-feature space; synthetic data is registered with
its lineage, and a trained model's provenance records how much of its training set was synthetic.
"""

from fanbu.synthetic.apply import synthesise
from fanbu.synthetic.config import AugmentConfig, FilterConfig, GANConfig, LMAugmentConfig
from fanbu.synthetic.filter import Dedup, FilterResult, filter_generated, normalise
from fanbu.synthetic.gan import ConditionalGAN, GANResult, train_gan
from fanbu.synthetic.lineage import SyntheticSet, register_synthetic, with_synthetic_share
from fanbu.synthetic.text import Generated, build_prompt, generate_texts

__all__ = [
    "AugmentConfig", "ConditionalGAN", "Dedup", "FilterConfig", "FilterResult", "GANConfig", "GANResult",
    "Generated", "LMAugmentConfig", "SyntheticSet", "build_prompt", "filter_generated", "generate_texts",
    "normalise", "register_synthetic", "synthesise", "train_gan", "with_synthetic_share",
]
