"""Integrated gradients: completeness on a linear model, word aggregation on a tiny encoder."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fanbu.attribution import IGConfig, layer_attributions, word_scores
from fanbu.attribution.integrated import occurrences, pad_baseline, text_words
from fanbu.models import EncoderHandle


class BagOfEmbeddings(nn.Module):
    """logits = W (sum of the unmasked tokens' embeddings) + b: linear in the embedding layer's output."""

    def __init__(self, vocab: int = 20, width: int = 6, classes: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embedding = nn.Embedding(vocab, width)
        self.linear = nn.Linear(width, classes)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        embedded = self.embedding(input_ids) * attention_mask.unsqueeze(-1)  # (batch, seq, width)
        return self.linear(embedded.sum(dim=1))  # (batch, classes)


def test_attributions_sum_to_output_minus_baseline_output_on_a_linear_model():
    model = BagOfEmbeddings()
    ids = torch.tensor([[1, 5, 7, 9, 2], [1, 4, 4, 2, 0]])  # (batch, seq); 0 pads, 1 / 2 are special
    mask = (ids != 0).long()
    baseline = pad_baseline(ids, special_ids=[0, 1, 2], pad_id=0)
    assert baseline.tolist() == [[1, 0, 0, 0, 2], [1, 0, 0, 2, 0]]
    target = torch.tensor([0, 2])
    attr, delta = layer_attributions(model, model.embedding, ids, mask, target, baseline, steps=4)
    with torch.no_grad():
        gap = model(ids, mask).gather(1, target[:, None]) - model(baseline, mask).gather(1, target[:, None])
    assert attr.shape == ids.shape
    torch.testing.assert_close(attr.sum(dim=1), gap.squeeze(1), atol=1e-5, rtol=1e-5)
    assert delta.abs().max() < 1e-5
    assert attr[0, 0] == 0 and attr[0, 4] == 0  # special tokens equal their baseline: nothing to attribute


def test_pieces_of_a_word_add_up_to_one_occurrence():
    text = "the zqxv model, data"
    offsets = [(0, 0), (0, 3), (4, 5), (5, 6), (6, 8), (9, 14), (14, 15), (16, 20), (0, 0)]
    special = [True, False, False, False, False, False, False, False, True]
    words = text_words(text, offsets, special)
    found = occurrences(words, [9.0, 1.0, 0.5, 0.25, 0.25, 2.0, 0.5, 3.0, 9.0])
    assert found == [("the", 1.0), ("zqxv", 1.0), ("model", 2.5), ("data", 3.0)]


def test_word_scores_on_a_tiny_encoder_cover_the_words_and_drop_special_tokens():
    handle = EncoderHandle.tiny(seed=0)
    handle.add_head("topic", ["a", "b"], seed=0)
    texts = ["the computer software zqxv", "the doctor and the patient", "space science of the world"]
    scores = word_scores(handle, "topic", texts, IGConfig(steps=8, batch_size=2))
    words = {word for _, word in scores.counts}
    assert {"computer", "zqxv", "doctor", "space", "the"} <= words
    assert not any(w.startswith(("[", "##")) for w in words)
    assert sum(c for (_, w), c in scores.counts.items() if w == "the") == 4
    assert scores.scale > 0 and scores.delta < 1e-3 * scores.scale  # the path sum matches the logit gap
