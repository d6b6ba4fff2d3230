"""One batch of files or pages, one transaction: the records, the quarantine rows, the file
record and the cursor commit together, so a crash never leaves a half-advanced state.

Before a batch is read, each file is screened (tasks/screening.py): gzip is decompressed by its
magic bytes, binary/HTML files and pages that are not the vendor's documented shape are set aside
whole (quarantined without their text, recorded as rejected), and JSON-lines files lose only their
non-UTF-8 lines. Then the batch takes one path: typed JSON lines and pages with a record_type land
straight in the raw table (direct.py); everything else, and a page batch with a record that needs
a decision, is staged in temp tables and merged (merge.py); table files are read and staged by
tables.py. What a batch sets aside in raw is purged right after its commit (purge.py)."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Any

import duckdb

from tasks import screening
from tasks.contracts import SourceSpec
from tasks.load import cursor, direct, files, merge, parse, purge, quarantine, report, tables
from tasks.load.direct import _NeedsStaging, _RepeatsWithinFile
from tasks.load.parse import _ALIASES
from tasks.load.report import LoadError, LoadStats


def _load_batch(
    con: duckdb.DuckDBPyConnection,
    spec: SourceSpec,
    batch: list[tuple[Path, int, int]],
    run_id: str,
    stats: LoadStats,
    state: dict[str, Any] | None = None,
    screen: screening.Screen | None = None,
    keep_cursor: bool = False,
) -> None:
    """Load files as one transaction. File sources record the files in ops.loaded_files;
    connector pages (state given) store the connector's cursor state instead. `screen`: the
    batch already screened (load_pages screens each page as it arrives)."""
    with tempfile.TemporaryDirectory(prefix="feedback-load-") as work:
        if screen is None:
            paths = [p for p, _, _ in batch]
            screen = (
                screening.Screen(paths=paths)
                if spec.layout == "table"
                else screening.screen_files(con, spec, paths, Path(work))
            )
        _ALIASES.map = dict(screen.aliases)
        try:
            _load_screened(con, spec, batch, run_id, stats, state, screen, keep_cursor)
        finally:
            _ALIASES.map = {}


def _load_screened(
    con: duckdb.DuckDBPyConnection,
    spec: SourceSpec,
    batch: list[tuple[Path, int, int]],
    run_id: str,
    stats: LoadStats,
    state: dict[str, Any] | None,
    screen: screening.Screen,
    keep_cursor: bool = False,
) -> None:
    """_load_batch after screening. keep_cursor: a connector page rejected by the screen —
    only its quarantine row commits; no file is recorded and the cursor does not move."""
    batch_id = f"{spec.source}-{uuid.uuid4().hex[:12]}"
    paths = screen.paths
    tabular = spec.layout == "table"
    # Table files are read before the transaction: a file DuckDB cannot read is set aside.
    set_aside = tables._read_tables(con, spec, batch) if tabular else {}
    direct_pages = bool(paths) and direct._direct_pages(spec, paths)
    pages_read = (
        bool(paths)
        and not tabular
        and not direct._lands_direct(spec)
        and not direct_pages
        and parse._read_pages(con, spec, paths)
    )
    con.execute("begin transaction")
    try:
        if not paths and not tabular:  # every file of the batch was rejected by the screen
            counts: dict = {}
            merged = {"inserted": 0, "updated": 0, "unchanged": 0}
            per_file: dict[str, tuple[int, int]] = {}
            rejects = ""
        elif direct_pages:
            try:
                counts, merged, per_file = direct._land_direct(
                    con, spec, paths, batch_id, pages=True
                )
                rejects = "_rej"
            except (_NeedsStaging, duckdb.Error):
                # A record that needs a decision, or a page the record type does not fit: the
                # batch again on the staging path, which quarantines exactly as it always did.
                con.execute("rollback")
                pages_read = parse._read_pages(con, spec, paths)
                con.execute("begin transaction")
                # The staging path does not keep _seen_keys: built again from raw next batch.
                direct._forget_seen_keys(con)
                counts = merge._stage_batch(con, spec, paths, pages_read)
                merged = merge._merge_raw(con, spec, batch_id)
                per_file = merge._staged_file_counts(con) if state is None else {}
                rejects = "_batch_v"
        elif direct._lands_direct(spec):
            try:
                counts, merged, per_file = direct._land_direct(con, spec, paths, batch_id)
            except _RepeatsWithinFile:
                # An id repeated within one file: which copy came first is the read order,
                # which only an order-preserving insert keeps. This batch again, that way.
                con.execute("rollback")
                con.execute("begin transaction")
                counts, merged, per_file = direct._land_direct(
                    con, spec, paths, batch_id, ordered=True
                )
            rejects = "_rej"
        else:
            counts = (
                tables._stage_tables(con, spec)
                if tabular
                else merge._stage_batch(con, spec, paths, pages_read)
            )
            merged = merge._merge_raw(con, spec, batch_id)
            per_file = merge._staged_file_counts(con) if state is None else {}
            rejects = "_batch_v"
        n_quarantined = (
            quarantine._quarantine_load_rejects(con, spec, run_id, rejects) if rejects else 0
        )
        pages = state is not None or keep_cursor
        n_quarantined += quarantine._quarantine_screened(con, spec, run_id, screen.rejects, pages)
        for r in screen.rejects:
            counts[r.rule] = counts.get(r.rule, 0) + 1
            n, bad = per_file.get(r.path, (0, 0))
            per_file[r.path] = (n + 1, bad + 1)
        if not pages:
            # A table file set aside whole is not recorded: it is read (and reported) again next
            # run. A file the screen rejected is recorded as rejected: not read until it changes.
            kept = [f for f in batch if str(f[0]) not in set_aside]
            if kept:
                files._record_files(con, spec, kept, batch_id, per_file, screen.rejected_files)
        if not keep_cursor:
            cursor._advance_cursor(con, spec, run_id, state)
        con.execute("commit")
    except Exception as exc:
        con.execute("rollback")
        names = ", ".join(p.name for p, _, _ in batch[:3]) + ("…" if len(batch) > 3 else "")
        message = (
            f"{spec.source}: loading {names} failed, nothing committed: {report._safe_error(exc)}"
        )
        if isinstance(exc, duckdb.Error):  # its text may quote the input: not chained
            raise LoadError(message) from None
        raise LoadError(message) from exc
    finally:
        for t in _TEMP_TABLES:
            con.execute(f"drop table if exists {t}")
        con.execute("drop view if exists _batch_v")
        con.execute("drop table if exists _batch")
    purge._purge_after_commit(con, batch_id)
    _account(stats, counts, merged, n_quarantined, spec)
    stats.errors.extend(f"{spec.source}: {path}: {message}" for path, message in set_aside.items())
    for r in screen.rejected_files.values():
        stats.files_rejected += 1
        stats.warnings.append(
            f"{spec.source}: {Path(r.path).name} set aside whole ({r.rule}: {r.detail}; "
            f"sha256 {r.sha256})"
        )


_TEMP_TABLES = (
    "_screened",
    "_recs",
    "_bad",
    "_rank",
    "_accepted",
    "_rejects",
    "_irr",
    "_irr_out",
    "_rej",
    "_landed",
    "_pages",
    "_bh",
    "_bh_rep",
    "_tab",
    "_dups",
)


def _account(
    stats: LoadStats, counts: dict, merged: dict, n_quarantined: int, spec: SourceSpec
) -> None:
    read = sum(counts.values())
    rejects = {k: v for k, v in counts.items() if k not in ("accepted", "superseded", "dropped")}
    stats.records_read += read
    stats.n_superseded += counts.get("superseded", 0)
    stats.n_dropped += counts.get("dropped", 0)
    stats.n_quarantined += n_quarantined
    for k, v in rejects.items():
        stats.quarantine_reasons[k] = stats.quarantine_reasons.get(k, 0) + v
    stats.n_inserted += merged["inserted"]
    stats.n_updated += merged["updated"]
    stats.n_unchanged += merged["unchanged"]
    accounted = (
        merged["inserted"]
        + merged["updated"]
        + merged["unchanged"]
        + counts.get("superseded", 0)
        + counts.get("dropped", 0)
        + sum(rejects.values())
    )
    if accounted != read:  # rows in = landed + superseded + dropped + quarantined, always
        raise LoadError(f"{spec.source}: row accounting broken: read {read}, accounted {accounted}")
