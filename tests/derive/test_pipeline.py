"""The derive pipeline end to end on a tiny teacher and a small JSONL domain."""

import itertools
import json
import random
from pathlib import Path

import pytest

from fanbu.config import load_recipe
from fanbu.derive.pipeline import DeriveRecipe, run_derive
from fanbu.errors import ConfigError
from fanbu.execute.base import ExecutionError
from fanbu.models import EncoderHandle
from fanbu.models.artefact import Provenance, read_provenance
from fanbu.registry import Registry

WORDS = {"space": "orbit rocket nasa launch moon", "med": "doctor patient disease drug clinic"}


def write_domain(path, n=60, seed=0):
    rng = random.Random(seed)
    with open(path, "w") as fh:
        for _ in range(n):
            label = rng.choice(sorted(WORDS))
            words = rng.sample(WORDS[label].split(), 3) + [rng.choice(["the", "a", "and", "of"]) for _ in range(3)]
            fh.write(json.dumps({"text": " ".join(words), "label": label}) + "\n")


@pytest.fixture
def setup(tmp_path):
    write_domain(tmp_path / "sci.jsonl")
    teacher = EncoderHandle.tiny(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64)
    teacher.save(tmp_path / "teacher", Provenance(name="tiny"))
    recipe = {
        "teacher": str(tmp_path / "teacher"),
        "max_length": 32,
        "data": {"source": "files", "files": [{"name": "sci", "train": str(tmp_path / "sci.jsonl")}]},
        "stages": [
            {"finetune": {"train": {"epochs": 2, "lr": 1e-3, "progress": False}}},
            {"prune": {"layers": 1, "heads": 2, "hidden": 16, "ffn": 0.5, "vocab": 200, "calibration": 32}},
            {"distill": {"train": {"epochs": 2, "lr": 1e-3, "progress": False}}},
            {"quantize": {"check_texts": 4}},
        ],
    }
    return tmp_path, recipe


def test_every_stage_is_registered_with_its_parent(setup):
    tmp_path, raw = setup
    recipe = DeriveRecipe.model_validate(raw)
    registry = Registry.open(tmp_path / "home")
    [result] = run_derive(recipe, registry)
    chain = [registry.get_model(i) for i in result["models"]]
    assert [m.name for m in chain] == ["sci.finetune", "sci.prune", "sci.distill", "sci.quantize"]
    assert [m.relation for m in chain] == ["finetune", "pruned", "distilled", "quantized"]
    for parent, child in itertools.pairwise(chain):
        assert child.parents == (parent.id,)
    assert chain[0].parents == ("teacher:v0",)
    assert chain[1].metadata["params"] < chain[0].metadata["params"]
    assert {e.split for e in registry.evaluations(result["final"])} == {"validation", "test"}
    assert 0.0 <= result["test"]["accuracy"] <= 1.0
    assert (tmp_path / "home" / "runs" / registry.list_runs()[0].id / "recipe.resolved.yaml").is_file()
    registry.close()


def test_unknown_stage_and_bad_stage_settings_name_the_path(setup):
    _, raw = setup
    with pytest.raises(ConfigError, match=r"stages.1: unknown stage 'shrink'"):
        load_recipe(DeriveRecipe, None, base={**raw, "stages": [{"finetune": {}}, {"shrink": {}}]})
    with pytest.raises(ConfigError, match=r"stages.0.prune.layerz: unknown key"):
        load_recipe(DeriveRecipe, None, base={**raw, "stages": [{"prune": {"layerz": 2}}]})


def test_missing_champion_teacher_says_what_to_do(setup):
    tmp_path, raw = setup
    recipe = DeriveRecipe.model_validate({**raw, "teacher": "large"})
    registry = Registry.open(tmp_path / "home2")
    with pytest.raises(Exception, match="no champion of that name in the registry; run `fanbu demo` first"):
        run_derive(recipe, registry)
    assert registry.list_runs()[0].status == "failed"
    registry.close()


