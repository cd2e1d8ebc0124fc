"""One leave-one-out setting of ``fanbu bench adapt``: meta-train on some domains, adapt to one test task.

In a setting, FOMAML and Reptile meta-learn a body and a meta forest grows its structure on the
meta-training domains' train splits. Every init row then chooses its adaptation learning rate per k on
the meta-training domains' validation splits (never the test task's). For each k and draw, every
method gets the same k labelled examples per class of the test task's train split, and is scored on
its whole (or capped) test split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from fanbu.bench.adapt.plan import AdaptBenchSettings
from fanbu.evaluate.metrics import accuracy
from fanbu.meta.adapt import adapt, choose_lr
from fanbu.meta.artefacts import meta_provenance, save_forest, save_meta_init
from fanbu.meta.episodes import FeatureTask, check_left_out, sample_shots
from fanbu.meta.forest import DomainData, MetaForest
from fanbu.meta.learn import meta_train
from fanbu.meta.network import MetaBody, new_body
from fanbu.models.artefact import Provenance

METHODS = ("fomaml", "reptile", "metasgd", "v0_init", "scratch", "logistic_regression", "random_forest", "meta_forest",
           "meta_forest_regrow")
INIT_ROWS = ("fomaml", "reptile", "metasgd", "v0_init", "scratch")
META_METHODS = ("fomaml", "reptile", "metasgd")


@dataclass(frozen=True)
class TaskData:
    """A domain's splits as pooled features (``features``) and as hashed bag-of-words (``words``)."""

    features: dict[str, FeatureTask]
    words: dict[str, FeatureTask]
    fingerprints: dict[str, str]


def draw_seed(k: int, draw: int) -> int:
    """The seed of draw ``draw`` of k examples per class (the same for every method)."""
    return 1009 * draw + k


def _capped(task: FeatureTask, per_label: int, seed: int) -> DomainData:
    rng = np.random.default_rng(seed)
    labels = task.labels.numpy()
    keep = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_label] for c in range(task.num_labels)])
    return DomainData(task.name, task.features.numpy()[keep], labels[keep])


def _init_bodies(meta: Sequence[TaskData], settings: AdaptBenchSettings, save_dir: Path | None,
                 log: Callable[[str], None]) -> tuple[dict[str, MetaBody], dict[str, Any]]:
    """The meta-learned bodies (saved under ``save_dir`` with provenance) and their training summaries."""
    tasks = [d.features["train"] for d in meta]
    bodies, info = {}, {}
    for method, config in (("fomaml", settings.fomaml), ("reptile", settings.reptile), ("metasgd", settings.metasgd)):
        result = meta_train(tasks, config)
        bodies[method] = result.body
        losses = [h["query_loss"] for h in result.history if "query_loss" in h]
        info[method] = {"iterations": config.iterations,
                        "first_query_loss": losses[0] if losses else None,
                        "last_query_loss": float(np.mean(losses[-20:])) if losses else None}
        log(f"    {method}: meta-trained ({config.iterations} iterations)")
        if save_dir is not None:
            provenance = meta_provenance(result, settings.encoder, {"max_length": settings.max_length,
                                                                     "truncation": settings.truncation,
                                                                     "normalised": "rows to norm sqrt(dim)"},
                                         {d.features["train"].name: d.fingerprints["train"] for d in meta})
            save_meta_init(result.body, save_dir / method, provenance, overwrite=True)
    return bodies, info


