"""``fanbu bench adapt``: few-shot adaptation learned from the swarm, against learning from the k examples alone.

**Protocol.** Leave-one-domain-out over the feedback domains (20 Newsgroups comp, rec, sci, politics,
religion): meta-train on the other four, adapt to and test on the left-out one. The held-out tasks (BBC
News, Reuters R8) are tested after meta-training on all five feedback domains and never take part in
it. For k in ``shots`` labelled examples per class and ``draws`` draws of them per (task, k), every
method gets the same examples; accuracy is on the task's test split (whole, or capped in ``--quick``);
each cell is the mean over draws with a 90% t-interval (:func:`fanbu.bench.stats.mean_interval`).

**Features.** The large encoder v0 (packaged all-MiniLM-L6-v2) is frozen; its pooled features (masked
mean, rows scaled to norm sqrt(384)) are computed once per text and cached under ``--work``.

**Rows** (:data:`LEGEND`):

* ``fomaml`` / ``reptile`` / ``metasgd``: the top network (:class:`~fanbu.meta.network.MetaBody`, a projection
  384 -> 256 + ReLU, with a head re-initialised at zero per task) meta-learned on episodes of the
  meta-training domains, then adapted to the k examples (body and head, ``adapt.steps`` full-batch SGD
  steps);
* ``v0_init``: the same top network at PyTorch's standard random initialisation on the same frozen v0
  features, adapted the same way (same steps, same zero head): fine-tuning from v0 without meta-learning;
* ``scratch``: the same top network shape, randomly initialised, on hashed bag-of-words features of the
  texts (no pretrained encoder at all), adapted the same way;
* ``logistic_regression`` / ``random_forest``: scikit-learn with default settings (200 trees) on the
  frozen features of the k examples;
* ``meta_forest``: :class:`~fanbu.meta.forest.MetaForest` grown on the meta-training domains, leaves
  re-estimated from the k examples.

Each init row's adaptation learning rate is chosen per k on the meta-training domains' validation
splits; no choice reads a test task.

**Search section** (``sections`` holds ``search``): warm against cold architecture search across domains
and one swarm architecture (seed technique 19); see :mod:`fanbu.bench.adapt.search`.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from fanbu.bench.adapt.plan import QUICK_SECONDS, AdaptBenchSettings, bench_settings
from fanbu.bench.adapt.report import print_report, summarise, targets
from fanbu.bench.adapt.search import load_search_domains, run_search_section, search_targets
from fanbu.bench.adapt.setting import TaskData, hashed_words, run_setting
from fanbu.bench.stats import INTERVAL_METHOD
from fanbu.bench.work import WorkDir, source_fingerprint
from fanbu.data.builtin import bbc_news, newsgroups20_domains, reuters
from fanbu.data.domain import Domain
from fanbu.io import atomic_write_json
from fanbu.meta.episodes import FeatureTask
from fanbu.meta.features import SPLITS, domain_tasks
from fanbu.models.encoder import EncoderHandle

__all__ = ["LEGEND", "run_bench", "run_settings"]

LEGEND = {
    "fomaml": "top network (projection + zero head) meta-learned with first-order MAML, adapted by SGD",
    "reptile": "top network meta-learned with Reptile, adapted by SGD",
    "metasgd": "top network meta-learned with Meta-SGD (MAML with learned per-parameter inner rates, second order), "
    "adapted by SGD with its learned rate profile scaling the chosen rate",
    "v0_init": "same top network at standard random init on the same frozen v0 (MiniLM) features, adapted "
    "with the same steps and a learning rate chosen the same way",
    "scratch": "same top network shape at random init on hashed bag-of-words features (no pretrained "
    "encoder), adapted the same way",
    "logistic_regression": "scikit-learn LogisticRegression (defaults) on the frozen v0 features of the k examples",
    "random_forest": "scikit-learn RandomForestClassifier on the same features and examples",
    "meta_forest": "MetaForest: splits grown on the meta-training domains, leaves re-estimated from the k examples",
    "meta_forest_regrow": "the same MetaForest with its top forest_regrow levels split again on the k examples "
    "(among the features each tree splits on), the levels below kept, leaves re-estimated",
}


def _command(quick: bool, draws: int, default: int, out: Path, overrides: list[str]) -> str:
    parts = ["fanbu bench adapt", " --quick" if quick else "", f" --draws {draws}" if draws != default else ""]
    return "".join(parts + [f" --set {o}" for o in overrides]) + f" --out {out}"


def load_domains(settings: AdaptBenchSettings) -> dict[str, Domain]:
    """The feedback domains and held-out tasks, with the settings' caps."""
    caps = {"max_train_per_label": settings.max_train_per_label, "max_test_per_label": settings.max_test_per_label}
    domains = {d.name: d for d in newsgroups20_domains(0, groups=settings.domains, **caps)}
    if "bbc-news" in settings.held_out:
        domains["bbc-news"] = bbc_news(0, **caps)
    if "reuters-r8" in settings.held_out:
        domains["reuters-r8"] = reuters("r8", 0, **caps)
    return domains


