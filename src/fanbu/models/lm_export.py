"""Causal-LM deployment: int8 dynamic quantisation in PyTorch, and a CTranslate2 int8 edge export.

CTranslate2 (https://github.com/OpenNMT/CTranslate2) is the edge runtime here because llama-cpp-python
has no wheel in this environment's package index and building llama.cpp needs a compiler toolchain; a
GGUF file of a derived model would have no runtime to check its parity against. CTranslate2 converts
a saved Hugging Face Llama directly (``TransformersConverter``), runs int8 matmuls on CPU, and scores
token log-probabilities, so the export gets the same perplexity check as the PyTorch model.

Both exports are checked by :func:`lm_parity`: perplexity on the same token windows relative to the
fp32 PyTorch model, and greedy-token agreement on a few prompts.
"""

from __future__ import annotations

import copy
import math
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

from fanbu.errors import ModelError
from fanbu.models.causal_lm import CausalLMHandle

ScoreFn = Callable[[list[list[int]]], list[list[float]]]
"""Per window of token ids, the log-probability of every token after the first."""
GreedyFn = Callable[[list[int], int], list[int]]
"""Prompt ids and a token count to exactly that many greedily generated ids (end token suppressed)."""


KEEP_FP32 = ("lm_head", "down_proj")


def quantize_lm_int8(handle: CausalLMHandle, keep_fp32: tuple[str, ...] = KEEP_FP32) -> CausalLMHandle:
    """A CPU copy whose ``nn.Linear`` layers are dynamically quantised to qint8 (per-channel weights).

    Activations are quantised per tensor on the fly, which LLM activation outliers punish: on SmolLM2-135M
    (3 BBC validation articles) quantising every linear layer gave 2.5-2.8x the fp32 perplexity, keeping
    ``lm_head`` and ``down_proj`` (whose inputs carry the outliers, as LLM.int8() reports) in fp32 gave
    1.15x. CTranslate2's int8 (:func:`export_ctranslate2`) stays within a few percent. Embeddings and norms
    stay fp32; the input handle is untouched; packed int8 weights are not safetensors (re-quantise on load).
    """
    model = copy.deepcopy(handle.model).to(device="cpu", dtype=torch.float32).eval()
    spec = {
        name: per_channel_dynamic_qconfig
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and not any(part in name for part in keep_fp32)
    }
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*deprecated")
        quantized = quantize_dynamic(model, spec, dtype=torch.qint8)
    return CausalLMHandle(quantized, handle.tokenizer, handle.max_length, handle.provenance)


def token_windows(handle: CausalLMHandle, texts: Sequence[str], window: int | None = None) -> list[list[int]]:
    """Each text's token ids cut into windows of at most ``window`` (default ``max_length``) tokens."""
    size = window or handle.max_length
    out = []
    for text in texts:
        ids = handle.tokenizer(text, add_special_tokens=False)["input_ids"]
        out.extend(ids[start : start + size] for start in range(0, len(ids), size))
    return [w for w in out if len(w) >= 2]


def torch_scorer(handle: CausalLMHandle) -> ScoreFn:
    """Token log-probabilities from the PyTorch model (one window per forward pass)."""

    @torch.no_grad()
    def score(windows: list[list[int]]) -> list[list[float]]:
        handle.model.eval()
        out = []
        for ids in windows:
            tensor = torch.tensor([ids])  # (1, seq)
            logp = torch.log_softmax(
                handle.model(input_ids=tensor).logits[0, :-1].float(), dim=-1
            )  # (seq-1, vocab)
            out.append(logp.gather(1, tensor[0, 1:, None])[:, 0].tolist())
        return out

    return score


def torch_greedy(handle: CausalLMHandle) -> GreedyFn:
    """Greedy decoding of exactly ``n`` tokens with the PyTorch model (eos suppressed, as CTranslate2's ``min_length``)."""

    @torch.no_grad()
    def greedy(prompt: list[int], n: int) -> list[int]:
        handle.model.eval()
        ids = torch.tensor([prompt])  # (1, prompt)
        out = handle.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            pad_token_id=handle.tokenizer.pad_token_id,
        )
        return out[0, len(prompt) :].tolist()

    return greedy


def perplexity_of(score: ScoreFn, windows: list[list[int]]) -> float:
    """``exp(mean NLL)`` over every scored token of ``windows``."""
    logps = [lp for row in score(windows) for lp in row]
    if not logps:
        raise ModelError("no tokens to score: give texts with at least two tokens")
    return math.exp(-sum(logps) / len(logps))


