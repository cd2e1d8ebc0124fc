"""``fanbu doctor``: check that the registry and the artefact directories under its home agree.

A model row's ``path`` is ``home/models/<name>/v<version>``, written whole by
:func:`fanbu.io.atomic_directory` (staged as ``.v<N>.<random>.partial``, a replaced one set aside as
``.v<N>.old-<pid>``, files staged as ``.<file>.<random>.tmp``). Its ``fanbu.json`` holds the kind,
the provenance (``name`` is the row id, ``parents`` the row's parents) and the sha256 of every
``*.safetensors`` file: the row records no weight hash, so ``fanbu.json`` is the fingerprint checked.
A collected dataset row's ``source`` is ``home/datasets/<name>/<fingerprint[:12]>`` with a
``manifest.json`` naming its fingerprint. Rows pointing outside the home (a pretrained source:
``package:NAME``, a hub id, a directory elsewhere) are not checked.

:func:`repair` never deletes: it moves each untrustworthy directory to ``home/quarantine/<UTC time>/``
(same relative path), marks its model ``rejected`` (reason ``quarantined by fanbu doctor: ...``; so
is a model whose directory is missing) in one transaction, and lists what it did in that folder's
``doctor.json``. Rows stay; a later diagnosis lists a row whose directory went to quarantine as a note,
not a problem. Repair leaves, still reported: a parent id with no row, a home that moved (rows point
at the old place), a missing dataset directory. A staging entry or unregistered directory younger than
``grace`` may be a save at work (it registers after its directory is complete): it is only noted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from fanbu.errors import ModelError, RegistryError
from fanbu.io import atomic_write_json, sha256_file
from fanbu.models.artefact import FANBU_JSON, read_provenance
from fanbu.models.loading import handle_kind
from fanbu.registry.records import ModelRecord
from fanbu.registry.store import Registry

STAGING = re.compile(r"^\..+\.(partial|tmp)$|^\..+\.old-\d+$")  # names fanbu.io writes before renaming
MANIFEST = "manifest.json"  # a collected dataset's (fanbu.collect.dataset)
QUARANTINE = "quarantine"
RECORD = "doctor.json"
REASON = "quarantined by fanbu doctor"
KINDS = (
    "missing_dir", "moved_home", "bad_fanbu_json", "wrong_id", "missing_weights", "weights_mismatch",
    "bad_manifest", "missing_parent", "staging_leftover", "orphan_dir",
)


@dataclass(frozen=True)
class Problem:
    """One disagreement: its kind (one of :data:`KINDS`), what it concerns, and what to do.

    ``repairable`` problems are quarantined by :func:`repair` (``path`` moved, ``model`` rejected
    unless its ``status`` changed since the diagnosis).
    """

    kind: str
    subject: str
    message: str
    path: str | None = None
    model: str | None = None
    status: str | None = None
    repairable: bool = False


@dataclass
class DoctorReport:
    """What :func:`diagnose` found under ``home``; ``notes`` are facts that need no action."""

    home: Path
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        """Whether no problem was found."""
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        """The report as a ``json.dumps``-able dict."""
        return {"home": str(self.home), "healthy": self.healthy, "notes": list(self.notes),
                "problems": [asdict(p) for p in self.problems]}


def diagnose(registry: Registry, *, grace: float = 3600.0) -> DoctorReport:
    """Check every model and dataset row against its directory, and every directory against the rows.

    Args:
        registry: A registry with a home (``Registry.open(home)``).
        grace: Seconds during which an unregistered or staging entry counts as a writer at work (a
            save registers only after its directory is complete): noted, not reported.

    Raises:
        RegistryError: the registry has no home directory.
    """
    if registry.home is None:
        raise RegistryError("fanbu doctor needs a registry with a home: open it with Registry.open(home)")
    home = registry.home.resolve()
    report = DoctorReport(home)
    gone = _quarantined(home, report)
    models, datasets = registry.list_models(), registry.list_datasets()
    ids = {m.id for m in models}
    claimed: set[Path] = set()
    for model in models:
        missing = [p for p in model.parents if p not in ids]
        if missing:
            report.problems.append(Problem(
                "missing_parent", model.id, f"parents {', '.join(missing)} have no row (a foreign key was "
                "bypassed): restore them from a backup of the database; the doctor cannot re-create them"))
        expected, path = registry.model_dir(model.name, model.version).resolve(), Path(model.path).resolve()
        claimed |= {expected, path}
        if not path.is_relative_to(home / "models"):
            if expected.is_dir():
                report.problems.append(Problem(
                    "moved_home", model.id, f"the row points at {path} but the artefacts are at {expected}: "
                    "was the home moved? move it back (rows keep absolute paths)", str(expected)))
            continue
        if not path.is_dir():
            if str(path) in gone:
                report.notes.append(f"{model.id}: in quarantine ({model.status})")
            else:
                report.problems.append(Problem(
                    "missing_dir", model.id, f"{path} is missing: restore it from a backup; --repair marks "
                    "the model rejected", str(path), model.id, model.status, True))
            continue
        report.problems.extend(_check_model(path, model))
    for data in datasets:
        expected = (home / "datasets" / data.name / data.fingerprint[:12]).resolve()
        path = Path(data.source).resolve() if data.source else expected
        claimed |= {expected, path}
        if not path.is_relative_to(home / "datasets"):
            continue
        if not path.is_dir():
            if str(path) in gone:
                report.notes.append(f"{data.id}: in quarantine")
            else:
                report.problems.append(Problem(
                    "missing_dir", data.id, f"{path} is missing: rerun `fanbu collect` with the same "
                    "settings (the same content is rewritten there) or restore it", str(path)))
            continue
        try:
            found = json.loads((path / MANIFEST).read_text(encoding="utf-8")).get("fingerprint")
        except (OSError, ValueError, AttributeError) as exc:
            report.problems.append(Problem("bad_manifest", data.id, f"{path / MANIFEST}: unreadable "
                                           f"({exc}); --repair quarantines it", str(path), repairable=True))
            continue
        if found != data.fingerprint:
            report.problems.append(Problem("wrong_id", data.id, f"{path / MANIFEST} names fingerprint "
                                           f"{found!r}, the row {data.fingerprint!r}: --repair quarantines "
                                           "it", str(path), repairable=True))
    for root in (home / "models", home / "datasets"):
        _scan(root, home, claimed, time.time() - grace, report)
    return report


def _check_model(path: Path, model: ModelRecord) -> list[Problem]:
    """The problems of one registered model directory (present on disk)."""
    fix = "--repair quarantines it, then re-save the model or restore the directory"
    model_id, at = model.id, (str(path), model.id, model.status, True)  # where, which row, its status
    try:
        provenance, _ = read_provenance(path)
        weights = json.loads((path / FANBU_JSON).read_text(encoding="utf-8"))["weights"]
        if not isinstance(weights, dict):
            raise ModelError(f"{path / FANBU_JSON}: 'weights' is not a mapping")
        found_kind = handle_kind(path)
    except (ModelError, OSError, ValueError) as exc:
        return [Problem("bad_fanbu_json", model_id, f"{exc}; {fix}", *at)]
    wrong = [
        f"{what} {got!r} (row: {want!r})"
        for what, got, want in (("name", provenance.name, model_id), ("kind", found_kind, model.kind),
                                ("parents", tuple(provenance.parents), model.parents))
        if got != want and not (what == "name" and got is None)  # fanbu versions before names: no name
    ]
    if wrong:
        message = f"{FANBU_JSON} has {', '.join(wrong)}; {fix}"
        return [Problem("wrong_id", model_id, message, *at)]
    problems = []
    for name, expected in sorted(weights.items()):
        file = path / name
        if not file.is_file():
            found, what = "missing_weights", f"{file} is missing"
        elif sha256_file(file) != expected:
            found, what = "weights_mismatch", f"{file}: sha256 differs from {FANBU_JSON}'s (corrupt or cut)"
        else:
            continue
        problems.append(Problem(found, model_id, f"{what}; {fix}", *at))
    return problems


def _scan(root: Path, home: Path, claimed: set[Path], cutoff: float, report: DoctorReport) -> None:
    """Report staging leftovers and unregistered artefacts under ``root`` (models or datasets)."""
    ancestors = {a for c in claimed for a in c.parents}
    stack = [(root, False)] if root.is_dir() else []
    while stack:
        directory, inside = stack.pop()  # inside: a registered artefact, where only staging is looked for
        for entry in sorted(directory.iterdir()):
            staging = STAGING.match(entry.name) is not None
            folder = entry.is_dir() and not entry.is_symlink()
            if not staging and (inside or entry in claimed):
                stack.extend([(entry, True)] if folder else [])
                continue
            looks = not folder or (entry / FANBU_JSON).exists() or (entry / MANIFEST).exists()
            if not staging and folder and (entry in ancestors or not looks):
                stack.append((entry, False))  # a container: models/<org>/<name>, datasets/<name>
                continue
            rel = entry.relative_to(home)
            if entry.lstat().st_mtime > cutoff:
                report.notes.append(f"{rel}: recent, a writer may be at work (not checked)")
            elif staging:
                report.problems.append(Problem(
                    "staging_leftover", str(rel), "left by an interrupted write: --repair quarantines it",
                    str(entry), repairable=True))
            else:
                report.problems.append(Problem(
                    "orphan_dir", str(rel), "on disk but in no registry row (a save that crashed before "
                    "registering?): --repair quarantines it; re-register it with Workspace.register_saved "
                    "if it is sound", str(entry), repairable=True))


def _quarantined(home: Path, report: DoctorReport) -> set[str]:
    """The original paths every earlier repair recorded in ``home/quarantine/*/doctor.json``."""
    paths: set[str] = set()
    for record in sorted((home / QUARANTINE).glob(f"*/{RECORD}")):
        try:
            paths |= {str(e["path"]) for e in json.loads(record.read_text(encoding="utf-8"))["entries"]}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            report.notes.append(f"{record.relative_to(home)}: unreadable ({exc}); its entries are not known")
    return paths


