"""fanbu doctor: the registry and the artefacts on disk agree, each disagreement is found, repair moves."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fanbu.cli import app
from fanbu.errors import RegistryError
from fanbu.models import EncoderHandle, Provenance
from fanbu.registry import DatasetRecord, ModelRecord, Registry
from fanbu.registry.doctor import KINDS, QUARANTINE, REASON, RECORD, diagnose, repair
from fanbu.registry.workspace import Workspace

FINGERPRINT = "cd" * 32


@dataclass(frozen=True)
class Home:
    """A registry with two saved models (one nested name, one child), a pretrained source and a dataset."""

    registry: Registry
    root: ModelRecord
    child: ModelRecord
    data: DatasetRecord

    @property
    def path(self) -> Path:
        assert self.registry.home is not None
        return self.registry.home


def _tiny() -> EncoderHandle:
    handle = EncoderHandle.tiny(seed=0)
    handle.add_head("topic", ["a", "b"])
    return handle


@pytest.fixture
def home(registry: Registry) -> Home:
    workspace = Workspace(registry)
    source = workspace.register_source("package:all-MiniLM-L6-v2")  # outside the home: not checked
    root = workspace.save_and_register(_tiny(), Provenance(), name="large", status="champion")
    child = workspace.save_and_register(_tiny(), Provenance(parents=[root.id, source]), name="org/comp")
    assert registry.home is not None
    directory = registry.home / "datasets" / "fb" / FINGERPRINT[:12]  # as fanbu.collect writes it
    directory.mkdir(parents=True)
    (directory / "comp.jsonl").write_text('{"text": "a", "label": "x"}\n')
    (directory / "manifest.json").write_text(json.dumps({"name": "fb", "fingerprint": FINGERPRINT}))
    data = registry.register_dataset(name="fb", fingerprint=FINGERPRINT, n_rows=1, source=str(directory))
    return Home(registry, root, child, data)


def _files(home: Path) -> dict[str, str]:
    """Every artefact file's sha256 by its path under the home, a quarantined one by its original path."""
    found = {}
    for file in sorted(p for p in home.rglob("*") if p.is_file() and not p.name.startswith("registry.db")):
        parts = file.relative_to(home).parts
        if parts[0] == QUARANTINE:
            if file.name == RECORD:
                continue
            parts = parts[2:]
        found["/".join(parts)] = hashlib.sha256(file.read_bytes()).hexdigest()
    return found


def _flip(file: Path) -> None:
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))


def _write(file: Path, text: str = "half") -> Path:
    file.write_text(text)
    return file


def _edit_fanbu_json(directory: Path, **provenance: object) -> Path:
    record = json.loads((directory / "fanbu.json").read_text())
    record["provenance"].update(provenance)
    _write(directory / "fanbu.json", json.dumps(record))
    return directory


def _weights_deleted(h: Home) -> Path:
    (Path(h.child.path) / "model.safetensors").unlink()
    return Path(h.child.path)


def _weights_flipped(h: Home) -> Path:
    _flip(Path(h.root.path) / "heads.safetensors")
    return Path(h.root.path)


def _directory_removed(h: Home) -> None:
    shutil.rmtree(h.child.path)  # nothing left to move: repair marks the model rejected


def _staging_directory(h: Home) -> Path:
    directory = h.path / "models" / "large" / ".v1.k2j4h.partial"  # as fanbu.io.atomic_directory names it
    directory.mkdir()
    _write(directory / "model.safetensors")
    return directory


def _parent_row_deleted(h: Home) -> None:
    with sqlite3.connect(h.path / "registry.db") as conn:  # as a backend without foreign keys allows
        conn.execute("PRAGMA foreign_keys = OFF")
        conn.execute("DELETE FROM models WHERE id = ?", (h.child.parents[1],))


def _manifest(h: Home, text: str) -> Path:
    return _write(Path(h.data.source or "") / "manifest.json", text).parent


# each corruption: what it does (returning what repair must move, if anything) and the kind reported
CORRUPTIONS: dict[str, tuple[Callable[[Home], Path | None], str]] = {
    "weights deleted": (_weights_deleted, "missing_weights"),
    "weights flipped": (_weights_flipped, "weights_mismatch"),
    "directory removed": (_directory_removed, "missing_dir"),
    "fanbu.json broken": (
        lambda h: _write(Path(h.root.path) / "fanbu.json", "{not json").parent, "bad_fanbu_json"
    ),
    "fanbu.json names another id": (
        lambda h: _edit_fanbu_json(Path(h.child.path), name="other:v3"), "wrong_id"
    ),
    "fanbu.json names other parents": (
        lambda h: _edit_fanbu_json(Path(h.child.path), parents=[]), "wrong_id"
    ),
    "staging directory left": (_staging_directory, "staging_leftover"),
    "staging file left in a model": (
        lambda h: _write(Path(h.root.path) / ".fanbu.json.x1y2.tmp"), "staging_leftover"
    ),
    "orphan directory": (
        lambda h: Path(shutil.copytree(h.root.path, h.path / "models/large/v7")), "orphan_dir"
    ),
    "manifest broken": (lambda h: _manifest(h, "{"), "bad_manifest"),
    "manifest names another fingerprint": (
        lambda h: _manifest(h, json.dumps({"fingerprint": "ef" * 32})), "wrong_id"
    ),
    "parent without a row": (_parent_row_deleted, "missing_parent"),
}