def test_teacher_spec_dispatch(tmp_path):
    from fanbu.errors import RegistryError
    from fanbu.registry.workspace import Workspace

    registry = Registry.open(tmp_path)
    workspace = Workspace(registry)
    with pytest.raises(RegistryError):
        workspace.load_spec("large:v7", 32)
    with pytest.raises(ConfigError, match="no champion of that name"):
        workspace.load_spec("large", 32)
    teacher = EncoderHandle.tiny()
    teacher.save(tmp_path / "mine", Provenance())
    handle, record = workspace.load_spec(str(tmp_path / "mine"), 32)
    assert record == "mine:v0" and registry.get_model(record).status == "archived" and handle.max_length == 32
    assert workspace.register_source("package:all-MiniLM-L6-v2") == "all-MiniLM-L6-v2:v0"
    assert workspace.register_source("org/bert") == "org--bert:v0"
    assert workspace.register_source("package:all-MiniLM-L6-v2") == "all-MiniLM-L6-v2:v0"  # registered once
    registry.close()


def test_search_stage_picks_a_shape_under_the_budget(setup):
    tmp_path, raw = setup
    raw["stages"] = [
        {"search": {"trials": 2, "budget": {"max_param_ratio": 0.95}, "trial_examples": 16, "trial_epochs": 1,
                    "importance": "magnitude", "space": {"layers": [1], "heads": [2, 4], "ffn": [0.5], "vocab": [200]}}},
        {"distill": {"train": {"epochs": 1, "progress": False}}},
    ]
    registry = Registry.open(tmp_path / "home")
    [result] = run_derive(DeriveRecipe.model_validate(raw), registry)
    searched = registry.get_model(result["models"][0])
    assert searched.relation == "pruned"
    teacher_params = EncoderHandle.load(tmp_path / "teacher").model.encoder.num_parameters()
    assert searched.metadata["params"] < teacher_params
    registry.close()


def test_a_search_warm_starts_from_an_earlier_domains_study(setup):
    tmp_path, raw = setup
    space = {"layers": [1, 2], "heads": [2, 4], "ffn": [0.5], "vocab": [200]}
    search = {"trials": 2, "budget": {"max_param_ratio": 0.95}, "trial_examples": 24, "trial": "probe",
              "importance": "magnitude", "space": space}
    raw["stages"] = [{"search": search}]
    registry = Registry.open(tmp_path / "home")
    run_derive(DeriveRecipe.model_validate(raw), registry)
    [study] = (tmp_path / "home" / "runs").glob("*/sci/0-search/study.json")
    first = json.loads(study.read_text())
    assert first["domain"] == "sci" and len(first["trials"]) == 2 and first["warm_start"] == []
    raw["stages"] = [{"search": {**search, "warm_start": {"studies": [str(study)], "enqueue": 1}}}]
    [result] = run_derive(DeriveRecipe.model_validate(raw), registry)
    [second] = [p for p in (tmp_path / "home" / "runs").glob("*/sci/0-search/study.json") if p != study]
    warm = json.loads(second.read_text())
    best = max((t for t in first["trials"] if t["score"] is not None), key=lambda t: t["score"])
    assert warm["warm_start"] == [{k: best["params"][k] for k in space}]
    assert {k: warm["trials"][0]["params"][k] for k in space} == warm["warm_start"][0]  # tried first
    assert registry.get_model(result["models"][0]).relation == "pruned"
    raw["stages"] = [{"search": {**search, "warm_start": {"studies": [str(tmp_path / "missing.json")]}}}]
    with pytest.raises(ExecutionError, match="missing.json does not exist"):
        run_derive(DeriveRecipe.model_validate(raw), registry)
    registry.close()


