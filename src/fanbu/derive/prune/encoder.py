"""Structured pruning of BERT-family encoder handles: a new, physically smaller ``BertModel``.

The result has no masks: its config states the kept sizes (BERT's head size being ``hidden / heads``),
its classification heads read the kept hidden channels, and its tokenizer is the trimmed WordPiece
when ``vocab`` is set. A saved result loads with plain ``AutoModel.from_pretrained``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

from transformers import PretrainedConfig
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from fanbu.derive.prune.checks import check_config
from fanbu.derive.prune.config import Calibration, PruneConfig, PruneError
from fanbu.derive.prune.importance import unit_importance
from fanbu.derive.prune.layout import Layout, encoder_layout
from fanbu.derive.prune.plan import Plan, family_indices, make_plan, slice_sources, slice_state
from fanbu.derive.prune.schedule import Targets, round_targets, run_rounds
from fanbu.derive.prune.subnetwork import record_round, record_shrink
from fanbu.derive.prune.vocab import select_vocab, trim_tokenizer
from fanbu.models.encoder import EncoderClassifier, EncoderHandle

_TOKEN_ID_FIELDS = ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id")


def _encoder_config(config: PretrainedConfig, plan: Plan, layout: Layout) -> PretrainedConfig:
    new = copy.deepcopy(config)
    first = plan.layers[0]
    new.num_hidden_layers = len(plan.layers)
    new.num_attention_heads = len(plan.units[first])
    new.hidden_size = len(plan.hidden)
    new.intermediate_size = len(plan.ffn[first])
    if plan.vocab is not None:
        new.vocab_size = len(plan.vocab)
        position = {int(old): index for index, old in enumerate(plan.vocab)}
        for name in _TOKEN_ID_FIELDS:
            value = getattr(new, name, None)
            if isinstance(value, int):
                setattr(new, name, position.get(value))
    return new


def shrink_encoder(
    handle: EncoderHandle, plan: Plan, tokenizer: PreTrainedTokenizerBase | None = None
) -> EncoderHandle:
    """The smaller handle ``plan`` describes; ``handle`` is left as it was.

    When heads get narrower (``head_dim`` shrinks) the queries are scaled by ``sqrt(d_new / d_old)``
    so attention logits keep BERT's ``q.k / sqrt(d_old)`` scale. The result's ``subnetwork`` records
    where its tensors sit in the large model (:mod:`fanbu.derive.prune.subnetwork`).
    """
    old = handle.model
    layout = encoder_layout(old)
    full, keep = old.state_dict(), family_indices(plan, layout)
    state = slice_state(full, layout, keep, plan.layers)
    head_dim = plan.head_dim or layout.head_dim
    scales: dict[str, float] = {}
    if head_dim != layout.head_dim:
        factor = math.sqrt(head_dim / layout.head_dim)
        for index in range(len(plan.layers)):
            for part in ("weight", "bias"):
                key = f"encoder.encoder.layer.{index}.attention.self.query.{part}"
                if key in state:
                    state[key] = state[key] * factor
                    scales[key] = factor
    config = _encoder_config(old.encoder.config, plan, layout)
    extra = {} if getattr(old.encoder, "pooler", None) is not None else {"add_pooling_layer": False}
    reference = next(old.encoder.parameters())
    encoder = type(old.encoder)(config, **extra).to(device=reference.device, dtype=reference.dtype)
    encoder.load_state_dict(
        {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
    )
    model = EncoderClassifier(
        encoder, {name: head.out_features for name, head in old.heads.items()}, old.dropout.p
    )
    model.heads.load_state_dict(
        {k.removeprefix("heads."): v for k, v in state.items() if k.startswith("heads.")}
    )
    model.train(old.training)
    new_tokenizer = tokenizer if tokenizer is not None else copy.deepcopy(handle.tokenizer)
    pruned = EncoderHandle(
        model, new_tokenizer, handle.labels, handle.max_length, truncation=handle.truncation
    )
    sources = slice_sources(full, layout, keep, plan.layers)
    pruned.subnetwork = record_shrink(handle, sources, scales, state).to_sidecar()
    return pruned


def _round(
    handle: EncoderHandle, targets: Targets, config: PruneConfig, calibration: Calibration | None
) -> EncoderHandle:
    layout = encoder_layout(handle.model)
    importance = None
    if targets.needs_importance(layout):
        importance = unit_importance(handle, config.importance, calibration)
    vocab = tokenizer = None
    if targets.vocab is not None:
        assert calibration is not None  # check_config requires it
        if len(handle.tokenizer) > layout.vocab:
            raise PruneError(
                f"the tokenizer has {len(handle.tokenizer)} tokens but the embedding only {layout.vocab} "
                "rows; fix the model's vocab_size before trimming, or leave vocab unset"
            )
        vocab = select_vocab(handle.tokenizer, calibration.texts, targets.vocab)
        tokenizer = trim_tokenizer(handle.tokenizer, vocab)
    plan = make_plan(layout, targets, importance, vocab)
    pruned = shrink_encoder(handle, plan, tokenizer)
    record_round(pruned, handle, plan, importance)  # what this round saw, kept and scored
    return pruned


def prune_encoder(
    handle: EncoderHandle,
    config: PruneConfig,
    calibration: Calibration | None = None,
    recover: Callable[[EncoderHandle, int], None] | None = None,
) -> EncoderHandle:
    """Prune a BERT-family encoder handle; returns a new handle (the input is not modified).

    Args:
        handle: The encoder with its heads and tokenizer.
        config: What to keep and how to score units.
        calibration: Texts for taylor/activation importance and vocabulary counts (Taylor on an
            encoder also needs labels and a head).
        recover: Iterative schedule: called as ``recover(handle, round)`` after every round but the
            last (``steps - 1`` calls), e.g. to fine-tune the intermediate model in place.

    Raises:
        PruneError: the config does not fit the model, or calibration is missing where needed.
    """
    layout = encoder_layout(handle.model)
    check_config(handle, config, calibration, layout)
    rounds = round_targets(config, layout)
    return run_rounds(handle, rounds, lambda h, t: _round(h, t, config, calibration), recover)
