"""Tiny random models for tests and dry runs: a tokenizer that needs no download, and small modules.

The tokenizer is a WordPiece over lowercase letters, digits and punctuation (each also as a ``##``
continuation piece) plus a few hundred common English words and suffixes, so toy sentences become short
sequences without any file from the hub. It carries both BERT's special tokens and a ``bos``/``eos`` pair
(``[CLS]``/``[SEP]``), so the tiny encoder and the tiny causal LM share it.
"""

from __future__ import annotations

import string

import torch
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece
from torch import Tensor, nn
from transformers import PreTrainedTokenizerFast

from fanbu.models.module import module_factory

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

_WORDS = """
the of and to in is was for on that with as it by at from his be are an or have not this but had
they which one you were her all she there their has been would if when we will more no can who
out so said what up its about into than them time only some could new these two may first then do
any like my now over such our man me even most made after also did many before must through back
years where much your way well down should because each just those people how too little state good
very make world still own see men work long get here between both life being under never day same
another know while last might us great old year off come since against go came right used take three
states himself few house use during without again place around however home small found mrs thought
went say part once general high upon school every don does got united left number course war until
always away something fact though water less public put think almost hand enough far took head yet
government system better set told nothing night end why called didn eyes find going look asked later
knew point next program city business give group toward young let room president side social given
present several order national possible rather second per face among form important often things
looked early white case john become large big need four within felt along children saw best church
ever least power development light thing seemed family interest want members mind country area others
done turned although open god service certain kind problem began different door thus help sense means
whole matter perhaps itself york times law human line above name example action company hands local
show five history whether gave either today act feet across taken past quite anything seen having death
body experience half really week words field car already information tell together college shall money
period held keep sure probably free seems political real behind cannot question air office making brought
whose special heard major problems ago became federal moment study available known result street
economic boy position reason change south board individual job society areas west close turn love
community true court force full seem am wife age policy voice stood whom plan disease patient patients
doctor health medical treatment drug risk data model models learning test good bad great poor
excellent terrible happy sad positive negative yes no please thank thanks hello sport sports game team
computer software hardware space science religion politics market price buy sell
""".split()  # noqa: SIM905 (a word list reads better as text)

_SUFFIXES = ("s", "es", "ed", "ing", "er", "ers", "est", "ly", "ion", "ions", "tion", "ment", "ness")


def _vocabulary() -> dict[str, int]:
    pieces: list[str] = list(SPECIAL_TOKENS)
    chars = string.ascii_lowercase + string.digits + string.punctuation
    pieces += list(chars)
    pieces += [f"##{c}" for c in chars]
    pieces += [f"##{s}" for s in _SUFFIXES]
    pieces += _WORDS
    vocab: dict[str, int] = {}
    for piece in pieces:
        vocab.setdefault(piece, len(vocab))
    return vocab


def tiny_tokenizer(model_max_length: int = 512) -> PreTrainedTokenizerFast:
    """A small WordPiece tokenizer built in memory (no download); saves and loads like any HF tokenizer.

    Args:
        model_max_length: The longest sequence the tokenizer reports it accepts.
    """
    vocab = _vocabulary()
    backend = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True, clean_text=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    backend.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        bos_token="[CLS]",
        eos_token="[SEP]",
        model_max_length=model_max_length,
        model_input_names=["input_ids", "attention_mask"],
    )


class BagOfTokens(nn.Module):
    """A plain ``nn.Module`` classifier (mean of token embeddings, then a linear layer) for adapter tests."""

    def __init__(self, vocab_size: int, hidden_size: int = 16, num_labels: int = 2) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, hidden_size)
        self.head = nn.Linear(hidden_size, num_labels)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Logits ``(batch, num_labels)`` from the masked mean of the token embeddings."""
        mask = attention_mask.unsqueeze(-1).to(self.embedding.weight.dtype)  # (batch, seq, 1)
        summed = (self.embedding(input_ids) * mask).sum(dim=1)  # (batch, hidden)
        pooled = summed / mask.sum(dim=1).clamp(min=1.0)  # (batch, hidden)
        return self.head(pooled)  # (batch, num_labels)


@module_factory
def bag_of_tokens(vocab_size: int, hidden_size: int = 16, num_labels: int = 2, seed: int = 0) -> BagOfTokens:
    """Factory for :class:`BagOfTokens` (``fanbu.models.tiny:bag_of_tokens``), seeded for reproducibility."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return BagOfTokens(vocab_size, hidden_size, num_labels)
