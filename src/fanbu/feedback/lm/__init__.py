"""反哺 for causal LMs: merge the domains' LoRA experts, distil the domain LMs token by token, train on
collected corrections, and the naive sequential baseline.

Importing this package registers its methods (``lm_merge``, ``lm_distill``, ``lm_corrections``,
``lm_sequential``) in :data:`LM_METHODS`, the LM methods' catalog.
"""

from fanbu.feedback.lm import corrections, distill, merge, sequential  # noqa: F401 (importing registers)
from fanbu.feedback.lm.context import LM_METHODS, LMFeedbackContext, LMStrategyOutput, register_lm_method

__all__ = ["LM_METHODS", "LMFeedbackContext", "LMStrategyOutput", "register_lm_method"]
