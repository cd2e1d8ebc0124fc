"""A model on the frozen encoder's pooled features, served behind the one :class:`~fanbu.models.predict.Predictor` protocol.

The encoder turns texts into pooled features (normalised as in :mod:`fanbu.meta.features`); the
feature model (an adapted meta forest, an adapted top network) answers class probabilities of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from fanbu.meta.features import normalise
from fanbu.models.encoder import EncoderHandle
from fanbu.models.predict import check_request


class FeatureModel(Protocol):
    """Anything that gives class probabilities ``(n, labels)`` of pooled features ``(n, dim)``."""

    def predict_proba(self, features: np.ndarray) -> np.ndarray: ...


class FeaturePredictor:
    """``encoder`` then ``model``: one head named ``head`` with ``label_names``."""

    def __init__(self, encoder: EncoderHandle, model: FeatureModel, head: str, label_names: Sequence[str]) -> None:
        self.encoder = encoder
        self.model = model
        self.labels: dict[str, list[str]] = {head: [str(n) for n in label_names]}
        self.max_length = encoder.max_length

    def predict_proba(self, texts: Sequence[str], head: str, batch_size: int = 32) -> np.ndarray:
        """Class probabilities ``(n, labels)`` of ``texts``."""
        check_request(self.labels, head, batch_size)
        self.encoder.max_length = self.max_length
        pooled, _ = self.encoder.encode(list(texts), batch_size=batch_size)  # (n, hidden)
        features = normalise(pooled)
        return np.asarray(self.model.predict_proba(features.numpy()), dtype=np.float32)

    def predict(self, texts: Sequence[str], head: str, batch_size: int = 32) -> np.ndarray:
        """Predicted label indices ``(n,)``."""
        return self.predict_proba(texts, head, batch_size).argmax(axis=-1)

