"""Every predictor runs texts in runs of similar length and answers in the order of the texts."""

from __future__ import annotations

import numpy as np

from fanbu.models import EncoderHandle
from fanbu.models.predict import CHARS_PER_TOKEN, PAD_SLACK, Predictor, length_runs


def test_length_runs_cover_every_text_once_in_runs_of_similar_length() -> None:
    rng = np.random.default_rng(0)
    texts = ["w " * int(n) for n in rng.integers(1, 400, 60)]
    runs = length_runs(texts, max_length=64, batch_size=8)
    assert sorted(i for run in runs for i in run) == list(range(60))
    cap = 64 * CHARS_PER_TOKEN
    for run in runs:
        sizes = [min(len(texts[i]), cap) for i in run]
        assert len(run) <= 8 and max(sizes) <= PAD_SLACK * min(sizes)
    firsts = [min(len(texts[run[0]]), cap) for run in runs]
    assert firsts == sorted(firsts, reverse=True)  # longest first


def test_texts_past_the_token_budget_share_a_run() -> None:
    long = ["word " * n for n in (60, 90, 200)]  # all longer than 32 * CHARS_PER_TOKEN characters
    assert length_runs([*long, "short"], max_length=32, batch_size=8) == [[0, 1, 2], [3]]
    assert length_runs(["", "a", ""], max_length=32, batch_size=2) == [[0, 1], [2]]  # empty texts too


def test_a_handle_predicts_in_length_runs_in_the_texts_order() -> None:
    handle = EncoderHandle.tiny(max_length=32)
    handle.add_head("topic", ["a", "b", "c"])
    texts = [t * k for k in (1, 5, 2, 9) for t in ("alpha beta ", "gamma ", "delta epsilon zeta ")]
    batches: list[list[str]] = []
    tokenize = handle.tokenize
    handle.tokenize = lambda batch: (batches.append(list(batch)), tokenize(batch))[1]  # type: ignore[method-assign]
    probs = handle.predict_proba(texts, "topic", batch_size=4)
    one_by_one = np.concatenate([handle.predict_proba([t], "topic", 1) for t in texts])
    np.testing.assert_allclose(probs, one_by_one, atol=1e-5)
    assert sorted(t for batch in batches[: len(batches) - len(texts)] for t in batch) == sorted(texts)
    assert len(batches) - len(texts) > len(texts) // 4  # split by length, not only by batch size
    assert isinstance(handle, Predictor)
