"""TeacherCache: computed once, equal to the live teacher, saved and reloaded by fingerprint."""

from __future__ import annotations

import pytest
import torch
from distill_helpers import quick
from safetensors import safe_open

from fanbu.derive.distill import DistillConfig, LiveTeacher, TeacherCache, distill, teacher_fingerprint
from fanbu.errors import CheckpointError, ModelError


def count_rows(module: torch.nn.Module) -> dict[str, int]:
    counter = {"rows": 0}

    def hook(mod, args, kwargs, output):
        counter["rows"] += int(kwargs["input_ids"].shape[0])

    module.register_forward_hook(hook, with_kwargs=True)
    return counter


@pytest.mark.parametrize(("cache_teacher", "runs_per_example"), [(True, 1), (False, 3)])
def test_teacher_runs_once_per_example_with_the_cache(
    teacher, student, task_data, cache_teacher, runs_per_example
) -> None:
    counter = count_rows(teacher.model.encoder)
    config = DistillConfig(alpha=0.7, hidden_weight=1.0, cache_teacher=cache_teacher, train=quick(epochs=3))
    distill(student, teacher, {"topic": task_data["train"]}, config)
    assert counter["rows"] == runs_per_example * len(task_data["train"][0])


def test_cached_outputs_equal_the_live_teacher(teacher, task_data) -> None:
    texts = task_data["train"][0][:20]
    cache = TeacherCache.build(teacher, {"topic": texts}, batch_size=7)
    live = LiveTeacher(teacher, {"topic": texts})
    indices = torch.tensor([3, 0, 19, 7])
    with torch.no_grad():
        inputs = teacher.tokenize([texts[i] for i in indices])
        expected_logits = teacher.model(**inputs, head="topic")  # eval mode: no dropout
        expected_pooled = teacher.model.embed(**inputs)
    assert torch.allclose(cache.logits("topic", indices), expected_logits, atol=1e-5)
    assert torch.allclose(cache.pooled("topic", indices), expected_pooled, atol=1e-5)
    assert torch.allclose(live.logits("topic", indices), expected_logits, atol=1e-5)
    assert torch.allclose(live.pooled("topic", indices), expected_pooled, atol=1e-5)


def test_cache_uses_the_teachers_tokenizer(teacher, task_data) -> None:
    texts = task_data["train"][0][:6]
    teacher.max_length = 5  # truncation only the teacher's tokenisation knows about
    cache = TeacherCache.build(teacher, {"topic": texts})
    with torch.no_grad():
        expected = teacher.model(**teacher.tokenize(texts), head="topic")
    assert torch.allclose(cache.logits("topic", torch.arange(6)), expected, atol=1e-5)


def test_save_load_round_trip(teacher, task_data, tmp_path) -> None:
    tasks = {"topic": task_data["train"][0][:10]}
    cache = TeacherCache.build(teacher, tasks)
    path = cache.save(tmp_path / "teacher.safetensors")
    with safe_open(str(path), framework="pt") as handle:
        assert set(handle.keys()) == {"logits/topic", "pooled/topic"}
    loaded = TeacherCache.load(path, tasks)
    index = torch.arange(10)
    assert torch.equal(loaded.logits("topic", index), cache.logits("topic", index))
    assert torch.equal(loaded.pooled("topic", index), cache.pooled("topic", index))
    assert loaded.fingerprints == cache.fingerprints


def test_load_with_other_texts_says_to_rebuild(teacher, task_data, tmp_path) -> None:
    texts = task_data["train"][0][:10]
    path = TeacherCache.build(teacher, {"topic": texts}).save(tmp_path / "teacher.safetensors")
    with pytest.raises(CheckpointError, match="built for other texts of task 'topic'.*rebuild it"):
        TeacherCache.load(path, {"topic": texts[:9] + ["a different text"]})
    with pytest.raises(CheckpointError, match="no outputs for task 'other'.*rebuild"):
        TeacherCache.load(path, {"other": texts})
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="not a readable teacher cache"):
        TeacherCache.load(tmp_path / "broken.safetensors", {"topic": texts})
    with pytest.raises(CheckpointError, match="no teacher cache here"):
        TeacherCache.load(tmp_path / "missing.safetensors", {"topic": texts})


