"""Vocabulary trimming for WordPiece encoders: keep the tokens a domain uses.

Kept always: every special or added token and every single-character token (``x`` and ``##x``), so
any text still tokenises (a word falls back to characters, ``[UNK]`` only for unseen characters).
The rest of the budget goes to the tokens most frequent in the calibration texts, then to the lowest
ids. The trimmed tokenizer is a real ``tokenizers`` WordPiece with the original normaliser,
pre-tokeniser, post-processor and decoder; it saves with ``save_pretrained`` like any other.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import Tensor
from transformers import PreTrainedTokenizerFast
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from fanbu.derive.prune.config import PruneError

_SPECIAL_NAMES = ("unk_token", "pad_token", "cls_token", "sep_token", "mask_token", "bos_token", "eos_token")


def _backend_json(tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise PruneError(
            f"vocab trimming needs a fast (tokenizers-backed) tokenizer, got {type(tokenizer).__name__}; "
            "load the model with its tokenizer.json or leave vocab unset"
        )
    data = json.loads(backend.to_str())
    kind = data.get("model", {}).get("type")
    if kind != "WordPiece":
        raise PruneError(
            f"vocab trimming supports WordPiece tokenizers (BERT family); this one is {kind}: leave vocab unset"
        )
    return data


def _id_to_token(tokenizer: PreTrainedTokenizerBase) -> dict[int, str]:
    vocab = tokenizer.backend_tokenizer.get_vocab(with_added_tokens=True)
    return {index: token for token, index in vocab.items()}


def required_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Ids always kept: special and added tokens, and single characters (with and without ``##``)."""
    data = _backend_json(tokenizer)
    prefix = data["model"].get("continuing_subword_prefix") or "##"
    keep = {int(t["id"]) for t in data.get("added_tokens", [])} | set(tokenizer.all_special_ids)
    for index, token in _id_to_token(tokenizer).items():
        if len(token) == 1 or (token.startswith(prefix) and len(token) == len(prefix) + 1):
            keep.add(index)
    return sorted(keep)


def token_counts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> np.ndarray:
    """How often each id occurs in ``texts`` (whole texts, no special tokens): ``(len(tokenizer),)``."""
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend.no_truncation()
    backend.no_padding()
    encodings = backend.encode_batch([str(t) for t in texts], add_special_tokens=False)
    ids = [i for enc in encodings for i in enc.ids]
    return np.bincount(np.asarray(ids, dtype=np.int64), minlength=len(tokenizer))


def select_vocab(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], size: int) -> Tensor:
    """The ``size`` token ids kept, ascending: required ids, then the most frequent in ``texts``.

    Raises:
        PruneError: ``size`` is below the required tokens or above the tokenizer's size.
    """
    total = len(tokenizer)
    required = required_ids(tokenizer)
    if size > total:
        raise PruneError(f"vocab={size} exceeds the tokenizer's {total} tokens; set vocab <= {total}")
    if size < len(required):
        raise PruneError(
            f"vocab={size} is below the {len(required)} tokens always kept (special tokens and every "
            f"single character, so any text still tokenises); set vocab >= {len(required)}"
        )
    counts = token_counts(tokenizer, texts)
    mask = np.ones(total, dtype=bool)
    mask[required] = False
    candidates = np.flatnonzero(mask)
    order = np.lexsort((candidates, -counts[candidates]))  # most frequent first, then lowest id
    chosen = candidates[order[: size - len(required)]]
    return torch.as_tensor(np.sort(np.concatenate([np.asarray(required), chosen])), dtype=torch.long)


def _remap_processor(node: Any, new_id: dict[str, int]) -> Any:
    """The post-processor with its special-token ids renumbered."""
    if not isinstance(node, dict):
        return node
    kind = node.get("type")
    if kind == "TemplateProcessing":
        for spec in node["special_tokens"].values():
            spec["ids"] = [new_id[t] for t in spec["tokens"]]
    elif kind in ("BertProcessing", "RobertaProcessing"):
        for key in ("sep", "cls"):
            node[key] = [node[key][0], new_id[node[key][0]]]
    elif kind == "Sequence":
        node["processors"] = [_remap_processor(p, new_id) for p in node["processors"]]
    return node


def trim_tokenizer(tokenizer: PreTrainedTokenizerBase, keep: Tensor) -> PreTrainedTokenizerFast:
    """A WordPiece tokenizer over the kept ids, renumbered ``0..len(keep)-1`` in the original order."""
    data = _backend_json(tokenizer)
    id_to_token = _id_to_token(tokenizer)
    tokens = [id_to_token[int(i)] for i in keep]
    new_id = {token: index for index, token in enumerate(tokens)}
    data["model"]["vocab"] = new_id
    data["truncation"] = None
    data["padding"] = None
    for added in data.get("added_tokens", []):
        added["id"] = new_id[added["content"]]
    data["post_processor"] = _remap_processor(data.get("post_processor"), new_id)
    backend = Tokenizer.from_str(json.dumps(data))
    specials = {name: getattr(tokenizer, name) for name in _SPECIAL_NAMES if getattr(tokenizer, name, None)}
    trimmed = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        model_max_length=tokenizer.model_max_length,
        padding_side=tokenizer.padding_side,
        truncation_side=tokenizer.truncation_side,
        model_input_names=list(tokenizer.model_input_names),
        **{name: str(value) for name, value in specials.items()},
    )
    if len(trimmed) != len(keep):
        raise PruneError(
            f"the trimmed tokenizer has {len(trimmed)} tokens, expected {len(keep)}; the tokenizer has "
            "tokens outside its WordPiece vocabulary: leave vocab unset for this model"
        )
    return trimmed
