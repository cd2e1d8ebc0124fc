"""Fuzz saved model directories: damaged safetensors, lying headers, broken ``fanbu.json``, symlinks.

The contract: :func:`fanbu.models.load_handle` on a damaged directory raises
:class:`~fanbu.errors.ModelError` and returns nothing; no other exception ever escapes. A load that
succeeds gives back exactly the saved weights, unless the damage was "re-signed" (the sha256 in
``fanbu.json`` recomputed after it) and left every tensor's name, shape and dtype as they were (then
only the numbers differ, which no check can tell). A weights file that is a symlink out of the model
directory, or a ``*.safetensors`` file that ``fanbu.json`` does not list, is always refused.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st
from safetensors import SafetensorError, safe_open

from fanbu.errors import ModelError
from fanbu.models import CausalLMHandle, EncoderHandle, ModuleHandle, Provenance, load_handle, tiny_tokenizer
from fanbu.models.tiny import bag_of_tokens
from tests.fuzz.budget import fuzz_settings, run_counted

CASES: Counter[str] = Counter()  # cases run per target; see tests.fuzz.budget

KINDS = ("encoder", "module", "causal_lm")
WEIGHTS = {"encoder": ("model.safetensors", "heads.safetensors"), "module": ("model.safetensors",),
           "causal_lm": ("model.safetensors",)}
HEADER_OPS = ("length_huge", "length_past_end", "length_short", "length_zero", "json_garbage", "json_not_object",
              "shape_swap", "shape_grow", "dtype_same_width", "dtype_unknown", "offsets_shift", "offsets_past_end",
              "offsets_overlap", "drop_tensor", "rename_tensor", "extra_tensor", "metadata_not_strings")
FANBU_OPS = ("not_json", "truncated", "latin1", "deep", "array", "string", "no_weights", "no_kind", "weights_list",
             "weights_string", "weights_null", "weights_empty", "sha_wrong", "sha_number", "name_parent",
             "name_absolute", "name_nul", "kind_list", "kind_unknown", "kind_other", "provenance_list",
             "provenance_field", "provenance_unknown_field", "extra_key")
SIDE_OPS = ("handle_json", "module_json", "config_json_garbage", "delete_fanbu_json", "delete_weights",
            "unlisted_extra", "symlink_outside", "symlink_inside", "symlink_dangling", "symlink_loop")
odd_values = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 2**70), st.floats(), st.text(max_size=6),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sampled_from([math.inf, -1, 0, 10**30, "", "head_tail", {"topic": []}, {"topic": [1, 2]}, [["a"]]]),
)
mutations = st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, 1), st.floats(0, 1, exclude_max=True)),
    st.tuples(st.just("flip"), st.integers(0, 1), st.floats(0, 1, exclude_max=True), st.integers(1, 255)),
    st.tuples(st.just("header"), st.integers(0, 1), st.sampled_from(HEADER_OPS), st.integers(0, 10**6)),
    st.tuples(st.just("fanbu_json"), st.sampled_from(FANBU_OPS), odd_values),
    st.tuples(st.just("side"), st.sampled_from(SIDE_OPS), st.integers(0, 1), odd_values),
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[Path, dict[str, torch.Tensor]]]]:
    """One tiny saved directory per kind, and the weights its clean load gives."""
    root = tmp_path_factory.mktemp("saved-models")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    encoder = EncoderHandle.tiny(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=16, seed=1)
    encoder.add_head("topic", ["sci", "talk"])
    config = {"vocab_size": len(tiny_tokenizer()), "hidden_size": 8, "num_labels": 3, "seed": 5}
    handles = {
        "encoder": encoder,
        "module": ModuleHandle(bag_of_tokens(**config), config, "fanbu.models.tiny:bag_of_tokens"),
        "causal_lm": CausalLMHandle.tiny(seed=2),
    }
    out = {}
    for kind, handle in handles.items():
        path = handle.save(root / kind, Provenance(name=f"fuzz-{kind}", parents=["p0"]))
        out[kind] = (path, _weights(load_handle(path)))
    yield out
    torch.set_num_threads(before)


def _weights(handle: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in handle.model.state_dict().items()}


def _header(data: bytes) -> tuple[dict[str, Any], bytes]:
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + size]), data[8 + size :]


def _with_header(header: Any, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw + body


def lie(data: bytes, op: str, n: int) -> bytes:
    """The safetensors file ``data`` with its 8-byte header length or its JSON header changed by ``op``."""
    if op == "length_huge":
        return (2**63 + n).to_bytes(8, "little") + data[8:]
    if op == "length_past_end":
        return (len(data) + 1 + n % 4096).to_bytes(8, "little") + data[8:]
    if op == "length_short":
        return max(1, int.from_bytes(data[:8], "little") - 1 - n % 16).to_bytes(8, "little") + data[8:]
    if op == "length_zero":
        return bytes(8) + data[8:]
    try:
        header, body = _header(data)
    except ValueError:  # already damaged: nothing left to lie about
        return data
    names = sorted(k for k in header if k != "__metadata__")
    if not isinstance(header, dict) or not names or not all(isinstance(header[k], dict) for k in names):
        return data
    name = names[n % len(names)]
    entry = header[name]
    if op == "json_garbage":
        return _with_header({}, b"")[:8] + b"{not json" + data[17:]
    if op == "json_not_object":
        return _with_header([1, 2, 3], body)
    if op == "shape_swap":
        entry["shape"] = entry["shape"][::-1] if len(entry["shape"]) > 1 else [*entry["shape"], 1]
    elif op == "shape_grow":
        entry["shape"] = [*entry["shape"][:-1], (entry["shape"] or [1])[-1] + 1 + n % 3]
    elif op == "dtype_same_width":
        entry["dtype"] = {"F32": "I32", "I64": "F64", "F16": "BF16", "BF16": "I16"}.get(entry["dtype"], "U8")
    elif op == "dtype_unknown":
        entry["dtype"] = "F33"
    elif op == "offsets_shift":
        entry["data_offsets"] = [o + 1 + n % 7 for o in entry["data_offsets"]]
    elif op == "offsets_past_end":
        entry["data_offsets"] = [entry["data_offsets"][0], len(body) + 8 + n % 64]
    elif op == "offsets_overlap":
        other = header[names[(n + 1) % len(names)]]
        entry["data_offsets"] = list(other["data_offsets"])
    elif op == "drop_tensor":
        del header[name]
    elif op == "rename_tensor":
        header[f"{name}.renamed"] = header.pop(name)
    elif op == "extra_tensor":
        header["zz.extra"] = {"dtype": "F32", "shape": [1], "data_offsets": [len(body), len(body) + 4]}
        body += bytes(4)
    elif op == "metadata_not_strings":
        header["__metadata__"] = {"format": n, "nested": {"a": [1]}}
    return _with_header(header, body)


def _pick(value: Any, n: int) -> int:
    """A choice among ``n`` that ``value`` fixes (the same in every run, unlike ``hash``)."""
    return zlib.crc32(repr(value).encode()) % n


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def break_fanbu_json(path: Path, op: str, value: Any, kind: str) -> None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError):
        return  # already not JSON
    name = WEIGHTS[kind][0]
    if not isinstance(record, dict) or not isinstance(record.get("weights"), dict) or name not in record["weights"] \
            or not isinstance(record.get("provenance"), dict) or "kind" not in record:
        return  # already broken in structure: damage it no further
    raw: bytes | None = None
    if op == "not_json":
        raw = b"{'kind': 'encoder'"
    elif op == "truncated":
        raw = path.read_bytes()[: len(path.read_bytes()) // 2]
    elif op == "latin1":
        raw = path.read_bytes().replace(b'"fuzz-', b'"fuzz\xe9-')
    elif op == "deep":
        raw = b"[" * 100_000 + b"]" * 100_000
    elif op == "array":
        raw = json.dumps([record]).encode()
    elif op == "string":
        raw = json.dumps("fanbu").encode()
    elif op in ("no_weights", "no_kind"):
        del record[op.removeprefix("no_")]
    elif op == "weights_list":
        record["weights"] = list(record["weights"].items())
    elif op == "weights_string":
        record["weights"] = name
    elif op == "weights_null":
        record["weights"] = None
    elif op == "weights_empty":
        record["weights"] = {}
    elif op == "sha_wrong":
        record["weights"][name] = "0" * 64
    elif op == "sha_number":
        record["weights"][name] = 12345 if not isinstance(value, str) else value
    elif op == "name_parent":
        record["weights"]["../" + name] = record["weights"].pop(name)
    elif op == "name_absolute":
        record["weights"][str(path.parent.resolve() / name)] = record["weights"].pop(name)
    elif op == "name_nul":
        record["weights"][name + "\x00.txt"] = record["weights"].pop(name)
    elif op == "kind_list":
        record["kind"] = [kind]
    elif op == "kind_unknown":
        record["kind"] = value if value is not None else "transformer"
    elif op == "kind_other":
        record["kind"] = {"encoder": "module", "module": "causal_lm", "causal_lm": "encoder"}[kind]
    elif op == "provenance_list":
        record["provenance"] = [record["provenance"]]
    elif op == "provenance_field":
        field = ["parents", "recipe", "base_model", "base_model_relation", "name", "metrics", "fanbu_version"]
        record["provenance"][field[_pick(value, len(field))]] = value
    elif op == "provenance_unknown_field":
        record["provenance"]["zz"] = value
    else:
        record["zz_extra"] = value
    if raw is None:
        raw = json.dumps(record, allow_nan=True).encode()
    path.write_bytes(raw)


def side_damage(directory: Path, outside: Path, op: str, index: int, value: Any, kind: str) -> bool:
    """Damage beside the weights' bytes; ``False`` when ``op`` does not apply (any more)."""
    weights = WEIGHTS[kind]
    target = directory / weights[index % len(weights)]
    if op in ("delete_weights", "unlisted_extra", "symlink_outside", "symlink_inside", "symlink_dangling",
              "symlink_loop") and (
        target.is_symlink() or not target.is_file()
    ):
        return False  # already gone or linked
    if op == "handle_json":
        path = directory / ("module.json" if kind == "module" else "handle.json")
        if kind == "module":
            settings = json.loads(path.read_text())
            settings[["factory", "config"][index % 2]] = value
        else:
            settings = json.loads(path.read_text())
            settings[["max_length", "dropout", "labels", "truncation"][_pick(value, 4)]] = value
        path.write_text(json.dumps(settings, allow_nan=True))
    elif op == "module_json" and kind == "module":
        settings = json.loads((directory / "module.json").read_text())
        if not isinstance(settings.get("config"), dict):
            return False
        settings["config"] = {**settings["config"], **({"hidden_size": value} if index else {"zz": value})}
        (directory / "module.json").write_text(json.dumps(settings, allow_nan=True))
    elif op == "config_json_garbage" and (directory / "config.json").is_file():
        (directory / "config.json").write_bytes(b"{\"model_type\": ")
    elif op == "delete_fanbu_json":
        (directory / "fanbu.json").unlink(missing_ok=True)
    elif op == "delete_weights":
        target.unlink()
    elif op == "unlisted_extra":
        shutil.copyfile(target, directory / "extra.safetensors")
    elif op == "symlink_outside":
        copy = outside / target.name
        shutil.copyfile(target, copy)
        target.unlink()
        target.symlink_to(copy)
    elif op == "symlink_inside":
        kept = directory / (target.name + ".bak")
        target.rename(kept)
        target.symlink_to(kept.name)
    elif op == "symlink_dangling":
        target.unlink()
        target.symlink_to(outside / "nowhere.safetensors")
    elif op == "symlink_loop":
        target.unlink()
        target.symlink_to(target.name)
    else:
        return False
    return True