@dataclass
class Parity:
    """How an exported LM compares with the fp32 PyTorch model on the same windows and prompts."""

    reference_ppl: float
    export_ppl: float
    greedy_agreement: float  # share of greedy tokens equal position by position
    tolerance: float  # allowed relative perplexity increase

    @property
    def ppl_ratio(self) -> float:
        """Export perplexity / reference perplexity."""
        return self.export_ppl / self.reference_ppl

    @property
    def passed(self) -> bool:
        """Whether the export's perplexity is within ``tolerance`` of the reference."""
        return abs(self.ppl_ratio - 1.0) <= self.tolerance

    def as_dict(self) -> dict[str, float | bool]:
        """JSON-able summary."""
        return {
            "reference_ppl": self.reference_ppl,
            "export_ppl": self.export_ppl,
            "ppl_ratio": self.ppl_ratio,
            "greedy_agreement": self.greedy_agreement,
            "tolerance": self.tolerance,
            "passed": self.passed,
        }


def lm_parity(
    reference: CausalLMHandle,
    score: ScoreFn,
    greedy: GreedyFn,
    texts: Sequence[str],
    prompts: Sequence[str],
    tolerance: float = 0.05,
    new_tokens: int = 16,
) -> Parity:
    """Perplexity of ``score`` vs the fp32 ``reference`` on ``texts``, and greedy agreement on ``prompts``."""
    windows = token_windows(reference, texts)
    reference_ppl = perplexity_of(torch_scorer(reference), windows)
    export_ppl = perplexity_of(score, windows)
    base = torch_greedy(reference)
    same = total = 0
    for prompt in prompts:
        ids = reference.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        a, b = base(ids, new_tokens), greedy(ids, new_tokens)
        same += sum(x == y for x, y in zip(a, b, strict=False))
        total += max(len(a), len(b))
    return Parity(reference_ppl, export_ppl, same / max(total, 1), tolerance)


class CTranslate2LM:
    """A CTranslate2 export of a causal LM: int8 generation and token scoring on CPU."""

    def __init__(self, directory: str | Path, handle: CausalLMHandle, compute_type: str = "int8") -> None:
        import ctranslate2

        self.directory = Path(directory)
        self.tokenizer = handle.tokenizer
        self.generator = ctranslate2.Generator(str(self.directory), device="cpu", compute_type=compute_type)

    def _tokens(self, ids: Sequence[int]) -> list[str]:
        return self.tokenizer.convert_ids_to_tokens(list(ids))

    def score(self, windows: list[list[int]]) -> list[list[float]]:
        """:data:`ScoreFn`: token log-probabilities of each window."""
        results = self.generator.score_batch([self._tokens(w) for w in windows])
        return [list(r.log_probs) for r in results]

    def greedy(self, prompt: list[int], n: int) -> list[int]:
        """:data:`GreedyFn`: exactly ``n`` greedy tokens after ``prompt``."""
        result = self.generator.generate_batch(
            [self._tokens(prompt)],
            max_length=n,
            min_length=n,
            sampling_topk=1,
            include_prompt_in_result=False,
        )
        return list(result[0].sequences_ids[0])


def export_ctranslate2(
    handle: CausalLMHandle, directory: str | Path, quantization: str = "int8"
) -> CTranslate2LM:
    """Convert ``handle`` to a CTranslate2 model in ``directory`` (weights ``quantization``), tokenizer alongside.

    Raises:
        ModelError: ctranslate2 is not installed, or the architecture cannot be converted.
    """
    try:
        import ctranslate2
    except ImportError:
        raise ModelError(
            "the CTranslate2 export needs the ctranslate2 package: pip install ctranslate2"
        ) from None
    target = Path(directory)
    with tempfile.TemporaryDirectory() as tmp:
        handle.model.save_pretrained(tmp)
        handle.tokenizer.save_pretrained(tmp)
        try:
            ctranslate2.converters.TransformersConverter(tmp).convert(
                str(target), quantization=quantization, force=True
            )
        except (ValueError, NotImplementedError) as exc:
            raise ModelError(f"CTranslate2 cannot convert {type(handle.model).__name__}: {exc}") from None
        for name in Path(tmp).iterdir():
            if name.name.startswith(("tokenizer", "special_tokens", "generation_config")):
                shutil.copy(name, target / name.name)
    return CTranslate2LM(target, handle, compute_type=quantization)
