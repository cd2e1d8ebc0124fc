"""Episodes: k per class, seeded, and the errors that name the setting to change."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fanbu.errors import ConfigError
from fanbu.meta.episodes import check_left_out, sample_episode, sample_shots, stack_episodes
from tests.meta.conftest import toy_task


def test_shots_are_k_per_class_and_seeded() -> None:
    task = toy_task("a", 3, per_label=10)
    first = sample_shots(task, 4, seed=5)
    assert np.array_equal(first, sample_shots(task, 4, seed=5))
    assert not np.array_equal(first, sample_shots(task, 4, seed=6))
    assert torch.bincount(task.labels[first]).tolist() == [4, 4, 4]
    assert len(set(first.tolist())) == len(first)


def test_episode_shapes_disjoint_and_renumbered() -> None:
    task = toy_task("b", 4, per_label=10)
    episode = sample_episode(task, 3, 2, 5, np.random.default_rng(0))
    assert episode.support_x.shape == (6, 12) and episode.query_x.shape == (15, 12)
    assert episode.support_y.tolist() == [0, 0, 1, 1, 2, 2]
    assert torch.bincount(episode.query_y).tolist() == [5, 5, 5]
    support = {tuple(r.tolist()) for r in episode.support_x}
    assert not support & {tuple(r.tolist()) for r in episode.query_x}
    again = sample_episode(task, 3, 2, 5, np.random.default_rng(0))
    assert torch.equal(again.support_x, episode.support_x)
    stacked = stack_episodes([episode, again])
    assert stacked.support_x.shape == (2, 6, 12)


def test_k_larger_than_a_class_names_the_setting() -> None:
    task = toy_task("a", 3, per_label=5)
    with pytest.raises(ConfigError, match=r"k = 6 .*lower k to at most 5"):
        sample_shots(task, 6, seed=0)
    with pytest.raises(ConfigError, match="query"):
        sample_episode(task, 3, 4, 2, np.random.default_rng(0))


def test_left_out_domain_in_meta_training_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"\['rec'\].*remove it from meta_domains"):
        check_left_out(["comp", "rec"], ["rec"])
    check_left_out(["comp", "sci"], ["rec"])
