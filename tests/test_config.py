from pathlib import Path

import pytest
import yaml
from pydantic import Field

from fanbu.config import Strict, apply_overrides, load_recipe, write_resolved
from fanbu.errors import ConfigError
from fanbu.recipes import SCHEMAS, kind_of, validate_file


class Inner(Strict):
    epochs: int = Field(1, ge=1)
    lr: float = 1e-3


class Recipe(Strict):
    name: str = "x"
    train: Inner = Field(default_factory=Inner)
    tags: list[str] = Field(default_factory=list)


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_overrides_are_parsed_as_yaml_and_nested(tmp_path):
    path = write(tmp_path, {"name": "a", "train": {"epochs": 2}})
    recipe = load_recipe(Recipe, path, ["train.lr=0.5", "tags=[x, y]", "name=b"])
    assert recipe.train.epochs == 2 and recipe.train.lr == 0.5
    assert recipe.tags == ["x", "y"] and recipe.name == "b"


def test_unknown_key_names_its_path(tmp_path):
    path = write(tmp_path, {"train": {"epoch": 2}})
    with pytest.raises(ConfigError, match=r"recipe.yaml: train.epoch: unknown key"):
        load_recipe(Recipe, path)


def test_wrong_type_names_its_path_and_value(tmp_path):
    with pytest.raises(ConfigError, match=r"train.epochs: .*integer.*\(got 'many'\)"):
        load_recipe(Recipe, write(tmp_path, {}), ["train.epochs=many"])


def test_constraint_violation_is_reported():
    with pytest.raises(ConfigError, match=r"recipe: train.epochs: Input should be greater than or equal to 1"):
        load_recipe(Recipe, None, ["train.epochs=0"])


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides({}, ["train.epochs"])
    with pytest.raises(ConfigError, match="name is a str, not a section"):
        apply_overrides({"name": "x"}, ["name.sub=1"])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="recipe file not found"):
        load_recipe(Recipe, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(Recipe, bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_recipe(Recipe, scalar)


def test_resolved_recipe_round_trips(tmp_path):
    recipe = load_recipe(Recipe, None, ["train.epochs=4"])
    path = write_resolved(recipe, tmp_path / "run")
    assert load_recipe(Recipe, path) == recipe


SHIPPED = sorted((Path(__file__).resolve().parents[1] / "recipes").rglob("*.yaml"))


def test_recipes_are_shipped():
    assert SHIPPED, "the repository ships example recipes under recipes/"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_recipe_validates(path):
    recipe = validate_file(path)
    assert isinstance(recipe, SCHEMAS[kind_of(path)])


def test_unknown_recipe_kind(tmp_path):
    with pytest.raises(ConfigError, match="cannot tell the recipe kind"):
        kind_of(tmp_path / "mystery.yaml")


class _Section(Strict):
    lr: float = 5e-5
    epochs: int = 3
    name: str = "plain"


class _Holder(Strict):
    built: _Section = Field(default_factory=lambda: _Section(lr=1e-3, name="tuned"))
    given: _Section = Field(_Section(epochs=9))


def test_a_section_given_in_part_keeps_its_own_default():
    holder = load_recipe(_Holder, None, ["built.epochs=30", "given.lr=0.1"])
    # the factory's and the default instance's settings survive; the keys given win
    assert (holder.built.lr, holder.built.epochs, holder.built.name) == (1e-3, 30, "tuned")
    assert (holder.given.lr, holder.given.epochs) == (0.1, 9)
    assert load_recipe(_Holder, None, ["built.lr=0.5"]).built.lr == 0.5
    assert _Holder().built.name == "tuned"