def test_the_ssl_stage_pretrains_on_the_domain_text_before_finetune(setup):
    tmp_path, raw = setup
    raw["stages"] = [
        {"ssl": {"objective": "mlm", "steps": 6, "batch_size": 8, "pool": ["train"]}},
        {"finetune": {"train": {"epochs": 1, "lr": 1e-3, "progress": False}}},
    ]
    registry = Registry.open(tmp_path / "home")
    [result] = run_derive(DeriveRecipe.model_validate(raw), registry)
    pretrained, tuned = (registry.get_model(i) for i in result["models"])
    assert (pretrained.name, pretrained.relation) == ("sci.ssl", "pretrained")
    assert tuned.parents == (pretrained.id,)
    registry.close()


def test_ssl_stage_settings_are_checked(setup):
    _, raw = setup
    with pytest.raises(ConfigError, match=r"stages.0.ssl.pool"):
        load_recipe(DeriveRecipe, None, base={**raw, "stages": [{"ssl": {"pool": ["gate"]}}]})
    with pytest.raises(ConfigError, match=r"stages.0.ssl.objective"):
        load_recipe(DeriveRecipe, None, base={**raw, "stages": [{"ssl": {"objective": "gan"}}]})


def _augment_setup(tmp_path, monkeypatch, raw):
    import functools

    from fanbu.derive import pipeline
    from fanbu.derive.augment import augment_domain
    from fanbu.models.causal_lm import CausalLMHandle

    teacher = EncoderHandle.tiny(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64)
    teacher.add_head("sci", ["med", "space"], seed=0)
    from fanbu.registry.workspace import Workspace

    with Registry.open(tmp_path / "home") as registry:  # a registered model keeps its heads
        Workspace(registry).save_and_register(teacher, Provenance(name="tiny"), name="teacher-sci")
    generator = functools.partial(augment_domain, load_generator=lambda source: CausalLMHandle.tiny(max_length=256))
    monkeypatch.setattr(pipeline, "augment_domain", generator)
    lm = {"shots": 2, "per_label": 3, "max_new_tokens": 8, "batch_size": 6,
          "filter": {"threshold": 0.0, "require_argmax": False, "min_tokens": 1, "jaccard": 1.0}}
    return {**raw, "teacher": "teacher-sci:v0", "augment": {"kind": "lm", "lm": lm},
            "stages": [{"finetune": {"train": {"epochs": 1, "lr": 1e-3, "progress": False}}}]}


def test_augment_lm_adds_filtered_texts_registers_them_and_records_the_share(setup, monkeypatch):
    tmp_path, raw = setup
    recipe = DeriveRecipe.model_validate(_augment_setup(tmp_path, monkeypatch, raw))
    registry = Registry.open(tmp_path / "home")
    [result] = run_derive(recipe, registry)
    [dataset] = [d for d in registry.list_datasets() if d.name.startswith("synthetic/")]
    assert dataset.metadata["lineage"]["generator"] == recipe.augment.lm.generator
    record = registry.get_model(result["final"])
    share = read_provenance(Path(record.path))[0].data_fingerprints["synthetic"]
    assert share["dataset"] == dataset.id and share["synthetic_rows"] > 0
    assert share["synthetic_share"] == pytest.approx(share["synthetic_rows"] / (share["synthetic_rows"] + share["real_rows"]))
    registry.close()


def test_augment_needs_a_teacher_head_for_the_domain_and_refuses_the_gan(setup, monkeypatch):
    tmp_path, raw = setup
    registry = Registry.open(tmp_path / "home")
    no_head = DeriveRecipe.model_validate({**raw, "augment": {"kind": "lm"}})
    with pytest.raises(ExecutionError, match="teacher's head 'sci'"):
        run_derive(no_head, registry)
    gan = DeriveRecipe.model_validate({**_augment_setup(tmp_path, monkeypatch, raw), "augment": {"kind": "gan"}})
    with pytest.raises(ExecutionError, match="use kind: lm here"):
        run_derive(gan, registry)
    assert registry.list_models(name="sci.finetune") == []  # nothing registered for a refused recipe
    registry.close()
