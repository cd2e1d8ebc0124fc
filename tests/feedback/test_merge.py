"""Weight merging: averaging, task arithmetic, TIES, DARE, LoRA experts, selection and refusals."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from _merge_fixtures import DOMAINS, TASKS, tiny_large, tiny_swarm
from pydantic import ValidationError

from fanbu.derive.finetune.config import LoraSettings
from fanbu.derive.finetune.lora import add_lora, load_adapter, save_adapter
from fanbu.errors import ConfigError
from fanbu.feedback import get_strategy
from fanbu.feedback.shared.weights import SelectionConfig, plain_state
from fanbu.feedback.strategies.merge import MergeConfig, merge_strategy
from fanbu.models.artefact import Provenance
from fanbu.models.encoder import EncoderHandle

NO_SELECTION = SelectionConfig(enabled=False)


def _states_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 1e-6) -> bool:
    return set(a) == set(b) and all(torch.allclose(a[k], b[k], atol=atol) for k in a)


def test_merge_is_registered_with_its_config() -> None:
    info = get_strategy("merge")
    assert info.config is MergeConfig
    assert "TIES" in info.summary and "arxiv" in info.reference


@pytest.mark.parametrize(
    "config",
    [
        MergeConfig(method="average", selection=NO_SELECTION),
        MergeConfig(method="task_arithmetic", selection=NO_SELECTION),
        MergeConfig(method="ties", density=1.0, selection=NO_SELECTION),
    ],
    ids=["average", "task_arithmetic", "ties"],
)
def test_merging_identical_experts_returns_the_expert(config: MergeConfig, tmp_path: Path) -> None:
    swarm = tiny_swarm()
    expert = swarm.experts["sentiment"]
    ctx = swarm.context(tmp_path, {"sentiment": expert, "topic": copy.deepcopy(expert)})
    out = merge_strategy(ctx, config)
    assert _states_close(plain_state(out.handle), plain_state(expert), atol=1e-5)
    texts = swarm.tests["sentiment"][0]
    assert torch.allclose(
        torch.tensor(out.handle.predict_proba(texts, "sentiment")),
        torch.tensor(expert.predict_proba(texts, "sentiment")),
        atol=1e-5,
    )


def test_average_of_two_experts_is_the_tensor_mean(tmp_path: Path) -> None:
    swarm = tiny_swarm()
    out = merge_strategy(swarm.context(tmp_path), MergeConfig(method="average", selection=NO_SELECTION))
    a, b = (plain_state(swarm.experts[d]) for d in DOMAINS)
    mean = {k: (a[k] + b[k]) / 2 for k in a}
    assert _states_close(plain_state(out.handle), mean, atol=1e-6)
    assert out.relation == "merge" and out.details["selected"] == list(DOMAINS)


def test_heads_come_from_experts_and_heldout_heads_from_the_champion(tmp_path: Path) -> None:
    swarm = tiny_swarm()
    out = merge_strategy(swarm.context(tmp_path), MergeConfig(method="ties", selection=NO_SELECTION))
    for domain in DOMAINS:
        expected = swarm.experts[domain].model.heads[domain].weight
        assert torch.equal(out.handle.model.heads[domain].weight, expected)
    held = next(t for t in TASKS if t not in DOMAINS)
    assert torch.equal(out.handle.model.heads[held].weight, swarm.large.model.heads[held].weight)
    assert not torch.equal(
        plain_state(swarm.large)["embeddings.word_embeddings.weight"],
        plain_state(out.handle)["embeddings.word_embeddings.weight"],
    )


@pytest.mark.parametrize("method", ["ties", "dare_linear", "dare_ties"])
def test_sparse_merges_keep_shapes_and_reload(method: str, tmp_path: Path) -> None:
    swarm = tiny_swarm()
    ctx = swarm.context(tmp_path)
    config = MergeConfig(method=method, density=0.3, selection=NO_SELECTION)
    out = merge_strategy(ctx, config)
    merged, base = plain_state(out.handle), plain_state(swarm.large)
    assert {k: v.shape for k, v in merged.items()} == {k: v.shape for k, v in base.items()}
    assert all(torch.isfinite(v).all() for v in merged.values())
    again = merge_strategy(ctx, config)  # seeded: the same candidate twice
    assert _states_close(plain_state(again.handle), merged, atol=0)
    path = out.handle.save(tmp_path / method, Provenance(base_model_relation="merge"))
    loaded = EncoderHandle.load(path)
    texts = swarm.tests["topic"][0]
    assert torch.allclose(
        torch.tensor(loaded.predict_proba(texts, "topic")),
        torch.tensor(out.handle.predict_proba(texts, "topic")),
        atol=1e-6,
    )
    assert out.details["density"] == 0.3


def test_task_arithmetic_scales_the_summed_task_vectors(tmp_path: Path) -> None:
    swarm = tiny_swarm()
    config = MergeConfig(method="task_arithmetic", normalize=False, scaling=0.5, selection=NO_SELECTION)
    out = merge_strategy(swarm.context(tmp_path), config)
    base = plain_state(swarm.large)
    a, b = (plain_state(swarm.experts[d]) for d in DOMAINS)
    expected = {k: base[k] + 0.5 * ((a[k] - base[k]) + (b[k] - base[k])) for k in base}
    assert _states_close(plain_state(out.handle), expected, atol=1e-5)


def test_scalings_keep_the_lambda_best_on_validation(tmp_path: Path) -> None:
    swarm = tiny_swarm()
    config = MergeConfig(method="task_arithmetic", scalings=[1.0, 0.25, 0.5], selection=NO_SELECTION)
    out = merge_strategy(swarm.context(tmp_path), config)
    chosen = out.details["scalings"]
    scores = {float(k): v for k, v in chosen["val_acc_mean"].items()}
    assert sorted(scores) == [0.25, 0.5, 1.0] and chosen["on"] == sorted(DOMAINS)
    assert chosen["chosen"] == min(k for k, v in scores.items() if v == max(scores.values()))  # ties: mildest
    fixed = MergeConfig(method="task_arithmetic", scaling=chosen["chosen"], selection=NO_SELECTION)
    assert _states_close(plain_state(out.handle), plain_state(merge_strategy(swarm.context(tmp_path), fixed).handle))
    with pytest.raises(ValidationError, match="scaling .* or scalings"):
        MergeConfig(method="task_arithmetic", scaling=0.5, scalings=[0.5])
    with pytest.raises(ValidationError, match="average takes no scaling"):
        MergeConfig(method="average", scalings=[0.5])
    bare = swarm.context(tmp_path)
    bare.validation = {}
    with pytest.raises(ConfigError, match="merge.scalings: no validation split"):
        merge_strategy(bare, config)


def test_lora_expert_merges_as_its_merged_weights(tmp_path: Path) -> None:
    swarm = tiny_swarm()
    adapted = copy.deepcopy(swarm.large)
    adapted.model.encoder = add_lora(adapted.model.encoder, LoraSettings(r=4))
    with torch.no_grad():
        generator = torch.Generator().manual_seed(0)
        for name, param in adapted.model.encoder.named_parameters():
            if "lora_B" in name:
                param.copy_(0.05 * torch.randn(param.shape, generator=generator))
    saved = save_adapter(adapted, tmp_path / "adapter", Provenance())
    expert = load_adapter(swarm.large, saved)  # how fanbu stores LoRA experts: an adapter on the champion
    ctx = swarm.context(tmp_path, {"sentiment": expert})
    out = merge_strategy(ctx, MergeConfig(method="average", selection=NO_SELECTION))
    merged_lora = copy.deepcopy(expert.model.encoder).merge_and_unload().state_dict()
    assert _states_close(
        plain_state(out.handle), {k: v for k, v in merged_lora.items() if v.is_floating_point()}
    )
    assert not _states_close(plain_state(out.handle), plain_state(swarm.large))


def test_different_architecture_is_refused(tmp_path: Path) -> None:
    swarm = tiny_swarm()
    other = tiny_large(intermediate_size=48)
    with pytest.raises(ConfigError, match="different architecture.*swarm distillation"):
        merge_strategy(swarm.context(tmp_path, {"sentiment": other}), MergeConfig())


def test_selection_leaves_the_poisoned_expert_out(tmp_path: Path) -> None:
    swarm = tiny_swarm()
    ctx = swarm.context(tmp_path, {"sentiment": swarm.poisoned, "topic": swarm.experts["topic"]})
    out = merge_strategy(ctx, MergeConfig(method="ties"))
    assert out.details["selected"] == ["topic"]
    assert "sentiment" in out.details["excluded"]
    assert "below the champion" in out.details["excluded"]["sentiment"]
    assert torch.equal(
        out.handle.model.heads["sentiment"].weight, swarm.large.model.heads["sentiment"].weight
    )
    only_topic = merge_strategy(
        swarm.context(tmp_path, {"topic": swarm.experts["topic"]}), MergeConfig(method="ties")
    )
    assert _states_close(plain_state(out.handle), plain_state(only_topic.handle), atol=0)


def test_nothing_selected_is_an_error(tmp_path: Path) -> None:
    swarm = tiny_swarm()
    with pytest.raises(ConfigError, match="every expert was left out"):
        merge_strategy(swarm.context(tmp_path, {"sentiment": swarm.poisoned}), MergeConfig())


def test_config_checks() -> None:
    with pytest.raises(ValidationError, match="density applies"):
        MergeConfig(method="average", density=0.5)
    with pytest.raises(ValidationError, match="no scaling"):
        MergeConfig(method="average", scaling=2.0)
    with pytest.raises(ValidationError):
        MergeConfig(method="slerp")
    swarm = tiny_swarm()
    with pytest.raises(ConfigError, match="no expert for"):
        merge_strategy(swarm.context(Path(".")), MergeConfig(weights={"nope": 1.0}))


def test_the_champion_is_not_modified(tmp_path: Path) -> None:
    swarm = tiny_swarm()
    before = {k: v.clone() for k, v in swarm.large.model.state_dict().items()}
    merge_strategy(swarm.context(tmp_path), MergeConfig(method="dare_ties", selection=NO_SELECTION))
    after = swarm.large.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
