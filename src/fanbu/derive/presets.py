"""The named derive stage lists and student shapes that the defaults, the demo and the benches use.

Every student here is the teacher cut to 2 layers of 8 heads and hidden size 256; they differ in the
FFN width, the vocabulary kept and how importance is scored:

* :data:`DERIVE_PRUNE`: ``fanbu derive``'s default (:data:`DERIVE_STAGES`): half the FFN, 8000
  tokens, Taylor importance (gradients on the private slice).
* :data:`FAST_PRUNE`: the small models of a cycle (:data:`FAST_SMALL_STAGES`): half the FFN, 6000
  tokens, magnitude importance (no backward pass) and no finetune stage, the quickest to derive.
* :data:`DEMO_PRUNE`: the small models of ``fanbu demo`` (:data:`DEMO_SMALL_STAGES`): as
  :data:`FAST_PRUNE` but with Taylor importance; the demo also distils on 600 public transfer texts.
  Chosen on the domains' validation splits (50 texts each, from large v0 of ``fanbu demo``): mean
  small/large validation accuracy 0.939 with magnitude and no transfer texts, 1.012 with magnitude and
  300 transfer texts, 1.073 with Taylor and 600 (derive time for five domains 99, 185 and 296 s).
* :data:`CLIENT_PRUNE`: FedMKT's client students (:data:`CLIENT_STAGES`) and the federated bench's:
  an FFN of 512, 8000 tokens, Taylor; no quantize stage, as the clients keep training them.
* :data:`BENCH_DERIVE_PRUNE`: ``fanbu bench derive``'s students: an FFN of 512, 6000 tokens, Taylor
  on 256 calibration texts.

The README's numbers were measured with these values: a change here needs its bench run again. A
recipe's default takes a copy (:func:`copy_stages`), so changing a recipe never changes a preset.
"""

from __future__ import annotations

import copy
from typing import Any

Stages = list[dict[str, Any]]


def _student(ffn: float, vocab: int, importance: str) -> dict[str, Any]:
    return {"layers": 2, "heads": 8, "hidden": 256, "ffn": ffn, "vocab": vocab, "importance": importance}


DERIVE_PRUNE: dict[str, Any] = _student(0.5, 8000, "taylor")
FAST_PRUNE: dict[str, Any] = _student(0.5, 6000, "magnitude")
DEMO_PRUNE: dict[str, Any] = _student(0.5, 6000, "taylor")
CLIENT_PRUNE: dict[str, Any] = _student(512, 8000, "taylor")
BENCH_DERIVE_PRUNE: dict[str, Any] = {**_student(512, 6000, "taylor"), "calibration": 256}

# int8 PyTorch weights, an ONNX export and its int8 version: what a deployed small model serves from
QUANTIZE_DEPLOY: dict[str, Any] = {"quantize": {"int8": True, "onnx": True, "onnx_int8": True}}

DERIVE_STAGES: Stages = [{"finetune": {}}, {"prune": DERIVE_PRUNE}, {"distill": {}}, {"quantize": {}}]
FAST_SMALL_STAGES: Stages = [
    {"prune": FAST_PRUNE},
    {"distill": {"temperature": 2.0, "alpha": 0.5, "train": {"epochs": 3, "lr": 5e-4, "batch_size": 16}}},
    QUANTIZE_DEPLOY,
]
DEMO_SMALL_STAGES: Stages = [{"prune": DEMO_PRUNE}, *FAST_SMALL_STAGES[1:]]
CLIENT_STAGES: Stages = [{"finetune": {}}, {"prune": CLIENT_PRUNE}, {"distill": {}}]


def copy_stages(preset: Stages) -> Stages:
    """A deep copy of ``preset``, for a recipe's default (a recipe may change its own list)."""
    return copy.deepcopy(preset)


# ----------------------------------------------------------------------- causal LMs (SmolLM2-135M)
# SmolLM2-135M: 30 layers, hidden 576, 9 query heads in 3 KV groups of head_dim 64, FFN 1536, a tied
# 49,152 x 576 embedding (28.3M of its 134.5M parameters). Depth and width are pruned together, as
# Minitron does; the tied embedding is cut by the hidden width, so the smaller student narrows it.
LM_STUDENT_HALF: dict[str, Any] = {"layers": 16, "ffn": 896, "importance": "minitron"}  # 67.2M, 0.50
LM_STUDENT_QUARTER: dict[str, Any] = {  # 34.2M, 0.25: 2 of 3 KV groups (6 heads), hidden 384
    "layers": 12,
    "heads": 6,
    "hidden": 384,
    "ffn": 768,
    "importance": "minitron",
}
# LoRA on every projection (attention and MLP) for the domain teacher; merged for deployment.
LM_DOMAIN_LORA: dict[str, Any] = {
    "mode": "lora",
    "lora": {
        "r": 16,
        "alpha": 32,
        "dropout": 0.05,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    },
    "train": {
        "epochs": 1,
        "batch_size": 8,
        "lr": 2e-4,
        "warmup_ratio": 0.05,
        "metric": "score",
        "mode": "max",
    },
}
# Minitron's healing recipe scaled down: logit KL only (alpha 1 in their ablation; 0.9 here keeps a little
# next-token loss for the short runs), top-64 cached teacher logits, packed windows, lr 1e-4..3e-4.
LM_DISTILL: dict[str, Any] = {
    "alpha": 0.9,
    "temperature": 1.0,
    "top_k": 64,
    "window": 256,
    "train": {
        "epochs": 2,
        "batch_size": 8,
        "lr": 3e-4,
        "warmup_ratio": 0.05,
        "metric": "score",
        "mode": "max",
    },
}
LM_DERIVE_STAGES: Stages = [
    {"finetune": LM_DOMAIN_LORA},
    {"prune": {**LM_STUDENT_HALF, "calibration": 64}},
    {"distill": LM_DISTILL},
    {"export": {"int8": False, "ctranslate2": True, "gguf": "q8_0"}},  # torch int8: ~1.15x ppl on SmolLM2
]
