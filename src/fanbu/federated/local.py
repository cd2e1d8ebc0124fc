"""A client's local work on shared parameters: which weights travel, and FedProx's proximal term.

The exchanged weights are the model's *trainable* parameters, by name: every weight of the encoder
and the heads (``share.mode: full``), or only the LoRA adapters and the heads (``share.mode: lora``,
PEFT's adapters on a frozen copy of the champion). FedProx's term is a strategy of the one training
loop (:class:`ProximalTerm`), so local training is ``train_heads`` with one more loss term.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor, nn

from fanbu.derive.finetune.lora import add_lora, is_adapted, merge_lora
from fanbu.errors import ConfigError
from fanbu.federated.recipe import SharingConfig
from fanbu.models.encoder import EncoderHandle
from fanbu.train.terms import Batch


def shared_model(champion: EncoderHandle, share: SharingConfig, seed: int) -> EncoderHandle:
    """A copy of the champion shaped for the exchange: as is (full), or with fresh LoRA adapters.

    The LoRA initialisation is seeded, but only the server's matters: clients overwrite the adapters
    with the global ones before every round.
    """
    handle = copy.deepcopy(champion)
    if share.mode == "lora":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            handle.model.encoder = add_lora(handle.model.encoder, share.lora)
    return handle


def finish_shared(handle: EncoderHandle) -> EncoderHandle:
    """The final large model: LoRA merged into the weights (a plain encoder again), in place."""
    if is_adapted(handle):
        merge_lora(handle)
    for param in handle.model.parameters():
        param.requires_grad_(True)
    return handle


def trainable_arrays(model: nn.Module) -> dict[str, np.ndarray]:
    """The trainable parameters by name, as float32 numpy arrays (the exchanged weights)."""
    return {
        name: p.detach().cpu().float().numpy().copy()
        for name, p in model.named_parameters()
        if p.requires_grad
    }


def load_arrays(model: nn.Module, arrays: Mapping[str, np.ndarray]) -> None:
    """Copy ``arrays`` into the model's trainable parameters of the same names.

    Raises:
        ConfigError: the names or shapes differ (client and server built different models).
    """
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if set(params) != set(arrays):
        missing, extra = sorted(set(params) - set(arrays))[:3], sorted(set(arrays) - set(params))[:3]
        raise ConfigError(
            f"the received weights do not fit this model (missing {missing}, unexpected {extra}); client "
            "and server must start from the same champion and the same share settings"
        )
    with torch.no_grad():
        for name, param in params.items():
            value = torch.as_tensor(np.asarray(arrays[name]))
            if tuple(value.shape) != tuple(param.shape):
                raise ConfigError(
                    f"received {name} of shape {tuple(value.shape)}, the model has {tuple(param.shape)}"
                )
            param.copy_(value.to(param.dtype))


class ProximalTerm:
    """FedProx (Li et al. 2020, https://arxiv.org/abs/1812.06127): ``mu / 2 * ||w - w_t||^2``.

    ``w_t`` are the global weights the round started from; the sum runs over the exchanged
    (trainable) parameters, so local training cannot drift far from them.
    """

    name = "proximal"

    def __init__(self, model: nn.Module, mu: float) -> None:
        if mu <= 0:
            raise ConfigError(f"proximal mu must be > 0, got {mu}")
        self.mu = mu
        self.anchor = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def losses(self, outputs: Mapping[str, Tensor], batch: Batch, model: nn.Module) -> Mapping[str, Tensor]:
        core = model.module if isinstance(getattr(model, "module", None), nn.Module) else model
        total = outputs["logits"].sum() * 0.0
        for name, param in core.named_parameters():
            if name in self.anchor:
                total = total + ((param - self.anchor[name].to(param.device)) ** 2).sum()
        return {"proximal": 0.5 * self.mu * total}
