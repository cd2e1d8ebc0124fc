"""Property-based fuzzing of recipe validation: random mutations of every shipped recipe, and broken
YAML files.

The contract: recipe validation (``fanbu validate``'s :func:`fanbu.recipes.validate_file`) either
accepts the recipe, or raises :class:`~fanbu.errors.ConfigError` whose message holds the dotted path
of the bad field (``derive.stages.0.prune.layers``) or, for a file that is not a recipe at all, names
the file. No other exception ever escapes. An accepted recipe resolves (``recipe.resolved.yaml``) to a
file that validates to the same recipe.

A case that breaks the contract is *counted* (and its first examples kept), not raised, so one run
reports every kind of failure: an exception other than ``ConfigError`` is a traceback, a wrong answer
(an error without the dotted path, a broken file accepted, an accepted recipe that does not round-trip)
a contract violation. The CI test (``tests/fuzz/test_fuzz_recipes.py``) fails on any; ``fanbu bench
reliability`` reports the counts over a larger run.

:mod:`fanbu.recipes` sits above the bench in the layers (it maps every kind, the demo's included, to
its schema), so the validation fuzzed is passed in: ``validate=fanbu.recipes.validate_file``.

Needs ``hypothesis`` (the ``dev`` extra).
"""

from __future__ import annotations

import hashlib
import math
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from pydantic import BaseModel

import fanbu
from fanbu.bench.reliability.shown import clip, innermost, shown
from fanbu.config import dump_recipe
from fanbu.errors import ConfigError, FanbuError

KEEP_FAILURES = 20  # examples of failures kept per run (every one is counted)
#: The two parts of a run, and their shares (the CI test runs exactly these counts).
WEIGHTS = {"mutations": 260, "files": 140}
MIN_SHIPPED = 5  # fewer shipped recipes than this: the wrong folder was found

#: What is fuzzed: a recipe file in, the validated recipe out or a ConfigError (``fanbu validate``).
Validate = Callable[[Path], BaseModel]

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
BREAKS = ("latin1", "insert_bytes", "truncate", "utf16", "bom", "nul", "not_mapping", "deep", "tag", "tabs",
          "anchors", "duplicate_key", "empty", "binary")
MUST_REFUSE = ("latin1", "nul", "not_mapping", "deep")  # breaks no valid recipe survives


class NoRecipesError(FanbuError, FileNotFoundError):
    """The shipped recipes (``recipes/*.yaml`` in the repository) were not found."""


def shipped_recipes() -> list[Path]:
    """The repository's ``recipes/*.yaml``: next to ``src/`` of this checkout, else ``./recipes``."""
    tried = [Path(fanbu.__file__).resolve().parents[2] / "recipes", Path.cwd() / "recipes"]
    for folder in tried:
        found = sorted(folder.glob("*.yaml"))
        if found:
            return found
    raise NoRecipesError(
        f"no shipped recipes (*.yaml) in {' or '.join(str(f) for f in tried)}; the recipe fuzz needs a "
        "checkout of the fanbu repository: run it from the repository's root"
    )


@dataclass
class RecipeTally:
    """What a run tried and found; ``failures`` keeps the first :data:`KEEP_FAILURES` in words.

    ``tracebacks``: validations that raised anything but ``ConfigError``; ``contract_violations``:
    wrong answers; ``fuzzer_errors``: the fuzzer itself failed to write a case (a bug here, not in
    fanbu). ``digest`` hashes every case generated: two runs with the same seed have the same digest.
    """

    cases: int = 0
    cases_by_part: Counter[str] = field(default_factory=Counter)
    cases_by_recipe: Counter[str] = field(default_factory=Counter)
    accepted: int = 0  # recipes accepted (and round-tripped)
    refused: int = 0  # recipes refused with a ConfigError
    tracebacks: int = 0
    contract_violations: int = 0
    fuzzer_errors: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    digest: str = ""

    def fail(self, kind: str, what: str, detail: str) -> None:
        """Count one failure of ``kind`` (``traceback``, ``contract`` or ``fuzzer``), keep its words."""
        if kind == "traceback":
            self.tracebacks += 1
        elif kind == "contract":
            self.contract_violations += 1
        else:
            self.fuzzer_errors += 1
        if len(self.failures) < KEEP_FAILURES:
            self.failures.append(f"{what}\n{detail}")


