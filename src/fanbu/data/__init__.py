"""Domains and where their data comes from: user files, Hugging Face datasets, packaged corpora.

``fanbu.data`` imports only light modules; pandas, pyarrow and ``datasets`` load when a file needs them.
"""

from fanbu.data.builtin import (
    BUILTIN_SOURCES,
    NEWSGROUP_GROUPS,
    bbc_news,
    bbc_news_lm_domains,
    default_benchmark,
    load_builtin,
    newsgroups20_domains,
    package_file,
    read_tab,
    reuters,
)
from fanbu.data.domain import METRICS, Benchmark, Domain, Split, TaskKind
from fanbu.data.loaders import DomainSource, load_domain, read_records

__all__ = [
    "BUILTIN_SOURCES",
    "METRICS",
    "NEWSGROUP_GROUPS",
    "Benchmark",
    "Domain",
    "DomainSource",
    "Split",
    "TaskKind",
    "bbc_news",
    "bbc_news_lm_domains",
    "default_benchmark",
    "load_builtin",
    "load_domain",
    "newsgroups20_domains",
    "package_file",
    "read_records",
    "read_tab",
    "reuters",
]
