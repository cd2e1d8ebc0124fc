"""Fuzz recipe validation: random mutations of every shipped recipe, and broken YAML files.

The contract: :func:`fanbu.recipes.validate_file` (what ``fanbu validate`` runs) either accepts the
recipe, or raises :class:`~fanbu.errors.ConfigError` whose message holds the dotted path of the bad
field (``derive.stages.0.prune.layers``) or, for a file that is not a recipe at all, names the file.
No other exception ever escapes. An accepted recipe resolves (``recipe.resolved.yaml``) to a file that
validates to the same recipe.
"""

from __future__ import annotations

import math
import re
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given, note
from hypothesis import strategies as st

from fanbu.config import dump_recipe
from fanbu.errors import ConfigError
from fanbu.recipes import kind_of, validate_file
from tests.fuzz.budget import fuzz_settings, run_counted

CASES: Counter[str] = Counter()  # cases run per target; see tests.fuzz.budget

SHIPPED = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml"))
RECIPES = {path.name: yaml.safe_load(path.read_text(encoding="utf-8")) for path in SHIPPED}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63),
    st.floats(),
    st.sampled_from([math.nan, math.inf, -math.inf, -1, 0, -0.0, 1e-300, 1e300, 2**64]),
    st.text(max_size=12),
    st.sampled_from(["", "x" * 20_000, "../../etc", "\x00", "2024-01-01", "yes", "null", "1e3"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=5,
)
OUT_OF_RANGE = st.sampled_from([-1, 0, -(10**9), 10**9, 10**30, -0.5, 1.5, 1e308, math.nan, math.inf, -math.inf])
MUTATIONS = ("retype", "out_of_range", "unknown_key", "delete", "to_list", "to_string", "long_string", "nan")


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into ``node`` (keys and list indices), ``()`` for the top level."""
    found = [prefix]
    if isinstance(node, dict):
        for key, child in node.items():
            found += paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found += paths(child, (*prefix, index))
    return found


def at(node: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        node = node[part]
    return node


def _copy(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _copy(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_copy(v) for v in node]
    return node


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, Any, list[tuple[str, tuple[Any, ...]]]]:
    """A shipped recipe with 1-3 mutations; returns its file name, the data, and (kind, path) of each."""
    name = draw(st.sampled_from(sorted(RECIPES)))
    data = _copy(RECIPES[name])
    done: list[tuple[str, tuple[Any, ...]]] = []
    for _ in range(draw(st.integers(1, 3))):
        candidates = [p for p in paths(data) if p]
        if not candidates:
            break
        path = draw(st.sampled_from(candidates))
        kind = draw(st.sampled_from(MUTATIONS))
        parent, last = at(data, path[:-1]), path[-1]
        if kind == "unknown_key":
            target = at(data, path)
            if not isinstance(target, dict):
                target, path = parent, path[:-1]
                if not isinstance(target, dict):
                    continue
            key = "zz_" + draw(st.text("abcdefgh_", min_size=1, max_size=8))
            target[key] = draw(values)
            done.append((kind, (*path, key)))
            continue
        if kind == "delete":
            del parent[last]
        elif kind == "retype":
            parent[last] = draw(values)
        elif kind == "out_of_range":
            parent[last] = draw(OUT_OF_RANGE)
        elif kind == "to_list":
            old = parent[last]
            parent[last] = list(old.values()) if isinstance(old, dict) else [old]
        elif kind == "to_string":
            parent[last] = str(parent[last])
        elif kind == "long_string":
            parent[last] = "w" * draw(st.sampled_from([300, 20_000]))
        else:
            parent[last] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
        done.append((kind, path))
        if kind == "delete":
            break  # later paths may have shifted (a list shrank): one structural change at the end
    return name, data, done


def _named(message: str, path: tuple[Any, ...]) -> bool:
    """Whether ``message`` names the dotted ``path`` as a whole (not ``stages.1`` inside ``stages.10``)."""
    dotted = ".".join(str(p) for p in path)
    return bool(re.search(rf"(?<![\w.]){re.escape(dotted)}(?=[:. ]|$)", message, re.MULTILINE))


def _blamed(message: str, kind: str, path: tuple[Any, ...]) -> bool:
    """Whether the error names the field a mutation broke (or, where that is the better answer, the
    mapping or list holding it)."""
    if _named(message, path):
        return True
    if len(path) >= 2 and isinstance(path[-1], str) and path[-1] in message:
        # A check across the fields of one section (alpha, hidden_weight and attention_weight all 0)
        # names the section and the field.
        section = ".".join(str(p) for p in path[:-1])
        if re.search(rf"(?<![\w.]){re.escape(section)}: Value error, ", message):
            return True
    if kind in ("delete", "unknown_key") and len(path) >= 2:
        # A deleted key's mapping (a stage item left empty); an extra key in a list item ({stage: ...}
        # items take exactly one key); a list left empty by a deletion.
        return _named(message, path[:-1])
    return False


def check_valid_round_trip(recipe: Any, kind: str) -> None:
    """An accepted recipe's resolved YAML validates to the same recipe (what every run writes)."""
    with tempfile.TemporaryDirectory() as tmp:
        resolved = Path(tmp) / f"{kind}.yaml"
        resolved.write_text(dump_recipe(recipe), encoding="utf-8")
        assert validate_file(resolved, kind) == recipe


@given(mutated())
@fuzz_settings(260)
def _fuzz_mutations(case: tuple[str, Any, list[tuple[str, tuple[Any, ...]]]]) -> None:
    CASES["recipes"] += 1
    name, data, done = case
    note(f"{name}: {done}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        try:
            recipe = validate_file(path)
        except ConfigError as exc:
            message = str(exc)
            assert message.startswith(str(path)), message[:500]
            assert any(_blamed(message, kind, bad) for kind, bad in done), (
                f"the error names none of the broken fields {done}: {message[:800]}"
            )
            assert len(message) < 5_000, "the error repeats a huge value"
            return
    check_valid_round_trip(recipe, kind_of(name))


BREAKS = ("latin1", "insert_bytes", "truncate", "utf16", "bom", "nul", "not_mapping", "deep", "tag", "tabs",
          "anchors", "duplicate_key", "empty", "binary")


@st.composite
def broken_files(draw: st.DrawFn) -> tuple[str, bytes, str]:
    """A shipped recipe's file, damaged as bytes or as YAML."""
    name = draw(st.sampled_from(sorted(RECIPES)))
    text = next(p for p in SHIPPED if p.name == name).read_text(encoding="utf-8")
    kind = draw(st.sampled_from(BREAKS))
    where = draw(st.integers(0, len(text)))
    if kind == "latin1":
        raw = (text[:where] + "# café ☕\n" + text[where:]).encode("latin-1", errors="replace")
        raw = raw.replace(b"?", b"\xe9")
    elif kind == "insert_bytes":
        raw = text.encode()[:where] + draw(st.binary(min_size=1, max_size=16)) + text.encode()[where:]
    elif kind == "truncate":
        raw = text.encode()[:where]
    elif kind == "utf16":
        raw = text.encode("utf-16")
    elif kind == "bom":
        raw = b"\xef\xbb\xbf" + text.encode()
    elif kind == "nul":
        raw = (text[:where] + "\x00" + text[where:]).encode()
    elif kind == "not_mapping":
        raw = draw(st.sampled_from([b"- a\n- b\n", b"3\n", b"just a string\n", b"[1, 2]\n", b"!!set {a}\n"]))
    elif kind == "deep":
        depth = draw(st.sampled_from([50, 600]))  # 600: past the recursion limit
        raw = b"train: " + b"[" * depth + b"]" * depth + b"\n"
    elif kind == "tag":
        raw = text.encode() + draw(st.sampled_from([b"x: !!python/object/apply:os.getcwd []\n", b"y: !custom 1\n",
                                                    b"z: !!binary aGk=\n", b"when: 2024-01-01\n"]))
    elif kind == "tabs":
        raw = text.replace("  ", "\t").encode()
    elif kind == "anchors":
        raw = b"a: &x [1, 2]\nb: *x\nc: *undefined\n" if draw(st.booleans()) else b"seed: &s 1\nmax_length: *s\n"
    elif kind == "duplicate_key":
        raw = (text + "\n" + text.splitlines()[-1] + "\n").encode()
    elif kind == "empty":
        raw = draw(st.sampled_from([b"", b"\n", b"~\n", b"# only a comment\n", b"---\n"]))
    else:
        raw = draw(st.binary(max_size=200))
    return name, raw, kind


@given(broken_files())
@fuzz_settings(140)
def _fuzz_files(case: tuple[str, bytes, str]) -> None:
    CASES["recipes"] += 1
    name, raw, kind = case
    note(f"{name}: {kind} {raw[:200]!r}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(raw)
        try:
            recipe = validate_file(path)
        except ConfigError as exc:
            message = str(exc)
            assert message.startswith(str(path)), message[:500]
            if kind in ("latin1", "nul"):
                assert "UTF-8" in message or "control character" in message, message[:500]
            return
    assert kind not in ("latin1", "nul", "not_mapping", "deep"), f"{kind} was accepted"
    check_valid_round_trip(recipe, kind_of(name))


def test_shipped_recipes_are_fuzzed() -> None:
    assert len(RECIPES) >= 5, "no shipped recipes found"
    for name, data in RECIPES.items():
        assert isinstance(data, dict), name


def test_fuzz_recipe_mutations() -> None:
    run_counted(CASES, "recipes", _fuzz_mutations, 260)


def test_fuzz_broken_recipe_files() -> None:
    run_counted(CASES, "recipes", _fuzz_files, 140)
