"""CTranslate2 generation for served causal LMs: a derived LM answers through its int8 edge export.

``fanbu derive``'s export stage writes a CTranslate2 model under ``<model dir>/ctranslate2/``
(:func:`fanbu.models.lm_export.export_ctranslate2`); :class:`CT2Engine` generates with it under the same
contract as the PyTorch loop (:func:`fanbu.serve.lm_engine.generate`): the same prompt token ids, stop
strings, held-back text and streamed pieces (:class:`~fanbu.serve.lm_engine.TextStream`), ``max_tokens``,
temperature (0 is greedy), top-p, a per-request seed, cancellation and the finish reason.

Log-probabilities: CTranslate2's per-step ``log_prob`` is the model's own log-softmax at temperature 1,
before temperature and top-p (checked against the PyTorch model at temperatures 0.5 and 2 and top-p 0.3
and 0.5), so it is kept as it is, as the PyTorch loop keeps its own.

Seeds: CTranslate2 has one random seed per process (``ctranslate2.set_random_seed``), and each of its
worker threads seeds its own generator from it once, when the thread first samples; a thread that has
sampled before ignores a later seed (checked on ctranslate2 4.8: a second seeded request on the same
replica did not repeat the first). So a seeded request sets the seed (modulo 2**32 - 1: it is 32-bit,
and 2**32 - 1 means a random one) and generates on a fresh replica (a new ``ctranslate2.Generator`` on
the same directory, whose new thread takes that seed) while it holds :data:`SEEDED`: seeded sampling
runs one request at a time in the whole process and pays a model load each (about as long as
loading the export at start-up); greedy and unseeded requests run on the shared replicas, in parallel.
It then sets a fresh random seed, so that a replica that first samples later does not repeat it.

Threads: ``inter_threads`` is ``generation.workers`` (replicas sharing one copy of the weights, so the
workers generate in parallel), ``intra_threads`` the server's ``threads``.
"""

from __future__ import annotations

import importlib.util
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from fanbu.errors import ModelError
from fanbu.serve.lm_engine import Output, Sampling, TextStream

CT2_DIR = "ctranslate2"  # where the derive export stage puts the CTranslate2 model in a model directory
SEEDED = threading.Lock()  # held by a seeded CTranslate2 generation, from setting the seed to its end


def ct2_installed() -> bool:
    """Whether the ctranslate2 package can be imported (``pip install fanbu[lm]``)."""
    return importlib.util.find_spec("ctranslate2") is not None


def ct2_export(model_dir: str | Path) -> Path | None:
    """The CTranslate2 model under ``model_dir`` (``ctranslate2/model.bin``), or None."""
    directory = Path(model_dir) / CT2_DIR
    return directory if (directory / "model.bin").is_file() else None


class CT2Engine:
    """Generation with a CTranslate2 export on CPU, in the weights' type as exported (int8 from derive)."""

    runtime = "ctranslate2"

    def __init__(
        self,
        directory: str | Path,
        tokenizer: PreTrainedTokenizerBase,
        workers: int = 1,
        threads: int = 0,
        compute_type: str = "default",
    ) -> None:
        """Load ``directory`` with ``workers`` replicas of ``threads`` intra-op threads each (0: ctranslate2's default).

        Raises:
            ModelError: ctranslate2 is not installed, or the directory does not load.
        """
        if not ct2_installed():
            raise ModelError(
                "serving a CTranslate2 export needs the ctranslate2 package: pip install 'fanbu[lm]'"
            )
        self.directory = Path(directory)
        self.tokenizer = tokenizer
        self.threads, self.compute_type = threads, compute_type
        try:
            self.generator = self._replicas(workers)
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"{self.directory}: the CTranslate2 model does not load ({exc})") from None

    def _replicas(self, count: int) -> Any:
        """A ``ctranslate2.Generator`` on this directory with ``count`` replicas (worker threads)."""
        import ctranslate2

        return ctranslate2.Generator(
            str(self.directory),
            device="cpu",
            compute_type=self.compute_type,
            inter_threads=count,
            intra_threads=self.threads,
        )

    def warm_up(self, token: int) -> None:
        """Generate one token after ``token`` (builds the replicas' lazy state once)."""
        self.generator.generate_batch(
            [self.tokenizer.convert_ids_to_tokens([token])], max_length=1, include_prompt_in_result=False
        )

    def run(
        self,
        prompt_ids: list[int],
        sampling: Sampling,
        eos_ids: frozenset[int],
        on_text: Callable[[str], None] | None = None,
        cancelled: threading.Event | None = None,
    ) -> Output:
        """Complete ``prompt_ids`` (blocking; run it in a worker thread), calling ``on_text`` per new piece."""
        out = Output(text="")
        if cancelled is not None and cancelled.is_set():
            out.finish_reason = "cancelled"
            return out
        stream = TextStream(self.tokenizer, sampling.stop, out, on_text)
        failed: list[BaseException] = []

        def step(result: Any) -> bool:  # a ctranslate2.GenerationStepResult, in a ctranslate2 thread
            try:
                out.logprobs.append(float(result.log_prob))
                if result.token_id in eos_ids:
                    out.finish_reason = "stop"
                    return True
                if stream.add(int(result.token_id)):
                    return True
                if cancelled is not None and cancelled.is_set():
                    out.finish_reason = "cancelled"
                    return True
                return False
            except BaseException as exc:  # noqa: BLE001 - raised again in the calling thread below
                failed.append(exc)
                return True

        options: dict[str, Any] = {
            "max_length": sampling.max_tokens,
            "end_token": sorted(eos_ids) or None,
            "return_end_token": True,
            "include_prompt_in_result": False,
            "return_scores": True,
            "callback": step,
        }
        tokens = [self.tokenizer.convert_ids_to_tokens(prompt_ids)]
        if sampling.temperature == 0.0:
            self.generator.generate_batch(tokens, sampling_topk=1, **options)
        else:
            self._sample(tokens, sampling, options)
        if failed:
            raise failed[0]
        stream.flush()
        return out

    def _sample(self, tokens: list[list[str]], sampling: Sampling, options: dict[str, Any]) -> None:
        """Sample from the whole vocabulary under temperature and top-p; a seed takes a fresh replica."""
        import ctranslate2

        def draw(generator: Any) -> None:
            generator.generate_batch(
                tokens,
                sampling_topk=0,
                sampling_topp=sampling.top_p,
                sampling_temperature=sampling.temperature,
                **options,
            )

        if sampling.seed is None:
            draw(self.generator)
            return
        with SEEDED:
            ctranslate2.set_random_seed(sampling.seed % (2**32 - 1))  # 32-bit; 2**32 - 1 means "random"
            try:
                draw(self._replicas(1))  # its one new thread seeds itself from the seed just set
            finally:
                ctranslate2.set_random_seed(secrets.randbits(31))
