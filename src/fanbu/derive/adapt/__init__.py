"""``fanbu adapt``: a deployed small model keeps learning in its domain from the traffic it served.

:class:`AdaptConfig` says which model, which collected dataset, which tiers and how much replay;
:func:`run_adapt` fine-tunes the model's fp32 twin on the collected examples mixed with replay of its
own private slice, re-exports the int8 ONNX deployment and registers the next version of the same name.
"""

from fanbu.derive.adapt.config import AdaptConfig
from fanbu.derive.adapt.data import (
    Collected,
    ModelSlices,
    model_slices,
    read_examples,
    replay_sample,
    take_tiers,
)
from fanbu.derive.adapt.run import RELATION, adapt_model, run_adapt

__all__ = [
    "RELATION",
    "AdaptConfig",
    "Collected",
    "ModelSlices",
    "adapt_model",
    "model_slices",
    "read_examples",
    "replay_sample",
    "run_adapt",
    "take_tiers",
]
