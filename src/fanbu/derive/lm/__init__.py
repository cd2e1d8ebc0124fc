"""脱胎 for causal LMs: ``task: causal_lm`` derive recipes (finetune -> prune -> distill -> export)."""

from fanbu.derive.lm.data import LMDeriveData, LMDomainData, load_lm_domain
from fanbu.derive.lm.pipeline import derive_lm_domain, run_lm_derive_recipe
from fanbu.derive.lm.recipe import LMDeriveRecipe
from fanbu.derive.lm.stages import LM_STAGES, LMExportConfig, LMPruneStageConfig

__all__ = [
    "LM_STAGES",
    "LMDeriveData",
    "LMDeriveRecipe",
    "LMDomainData",
    "LMExportConfig",
    "LMPruneStageConfig",
    "derive_lm_domain",
    "load_lm_domain",
    "run_lm_derive_recipe",
]
