"""Budgeted architecture search: the student shape that scores best under a size or latency budget."""

from fanbu.derive.search.budget import BudgetCheck
from fanbu.derive.search.config import Budget, SearchConfig, SearchError, SearchSpace
from fanbu.derive.search.probes import batch1_latency, candidate_params
from fanbu.derive.search.result import SearchResult, TrialRecord
from fanbu.derive.search.study import search

__all__ = [
    "Budget",
    "BudgetCheck",
    "SearchConfig",
    "SearchError",
    "SearchResult",
    "SearchSpace",
    "TrialRecord",
    "batch1_latency",
    "candidate_params",
    "search",
]