def run_setting(test: str, test_data: TaskData, meta: dict[str, TaskData], settings: AdaptBenchSettings,
                save_dir: Path | None = None, log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Every method's test accuracy on ``test`` for every k and draw, meta-trained on ``meta``."""
    check_left_out(list(meta), [test], setting="the meta-training domains")
    ordered = [meta[name] for name in sorted(meta)]
    bodies, info = _init_bodies(ordered, settings, save_dir, log)
    dim = test_data.features["train"].features.shape[1]
    hidden = settings.fomaml.hidden
    chooser = {**{m: bodies[m] for m in META_METHODS}, "v0_init": new_body(dim, hidden, settings.fomaml.seed)}
    pairs = [(d.features["train"], d.features["validation"]) for d in ordered]
    lrs = {m: choose_lr(b, pairs, settings.shots, settings.adapt, seed=17) for m, b in chooser.items()}
    word_pairs = [(d.words["train"], d.words["validation"]) for d in ordered]
    lrs["scratch"] = choose_lr(new_body(settings.scratch_features, hidden, settings.fomaml.seed), word_pairs,
                               settings.shots, settings.adapt, seed=17)
    log("    adaptation learning rates chosen on the meta-training domains' validation splits")
    forest = MetaForest.fit_meta([_capped(d.features["train"], settings.forest_max_per_label, settings.forest.seed)
                                  for d in ordered], settings.forest)
    if save_dir is not None:
        save_forest(forest, save_dir / "meta_forest", Provenance(
            recipe=settings.forest.model_dump(mode="json"), base_model=settings.encoder,
            data_fingerprints={d.features["train"].name: d.fingerprints["train"] for d in ordered},
            name="meta-forest"), overwrite=True)
    log("    meta forest grown")
    rows = []
    for k in settings.shots:
        for draw in range(settings.draws):
            accs = _draw(test_data, k, draw, bodies, {m: lrs[m][k]["lr"] for m in INIT_ROWS}, forest, settings)
            rows += [{"method": m, "domain": test, "k": k, "draw": draw, "acc": a} for m, a in accs.items()]
        log(f"    k={k}: {settings.draws} draws scored")
    return {"test": test, "meta_domains": sorted(meta), "rows": rows, "meta": info,
            "lr": {m: {str(k): v for k, v in chosen.items()} for m, chosen in lrs.items()},
            "n_test": len(test_data.features["test"].labels)}


def _draw(data: TaskData, k: int, draw: int, bodies: dict[str, MetaBody], lrs: dict[str, float],
          forest: MetaForest, settings: AdaptBenchSettings) -> dict[str, float]:
    """Every method's test accuracy after adapting to one draw of ``k`` examples per class."""
    train, test = data.features["train"], data.features["test"]
    idx = sample_shots(train, k, draw_seed(k, draw))
    x, y, n_way = train.features[idx], train.labels[idx], train.num_labels
    gold = test.labels.numpy()
    steps, inner, hidden = settings.adapt.steps, settings.adapt.inner, settings.fomaml.hidden
    out = {}
    for method in META_METHODS:
        out[method] = accuracy(adapt(bodies[method], x, y, n_way, lrs[method], steps, inner).predict(test.features), gold)
    v0 = new_body(x.shape[1], hidden, seed=draw)
    out["v0_init"] = accuracy(adapt(v0, x, y, n_way, lrs["v0_init"], steps, inner).predict(test.features), gold)
    words = data.words
    scratch = new_body(settings.scratch_features, hidden, seed=draw)
    out["scratch"] = accuracy(adapt(scratch, words["train"].features[idx], y, n_way, lrs["scratch"], steps,
                                    inner).predict(words["test"].features), gold)
    xn, yn, tn = x.numpy(), y.numpy(), test.features.numpy()
    lr_model = LogisticRegression(max_iter=2000).fit(xn, yn)
    out["logistic_regression"] = accuracy(lr_model.predict(tn), gold)
    rf = RandomForestClassifier(n_estimators=settings.random_forest_trees, random_state=draw, n_jobs=1).fit(xn, yn)
    out["random_forest"] = accuracy(rf.predict(tn), gold)
    out["meta_forest"] = accuracy(forest.adapt(xn, yn, train.label_names).predict(tn), gold)
    regrow = MetaForest(forest.config.model_copy(update={"regrow": settings.forest_regrow}), forest.feature,
                        forest.threshold, forest.meta_domains, projection=forest.projection)
    out["meta_forest_regrow"] = accuracy(regrow.adapt(xn, yn, train.label_names).predict(tn), gold)
    return out


@torch.no_grad()
def hashed_words(texts: Sequence[str], dims: int) -> torch.Tensor:
    """Hashed bag-of-words ``(n, dims)``: log(1 + count), rows scaled to norm sqrt(dims) (no fitting)."""
    from sklearn.feature_extraction.text import HashingVectorizer

    from fanbu.meta.features import normalise

    counts = HashingVectorizer(n_features=dims, alternate_sign=False, norm=None).transform(list(texts))
    dense = torch.from_numpy(np.log1p(counts.toarray()).astype(np.float32))  # (n, dims)
    return normalise(dense)
