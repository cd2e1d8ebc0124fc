"""Hostile input: names that become paths, the serving token and file modes, HTML in the report, and
passwords in database URLs."""

from __future__ import annotations

import hmac
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fanbu.cli import app, friendly
from fanbu.collect.curated import CurateConfig, Curated, Example
from fanbu.collect.dataset import write_collected
from fanbu.config import validate
from fanbu.errors import ConfigError, DomainError, FanbuError, RegistryError
from fanbu.io import check_path_name, safe_child
from fanbu.models.artefact import Provenance
from fanbu.registry import Registry
from fanbu.registry.checks import check_model_name
from fanbu.registry.engine import describe_url, redact
from fanbu.registry.workspace import Workspace

# ---------------------------------------------------------------------------------- names -> paths

TRAVERSAL = [
    "../x",
    "..",
    ".",
    "a/../../b",
    "a/./b",
    "/etc/x",
    "/",
    "x\x00y",
    "a\\b",
    "..\\..\\x",
    "~",
    "~root/x",
    "a//b",
    "x/",
    "x\ny",
    "x" * 300,
    "",
    "   ",
]
# model names are stricter still: one "org/name" of [A-Za-z0-9_.-], no leading "." per segment
HOSTILE_MODEL_NAMES = [*TRAVERSAL, ".hidden", "a/.git", "name:v1", "a b", "<script>"]


def _nothing_under(root: Path, *, besides: tuple[str, ...] = ()) -> list[Path]:
    return [p for p in root.rglob("*") if p.name not in besides and not p.name.startswith("registry.db")]


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    reg = Registry.open(tmp_path / "home")
    yield reg
    reg.close()


@pytest.mark.parametrize("name", ["..", "a/..", "../a", "a/../b", ".", "./a", "/a", "a/"])
def test_model_name_regex_refuses_dot_segments_and_absolute_paths(name: str) -> None:
    with pytest.raises(RegistryError, match="invalid model name"):
        check_model_name(name)


@pytest.mark.parametrize("name", ["minilm-comp", "org/name", "comp.quantize", "a..b", "_x"])
def test_model_name_regex_keeps_ordinary_names(name: str) -> None:
    assert check_model_name(name) == name


@pytest.mark.parametrize("name", TRAVERSAL)
def test_path_names_are_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid domain name|must be a string"):
        check_path_name(name, "domain name", nested=True)
    with pytest.raises(ConfigError):
        safe_child(tmp_path, name, what="domain name", nested=True)


def test_safe_child_keeps_ordinary_names_and_refuses_symlinks_out(tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert safe_child(root, "comp", "v0") == root / "comp" / "v0"
    assert safe_child(root, "org/name", nested=True) == root / "org" / "name"
    assert check_path_name("r&d lab", "domain name") == "r&d lab"  # spaces and symbols are not paths
    with pytest.raises(ConfigError, match="holds a '/'"):
        check_path_name("a/b", "domain name")  # one segment unless nested
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "link").symlink_to(outside)
    with pytest.raises(RegistryError, match="outside"):
        safe_child(root, "link", "x", error=RegistryError)


@pytest.mark.parametrize("name", HOSTILE_MODEL_NAMES)
def test_registry_refuses_hostile_model_names(registry: Registry, name: str) -> None:
    with pytest.raises(RegistryError):
        registry.register_model(name=name, path="/models/x", kind="encoder")
    with pytest.raises(RegistryError):
        registry.model_dir(name, 0)
    assert registry.list_models() == []


@pytest.mark.parametrize("version", [-1, "../x", "0/../..", True, 1.5])
def test_model_dir_refuses_a_version_that_is_not_a_number(registry: Registry, version: object) -> None:
    with pytest.raises(RegistryError, match="version"):
        registry.model_dir("comp", version)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", HOSTILE_MODEL_NAMES)
def test_save_and_register_refuses_before_anything_is_saved(registry: Registry, name: str) -> None:
    saved: list[Path] = []

    def save(path: Path, provenance: Provenance) -> None:
        saved.append(path)
        path.mkdir(parents=True)

    with pytest.raises(RegistryError):
        Workspace(registry).save_and_register(object(), Provenance(), name=name, save=save)
    assert saved == [] and registry.list_models() == []
    assert registry.home is not None and _nothing_under(registry.home) == []


def test_a_model_source_named_like_a_path_is_refused(registry: Registry) -> None:
    with pytest.raises(RegistryError, match="invalid model name"):
        Workspace(registry).register_source("package:../../x")


