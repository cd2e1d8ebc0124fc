"""Sub-network transplant: each pruned student's change goes back to the large-model weights it was cut from.

A student cut by a prune (or search) stage carries a :class:`~fanbu.derive.prune.subnetwork.SubNetwork`:
per tensor, the large model's coordinates and its weights as cut. Its change since (``now - start``, the
pruner's query scale undone) placed at those coordinates in zeros of the champion's shapes is a task
vector that is zero wherever the student had no unit. The vectors are combined with the merge machinery
(:mod:`.merge`: average, task arithmetic, TIES, DARE through PEFT) and added to a copy of the champion;
a short fine-tune on the public slices may follow.

Choices:
- Coverage: the summing methods with ``normalize`` (average, task_arithmetic, dare_linear) normalise
  each entry's weights over the experts that cover it. A student that pruned a unit away has no opinion
  on it; counting its structural zero would shrink a unit kept by one student of four to a quarter of its
  update. TIES and DARE-TIES already average only the non-zero entries that agree in sign.
- Sparsity: ties / dare_* keep ``density`` of each student's own entries (trimmed in its coordinates
  before placing); a density of the large tensor would keep all of a small student.
- Heads: the champion's head of the domain gets its expert's head change along the hidden axis (the
  input features the student kept; check_experts makes the label rows match), whole: neither merged
  nor scaled, as merge takes each head from its expert. Columns of dropped hidden channels stay as they were.
- Scale: BERT's queries were multiplied by ``sqrt(d_new / d_old)`` when heads narrowed; the change is
  divided by the recorded factors, so it is a change of the large model's own weights.
- Source: a record from a large model of other shapes is refused; one cut from other weights of the same
  shapes (a domain fine-tune before the prune, an earlier champion) is applied, its change being
  relative to its own start, unless ``require_same_weights``.
"""

from __future__ import annotations

import copy

import torch
from peft import PeftModel
from peft.utils import merge_utils
from pydantic import Field
from torch import Tensor

from fanbu.derive.prune.subnetwork import (
    HEADS,
    Slice,
    SubNetwork,
    architecture_fingerprint,
    subnetwork_of,
    weights_fingerprint,
)
from fanbu.errors import ConfigError
from fanbu.feedback.shared.context import FeedbackContext, StrategyOutput, check_experts, register_strategy
from fanbu.feedback.shared.continual import ContinualConfig
from fanbu.feedback.shared.fit import fit_candidate
from fanbu.feedback.shared.weights import plain_state, require_selection, select_experts, validation_metrics
from fanbu.feedback.strategies.merge import (
    SPARSE,
    SUMMING,
    MergeConfig,
    Method,
    choose_scaling,
    combine_vectors,
    seeded_merge,
)
from fanbu.models.encoder import EncoderHandle
from fanbu.models.int8 import is_int8
from fanbu.train.config import TrainConfig
from fanbu.train.distill.losses import MaskedTaskLoss

DERIVE = "derive it with a prune stage from this champion, or drop transplant from strategies"
Change = dict[str, tuple[Slice, Tensor]]  # large tensor -> (its slice, the change there, student shape)


class TransplantConfig(MergeConfig):
    """How the students' changes are combined, and an optional short fine-tune afterwards."""

    method: Method = Field(
        "task_arithmetic",
        description="How the placed task vectors are combined (see merge.method); with normalize, the "
        "summing methods normalise each entry over the experts that cover it.",
    )
    require_same_weights: bool = Field(
        False,
        description="Refuse a student cut from other weights than the champion's (same shapes), e.g. a "
        "domain fine-tune before the prune or an earlier champion; false applies its change anyway.",
    )
    finetune: TrainConfig | None = Field(
        None,
        description="Fine-tune the candidate on the selected domains' public slices; null: no fine-tune.",
    )
    continual: ContinualConfig = Field(
        default_factory=ContinualConfig, description="Safeguards against forgetting during the fine-tune."
    )


