"""Structured pruning that physically shrinks BERT-family encoders and Llama-family causal LMs.

Composable parts: importance (:func:`unit_importance`: magnitude, Taylor, activation) x pruner
(:func:`prune_encoder`, :func:`prune_causal_lm`: layers, heads / KV groups, head width, FFN neurons,
hidden width, vocabulary) x schedule (one-shot, or iterative with a ``recover`` callback). The result is
an ordinary Hugging Face model whose config matches its shapes: no masks are left behind.

Torch-Pruning is not used: its dependency graph slices tensors but leaves the Hugging Face config
(heads, ``head_dim``, KV groups, BERT's ``hidden / heads`` head size) inconsistent, and transformers 5
dropped BERT's ``prune_heads``. The axis table in :mod:`.layout` is the dependency graph here, and a
new model is built from the updated config so shapes and config cannot disagree.
"""

from fanbu.derive.prune.config import Calibration, PruneConfig, PruneError
from fanbu.derive.prune.count import count_parameters
from fanbu.derive.prune.encoder import prune_encoder, shrink_encoder
from fanbu.derive.prune.importance import UnitImportance, layout_of, unit_importance
from fanbu.derive.prune.layout import Layout
from fanbu.derive.prune.llama import prune_causal_lm, shrink_causal_lm
from fanbu.derive.prune.plan import Plan, make_plan
from fanbu.derive.prune.vocab import select_vocab, trim_tokenizer

__all__ = [
    "Calibration",
    "Layout",
    "Plan",
    "PruneConfig",
    "PruneError",
    "UnitImportance",
    "count_parameters",
    "layout_of",
    "make_plan",
    "prune_causal_lm",
    "prune_encoder",
    "select_vocab",
    "shrink_causal_lm",
    "shrink_encoder",
    "trim_tokenizer",
    "unit_importance",
]
