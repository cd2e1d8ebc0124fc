"""Learning-rate factors per parameter-name prefix: the optimiser's groups, training, checkpoints."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError

from fanbu.errors import CheckpointError, ConfigError
from fanbu.train import TaskLoss, TextPlan, TrainConfig, Trainer, latest_checkpoint
from fanbu.train.batching import TaskData
from fanbu.train.loop import build_optimizer, build_schedule, lr_factor

from .conftest import TinyClassifier, tokenize
from .test_loop import CrashAt, Interrupt

FACTORS = {"embed.": 0.1, "heads.": 0.5, "heads.a.": 2.0}


def make_plan(toy_data) -> TextPlan:
    tasks = [TaskData(name, texts, labels) for name, (texts, labels) in toy_data.items()]
    return TextPlan(tasks, tokenize, batch_size=8, seed=0)


def config(**kw) -> TrainConfig:
    base = {"epochs": 3, "batch_size": 8, "lr": 0.05, "progress": False, "warmup_ratio": 0.0}
    return TrainConfig(**{**base, **kw})


def model() -> TinyClassifier:
    torch.manual_seed(0)
    return TinyClassifier({"a": 2, "b": 3})


def test_the_longest_matching_prefix_wins() -> None:
    assert lr_factor("heads.a.weight", FACTORS) == 2.0
    assert lr_factor("heads.b.weight", FACTORS) == 0.5
    assert lr_factor("embed.weight", FACTORS) == 0.1
    assert lr_factor("dropout.x", FACTORS) == 1.0


def test_each_parameter_gets_its_factor_and_keeps_its_weight_decay() -> None:
    net = model()
    optimizer = build_optimizer(net, config(lr_multipliers=FACTORS, weight_decay=0.01))
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(net.parameters()))
    for name, param in net.named_parameters():
        group = group_of[id(param)]
        assert group["lr"] == pytest.approx(0.05 * lr_factor(name, FACTORS)), name
        assert group["lr_factor"] == lr_factor(name, FACTORS)
        assert group["weight_decay"] == (0.0 if name.endswith("bias") else 0.01), name
    assert optimizer.defaults["fused"]  # the fused path is kept
    scheduler = build_schedule(optimizer, config(lr_multipliers=FACTORS), total_steps=10)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    for group in optimizer.param_groups:  # linear decay, 4 of 10 steps: every group at 6/10 of its rate
        assert group["lr"] == pytest.approx(0.05 * group["lr_factor"] * 6 / 10)


def test_factors_of_one_train_bit_for_bit_as_without_factors(toy_data) -> None:
    plain, ones = model(), model()
    Trainer(plain, make_plan(toy_data), config(), [TaskLoss()]).fit()
    Trainer(ones, make_plan(toy_data), config(lr_multipliers={"": 1.0}), [TaskLoss()]).fit()
    for (name, a), (_, b) in zip(plain.state_dict().items(), ones.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_factors_change_what_each_part_learns(toy_data) -> None:
    start, plain, slow = model(), model(), model()
    Trainer(plain, make_plan(toy_data), config(epochs=1), [TaskLoss()]).fit()
    Trainer(slow, make_plan(toy_data), config(epochs=1, lr_multipliers={"embed.": 0.01}), [TaskLoss()]).fit()
    moved = [(net.embed.weight - start.embed.weight).abs().sum().item() for net in (plain, slow)]
    assert moved[1] < 0.1 * moved[0]


def test_bad_factors_and_prefixes_say_what_to_do() -> None:
    with pytest.raises(ValidationError, match="finite number > 0.*frozen_layers"):
        config(lr_multipliers={"embed.": 0.0})
    for bad in (-1.0, float("nan"), float("inf")):  # nan/inf: refused by every recipe section (Strict)
        with pytest.raises(ValidationError, match="finite number"):
            config(lr_multipliers={"embed.": bad})
    with pytest.raises(ConfigError, match=r"\['encoder\.'\] match no parameter name"):
        build_optimizer(model(), config(lr_multipliers={"encoder.": 0.5}))
    frozen = model()
    frozen.embed.requires_grad_(False)  # a frozen part's prefix is not a typo
    optimizer = build_optimizer(frozen, config(lr_multipliers={"embed.": 0.5}))
    assert {g["lr_factor"] for g in optimizer.param_groups} == {1.0}


def test_a_run_with_factors_resumes_to_the_same_weights(toy_data, tmp_path) -> None:
    cfg = config(lr_multipliers=FACTORS, checkpoint_every=3)
    reference = model()
    Trainer(reference, make_plan(toy_data), cfg, [TaskLoss()], checkpoint_dir=tmp_path / "ref").fit()
    run = tmp_path / "run"
    with pytest.raises(Interrupt):
        Trainer(model(), make_plan(toy_data), cfg, [TaskLoss(), CrashAt(20)], checkpoint_dir=run).fit()
    state = json.loads((latest_checkpoint(run) / "state.json").read_text())  # type: ignore[operator]
    assert sorted(g["lr_factor"] for g in state["optimizer"]["param_groups"]) == [0.1, 0.5, 0.5, 2.0, 2.0]
    torch.manual_seed(123)
    resumed = TinyClassifier({"a": 2, "b": 3})
    result = Trainer(resumed, make_plan(toy_data), cfg, [TaskLoss()], checkpoint_dir=run).fit()
    assert result.resumed_from is not None and 0 < result.resumed_from < 20
    for (name, a), (_, b) in zip(reference.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    run = tmp_path / "other"
    with pytest.raises(Interrupt):
        Trainer(model(), make_plan(toy_data), cfg, [TaskLoss(), CrashAt(5)], checkpoint_dir=run).fit()
    uniform = config(checkpoint_every=3)  # the checkpoint's optimiser has other parameter groups
    with pytest.raises(CheckpointError, match="does not fit this run.*lr_multipliers"):
        Trainer(model(), make_plan(toy_data), uniform, [TaskLoss()], checkpoint_dir=run).fit()