# ---------------------------------------------------------------------------- mutated recipes


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
def mutated(draw: st.DrawFn, recipes: dict[str, Any]) -> tuple[str, Any, list[tuple[str, tuple[Any, ...]]]]:
    """One of ``recipes`` (file name: data) with 1-3 mutations: its file name, the data, and (kind,
    path) of each mutation."""
    name = draw(st.sampled_from(sorted(recipes)))
    data = _copy(recipes[name])
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


def mutation_refusal_problem(message: str, path: Path, done: list[tuple[str, tuple[Any, ...]]]) -> str | None:
    """What is wrong with the ``ConfigError`` refusing a mutated recipe; ``None`` when nothing is."""
    if not message.startswith(str(path)):
        return f"the error does not start with the file's path: {clip(message)}"
    if not any(_blamed(message, kind, bad) for kind, bad in done):
        return f"the error names none of the broken fields {shown(done)}: {clip(message, 800)}"
    if len(message) >= 5_000:
        return f"the error repeats a huge value ({len(message)} characters): {clip(message)}"
    return None


# ---------------------------------------------------------------------------- broken files


@st.composite
def broken_files(draw: st.DrawFn, texts: dict[str, str]) -> tuple[str, bytes, str]:
    """One of the recipe files (file name: text), damaged as bytes or as YAML: its file name, the
    bytes, and the kind of damage."""
    name = draw(st.sampled_from(sorted(texts)))
    text = texts[name]
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


def file_refusal_problem(message: str, path: Path, kind: str) -> str | None:
    """What is wrong with the ``ConfigError`` refusing a broken file; ``None`` when nothing is."""
    if not message.startswith(str(path)):
        return f"the error does not start with the file's path: {clip(message)}"
    if kind in ("latin1", "nul") and not ("UTF-8" in message or "control character" in message):
        return f"a {kind} file refused without saying UTF-8 or control character: {clip(message)}"
    return None


# ---------------------------------------------------------------------------- the run


class _RecipeFuzzer:
    """Writes each case's file under ``root``, validates it and counts what came back in ``tally``."""

    def __init__(self, root: Path, validate: Validate) -> None:
        self.root = root
        self.validate = validate
        self.tally = RecipeTally()
        self._hash = hashlib.sha256()

    def _start(self, part: str, name: str, case: Any) -> Path:
        tally = self.tally
        work = self.root / f"{tally.cases:07d}"
        tally.cases += 1
        tally.cases_by_part[part] += 1
        tally.cases_by_recipe[name] += 1
        self._hash.update(repr(case).encode("utf-8", "surrogatepass"))
        return work

    def check_mutation(self, case: tuple[str, Any, list[tuple[str, tuple[Any, ...]]]]) -> None:
        name, data, done = case
        work = self._start("mutations", name, case)
        what = f"mutations case {self.tally.cases - 1}: {name}, {shown(done)}"
        try:
            try:
                work.mkdir(parents=True)
                path = work / name
                path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
            except Exception as exc:  # noqa: BLE001 - the fuzzer's own bug: counted apart, the run goes on
                self.tally.fail("fuzzer", f"writing {what}", innermost(exc))
                return
            self._check(path, what, lambda message: mutation_refusal_problem(message, path, done), None)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def check_file(self, case: tuple[str, bytes, str]) -> None:
        name, raw, kind = case
        work = self._start("files", name, case)
        what = f"files case {self.tally.cases - 1}: {name}, {kind}: {shown(raw[:200])}"
        try:
            try:
                work.mkdir(parents=True)
                path = work / name
                path.write_bytes(raw)
            except Exception as exc:  # noqa: BLE001 - the fuzzer's own bug: counted apart, the run goes on
                self.tally.fail("fuzzer", f"writing {what}", innermost(exc))
                return
            refuse = f"a {kind} file was accepted" if kind in MUST_REFUSE else None
            self._check(path, what, lambda message: file_refusal_problem(message, path, kind), refuse)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _check(self, path: Path, what: str, refusal: Callable[[str], str | None], accepted: str | None) -> None:
        """Validate ``path``: a refusal is judged by ``refusal``; acceptance is wrong when ``accepted``
        says why, else the recipe must round-trip through its resolved YAML."""
        tally = self.tally
        try:
            recipe = self.validate(path)
        except ConfigError as exc:
            tally.refused += 1
            problem = refusal(str(exc))
            if problem:
                tally.fail("contract", what, problem)
            return
        except Exception as exc:  # noqa: BLE001 - the contract allows ConfigError only
            tally.fail("traceback", what, innermost(exc))
            return
        tally.accepted += 1
        if accepted:
            tally.fail("contract", what, accepted)
            return
        problem = self._round_trip(recipe, path)
        if problem:
            tally.fail(*problem)

    def _round_trip(self, recipe: BaseModel, path: Path) -> tuple[str, str, str] | None:
        """An accepted recipe's resolved YAML (what every run writes) validates to the same recipe."""
        what = f"round trip of {path.name}, accepted as {shown(recipe, 800)}"
        resolved = path.parent / "resolved" / path.name  # the same name: the same kind
        try:
            text = dump_recipe(recipe)
        except Exception as exc:  # noqa: BLE001 - fanbu's own dump raised
            return "traceback", f"{what}\n(raised writing it)", innermost(exc)
        try:
            resolved.parent.mkdir()
            resolved.write_text(text, encoding="utf-8")
        except Exception as exc:  # noqa: BLE001 - the fuzzer's own bug
            return "fuzzer", f"{what}\n(writing it)", innermost(exc)
        try:
            again = self.validate(resolved)
        except ConfigError as exc:
            return "contract", what, f"the resolved recipe is refused: {clip(str(exc), 800)}"
        except Exception as exc:  # noqa: BLE001 - the contract allows ConfigError only
            return "traceback", f"{what}\n(raised validating it again)", innermost(exc)
        if again != recipe:
            return "contract", what, f"the resolved recipe validates to another one: {shown(again, 800)}"
        return None