def handle_state(handle: EncoderHandle) -> dict[str, Tensor]:
    """Encoder (a LoRA adapter merged into a copy) and head weights, named as in ``handle.model``."""
    heads = {f"heads.{k}": v.detach() for k, v in handle.model.heads.state_dict().items()}
    return {f"encoder.{k}": v for k, v in plain_state(handle).items()} | heads


def own_slices(record: SubNetwork, domain: str) -> dict[str, Slice]:
    """The recorded encoder tensors and the domain's own head (other heads are not transplanted)."""
    return {
        k: v for k, v in record.slices.items() if not k.startswith(HEADS) or k.startswith(f"heads.{domain}.")
    }


def checked_record(
    domain: str, expert: EncoderHandle, champion: dict[str, Tensor], same: str, config: TransplantConfig
) -> SubNetwork:
    """The expert's record, refused (ConfigError) unless it fits the champion (weights fingerprint
    ``same``) and the expert."""
    record = subnetwork_of(expert)
    where = f"transplant: expert {domain!r}"
    if record is None:
        raise ConfigError(f"{where} has no recorded sub-network; {DERIVE}")
    if is_int8(expert.model):
        raise ConfigError(f"{where} is int8; load its fp32 handle (runtime torch)")
    source = record.source or "unnamed"
    if record.architecture != architecture_fingerprint(champion):
        raise ConfigError(
            f"{where} was pruned from {source}, whose tensor shapes differ from the champion's; {DERIVE}"
        )
    if config.require_same_weights and record.weights != same:
        raise ConfigError(
            f"{where} was pruned from {source}, whose weights differ from the champion's; {DERIVE}, or set "
            "require_same_weights: false"
        )
    state = handle_state(expert)
    for name, piece in own_slices(record, domain).items():
        if name not in state or state[name].shape != record.start[name].shape:
            raise ConfigError(
                f"{where} no longer matches its record at {name} (a later stage reshaped it); {DERIVE}"
            )
        if piece.source not in champion or tuple(champion[piece.source].shape) != piece.shape:
            raise ConfigError(
                f"transplant: the champion has no {piece.source} of shape {piece.shape}; {DERIVE}"
            )
    return record


def student_change(
    domain: str, expert: EncoderHandle, record: SubNetwork, config: TransplantConfig
) -> Change:
    """The student's change since its cut, in the large model's units (encoder ones sparsified for
    ties / dare_* in the student's own coordinates)."""
    state = handle_state(expert)
    change: Change = {}
    for name, piece in own_slices(record, domain).items():
        delta = (state[name].float() - record.start[name].float()) / piece.factor  # (student shape)
        if config.method in SPARSE and not name.startswith(HEADS):
            how = "magnitude" if config.method == "ties" else "random"
            delta = merge_utils.prune(delta, config.kept, how, rescale=True)
        change[piece.source] = (piece, delta)
    return change


def merge_changes(
    champion: dict[str, Tensor],
    changes: dict[str, Change],
    weights: dict[str, float],
    config: MergeConfig,
) -> dict[str, Tensor]:
    """``champion + scaling * merge(placed changes)`` per encoder tensor; each head gets its change whole."""
    merged: dict[str, Tensor] = {}
    for key in sorted({k for change in changes.values() for k in change}):
        base = champion[key]
        domains = [d for d in sorted(changes) if key in changes[d]]
        placed = [changes[d][key][0].place(changes[d][key][1]).to(base.device) for d in domains]  # (*base)
        if key.startswith(HEADS):  # one expert per head: neither merged nor scaled
            merged[key] = (base.float() + placed[0]).to(base.dtype)
            continue
        w = torch.tensor([weights[d] for d in domains], device=base.device)  # (experts,)
        delta = combine_vectors(placed, w, config, density=1.0)  # (*base); sparsified already
        if config.method in SUMMING and config.normalize:  # over the experts covering each entry
            ones = [changes[d][key][0].place(torch.ones_like(changes[d][key][1])) for d in domains]
            cover = (torch.stack(ones).to(base.device) * w.view(-1, *[1] * base.dim())).sum(dim=0)  # (*base)
            delta = delta / torch.where(cover > 0, cover, torch.ones_like(cover))
        merged[key] = (base.float() + config.scaling * delta).to(base.dtype)
    return merged


