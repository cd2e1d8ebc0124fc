"""Collection: the logging store of served predictions and feedback, and its curation into datasets.

:class:`LogStore` lives in the registry's database; :func:`curate` (``fanbu collect``) turns its rows
into a registered, fingerprinted dataset; :func:`load_collected` reads one back for a feedback recipe.
For language models, :func:`curate_lm` turns logged generations, ratings and corrections into a
prompt-completion dataset, read back with :func:`read_collected_lm` or :func:`collected_lm_source`.
Names are imported on first use (the store does not need the data loaders).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CurateConfig": "fanbu.collect.curated",
    "curate": "fanbu.collect.curation",
    "CollectedData": "fanbu.collect.dataset",
    "collected_sources": "fanbu.collect.dataset",
    "load_collected": "fanbu.collect.dataset",
    "read_collected": "fanbu.collect.dataset",
    "PRIVACY_MODES": "fanbu.collect.hashing",
    "PrivacyMode": "fanbu.collect.hashing",
    "mask_text": "fanbu.collect.hashing",
    "stored_form": "fanbu.collect.hashing",
    "LMCurateConfig": "fanbu.collect.lm_curated",
    "LMExample": "fanbu.collect.lm_curated",
    "curate_lm": "fanbu.collect.lm_curation",
    "collected_lm_source": "fanbu.collect.lm_dataset",
    "read_collected_lm": "fanbu.collect.lm_dataset",
    "Completion": "fanbu.collect.lm_store",
    "Generation": "fanbu.collect.lm_store",
    "GenerationFeedback": "fanbu.collect.lm_store",
    "Answer": "fanbu.collect.store",
    "Feedback": "fanbu.collect.store",
    "LogStore": "fanbu.collect.store",
    "LogStoreError": "fanbu.collect.store",
    "Prediction": "fanbu.collect.store",
    "UnknownPredictionError": "fanbu.collect.store",
}

__all__ = [
    "PRIVACY_MODES",
    "Answer",
    "CollectedData",
    "Completion",
    "CurateConfig",
    "Feedback",
    "Generation",
    "GenerationFeedback",
    "LMCurateConfig",
    "LMExample",
    "LogStore",
    "LogStoreError",
    "Prediction",
    "PrivacyMode",
    "UnknownPredictionError",
    "collected_lm_source",
    "collected_sources",
    "curate",
    "curate_lm",
    "load_collected",
    "mask_text",
    "read_collected",
    "read_collected_lm",
    "stored_form",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'fanbu.collect' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