def _search(strategy: st.SearchStrategy[Any], n: int, seed: int | None, body: Callable[[Any], None]) -> None:
    """Run ``body`` on ``n`` examples of ``strategy``; reproducible when ``seed`` is given."""

    @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(case: Any) -> None:
        body(case)

    if seed is not None:
        run = hypothesis_seed(seed)(run)
    run()


def _split(n: int, weights: dict[str, int]) -> dict[str, int]:
    """``n`` cases shared by ``weights`` (largest remainders): they add up to ``n``, each at least one."""
    total = sum(weights.values())
    exact = {key: n * weight / total for key, weight in weights.items()}
    counts = {key: int(share) for key, share in exact.items()}
    for key in sorted(exact, key=lambda k: counts[k] - exact[k])[: n - sum(counts.values())]:
        counts[key] += 1
    return {key: max(1, count) for key, count in counts.items()}


def run_recipe_fuzz(
    n: int, recipes: list[Path], seed: int | None = None, *, validate: Validate,
    parts: Sequence[str] | None = None,
) -> RecipeTally:
    """About ``n`` cases (exactly ``n`` when ``n`` >= the number of parts) made from ``recipes``,
    shared over ``parts`` (default: both of :data:`WEIGHTS`, in its proportions): mutated recipes
    and broken files, each validated by ``validate`` (pass :func:`fanbu.recipes.validate_file`) and
    checked.

    Every recipe file must be named after its kind (``demo-tiny.yaml``), as the shipped ones are. With
    ``seed``, the same cases are generated every time. Files go in a temporary directory, removed after.
    """
    parts = list(parts or WEIGHTS)
    unknown = sorted(set(parts) - set(WEIGHTS))
    if unknown:
        raise ValueError(f"unknown parts {unknown}; known: {', '.join(WEIGHTS)}")
    if not recipes:
        raise NoRecipesError("no recipes to fuzz")
    texts = {path.name: path.read_text(encoding="utf-8") for path in recipes}
    if len(texts) != len(recipes):
        raise ConfigError(f"recipes to fuzz share a file name: {sorted(str(p) for p in recipes)}")
    data = {name: yaml.safe_load(text) for name, text in texts.items()}
    for name, loaded in data.items():
        if not isinstance(loaded, dict):
            raise ConfigError(f"{name}: a recipe to fuzz must be a mapping, not {type(loaded).__name__}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fanbu-fuzz-recipes-") as tmp:
        fuzzer = _RecipeFuzzer(Path(tmp), validate)
        counts = _split(n, {part: WEIGHTS[part] for part in parts})
        if "mutations" in counts:
            _search(mutated(data), counts["mutations"], seed, fuzzer.check_mutation)
        if "files" in counts:
            _search(broken_files(texts), counts["files"], seed, fuzzer.check_file)
    tally = fuzzer.tally
    tally.seconds = time.perf_counter() - started
    tally.digest = fuzzer._hash.hexdigest()
    return tally