@pytest.mark.parametrize("name", TRAVERSAL)
def test_registry_refuses_hostile_dataset_names(registry: Registry, name: str) -> None:
    with pytest.raises(RegistryError):
        registry.register_dataset(name=name, fingerprint="ab" * 32, n_rows=1)
    assert registry.list_datasets() == []


def test_dataset_names_may_still_be_nested(registry: Registry) -> None:
    record = registry.register_dataset(name="comp/train", fingerprint="ab" * 32, n_rows=1)
    assert record.name == "comp/train"


def _curated(domain: str = "topic") -> Curated:
    example = Example(domain, "some text", "sci", "human", "p" * 32)
    return Curated(labeled={domain: [example]}, unlabeled={domain: []}, label_names={domain: ["sci", "talk"]})


@pytest.mark.parametrize("name", TRAVERSAL)
def test_collect_refuses_hostile_dataset_names(registry: Registry, name: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="name"):
        validate(CurateConfig, {"name": name})
    out = tmp_path / "out" / "datasets"
    config = CurateConfig.model_construct(**{**CurateConfig().model_dump(), "name": name, "out": str(out)})
    with pytest.raises(ConfigError):
        write_collected(registry, config, _curated())
    assert not (tmp_path / "out").exists() and registry.list_datasets() == []


@pytest.mark.parametrize("domain", TRAVERSAL)
def test_collect_refuses_hostile_logged_heads(registry: Registry, domain: str, tmp_path: Path) -> None:
    out = tmp_path / "out" / "datasets"
    with pytest.raises(DomainError, match="domain"):
        write_collected(registry, CurateConfig(out=str(out)), _curated(domain))
    assert not (tmp_path / "out").exists() and registry.list_datasets() == []


def test_collect_cli_refuses_a_traversing_name_before_opening_the_registry(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = CliRunner().invoke(app, ["collect", "name=../../escape", "--home", str(home)])
    assert result.exit_code == 2 and "dataset name" in result.output
    assert not home.exists() and not (tmp_path / "escape").exists()


@pytest.mark.parametrize("domain", ["../escape", "a/b", "..", "~", "x\x00"])
def test_derive_refuses_hostile_domain_names_before_any_run(registry: Registry, domain: str) -> None:
    from pydantic import ValidationError

    from fanbu.derive.pipeline import DeriveRecipe, run_derive

    data = {"data": {"source": "files", "files": [{"name": domain, "train": "train.jsonl"}]}}
    if "." in domain:  # a '.' is refused as the recipe is read, before any run can start
        with pytest.raises(ValidationError, match="domain name"):
            DeriveRecipe.model_validate(data)
    else:
        with pytest.raises(ConfigError, match="domain name"):
            run_derive(DeriveRecipe.model_validate(data), registry)
    assert registry.list_runs() == [] and registry.home is not None and _nothing_under(registry.home) == []


def test_federated_inputs_and_client_dirs_refuse_hostile_domains(tmp_path: Path) -> None:
    from fanbu.federated.run import save_inputs
    from fanbu.federated.settings import RunSettings

    class Saving:
        provenance = None

        def __init__(self) -> None:
            self.saved: list[Path] = []

        def save(self, path: Path, provenance: Provenance, overwrite: bool = False) -> Path:
            self.saved.append(path)
            return path

    handle = Saving()
    with pytest.raises(ConfigError, match="domain name"):
        save_inputs(handle, {"../../escape": handle}, tmp_path / "work")  # type: ignore[arg-type]
    assert handle.saved == []  # not even the large model: every name is checked first
    settings = RunSettings(None, tmp_path / "work", tmp_path / "large")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="client id"):
        settings.client_dir("../../escape-0", {})


def test_catalog_names_refuse_a_trailing_newline() -> None:
    from fanbu.registration import Catalog, NoSettings

    catalog: Catalog = Catalog("strategy", field="strategies")
    with pytest.raises(ValueError, match="a name is lower case"):
        catalog.register("evil\n", summary="x", reference="https://example.org", config=NoSettings)(object())


# ------------------------------------------------------------------------------ token and modes


def test_bearer_check_compares_hashes_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    from fanbu.collect.hashing import text_hash
    from fanbu.serve import security

    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(security.hmac, "compare_digest", spy)
    stored = text_hash("right")
    assert security.check_bearer("Bearer right", stored)
    assert not security.check_bearer("Bearer wrong", stored)
    assert calls == [(text_hash("right"), stored), (text_hash("wrong"), stored)]