def test_a_healthy_registry_reports_nothing(home: Home) -> None:
    report = diagnose(home.registry, grace=0)
    assert report.healthy and report.problems == [] and report.notes == []
    assert repair(report, home.registry) is None
    assert not (home.path / QUARANTINE).exists()
    assert {p.kind for p in diagnose(home.registry).problems} == set()


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_each_corruption_is_reported_and_quarantined_never_deleted(home: Home, case: str) -> None:
    corrupt, kind = CORRUPTIONS[case]
    assert kind in KINDS
    moved = corrupt(home)
    report = diagnose(home.registry, grace=0)
    assert [p.kind for p in report.problems] == [kind], report.problems
    problem = report.problems[0]
    assert problem.message and problem.subject
    assert json.loads(json.dumps(report.to_json()))["problems"][0]["kind"] == kind
    before = _files(home.path)
    folder = repair(report, home.registry)
    assert _files(home.path) == before  # every file is still there, some under quarantine/
    if kind == "missing_parent":  # documented to remain: the doctor cannot re-create a row
        assert folder is None and [p.kind for p in diagnose(home.registry, grace=0).problems] == [kind]
        return
    assert folder is not None and folder.parent == home.path / QUARANTINE
    if moved is not None:
        assert not moved.exists() and (folder / moved.relative_to(home.path)).exists()
    entries = json.loads((folder / RECORD).read_text())["entries"]
    assert [e["kind"] for e in entries] == [kind]
    if problem.model is not None:
        record = home.registry.get_model(problem.model)
        assert record.status == "rejected" and record.reason is not None and record.reason.startswith(REASON)
        assert entries[0]["status"] == problem.status in ("champion", "candidate")
    again = diagnose(home.registry, grace=0)
    assert again.healthy, again.problems
    if kind not in ("staging_leftover", "orphan_dir"):  # a registered artefact: its row stays, noted
        assert any("in quarantine" in note for note in again.notes), again.notes


def test_fresh_leftovers_count_as_a_writer_at_work(home: Home) -> None:
    _staging_directory(home)
    shutil.copytree(home.root.path, home.path / "models" / "large" / "v1")
    report = diagnose(home.registry)  # default grace: an hour
    assert report.healthy and len(report.notes) == 2
    assert all("writer may be at work" in note for note in report.notes)
    assert {p.kind for p in diagnose(home.registry, grace=0).problems} == {"staging_leftover", "orphan_dir"}


def test_a_moved_home_is_reported_not_quarantined(home: Home, tmp_path: Path) -> None:
    home.registry.close()
    moved = tmp_path / "elsewhere"
    shutil.move(home.path, moved)
    with Registry.open(moved) as registry:
        report = diagnose(registry, grace=0)
        assert sorted((p.kind, p.subject) for p in report.problems) == [
            ("moved_home", home.root.id), ("moved_home", home.child.id)
        ]
        assert repair(report, registry) is None
        assert registry.get_model(home.root.id).status == "champion"
    assert (moved / "models" / "large" / "v0" / "fanbu.json").is_file()


def test_repair_changes_nothing_if_a_status_changed_meanwhile(home: Home) -> None:
    _flip(Path(home.root.path) / "model.safetensors")
    report = diagnose(home.registry, grace=0)
    home.registry.set_status(home.root.id, "archived")
    with pytest.raises(RegistryError, match="changed meanwhile"):
        repair(report, home.registry)
    assert Path(home.root.path).is_dir() and not (home.path / QUARANTINE).exists()
    assert home.registry.get_model(home.root.id).status == "archived"


def test_doctor_command_exit_codes_repair_and_json(home: Home) -> None:
    runner = CliRunner()
    args = ["doctor", "--home", str(home.path)]
    healthy = runner.invoke(app, args)
    assert healthy.exit_code == 0, healthy.output
    assert "healthy" in healthy.output
    _flip(Path(home.child.path) / "model.safetensors")
    sick = runner.invoke(app, args)
    assert sick.exit_code == 1 and "weights_mismatch" in sick.output
    as_json = runner.invoke(app, [*args, "--json"])
    assert as_json.exit_code == 1
    data = json.loads(as_json.stdout)
    assert not data["healthy"] and [p["kind"] for p in data["problems"]] == ["weights_mismatch"]
    repaired = runner.invoke(app, [*args, "--repair", "--json"])
    assert repaired.exit_code == 0, repaired.output
    folder = Path(json.loads(repaired.stdout)["quarantine"])
    assert (folder / "models" / "org" / "comp" / "v0" / "model.safetensors").is_file()
    assert home.registry.get_model(home.child.id).status == "rejected"
    assert runner.invoke(app, args).exit_code == 0
