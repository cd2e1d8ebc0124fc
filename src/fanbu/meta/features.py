"""The frozen encoder's pooled features of a domain's splits, computed once and cached as safetensors.

Features are the encoder's masked mean of its last hidden states (:meth:`EncoderHandle.encode`), each
row scaled to norm ``sqrt(dim)`` (entries of order one, the same for every method that reads them).
A cache file is named by a fingerprint of the encoder, its token budget and truncation and the texts:
other texts or settings never read a stale file.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from fanbu.data.domain import Domain, Split
from fanbu.io import sha256_json
from fanbu.meta.episodes import FeatureTask
from fanbu.models.encoder import EncoderHandle

SPLITS = ("train", "validation", "test")


def normalise(features: Tensor) -> Tensor:
    """Rows scaled to norm ``sqrt(dim)``: ``(n, dim)`` to ``(n, dim)``."""
    scale = math.sqrt(features.shape[1])
    return features / features.norm(dim=1, keepdim=True).clamp(min=1e-12) * scale


def feature_key(encoder: str, handle: EncoderHandle, split: Split) -> str:
    """Fingerprint of the features of ``split`` under ``handle`` (loaded from ``encoder``)."""
    return sha256_json({"encoder": encoder, "max_length": handle.max_length, "truncation": handle.truncation,
                        "texts": split.fingerprint})[:20]


def split_features(handle: EncoderHandle, encoder: str, split: Split, cache: Path | None,
                   batch_size: int = 64) -> Tensor:
    """Normalised pooled features ``(n, hidden)`` of ``split``, read from ``cache`` when computed before."""
    path = None if cache is None else cache / f"{feature_key(encoder, handle, split)}.safetensors"
    if path is not None and path.is_file():
        try:
            kept = load_file(str(path))["features"]
            if kept.shape[0] == len(split):
                return kept
        except (SafetensorError, OSError, KeyError):
            pass  # a damaged cache entry is computed again below
    pooled, _ = handle.encode(list(split.texts), batch_size=batch_size)  # (n, hidden)
    features = normalise(pooled).contiguous()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({"features": features}, str(tmp))
        tmp.replace(path)
    return features


def domain_tasks(domain: Domain, handle: EncoderHandle, encoder: str, cache: Path | None) -> dict[str, FeatureTask]:
    """Each split of ``domain`` as a :class:`FeatureTask` of pooled features."""
    out = {}
    for name in SPLITS:
        split: Split = getattr(domain, name)
        labels = torch.tensor(split.labels or (), dtype=torch.long)
        out[name] = FeatureTask(domain.name, split_features(handle, encoder, split, cache), labels,
                                domain.label_names)
    return out