def test_token_file_is_owner_only_from_its_creation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fanbu.serve import security

    monkeypatch.delenv(security.TOKEN_ENV, raising=False)
    modes: list[int] = []
    real_replace = os.replace

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if Path(dst).name == security.TOKEN_FILE.name:
            modes.append(stat.S_IMODE(os.stat(src).st_mode))  # the file as written, before it is renamed
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    old = os.umask(0o022)  # a umask that would make an ordinary new file world-readable
    try:
        token_hash, token = security.resolve_token(None, tmp_path)
    finally:
        os.umask(old)
    path = tmp_path / security.TOKEN_FILE
    assert token is not None and modes == [0o600]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == token_hash and token not in path.read_text()


def test_registry_home_and_sqlite_files_are_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        reg = Registry.open(tmp_path / "new" / "home")
        reg.register_model(name="m", path="/m", kind="encoder")  # a write: the WAL exists now
        home = tmp_path / "new" / "home"
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        files = sorted(home.glob("registry.db*"))
        assert home / "registry.db" in files and home / "registry.db-wal" in files
        for path in files:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        reg.close()
    finally:
        os.umask(old)


def test_an_existing_home_keeps_its_mode(tmp_path: Path) -> None:
    home = tmp_path / "shared"
    home.mkdir(mode=0o750)
    home.chmod(0o750)
    Registry.open(home).close()
    assert stat.S_IMODE(home.stat().st_mode) == 0o750
    assert stat.S_IMODE((home / "registry.db").stat().st_mode) == 0o600  # new file: owner-only


# ------------------------------------------------------------------------------ HTML in the report

SCRIPT = "<script>alert(1)</script>"
BREAK = '"><img src=x onerror=alert(1)>'


