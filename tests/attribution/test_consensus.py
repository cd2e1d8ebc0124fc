"""The consensus report: general rules versus shortcuts, ranks, and its HTML page."""

from __future__ import annotations

from fanbu.attribution import ConsensusConfig, consensus_report, word_rank
from fanbu.attribution.consensus import domain_lists, sample_texts, shortcut_words
from fanbu.attribution.integrated import IGConfig, WordScores
from fanbu.models import EncoderHandle
from fanbu.report.attribution import attribution_sections


def scores(entries: dict[tuple[int, str], tuple[float, int]]) -> WordScores:
    """Word scores in unit scale: (class, word) -> (mean attribution, count)."""
    result = WordScores(["sport", "politics"], scale=1.0)
    for key, (mean, count) in entries.items():
        result.sums[key], result.counts[key] = mean * count, count
    return result


def test_rules_need_every_reader_and_shortcuts_one_reader_alone():
    readers = {
        "expert": scores(
            {(0, "goal"): (4.0, 5), (0, "zqxv"): (6.0, 5), (1, "vote"): (3.0, 5), (0, "rare"): (9.0, 1)}
        ),
        "other": scores({(0, "goal"): (3.0, 5), (0, "zqxv"): (0.5, 5), (1, "vote"): (-3.0, 5)}),
        "champion": scores({(0, "goal"): (2.5, 4), (1, "vote"): (1.0, 4)}),
    }
    lists = domain_lists(readers, ConsensusConfig(threshold=2.0, min_count=3))
    assert [(e["word"], e["label"], e["strength"]) for e in lists["rules"]] == [("goal", "sport", 2.5)]
    shortcuts = [(e["word"], e["reader"], e["margin"]) for e in lists["shortcuts"]]
    assert shortcuts[0] == ("zqxv", "expert", 5.5)
    assert ("vote", "expert", 2.0) in shortcuts  # the readers disagree in sign: not a rule
    assert "rare" not in [w for w, _, _ in shortcuts]  # too few occurrences to score
    lonely = domain_lists({"expert": readers["expert"]}, ConsensusConfig())
    assert lonely["shortcuts"] == [] and "fewer than two" in lonely["note"]


def test_consensus_report_on_tiny_models_is_json_and_ranks_words():
    texts = ["the computer software", "the doctor and the patient", "space science of the world"] * 2
    models = {}
    for seed in (0, 1):
        handle = EncoderHandle.tiny(seed=seed)
        handle.add_head("topic", ["a", "b"], seed=seed)
        models[f"m{seed}"] = handle
    config = ConsensusConfig(threshold=0.5, min_count=1, texts=4, ig=IGConfig(steps=4))
    report = consensus_report(models, {"topic": texts}, config, seed=0)
    lists = report["domains"]["topic"]
    assert lists["readers"] == ["m0", "m1"] and lists["texts"] == 4
    words = shortcut_words(report, top=2)["topic"]
    assert len(words) <= 2
    if words:
        assert word_rank(report, "topic", words[0]) == 1
    assert word_rank(report, "topic", "nowhere") is None
    assert sample_texts(texts, 4, seed=0) == sample_texts(texts, 4, seed=0)


def test_attribution_page_shows_both_lists_escaped():
    readers = {
        "expert": scores({(0, "<b>goal</b>"): (4.0, 5), (0, "zqxv"): (6.0, 5)}),
        "champion": scores({(0, "<b>goal</b>"): (3.0, 5)}),
    }
    report = {"domains": {"sport": domain_lists(readers, ConsensusConfig())}, "settings": {"threshold": 2.0}}
    [(heading, html)] = attribution_sections(report)
    assert heading == "Attribution: sport"
    assert "General rules" in html and "Shortcuts" in html and "zqxv" in html
    assert "&lt;b&gt;goal&lt;/b&gt;" in html and "<b>goal</b>" not in html


def test_models_carrying_a_consensus_report_get_attribution_sections():
    from datetime import UTC, datetime

    from fanbu.registry import ModelRecord
    from fanbu.report.attribution import model_attribution_sections

    readers = {"expert": scores({(0, "zqxv"): (6.0, 5)}), "champion": scores({(0, "goal"): (3.0, 5)})}
    report = {"domains": {"sport": domain_lists(readers, ConsensusConfig())}, "settings": {}}

    def record(version: int, details: dict) -> ModelRecord:
        return ModelRecord(
            id=f"m{version}",
            name="large",
            version=version,
            kind="encoder",
            path="/m",
            status="candidate",
            reason=None,
            relation="distilled",
            parents=(),
            recipe={},
            fingerprints={},
            metadata={"details": details},
            created_at=datetime(2026, 1, version, tzinfo=UTC),
        )

    sections = model_attribution_sections([record(1, {}), record(2, {"consensus": report})])
    assert [h for h, _ in sections] == ["Attribution (large v2): sport"]
    assert "zqxv" in sections[0][1]