def test_distill_rejects_a_cache_for_other_texts(teacher, student, task_data) -> None:
    texts, labels = task_data["train"]
    stale = TeacherCache.build(teacher, {"topic": texts[1:] + texts[:1]})
    with pytest.raises(CheckpointError, match="rebuild it"):
        distill(
            student, teacher, {"topic": (texts, labels)}, DistillConfig(train=quick(epochs=1)), cache=stale
        )


def test_cache_without_hidden_states(teacher, student, task_data) -> None:
    texts, labels = task_data["train"]
    cache = TeacherCache.build(teacher, {"topic": texts}, hidden=False)
    assert not cache.has_hidden
    with pytest.raises(ModelError, match=r"hidden=True"):
        cache.pooled("topic", torch.tensor([0]))
    config = DistillConfig(hidden_weight=1.0, train=quick(epochs=1))
    with pytest.raises(ModelError, match="no pooled states"):
        distill(student, teacher, {"topic": (texts, labels)}, config, cache=cache)


def test_cache_errors(teacher, task_data) -> None:
    texts = task_data["train"][0][:4]
    with pytest.raises(ModelError, match="no head for tasks \\['nope'\\]"):
        TeacherCache.build(teacher, {"nope": texts})
    with pytest.raises(ModelError, match="no texts"):
        TeacherCache.build(teacher, {"topic": []})
    cache = TeacherCache.build(teacher, {"topic": texts})
    with pytest.raises(ModelError, match="outside the cache's 4 examples"):
        cache.logits("topic", torch.tensor([4]))
    with pytest.raises(ModelError, match="no outputs for task 'other'"):
        cache.logits("other", torch.tensor([0]))


def test_cache_of_another_teacher_is_refused(teacher, student, task_data, tmp_path) -> None:
    texts, labels = task_data["train"]
    path = TeacherCache.build(teacher, {"topic": texts}).save(tmp_path / "teacher.safetensors")
    assert TeacherCache.load(path, {"topic": texts}, teacher).teacher == teacher_fingerprint(teacher)
    with torch.no_grad():
        teacher.model.heads["topic"].bias.add_(1.0)
    with pytest.raises(CheckpointError, match="computed by another teacher.*rebuild it"):
        TeacherCache.load(path, {"topic": texts}, teacher)
    stale = TeacherCache.load(path, {"topic": texts})
    with pytest.raises(CheckpointError, match="another teacher"):
        distill(
            student, teacher, {"topic": (texts, labels)}, DistillConfig(train=quick(epochs=1)), cache=stale
        )


def test_a_resumed_run_reuses_the_saved_cache(teacher, student, task_data, tmp_path) -> None:
    config = DistillConfig(train=quick(epochs=2))
    distill(student, teacher, {"topic": task_data["train"]}, config, checkpoint_dir=tmp_path)
    assert (tmp_path / "teacher-cache.safetensors").is_file()
    counter = count_rows(teacher.model.encoder)
    result = distill(student, teacher, {"topic": task_data["train"]}, config, checkpoint_dir=tmp_path)
    assert result.resumed_from == 8 and counter["rows"] == 0


def test_a_saved_cache_for_other_texts_says_to_start_afresh(teacher, student, task_data, tmp_path) -> None:
    texts, labels = task_data["train"]
    config = DistillConfig(train=quick(epochs=1))
    distill(student, teacher, {"topic": (texts, labels)}, config, checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointError, match="other texts of task 'topic'.*start this run afresh"):
        distill(student, teacher, {"topic": (texts[:32], labels[:32])}, config, checkpoint_dir=tmp_path)
