"""Land vendor export files (PostHog JSON lines, Zendesk export pages, GitHub issue pages),
connector pages and tabular files (accounts: CSV or Parquet) in raw.*.

Everything streams through DuckDB: files are read by `read_json`/`read_csv`/`read_text`, parsed
with DuckDB's JSON functions and merged on the stable id in one transaction per batch of files,
together with the quarantine rows and the file/cursor bookkeeping.

Entry points: source.py (load_source, file sources) and pages.py (load_pages, connector
pages); each batch is one transaction (batch.py). ARCHITECTURE.md maps the other modules.

Within the package a function of another module is called through its module
(`merge._merge_raw(...)`), never imported by name, so the module that defines it is the one
place to patch it (tests, benchmarks/drill).
"""

from tasks.load.cursor import read_state
from tasks.load.files import BATCH_BYTES
from tasks.load.pages import FETCH_AHEAD, FETCH_AHEAD_BYTES, load_pages
from tasks.load.purge import finish_purges
from tasks.load.quarantine import REJECT_REASONS
from tasks.load.report import LoadError, LoadStats
from tasks.load.source import load_source

__all__ = [
    "BATCH_BYTES",
    "FETCH_AHEAD",
    "FETCH_AHEAD_BYTES",
    "REJECT_REASONS",
    "LoadError",
    "LoadStats",
    "finish_purges",
    "load_pages",
    "load_source",
    "read_state",
]