def _parsed(page: str) -> tuple[set[str], list[str]]:
    """The element names and attribute names of an HTML page, as an HTML parser reads them."""
    from html.parser import HTMLParser

    tags: set[str] = set()
    attributes: list[str] = []

    class Parser(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            tags.add(tag)
            attributes.extend(name for name, _ in attrs)

    Parser().feed(page)
    return tags, attributes


def test_report_escapes_served_text_labels_and_descriptions(registry: Registry, tmp_path: Path) -> None:
    from fanbu.collect.hashing import stored_form
    from fanbu.collect.store import Answer, LogStore, Prediction
    from fanbu.report import write_report

    with pytest.raises(RegistryError):
        registry.register_model(name=SCRIPT, path="/m", kind="encoder")  # names cannot carry HTML at all
    hostile = f"{SCRIPT} {BREAK}"
    base = registry.register_model(
        name="base", path="/m/base", kind="encoder", status="archived", metadata={"description": hostile}
    )
    v0 = registry.register_model(
        name="large", path="/m/large", kind="encoder", parents=[base.id], relation="finetune",
        status="champion", metadata={"description": hostile, "params": 2e7},
    )
    expert = registry.register_model(
        name="expert", path="/m/expert", kind="encoder", parents=[v0.id], relation="finetune",
        metadata={"params": 1e6},
    )
    v1 = registry.register_model(
        name="large", path="/m/large1", kind="encoder", parents=[v0.id, expert.id], relation="distilled",
        metadata={"params": 2e7},
    )
    registry.set_status(v1.id, "rejected", hostile)
    registry.register_dataset(name=f"{SCRIPT}/x", fingerprint="ab" * 32, n_rows=1, domain=hostile)
    with LogStore(registry.url) as store:  # served traffic: the text and the label the model gave
        stored, digest = stored_form(hostile, "text")
        answer = Answer("single", v0.id, hostile, 0.9, (0.9, 0.1))
        store.log_batch([Prediction("p" * 32, hostile[:200], hostile, stored, digest, "text", (answer,))])
        store.add_feedback("p" * 32, label=hostile)
    run = registry.start_run("feedback", {"note": hostile})
    for model, acc in ((v0, 0.7), (v1, 0.8), (expert, 0.9)):
        for task in (hostile, "news"):
            registry.record_evaluation(
                model.id, domain=task, split="test", metrics={"accuracy": acc}, run_id=run.id
            )
    row = {
        "name": hostile, "model": v1.id, "pgr_mean": hostile, "forgetting": 1.0,
        "gate": {"status": hostile, "reason": hostile, "passed": False},
    }
    summary = {"champion": v0.id, "experts": {hostile: expert.id}, "heldout": [f"{hostile} held"]}
    registry.finish_run(run.id, "succeeded", {**summary, "strategies": [row]})
    cycle = registry.start_run("cycle", {})
    generation = {"cycle": hostile, "generation": 1, "champion_in": hostile, "promoted": hostile}
    generation |= {"champion_out": hostile, "small": {"d": hostile}, "feedback_run": run.id}
    registry.finish_run(cycle.id, "succeeded", generation)
    page = write_report(registry, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<script" not in page.lower() and "<img" not in page.lower()
    tags, attributes = _parsed(page)  # what a browser builds: no element or event handler was injected
    assert not {"script", "img", "iframe", "object"} & tags
    assert not [name for name in attributes if name.startswith("on") or name in {"src", "href"}]
    assert SCRIPT not in page and BREAK not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # shown, as text, in the tables
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    svg_text = "".join(re.findall(r"<svg.*?</svg>", page, flags=re.DOTALL))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in svg_text  # and inside the figures' SVG text


# ----------------------------------------------------------------------------- passwords in URLs

SECRET = "s3cr3t"
URL = f"postgresql+psycopg://user:{SECRET}@127.0.0.1:1/db"


@pytest.mark.parametrize(
    "url",
    [
        URL,
        f"{URL}?foo=bar",  # psycopg refuses the option (ProgrammingError, not OperationalError)
        f"postgresql+nodriver://user:{SECRET}@127.0.0.1:1/db",  # no such driver
        f"postgresql://user:{SECRET}@127.0.0.1:notaport/db",  # does not parse
        f"mysql+nosuchdbapi://user:{SECRET}@127.0.0.1:1/db",
    ],
)
def test_a_failing_url_never_shows_its_password(url: str, tmp_path: Path) -> None:
    if "psycopg" in url:
        pytest.importorskip("psycopg")
    with pytest.raises(RegistryError) as caught:
        Registry(url)
    shown = f"{caught.value} {caught.value!r} {caught.value.args}"
    assert SECRET not in shown and "***" in shown
    result = CliRunner().invoke(app, ["models", "--home", str(tmp_path / "home"), "--db", url])
    assert result.exit_code == 2, result.output
    assert SECRET not in result.output and "cannot open registry" in result.output
    env = CliRunner().invoke(app, ["lineage", "--home", str(tmp_path / "home")], env={"FANBU_DB": url})
    assert env.exit_code == 2 and SECRET not in env.output


def test_the_logging_store_hides_the_password_too() -> None:
    pytest.importorskip("psycopg")
    from fanbu.collect.store import LogStore

    with pytest.raises(FanbuError) as caught:
        LogStore(URL)
    assert SECRET not in str(caught.value) and "***" in str(caught.value)


def test_describe_and_redact() -> None:
    assert describe_url(URL) == "postgresql+psycopg://user:***@127.0.0.1:1/db"
    assert SECRET not in describe_url("postgresql://user:s3cr3t@host:bad/db")
    text = f"could not connect to {URL}: password s3cr3t rejected, dsn 'password=s3cr3t host=x'"
    cleaned = redact(text, URL)
    assert SECRET not in cleaned and "user:***@127.0.0.1" in cleaned
    assert redact("mysql://a:b%40c@h/db failed", None) == "mysql://a:***@h/db failed"
    encoded = "postgresql://u:p%40ss@h/db"
    assert "p@ss" not in redact("auth failed for p@ss", encoded)


def test_the_report_and_repr_show_the_url_without_its_password(registry: Registry) -> None:
    from fanbu.report import build_report

    registry.register_model(name="m", path="/m", kind="encoder")
    registry.url = URL  # as if opened on a server; the report reads only through the open engines
    assert SECRET not in repr(registry)
    page = build_report(registry)
    assert SECRET not in page and "user:***@127.0.0.1" in page


def test_friendly_redacts_and_prints_messages_literally(capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    @friendly
    def command(db: str | None = None) -> None:
        raise RegistryError(f"cannot reach {db} (pip install fanbu[postgres])")

    with pytest.raises(typer.Exit):
        command(db=URL)
    err = capsys.readouterr().err
    assert SECRET not in err and "fanbu[postgres]" in err.replace("\n", "")


def test_derive_jobs_keep_the_url_out_of_their_repr() -> None:
    from fanbu.derive.pipeline import DomainJob

    job = DomainJob({}, "comp", "/home", URL, "run")
    assert SECRET not in repr(job) and job.db_url == URL