def task_data(domain: Domain, handle: EncoderHandle, settings: AdaptBenchSettings, cache: Path | None) -> TaskData:
    """A domain's splits as cached encoder features and as hashed words."""
    features = domain_tasks(domain, handle, settings.encoder, cache)
    words = {s: FeatureTask(domain.name, hashed_words(getattr(domain, s).texts, settings.scratch_features),
                            features[s].labels, domain.label_names) for s in SPLITS}
    return TaskData(features, words, {s: getattr(domain, s).fingerprint for s in SPLITS})


def run_settings(data: dict[str, TaskData], settings: AdaptBenchSettings, work: WorkDir) -> list[dict[str, Any]]:
    """Every leave-one-out setting (each feedback domain left out, then each held-out task), kept in ``work``."""
    feedback = [d for d in settings.domains if d in data]
    plan = [(d, [m for m in feedback if m != d]) for d in feedback]
    plan += [(h, feedback) for h in settings.held_out if h in data]
    code = source_fingerprint("fanbu.meta", "fanbu.bench.adapt")
    results = []
    for test, meta in plan:
        key = {"settings": settings.model_dump(mode="json"), "code": code, "test": test, "meta": meta,
               "data": {n: data[n].fingerprints for n in [test, *meta]}}
        results.append(work.result(
            f"setting-{test}",
            lambda test=test, meta=meta: run_setting(test, data[test], {m: data[m] for m in meta}, settings,
                                                     work.root / "models" / test, work.console.print),
            settings=key, kind="adapt"))
    return results


def run_search(handle: EncoderHandle, settings: AdaptBenchSettings, work: WorkDir) -> dict[str, Any]:
    """The search section (cold and warm searches, the swarm architecture), kept in ``work``."""
    domains = load_search_domains(settings.search)
    key = {"search": settings.search.model_dump(mode="json"), "encoder": settings.encoder,
           "max_length": settings.max_length, "truncation": settings.truncation,
           "code": source_fingerprint("fanbu.derive.search", "fanbu.derive.prune", "fanbu.bench.adapt"),
           "data": {n: d.fingerprints() for n, d in domains.items()}}
    return work.result("search", lambda: run_search_section(domains, handle, settings.search, work.console.print),
                       settings=key, kind="adapt")


def run_bench(quick: bool, out: Path, console: Console, *, draws: int | None = None, work: Path | None = None,
              overrides: list[str] | None = None) -> dict[str, Any]:
    """Run the bench, print its table and write its JSON report to ``out``."""
    overrides = list(overrides or [])
    settings = bench_settings(quick, draws, overrides)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fanbu-bench-adapt-") as tmp:
        root = work or Path(tmp)
        workdir = WorkDir(root, console)
        handle = EncoderHandle.from_source(settings.encoder, max_length=settings.max_length)
        handle.truncation = settings.truncation
        data: dict[str, TaskData] = {}
        results: list[dict[str, Any]] = []
        if "shots" in settings.sections:
            for name, domain in load_domains(settings).items():
                t = time.perf_counter()
                data[name] = task_data(domain, handle, settings, root / "features")
                console.print(f"features of {name}: {time.perf_counter() - t:.0f} s", highlight=False)
        feature_seconds = time.perf_counter() - started
        if "shots" in settings.sections:
            results = run_settings(data, settings, workdir)
        section = None
        if "search" in settings.sections:
            section = run_search(handle, settings, workdir)
    seconds = time.perf_counter() - started
    draw_rows = [row for r in results for row in r["rows"]]
    adapt = summarise(draw_rows)
    default_draws = AdaptBenchSettings().draws if not quick else bench_settings(True).draws
    report = {
        "bench": "adapt",
        "quick": quick,
        "command": _command(quick, settings.draws, default_draws, out, overrides),
        "adapt": adapt,
        "target": {**(targets(adapt, seconds, quick, QUICK_SECONDS, draw_rows) if adapt else {}),
                   **(search_targets(section) if section else {})},
        "methods": LEGEND,
        "interval_method": INTERVAL_METHOD.replace("seeds", "draws of the k examples"),
        "settings_runs": [{k: v for k, v in r.items() if k != "rows"} for r in results],
        "draw_rows": draw_rows,
        "settings": settings.model_dump(mode="json"),
        "n_test": {n: len(d.features["test"].labels) for n, d in data.items()},
        "torch_threads": torch.get_num_threads(),
        "feature_seconds": feature_seconds,
        "seconds": seconds,
        **(section or {}),
    }
    if quick and not adapt:  # the time target, which targets() adds when the shots section ran
        report["target"]["quick_seconds"] = {"value": seconds, "bar": QUICK_SECONDS, "met": seconds <= QUICK_SECONDS,
                                             "rule": "wall-clock seconds of the whole bench, <= bar"}
    atomic_write_json(out, report)
    print_report(report, console)
    return report
