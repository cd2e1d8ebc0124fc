"""脱胎 for policies: a small policy for one variant, born from the general policy.

Two composable parts, as for the text models: structured pruning (:func:`prune_policy`) physically
removes hidden neurons of the general policy's MLP, the least important first (importance: the norm of
a neuron's incoming weights times the norm of its outgoing weights, the magnitude criterion of
structured pruning; no masks are left), then DAgger distillation (:mod:`fanbu.rl.distill`) on the
variant, with the general policy as the one teacher, recovers what the cut lost there.
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch
from pydantic import Field
from torch import Tensor

from fanbu.config import Strict
from fanbu.derive.prune.plan import keep_top
from fanbu.errors import ConfigError
from fanbu.rl.distill import DistillConfig, DistillResult, distill_policies
from fanbu.rl.policy import PolicyMLP, build_policy
from fanbu.rl.variants import Variant


class PolicyDeriveConfig(Strict):
    """How a small policy is derived from the general one for one variant."""

    keep: float = Field(0.5, gt=0, le=1, description="Share of each hidden layer's neurons kept (at least one).")
    distill: DistillConfig = Field(default_factory=DistillConfig,
                                   description="The distillation on the variant that follows the cut.")


def neuron_importance(policy: PolicyMLP) -> list[Tensor]:
    """Per hidden layer, each neuron's ``||incoming weights|| * ||outgoing weights||``."""
    linears = policy.linears()
    scores = []
    for inner, outer in pairwise(linears):
        incoming = torch.cat([inner.weight, inner.bias[:, None]], dim=1).norm(dim=1)  # (width,)
        outgoing = outer.weight.norm(dim=0)  # (width,)
        scores.append(incoming * outgoing)
    return scores


@torch.no_grad()
def prune_policy(policy: PolicyMLP, keep: float) -> PolicyMLP:
    """A smaller policy keeping the ``keep`` share of each hidden layer's most important neurons."""
    if not 0 < keep <= 1:
        raise ConfigError(f"keep={keep}: keep a share of the neurons in (0, 1]")
    linears = policy.linears()
    kept = [keep_top(scores, max(1, math.ceil(keep * len(scores)))) for scores in neuron_importance(policy)]
    small = build_policy(policy.obs_dim, policy.n_actions, [len(k) for k in kept], policy.activation)
    rows: list[Tensor | None] = [*kept, None]  # which outputs each layer keeps (all of the last)
    cols: list[Tensor | None] = [None, *kept]  # which inputs it reads (all of the first)
    for source, target, out_index, in_index in zip(linears, small.linears(), rows, cols, strict=True):
        weight, bias = source.weight, source.bias  # (out, in), (out,)
        if out_index is not None:
            weight, bias = weight[out_index], bias[out_index]
        if in_index is not None:
            weight = weight[:, in_index]
        target.weight.copy_(weight)
        target.bias.copy_(bias)
    return small


def derive_small_policy(general: PolicyMLP, variant: Variant, config: PolicyDeriveConfig,
                        seed: int = 0) -> tuple[PolicyMLP, DistillResult]:
    """Cut ``general`` to ``config.keep`` of its neurons, then distil it back on ``variant``."""
    small = prune_policy(general, config.keep)
    result = distill_policies(small, {variant.name: general}, [variant], config.distill, seed)
    return small, result