def resign(directory: Path) -> None:
    """Recompute the sha256 that ``fanbu.json`` records for each listed weights file still present."""
    path = directory / "fanbu.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError, RecursionError):
        return
    if not isinstance(record, dict) or not isinstance(record.get("weights"), dict):
        return
    for name in list(record["weights"]):
        file = directory / str(name)
        if "\x00" not in str(name) and file.is_file():
            record["weights"][name] = _sha(file)
    path.write_text(json.dumps(record, allow_nan=True))


def _layout(path: Path) -> dict[str, tuple[str, tuple[int, ...]]] | None:
    """Each tensor's dtype and shape in a safetensors file (``None`` if it does not parse)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {
                key: (handle.get_slice(key).get_dtype(), tuple(handle.get_slice(key).get_shape()))
                for key in handle.keys()  # noqa: SIM118 (safe_open is not a mapping)
            }
    except (SafetensorError, OSError, ValueError):
        return None


@given(kind=st.sampled_from(KINDS), damage=st.lists(mutations, min_size=1, max_size=3), signed=st.booleans())
@fuzz_settings(300)
def _fuzz_model_dir(
    saved: dict[str, tuple[Path, dict[str, torch.Tensor]]], kind: str, damage: list[tuple[Any, ...]], signed: bool
) -> None:
    CASES["model_dirs"] += 1
    note(f"{kind} signed={signed} damage={damage!r:.1500}")
    base, reference = saved[kind]
    with tempfile.TemporaryDirectory() as tmp:
        directory, outside = Path(tmp) / "model", Path(tmp) / "outside"
        shutil.copytree(base, directory, symlinks=True)
        outside.mkdir()
        refused = False  # damage that must always be refused
        for item in damage:
            weights = [directory / name for name in WEIGHTS[kind]]
            if item[0] in ("truncate", "flip", "header"):
                path = weights[item[1] % len(weights)]
                if not path.is_file() or path.is_symlink():
                    continue
                data = path.read_bytes()
                if item[0] == "truncate":
                    data = data[: int(item[2] * len(data))]
                elif item[0] == "flip" and data:
                    at = int(item[2] * len(data))
                    data = data[:at] + bytes([data[at] ^ item[3]]) + data[at + 1 :]
                elif item[0] == "header":
                    data = lie(data, item[2], item[3])
                path.write_bytes(data)
            elif item[0] == "fanbu_json":
                if (directory / "fanbu.json").is_file():
                    break_fanbu_json(directory / "fanbu.json", item[1], item[2], kind)
            else:
                applied = side_damage(directory, outside, item[1], item[2], item[3], kind)
                refused |= applied and item[1] in ("unlisted_extra", "symlink_outside", "symlink_dangling",
                                                   "symlink_loop", "delete_weights")
        if signed:
            resign(directory)
        try:
            handle = load_handle(directory)
        except ModelError as exc:
            assert str(exc).strip()
            return
        assert not refused, f"damage {damage} was not refused"
        loaded = _weights(handle)
        if loaded.keys() == reference.keys() and all(torch.equal(loaded[k], reference[k]) for k in reference):
            return
        assert signed, "weights changed but their sha256 was not re-signed, and the load succeeded"
        for name in WEIGHTS[kind]:
            assert _layout(directory / name) == _layout(base / name), (
                f"{name}: tensor names, shapes or dtypes changed and the load succeeded"
            )


def test_fuzz_model_directories(saved: dict[str, tuple[Path, dict[str, torch.Tensor]]]) -> None:
    run_counted(CASES, "model_dirs", lambda: _fuzz_model_dir(saved), 300)


def test_clean_copies_load(saved: dict[str, tuple[Path, dict[str, torch.Tensor]]], tmp_path: Path) -> None:
    """The fuzz's starting point: an undamaged copy (and one whose weights link inside it) loads."""
    for kind, (base, reference) in saved.items():
        copy = tmp_path / kind
        shutil.copytree(base, copy)
        side_damage(copy, tmp_path, "symlink_inside", 0, None, kind)
        loaded = _weights(load_handle(copy))
        assert all(torch.equal(loaded[k], reference[k]) for k in reference)
