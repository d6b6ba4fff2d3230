"""load_source: a file source (export files matching a pattern) loaded batch by batch, each
new or changed file once."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import duckdb

from tasks.contracts import SourceSpec
from tasks.load import batch, cursor, direct, files, purge
from tasks.load.report import LoadStats

# One logger for the whole loader (tasks.load), whichever of its modules logs.
log = logging.getLogger("tasks.load")


def load_source(
    con: duckdb.DuckDBPyConnection,
    spec: SourceSpec,
    pattern: str,
    run_id: str,
    progress: Callable[[str], None] | None = None,
    commit_lock: AbstractContextManager[Any] | None = None,
) -> LoadStats:
    """Load every new or changed file matching `pattern` into `spec.raw_table`.

    `commit_lock`: held around every write to the warehouse (the bookkeeping of unchanged
    files, each batch's transaction, the cursor refresh) when other sources load in parallel
    on other cursors of the same database (tasks/extract.py): one writer at a time."""
    started = time.perf_counter()
    stats = LoadStats(source=spec.source)
    commit = commit_lock if commit_lock is not None else nullcontext()
    listed = files._list_files(pattern) if pattern else []
    stats.files_seen = len(listed)
    with commit:  # it may update ops.loaded_files (a rejected file touched but unchanged)
        purge.finish_purges(con)
        pending = files._pending_files(con, spec.source, listed)
    stats.files_skipped = len(listed) - len(pending)
    direct._forget_seen_keys(con)
    try:
        for i, part in enumerate(files._batches(pending), start=1):
            if progress:
                progress(f"{spec.source}: batch {i}, {len(part)} file(s)")
            rejected_before = stats.files_rejected
            with commit:
                batch._load_batch(con, spec, part, run_id, stats)
            stats.files_loaded += len(part) - (stats.files_rejected - rejected_before)
    finally:
        direct._forget_seen_keys(con)
    if stats.files_loaded and stats.n_updated:  # inserts only: the per-batch cursor is exact
        with commit:
            cursor._refresh_file_cursor(con, spec)
    stats.seconds = round(time.perf_counter() - started, 3)
    log.info("loaded %s: %s", spec.source, stats.as_dict())
    return stats
