"""Attribution of the swarm's decisions: integrated gradients per model and class, aggregated by word,
the consensus report (general rules versus shortcuts) and the counterfactual texts built from it."""

from fanbu.attribution.consensus import (
    ConsensusConfig,
    consensus_report,
    shortcut_words,
    word_rank,
)
from fanbu.attribution.counterfactual import edit_words, insert_word, plain_vocabulary, plant_at_random
from fanbu.attribution.integrated import IGConfig, WordScores, layer_attributions, word_scores

__all__ = [
    "ConsensusConfig",
    "IGConfig",
    "WordScores",
    "consensus_report",
    "edit_words",
    "insert_word",
    "layer_attributions",
    "plain_vocabulary",
    "plant_at_random",
    "shortcut_words",
    "word_rank",
    "word_scores",
]