def repair(report: DoctorReport, registry: Registry) -> Path | None:
    """Quarantine every repairable problem of a fresh ``report``; the quarantine folder, or ``None``.

    The models concerned are marked ``rejected`` in one transaction first (it fails whole, nothing moved,
    if one changed status since the diagnosis); then each directory is moved, never deleted, and
    ``doctor.json`` lists every move and every row marked (with the status it had).
    """
    todo = [p for p in report.problems if p.repairable]
    if not todo:
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder, n = report.home / QUARANTINE / stamp, 0
    while folder.exists():
        n += 1
        folder = report.home / QUARANTINE / f"{stamp}-{n}"
    marks = {p.model: p for p in todo if p.model}
    if marks:
        changes = [(m, "rejected", f"{REASON}: {p.kind} ({folder.name})") for m, p in marks.items()]
        registry.set_statuses(changes, expected={m: p.status for m, p in marks.items() if p.status})
    folder.mkdir(parents=True)
    entries: list[dict[str, Any]] = []
    try:
        moved: set[str] = set()
        for problem in todo:
            entry = {**asdict(problem), "moved_to": None}
            source = Path(problem.path) if problem.path else None
            if source is not None and problem.path not in moved and os.path.lexists(source):
                target = folder / source.relative_to(report.home)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(source, target)
                moved.add(str(problem.path))
                entry["moved_to"] = str(target)
            entries.append(entry)
    finally:
        created = datetime.now(UTC).isoformat(timespec="seconds")
        atomic_write_json(folder / RECORD, {"created": created, "home": str(report.home), "entries": entries})
    return folder


def report_table(report: DoctorReport) -> Table:
    """The problems as a rich table: kind, subject, what to do."""
    table = Table(title=f"fanbu doctor: {report.home}")
    for column in ("kind", "id / path", "what to do"):
        table.add_column(column, overflow="fold")
    for problem in report.problems:
        table.add_row(Text(problem.kind, style="bold red"), Text(problem.subject), Text(problem.message))
    return table
