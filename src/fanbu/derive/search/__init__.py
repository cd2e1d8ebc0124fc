"""Budgeted architecture search: the student shape that scores best under a size or latency budget,
warm-started from earlier domains' studies, and one shape for the whole swarm."""

from fanbu.derive.search.budget import BudgetCheck
from fanbu.derive.search.config import Budget, SearchConfig, SearchError, SearchSpace
from fanbu.derive.search.probes import batch1_latency, candidate_params, probe_accuracy
from fanbu.derive.search.result import SearchResult, TrialRecord
from fanbu.derive.search.study import search
from fanbu.derive.search.swarm import SwarmChoice, swarm_architecture, swarm_candidates
from fanbu.derive.search.warm import (
    Study,
    WarmStart,
    load_study,
    rank_architectures,
    save_study,
    warm_configs,
)

__all__ = [
    "Budget",
    "BudgetCheck",
    "SearchConfig",
    "SearchError",
    "SearchResult",
    "SearchSpace",
    "Study",
    "SwarmChoice",
    "TrialRecord",
    "WarmStart",
    "batch1_latency",
    "candidate_params",
    "load_study",
    "probe_accuracy",
    "rank_architectures",
    "save_study",
    "search",
    "swarm_architecture",
    "swarm_candidates",
    "warm_configs",
]