@register_strategy(
    "transplant",
    summary="Sub-network transplant: each pruned student's change since its cut goes back to the large-model "
    "coordinates it came from, merged (average, task arithmetic, TIES, DARE)",
    reference="https://arxiv.org/abs/2306.01708 (TIES); https://arxiv.org/abs/2212.04089 (task arithmetic)",
    config=TransplantConfig,
    capabilities={"pruned_experts"},
)
def transplant_strategy(ctx: FeedbackContext, config: TransplantConfig) -> StrategyOutput:
    """Add the selected students' placed, merged changes to a copy of the champion."""
    check_experts(ctx, "transplant")
    unknown = sorted(set(config.weights or {}) - set(ctx.domains))
    if unknown:
        raise ConfigError(f"transplant.weights: no expert for {unknown}; experts: {ctx.domains}")
    if isinstance(ctx.large.model.encoder, PeftModel):
        raise ConfigError("transplant: the champion carries an unmerged adapter; merge it (merge_lora) first")
    champion = {k: v for k, v in ctx.large.model.state_dict().items() if v.is_floating_point()}
    same = weights_fingerprint(champion)
    records = {d: checked_record(d, ctx.experts[d], champion, same, config) for d in ctx.domains}
    selected, details = select_experts(ctx, config.selection)
    require_selection(selected, details, "transplant")
    weights = {d: 1.0 if config.weights is None else config.weights.get(d, 1.0) for d in selected}
    if config.method in SUMMING and config.normalize and sum(weights.values()) <= 0:
        raise ConfigError(
            f"transplant.weights: {weights} sum to zero; give a selected expert a positive weight"
        )
    train = {d: ctx.public[d] for d in selected if d in ctx.public and len(ctx.public[d][0])}
    if config.finetune is not None and not train:
        raise ConfigError("transplant.finetune: no public slice of a selected domain; set finetune: null")
    with seeded_merge(ctx.seed):
        changes = {d: student_change(d, ctx.experts[d], records[d], config) for d in selected}
    candidate = copy.deepcopy(ctx.large)
    candidate.subnetwork = None

    def build(settings: MergeConfig) -> dict[str, Tensor]:
        with seeded_merge(ctx.seed):
            return merge_changes(champion, changes, weights, settings)

    def load(handle: EncoderHandle, merged: dict[str, Tensor]) -> None:
        handle.model.load_state_dict(merged, strict=False)  # every key is the champion's (checked_record)

    if config.scalings is None:
        load(candidate, build(config))
    else:
        details["scalings"] = choose_scaling(ctx, candidate, selected, config, build, load, "transplant")
    metrics: dict[str, float] = {}
    if config.finetune is not None:
        settings = config.finetune.model_copy(update={"seed": ctx.seed})
        result = fit_candidate(
            candidate, ctx, train, [MaskedTaskLoss()], settings, config.continual, "transplant"
        )
        metrics["steps"] = float(result.state.global_step)
    total = sum(v.numel() for k, v in champion.items() if not k.startswith(HEADS))
    details.update(method=config.method, weights=weights, finetune=config.finetune is not None)
    details["density"] = config.kept if config.method in SPARSE else None
    details["sources"] = {
        d: {"source": r.source, "same_weights": r.weights == same} for d, r in records.items()
    }
    for domain, change in changes.items():  # share of the encoder's entries each student covers; its head
        covered = sum(v.numel() for k, (_, v) in change.items() if not k.startswith(HEADS))
        details.setdefault("coverage", {})[domain] = covered / total
        details.setdefault("heads", {})[domain] = sorted(k for k in change if k.startswith(HEADS))
    return StrategyOutput(candidate, "merge", {**metrics, **validation_metrics(ctx, candidate)}, details)
