"""Land vendor export files (PostHog JSON lines, Zendesk export pages, GitHub issue pages) and
tabular files (accounts: CSV or Parquet) in raw.*.

Everything streams through DuckDB: files are read by `read_json`/`read_csv`/`read_text`, parsed
with DuckDB's JSON functions and merged on the stable id in one transaction per batch of files,
together with the quarantine rows and the file/cursor bookkeeping — so a crash never leaves a
half-advanced state. Typed JSON lines (PostHog events) and pages with a record_type (PostHog
query pages) land straight in the raw table (_land_direct); everything else, and a page batch with
a record that needs a decision, is staged in temp tables first (_stage_batch, _merge_raw).

Before a batch is read, each file is screened (tasks/screening.py): gzip is decompressed by its
magic bytes, binary/HTML files and pages that are not the vendor's documented shape are set aside
whole (quarantined without their text, recorded as rejected), and JSON-lines files lose only their
non-UTF-8 lines. Which version of a record wins is fixed by _VERSION_ORDER, whatever the load order.

With the Parquet raw event store (tasks/rawstore.py), a batch of events first reads back the
archived event days it touches (rawstore.pull_back, inside its transaction), so the merge sees
every stored version as in the warehouse store.
"""

from __future__ import annotations

import contextvars
import glob
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from tasks import rawstore, redact, screening
from tasks.contracts import (
    SourceSpec,
    payload_text,
)
from tasks.db import sql_list, sql_literal, transaction
from tasks.quality import record_quarantine

log = logging.getLogger(__name__)

# Files, and connector pages, per transaction. Each commit costs a rewrite of the batch's last
# row group at the next checkpoint (10M events in 13 batches: 0.7 s at close; in 3 batches of
# 1 GiB: 0.07 s), but a batch with a row to set aside pays for tombstoning it in proportion to
# its size (_PURGE_MARK), and a smaller batch starts landing pages while later ones are fetched.
BATCH_BYTES = 256 * 1024 * 1024


@dataclass
class LoadStats:
    source: str
    files_seen: int = 0
    files_loaded: int = 0
    files_skipped: int = 0
    # Files/pages set aside whole (undecodable, HTML, invalid JSON, not the vendor's page shape):
    # quarantined, recorded in ops.loaded_files as rejected, not read again until they change.
    files_rejected: int = 0
    records_read: int = 0
    n_inserted: int = 0
    n_updated: int = 0
    n_unchanged: int = 0
    n_superseded: int = 0
    n_dropped: int = 0
    n_quarantined: int = 0
    seconds: float = 0.0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    # What to fix, one message per file set aside whole (a table file without a required column).
    errors: list[str] = field(default_factory=list)
    # One line per file/page rejected whole: file, rule, byte offset, sha256 (never its text).
    warnings: list[str] = field(default_factory=list)

    @property
    def n_landed(self) -> int:
        return self.n_inserted + self.n_updated + self.n_unchanged

    def as_dict(self) -> dict:
        return asdict(self) | {"n_landed": self.n_landed}


class LoadError(RuntimeError):
    """A batch could not be loaded; nothing of it was committed."""


def _list_files(pattern: str) -> list[Path]:
    return sorted(Path(p) for p in glob.glob(os.path.expanduser(pattern), recursive=True))


def _safe_text(exc: BaseException) -> str:
    """An exception's message in one line without the data it quotes: DuckDB repeats the
    offending input ("Original Line: …", quoted values), which may hold personal data."""
    lines = [
        ln.strip()
        for ln in str(exc).strip().splitlines()
        if ln.strip() and not ln.strip().lower().startswith(("original line", "line "))
    ]
    text = "; ".join(lines[:2]) or type(exc).__name__
    return re.sub(r"'[^']*'", "'…'", re.sub(r'"[^"]*"', '"…"', text))[:300]


def _safe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {_safe_text(exc)}"


class _Aliases(threading.local):
    """Files DuckDB reads under another name (a gunzipped or UTF-8-cleaned copy): copy ->
    original. Set for the duration of one batch (_load_batch); the SQL reports the original as
    source_file. Per thread: sources pulled in parallel (tasks/extract.py) build their SQL in
    their own threads."""

    def __init__(self) -> None:
        self.map: dict[str, str] = {}


_ALIASES = _Aliases()


def _source_file_sql(col: str = "filename") -> str:
    aliases = _ALIASES.map
    if not aliases:
        return col
    whens = " ".join(f"when {sql_literal(a)} then {sql_literal(o)}" for a, o in aliases.items())
    return f"(case {col} {whens} else {col} end)"


def _readable(path: str) -> Path:
    """The file DuckDB reads for an original path (its copy, if it has one)."""
    return Path(next((a for a, o in _ALIASES.map.items() if o == path), path))


def _quarantine_screened(
    con: duckdb.DuckDBPyConnection,
    spec: SourceSpec,
    run_id: str,
    rejects: list[screening.Reject],
    pages: bool = False,
) -> int:
    """Quarantine the screen's rejects (inside the batch's transaction); returns how many.
    Whole files are keyed by path (a page: by its position) and content hash, lines by file and
    line number, so each rejected file and line is its own row."""
    if not rejects:
        return 0
    con.execute(
        "create or replace temp table _screened (source_file varchar, file_key varchar, "
        "pos bigint, rule varchar, detail varchar, payload varchar, sha256 varchar)"
    )
    con.executemany(
        "insert into _screened values (?, ?, ?, ?, ?, ?, ?)",
        [
            [
                r.path,
                "page" if pages else r.path,
                r.pos,
                r.rule,
                r.detail,
                json.dumps({"sha256": r.sha256, "size_bytes": r.size}) if r.whole else r.payload,
                r.sha256,
            ]
            for r in rejects
        ],
    )
    table = sql_literal(spec.raw_table)
    con.execute(f"""
        create or replace temp table _rejects as
        select md5(concat_ws('|', 'load', {table}, rule, file_key, coalesce(pos::varchar, ''),
                             coalesce(sha256, payload, ''))) as quarantine_id,
               'load' as stage, {sql_literal(spec.source)} as source, {table} as table_name,
               null::varchar as record_key, rule,
               detail || ' (' || regexp_extract(source_file, '[^/]+$')
                   || coalesce(' #' || pos, '') || ')' as reason,
               payload, source_file
        from _screened
    """)
    record_quarantine(con, "_rejects", "load", [spec.raw_table], run_id)
    return len(rejects)


def _pending_files(
    con: duckdb.DuckDBPyConnection, source: str, files: list[Path]
) -> list[tuple[Path, int, int]]:
    """Files never loaded, or changed (size/mtime) since they were loaded. A rejected file whose
    mtime changed but whose content (sha256) did not stays rejected: its mtime is updated."""
    known = {
        (p, size, mtime)
        for p, size, mtime in con.execute(
            "select path, size_bytes, mtime_ns from ops.loaded_files where source = ?", [source]
        ).fetchall()
    }
    rejected = dict(
        con.execute(
            "select path, sha256 from ops.loaded_files where source = ? and status = 'rejected' "
            "and sha256 is not null",
            [source],
        ).fetchall()
    )
    out = []
    for f in files:
        st = f.stat()
        if (str(f), st.st_size, st.st_mtime_ns) in known:
            continue
        if str(f) in rejected and screening.sha256_file(f) == rejected[str(f)]:
            con.execute(
                "update ops.loaded_files set size_bytes = ?, mtime_ns = ? "
                "where source = ? and path = ?",
                [st.st_size, st.st_mtime_ns, source, str(f)],
            )
            continue
        out.append((f, st.st_size, st.st_mtime_ns))
    return out


def _batches(files: list[tuple[Path, int, int]]) -> list[list[tuple[Path, int, int]]]:
    batches: list[list[tuple[Path, int, int]]] = []
    size = 0
    for f in files:
        if not batches or size + f[1] > BATCH_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(f)
        size += f[1]
    return batches


def _read_pages(con: duckdb.DuckDBPyConnection, spec: SourceSpec, paths: list[Path]) -> bool:
    """Pages whose records are one top-level list ('$.results[*]'): read them with read_json
    into temp table _pages (one parse, the list as JSON[]) instead of read_text + a JSON cast +
    json_extract, which also kept every page's parsed text around.

    Run before the batch's transaction, because a page the reader rejects (invalid JSON, the
    list not an array) raises; such a batch, and one with a page the reader would read where
    the staging path would not (byte order mark, not exactly one JSON value), takes the staging
    path, which sets the page aside whole as before. Returns whether _pages holds the batch."""
    m = _PAGE_LIST.fullmatch(spec.layout)
    if not m or spec.sideload or not paths:
        return False
    for p in paths:
        with p.open("rb") as f:
            if f.read(3) == b"\xef\xbb\xbf":
                return False
    largest = max(p.stat().st_size for p in paths)
    try:
        con.execute(f"""
            create or replace temp table _pages as
            select {_source_file_sql()} as source_file, "{m[1]}" as records
            from read_json({sql_list(paths)}, format = 'unstructured', records = true,
                           filename = true, columns = {{'{m[1]}': 'JSON[]'}},
                           maximum_object_size = {max(largest + 1, 16 * 1024 * 1024)})
        """)
    except duckdb.Error:
        con.execute("drop table if exists _pages")
        return False
    n, n_files = con.sql("select count(*), count(distinct source_file) from _pages").fetchall()[0]
    if n == n_files == len(paths):
        return True
    con.execute("drop table if exists _pages")
    return False


_PAGE_LIST = re.compile(r"\$\.([A-Za-z_][A-Za-z0-9_]*)\[\*\]")
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _records_sql(spec: SourceSpec, paths: list[Path], pages_read: bool = False) -> str:
    """One row per source record: file, position, text of a bad record, parsed JSON `j`
    (NULL if invalid), plus the typed fields when the spec has them. `pages_read`: the
    batch's pages are in _pages (see _read_pages)."""
    files = sql_list(paths)
    if pages_read:
        # A JSON null in the list reads as SQL NULL; json_extract gave the JSON value null.
        recs = """
            select source_file, pos, null as text, coalesce(j, 'null'::json) as j,
                   null as parse_error, null::json as page
            from (
                select source_file, unnest(records) as j,
                       generate_subscripts(records, 1) as pos
                from _pages
            )
        """
    elif spec.layout == "lines":
        # Each line is one opaque string, so a single bad line is quarantined instead of failing
        # the file; delimiter/quote are characters valid JSON text never holds raw. pos is the
        # line number (the scan's ordinality; blank lines count).
        recs = f"""
            select {_source_file_sql()} as source_file, pos,
                   case when not json_valid(line) then line end as text,
                   case when json_valid(line) then line::json end as j,
                   case when not json_valid(line) then 'invalid_json' end as parse_error,
                   null::json as page
            from ({_numbered_lines_sql(paths)})
            where line is not null and trim(line) <> ''
        """
    else:
        recs = f"""
            with files as (
                select filename, content, json_valid(content) as ok
                from read_text({files})
            ),
            records as (
                select filename, unnest(l) as j, generate_subscripts(l, 1) as pos
                from (select filename, json_extract(content::json, '{spec.layout}') as l
                      from files where ok)
            ){_sideload_sql(spec)}
            select {_source_file_sql()} as source_file, pos,
                   null as text, j, null as parse_error, page
            from with_page
            union all
            select {_source_file_sql()}, 0, null, null, 'invalid_json_file', null::json
            from files where not ok
        """
    if spec.record_fields:
        pre, exprs = spec.record_fields
        direct = "".join(
            f", case when j is not null then {e} end::{typ} as {col}"
            for (col, _, typ), e in zip(spec.fields, exprs, strict=True)
        )
        # j is not kept: record_sql's object only fed the fields and the not-an-object check,
        # which it always passed.
        return f"""
            with raw_recs as ({recs})
            select * exclude (_r, j), null::json as j{direct}
            from (
                select * exclude (page), case when j is not null then {pre} end as _r
                from raw_recs
            )
        """
    # Text and JSON fields come out of one json_transform (one parse of the record instead of
    # one per field); it agrees with ->> / -> except that a JSON null gives SQL NULL, where
    # -> gave the JSON value null, so a NULL falls back to ->.
    one_parse = {
        key: typ.upper()
        for _, key, typ in spec.fields
        if typ.upper() in ("VARCHAR", "JSON") and _PLAIN_KEY.fullmatch(key)
    }
    typed = ""
    for col, key, typ in spec.fields:
        if key not in one_parse:
            typed += (
                f", case when j is not null then j {'->' if typ == 'JSON' else '->>'} "
                f"{sql_literal(key)} end::{typ} as {col}"
            )
        elif one_parse[key] == "VARCHAR":
            typed += f', _t."{key}" as {col}'
        else:
            typed += (
                f', case when _t."{key}" is not null then _t."{key}" '
                f"else j -> {sql_literal(key)} end::JSON as {col}"
            )
    transform = (
        f", json_transform(j, {sql_literal(json.dumps(one_parse))}) as _t" if one_parse else ""
    )
    return f"""
        with raw_recs as ({recs})
        select * exclude (j{", _t" if one_parse else ""}), j{typed}
        from (
            select *{transform}
            from (
                select * exclude (j, page),
                       case when j is not null then ({spec.record_sql}) end as j
                from raw_recs
            )
        )
    """


def _sideload_sql(spec: SourceSpec) -> str:
    """CTE `with_page`: each record with `page` = {<name>: [the side-loaded items it refers to]}
    (e.g. Zendesk's include=users: requester, submitter, assignee, CCs, followers), so
    record_sql can use them without copying whole pages. The record fields holding the keys are
    scalars or lists of keys."""
    if not spec.sideload:
        return ",\n            with_page as (select *, null::json as page from records)"
    name, path, item_key, record_fields = spec.sideload
    fields = (record_fields,) if isinstance(record_fields, str) else tuple(record_fields)
    refs = ", ".join(
        f"case when json_type(j, '$.{f}') = 'ARRAY' then json_extract_string(j, '$.{f}[*]') "
        f"else [j ->> '{f}'] end"
        for f in fields
    )
    return f""",
            side as (
                select filename, unnest(json_extract(content::json, '{path}')) as item
                from files where ok
            ),
            side_keyed as (
                select filename, item ->> '{item_key}' as side_key, any_value(item) as item
                from side group by all
            ),
            records_refs as (
                select *, list_sort(list_distinct(flatten([{refs}]))) as _refs from records
            ),
            ref_items as (
                select r.filename, r._refs, list(s.item order by s.side_key) as items
                from (select distinct filename, _refs, unnest(_refs) as ref from records_refs) r
                join side_keyed s on r.filename = s.filename and r.ref = s.side_key
                group by all
            ),
            with_page as (
                select records_refs.* exclude (_refs),
                       case when ref_items.items is not null
                            then json_object('{name}', to_json(ref_items.items)) end as page
                from records_refs
                left join ref_items
                    on records_refs.filename = ref_items.filename
                    and records_refs._refs = ref_items._refs
            )"""


def _fast_lines_sql(spec: SourceSpec, paths: list[Path]) -> str:
    """JSON lines with declared fields: DuckDB's read_json with explicit columns (one typed
    parse, no per-line JSON values kept). Unparseable lines come back as all-NULL rows; their
    text is collected by _bad_lines_sql."""
    cols = ", ".join(f"{sql_literal(key)}: {sql_literal(typ)}" for _, key, typ in spec.fields)
    select = ", ".join(f'"{key}" as {col}' for col, key, _ in spec.fields)
    all_null = " and ".join(f'"{key}" is null' for _, key, _ in spec.fields)
    return f"""
        select {_source_file_sql()} as source_file, null::bigint as pos, null::varchar as text,
               null::json as j, case when {all_null} then 'unparsed' end as parse_error,
               {select}
        from read_json({sql_list(paths)}, format = 'newline_delimited', ignore_errors = true,
                       filename = true, columns = {{{cols}}})
    """


def _numbered_lines_sql(paths: list[Path]) -> str:
    """Every line of the files as (filename, line, pos = line number). The scan's ordinality is
    deterministic and contiguous per file (files are read in list order), unlike a row_number()
    without ORDER BY; blank lines are rows (line NULL), so numbers match the file."""
    return f"""
        select filename, line, o - min(o) over (partition by filename) + 1 as pos
        from read_csv({sql_list(paths)}, columns = {{'line': 'VARCHAR'}}, delim = '\x1f',
                      quote = '', escape = '', header = false, auto_detect = false,
                      filename = true, strict_mode = false) with ordinality as t(line, filename, o)
    """


def _bad_lines_sql(paths: list[Path]) -> str:
    """Lines that are not JSON objects, with their text and line number (cheap: validity only,
    no parse; only files with such lines are read)."""
    return f"""
        select {_source_file_sql()} as source_file, pos, line as text,
               case when not json_valid(line) then 'invalid_json' else 'not_an_object' end
                   as reject_rule
        from ({_numbered_lines_sql(paths)})
        where line is not null and trim(line) <> ''
          and (not json_valid(line) or left(ltrim(line), 1) <> '{{')
    """


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
    files = _list_files(pattern) if pattern else []
    stats.files_seen = len(files)
    with commit:  # it may update ops.loaded_files (a rejected file touched but unchanged)
        finish_purges(con)
        pending = _pending_files(con, spec.source, files)
    stats.files_skipped = len(files) - len(pending)
    _forget_seen_keys(con)
    try:
        for i, batch in enumerate(_batches(pending), start=1):
            if progress:
                progress(f"{spec.source}: batch {i}, {len(batch)} file(s)")
            rejected_before = stats.files_rejected
            with commit:
                _load_batch(con, spec, batch, run_id, stats)
            stats.files_loaded += len(batch) - (stats.files_rejected - rejected_before)
    finally:
        _forget_seen_keys(con)
    if stats.files_loaded and stats.n_updated:  # inserts only: the per-batch cursor is exact
        with commit:
            _refresh_file_cursor(con, spec)
    stats.seconds = round(time.perf_counter() - started, 3)
    log.info("loaded %s: %s", spec.source, stats.as_dict())
    return stats


def _forget_seen_keys(con: duckdb.DuckDBPyConnection) -> None:
    """_seen_keys (the direct path's hashes of the ids in raw) lives for one load call: raw may
    change between calls."""
    con.execute("drop table if exists _seen_keys")


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
    set_aside = _read_tables(con, spec, batch) if tabular else {}
    direct_pages = bool(paths) and _direct_pages(spec, paths)
    pages_read = (
        bool(paths)
        and not tabular
        and not _lands_direct(spec)
        and not direct_pages
        and _read_pages(con, spec, paths)
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
                counts, merged, per_file = _land_direct(con, spec, paths, batch_id, pages=True)
                rejects = "_rej"
            except (_NeedsStaging, duckdb.Error):
                # A record that needs a decision, or a page the record type does not fit: the
                # batch again on the staging path, which quarantines exactly as it always did.
                con.execute("rollback")
                pages_read = _read_pages(con, spec, paths)
                con.execute("begin transaction")
                # The staging path does not keep _seen_keys: built again from raw next batch.
                _forget_seen_keys(con)
                counts = _stage_batch(con, spec, paths, pages_read)
                merged = _merge_raw(con, spec, batch_id)
                per_file = _staged_file_counts(con) if state is None else {}
                rejects = "_batch_v"
        elif _lands_direct(spec):
            try:
                counts, merged, per_file = _land_direct(con, spec, paths, batch_id)
            except _RepeatsWithinFile:
                # An id repeated within one file: which copy came first is the read order,
                # which only an order-preserving insert keeps. This batch again, that way.
                con.execute("rollback")
                con.execute("begin transaction")
                counts, merged, per_file = _land_direct(con, spec, paths, batch_id, ordered=True)
            rejects = "_rej"
        else:
            counts = (
                _stage_tables(con, spec) if tabular else _stage_batch(con, spec, paths, pages_read)
            )
            merged = _merge_raw(con, spec, batch_id)
            per_file = _staged_file_counts(con) if state is None else {}
            rejects = "_batch_v"
        n_quarantined = _quarantine_load_rejects(con, spec, run_id, rejects) if rejects else 0
        pages = state is not None or keep_cursor
        n_quarantined += _quarantine_screened(con, spec, run_id, screen.rejects, pages)
        for r in screen.rejects:
            counts[r.rule] = counts.get(r.rule, 0) + 1
            n, bad = per_file.get(r.path, (0, 0))
            per_file[r.path] = (n + 1, bad + 1)
        if not pages:
            # A table file set aside whole is not recorded: it is read (and reported) again next
            # run. A file the screen rejected is recorded as rejected: not read until it changes.
            kept = [f for f in batch if str(f[0]) not in set_aside]
            if kept:
                _record_files(con, spec, kept, batch_id, per_file, screen.rejected_files)
        if not keep_cursor:
            _advance_cursor(con, spec, run_id, state)
        con.execute("commit")
    except Exception as exc:
        con.execute("rollback")
        names = ", ".join(p.name for p, _, _ in batch[:3]) + ("…" if len(batch) > 3 else "")
        message = f"{spec.source}: loading {names} failed, nothing committed: {_safe_error(exc)}"
        if isinstance(exc, duckdb.Error):  # its text may quote the input: not chained
            raise LoadError(message) from None
        raise LoadError(message) from exc
    finally:
        for t in _TEMP_TABLES:
            con.execute(f"drop table if exists {t}")
        con.execute("drop view if exists _batch_v")
        con.execute("drop table if exists _batch")
    _purge_after_commit(con, batch_id)
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


# Which version of a record wins (newest first): the vendor's timestamp (unreadable = oldest),
# then a deletion marker over a live version with the same timestamp (the tombstone wins), then
# the later file by name, then the later position in the file. Independent of load order and
# batch split; _merge_raw applies the same order against the stored row.
_VERSION_ORDER = (
    "try_cast(cursor_at as timestamptz) desc nulls last, is_deleted desc, source_file desc, "
    "pos desc nulls last, rid desc"
)


def _stage_batch(
    con: duckdb.DuckDBPyConnection, spec: SourceSpec, paths: list[Path], pages_read: bool = False
) -> dict:
    """Temp view _batch_v: one row per record with rec_id, cursor_at, rn and reject_rule;
    temp table _bad: lines set aside before parsing (fast path). Returns outcome counts."""
    if spec.fast_lines:
        recs = _fast_lines_sql(spec, paths)
        con.execute(f"create or replace temp table _bad as {_bad_lines_sql(paths)}")
        not_object = "false"
    else:
        recs = _records_sql(spec, paths, pages_read)
        con.execute(
            "create or replace temp table _bad (source_file varchar, pos bigint, text varchar, "
            "reject_rule varchar)"
        )
        # JSON values are valid JSON text, so an object is one whose text starts with '{':
        # the same answer as json_type(j) <> 'OBJECT' without parsing every record again.
        not_object = "j is not null and not starts_with(ltrim(j::varchar, ' \t\n\r'), '{')"
    # With typed fields the record JSON is not needed once the row's columns are derived.
    con.execute(f"""
        create or replace temp table _batch as
        select * {"exclude (j)" if spec.fields else ""},
               case when parse_error is null and not ({not_object}) then {spec.key_expr} end
                   as rec_id,
               case when parse_error is null and not ({not_object}) then {spec.cursor_expr} end
                   as cursor_at,
               coalesce(parse_error is null and not ({not_object}) and ({spec.drop_expr}), false)
                   as is_dropped,
               coalesce(parse_error is null and not ({not_object}) and ({spec.deleted_expr}),
                        false) as is_deleted,
               coalesce({not_object}, false) as not_object
        from ({recs}) as recs
    """)
    # "first" streams rank their copies by the same order: which copy is kept does not depend
    # on how the files were split into batches (_merge_raw applies it across batches).
    order = _VERSION_ORDER
    # Rank only ids that occur more than once: a window over every row would cost a full sort.
    con.execute(f"""
        create or replace temp table _rank as
        with candidates as (
            select rowid as rid, * from _batch
            where rec_id is not null and parse_error is null and not is_dropped
        ),
        repeated as (
            select rec_id from candidates group by rec_id having count(*) > 1
        )
        select rid, row_number() over (partition by rec_id order by {order}) as rn
        from candidates semi join repeated using (rec_id)
    """)
    first = "true" if spec.repeats == "first" else "false"
    con.execute(f"""
        create or replace temp view _batch_v as
        select b.*, coalesce(r.rn, 1) as rn,
               case
                   when b.parse_error = 'invalid_json_file' then 'invalid_json_file'
                   when b.parse_error = 'unparsed' then 'unparsed'
                   when b.parse_error is not null then 'invalid_json'
                   when b.not_object then 'not_an_object'
                   when b.is_dropped then null
                   when b.rec_id is null then 'missing_id'
                   when coalesce(r.rn, 1) > 1 and {first} then 'duplicate'
               end as reject_rule
        from (select rowid as rid, * from _batch) as b
        left join _rank as r on b.rid = r.rid
    """)
    counts = dict(
        con.execute("""
            select coalesce(reject_rule, case when is_dropped then 'dropped'
                                              when rn = 1 then 'accepted'
                                              else 'superseded' end) as outcome, count(*)
            from _batch_v group by all
            union all
            select reject_rule, count(*) from _bad group by all
        """).fetchall()
    )
    return _settle_unparsed(spec, counts)


_PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
_DELIMITERS = (",", ";", "\t", "|")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _mtime_cursor(mtime_ns: int) -> str:
    """A file's modification time as an ISO 8601 UTC timestamp, to the microsecond."""
    seconds, ns = divmod(mtime_ns, 10**9)
    at = datetime.fromtimestamp(seconds, UTC) + timedelta(microseconds=ns // 1000)
    return at.isoformat()


def _table_reader(con: duckdb.DuckDBPyConnection, path: Path) -> tuple[str, list[str]]:
    """(table function reading `path`, its column names). CSV: every value as text, a header
    row, no rows skipped. Raises duckdb.Error when the file cannot be read."""
    if path.name.lower().endswith(_PARQUET_SUFFIXES):
        reader = f"read_parquet({sql_literal(path)})"
    else:
        reader = f"read_csv({sql_literal(path)}, all_varchar = true, header = true, skip = 0)"
    names = con.sql(f"select * from {reader}").columns
    if len(names) == 1 and not reader.startswith("read_parquet"):
        # The sniffer found no consistent delimiter (rows with different numbers of fields) and
        # read each line as one value: read again with the delimiter the header shows, so
        # DuckDB says which line is wrong instead of landing whole lines as keys.
        delim = next((d for d in _DELIMITERS if d in names[0]), None)
        if delim is not None:
            reader = reader[:-1] + f", delim = {sql_literal(delim)})"
            names = con.sql(f"select * from {reader}").columns
    return reader, names


def _read_tables(
    con: duckdb.DuckDBPyConnection, spec: SourceSpec, batch: list[tuple[Path, int, int]]
) -> dict[str, str]:
    """Temp table _tab: one row per table-file row (source_file, pos, cursor_at, text, j,
    parse_error, detail), `j` the row's known columns as text under lower-case names and `text`
    the same without the private ones. A file lacking a required column or unreadable is one
    row with parse_error set. Returns {path: what to fix} for the files set aside."""
    con.execute(
        "create or replace temp table _tab (source_file varchar, pos bigint, cursor_at varchar, "
        "text varchar, j json, parse_error varchar, detail varchar)"
    )
    set_aside: dict[str, str] = {}
    for path, _, mtime_ns in batch:
        file, cursor = sql_literal(path), sql_literal(_mtime_cursor(mtime_ns))
        try:
            reader, names = _table_reader(con, path)
            by_name: dict[str, str] = {}
            for name in names:
                by_name.setdefault(name.strip().lower(), name)
            missing = [c for c in spec.required if c not in by_name]
            if missing:
                found = ", ".join(names) or "none"
                set_aside[str(path)] = (
                    f"required column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                    f"missing (columns found: {found}); add "
                    f"{'them' if len(missing) > 1 else 'it'} (names are case-insensitive) or point "
                    f"sources.{spec.source} at the right files. The file was set aside and is "
                    "read again next run"
                )
                con.execute(
                    f"""insert into _tab select {file}, null, {cursor},
                               json_object('file', {file}, 'columns', ?::varchar[])::varchar,
                               null, 'missing_column', ?""",
                    [names, set_aside[str(path)]],
                )
                continue
            kept = [c for c in spec.columns if c in by_name]

            def obj(cols: list[str], names: dict[str, str] = by_name) -> str:
                pairs = ", ".join(f"{sql_literal(c)}, {_ident(names[c])}::varchar" for c in cols)
                return f"json_object({pairs})"

            public = [c for c in kept if c not in spec.private]
            con.execute(f"""
                insert into _tab
                select {file}, row_number() over (), {cursor}, {obj(public)}::varchar,
                       {obj(kept)}, null, null
                from {reader}
            """)
        except duckdb.Error as exc:
            set_aside[str(path)] = (
                f"could not be read as {'Parquet' if 'parquet' in path.name.lower() else 'CSV'} "
                f"({_safe_text(exc)}); fix or replace the file (CSV: a header row, "
                "and every row with as many fields as the header). It was set aside and is read "
                "again next run"
            )
            con.execute(
                f"""insert into _tab select {file}, null, {cursor},
                           json_object('file', {file})::varchar, null, 'unreadable_file', ?""",
                [set_aside[str(path)]],
            )
    return set_aside


def _stage_tables(con: duckdb.DuckDBPyConnection, spec: SourceSpec) -> dict:
    """_stage_batch for table files (rows in _tab): temp view _batch_v with rec_id, cursor_at
    (the file's time), rn, reject_rule and reject_detail (what to fix). Returns outcome counts.

    Row checks come first, then repeats within one file (all copies rejected when they differ,
    the later copies when they are the same row), then the newest file wins across files."""
    con.execute(
        "create or replace temp table _bad (source_file varchar, pos bigint, text varchar, "
        "reject_rule varchar)"
    )
    checks = " ".join(f"when {pred} then {sql_literal(rule)}" for rule, pred, _ in spec.checks)
    check_rule = f"case {checks} end" if checks else "null::varchar"
    con.execute(f"""
        create or replace temp table _batch as
        select source_file, pos, cursor_at, text, parse_error, detail, rec_id, check_rule,
               false as is_dropped, false as is_deleted,
               case when parse_error is null then ({spec.record_sql}) end as j
        from (
            select *,
                   case when parse_error is null then {spec.key_expr} end as rec_id,
                   case when parse_error is null then {check_rule} end as check_rule
            from _tab
        )
    """)
    valid = "parse_error is null and rec_id is not null and check_rule is null"
    con.execute(f"""
        create or replace temp table _dups as
        with candidates as (
            select rowid as rid, * from _batch where {valid}
        ),
        repeated as (
            select rec_id, source_file, count(distinct j::varchar) as n_versions
            from candidates group by all having count(*) > 1
        )
        select rid,
               case when n_versions > 1 then 'duplicate_key'
                    when row_number() over (partition by rec_id, source_file
                                            order by pos, rid) > 1 then 'duplicate_row'
               end as dup_rule
        from candidates join repeated using (rec_id, source_file)
    """)
    con.execute(f"""
        create or replace temp table _rank as
        with candidates as (
            select b.rid, b.rec_id, b.cursor_at, b.source_file, b.pos
            from (select rowid as rid, * from _batch where {valid}) as b
            anti join (select rid from _dups where dup_rule is not null) as d using (rid)
        ),
        repeated as (
            select rec_id from candidates group by rec_id having count(*) > 1
        )
        select rid, row_number() over (
                   partition by rec_id
                   order by try_cast(cursor_at as timestamptz) desc nulls last,
                            source_file desc, pos desc, rid desc) as rn
        from candidates semi join repeated using (rec_id)
    """)
    details = " ".join(
        f"when {sql_literal(rule)} then {sql_literal(reason)}" for rule, _, reason in spec.checks
    )
    con.execute(f"""
        create or replace temp view _batch_v as
        with ruled as (
            select b.*, coalesce(r.rn, 1) as rn,
                   case
                       when b.parse_error is not null then b.parse_error
                       when b.rec_id is null then 'missing_id'
                       when b.check_rule is not null then b.check_rule
                       else d.dup_rule
                   end as reject_rule
            from (select rowid as rid, * from _batch) as b
            left join _dups as d on b.rid = d.rid
            left join _rank as r on b.rid = r.rid
        )
        select *,
               case
                   when parse_error is not null then detail
                   when reject_rule = 'missing_id' then {sql_literal(spec.key_column + " is empty")}
                   {f"else case reject_rule {details} end" if details else ""}
               end as reject_detail
        from ruled
    """)
    return dict(
        con.execute("""
            select coalesce(reject_rule, case when rn = 1 then 'accepted'
                                              else 'superseded' end) as outcome, count(*)
            from _batch_v group by all
        """).fetchall()
    )


def _lands_direct(spec: SourceSpec) -> bool:
    """JSON lines with typed fields and a text key land straight in the raw table."""
    types = {col: typ.upper() for col, _, typ in spec.fields}
    return spec.fast_lines and types.get(spec.key_column) == "VARCHAR"


def _direct_pages(spec: SourceSpec, paths: list[Path]) -> bool:
    """Pages whose records land straight in the raw table: a spec with record_type, a text
    key, and no page starting with a byte order mark (read_json would read what the staging
    path sets aside)."""
    types = {col: typ.upper() for col, _, typ in spec.fields}
    if not (
        spec.record_type
        and spec.record_fields
        and not spec.sideload
        and _PAGE_LIST.fullmatch(spec.layout)
        and types.get(spec.key_column) == "VARCHAR"
    ):
        return False
    for p in paths:
        with p.open("rb") as f:
            if f.read(3) == b"\xef\xbb\xbf":
                return False
    return True


def _direct_pages_sql(spec: SourceSpec, paths: list[Path]) -> str:
    """The records of a batch of pages with their typed fields, in _fast_lines_sql's columns:
    one read_json of the list as `record_type`[] (one parse; a record the type does not fit
    fails the read), `_r` per record, the fields as record_fields computes them from `_r`."""
    m = _PAGE_LIST.fullmatch(spec.layout)
    assert m is not None and spec.record_fields is not None and spec.record_type
    _, exprs = spec.record_fields
    fields = ", ".join(
        f"({e})::{typ} as {col}" for (col, _, typ), e in zip(spec.fields, exprs, strict=True)
    )
    largest = max(p.stat().st_size for p in paths)
    return f"""
        select source_file, null::bigint as pos, null::varchar as text, null::json as j,
               null::varchar as parse_error, {fields}
        from (
            select {_source_file_sql()} as source_file, unnest("{m[1]}") as _r
            from read_json({sql_list(paths)}, format = 'unstructured', records = true,
                           filename = true, columns = {{'{m[1]}': '{spec.record_type}[]'}},
                           maximum_object_size = {max(largest + 1, 16 * 1024 * 1024)})
        )
    """


# A row of the batch that must go (a loser among repeats, an unchanged re-delivery) gets its
# _batch_id suffixed with this inside the batch's transaction, like the marker rows
# ('<batch>!', '<batch>!null'), and every '<batch>!…' row is deleted right after the batch
# commits. Deleting a row landed in the same transaction makes DuckDB re-append the whole batch
# at commit (about 1 s per million rows); rows committed already are deleted in place.
_PURGE_MARK = "!purge"


def _note_purge(con: duckdb.DuckDBPyConnection, table: str, batch_id: str) -> None:
    """Record, in the batch's transaction, that the batch leaves '<batch>!…' rows to delete."""
    con.execute(
        """insert into ops.load_purges
           select ?, ?, now() where not exists
               (select 1 from ops.load_purges where batch_id = ?)""",
        [table, batch_id, batch_id],
    )


def _purge(con: duckdb.DuckDBPyConnection, table: str, batch_id: str, loaded_at: Any) -> None:
    """Delete a committed batch's '<batch>!…' rows and its ops.load_purges row, together."""
    with transaction(con):
        # _loaded_at is the batch transaction's now(): the zone maps skip every older row group.
        con.execute(
            f"delete from {table} where _loaded_at = ? and starts_with(_batch_id, ?)",
            [loaded_at, f"{batch_id}!"],
        )
        con.execute("delete from ops.load_purges where batch_id = ?", [batch_id])


def _purge_after_commit(con: duckdb.DuckDBPyConnection, batch_id: str) -> None:
    for table, loaded_at in con.execute(
        "select raw_table, loaded_at from ops.load_purges where batch_id = ?", [batch_id]
    ).fetchall():
        _purge(con, table, batch_id, loaded_at)


def finish_purges(con: duckdb.DuckDBPyConnection) -> int:
    """Delete what batches that committed left for _purge_after_commit: none, unless the process
    died between a batch's commit and its purge. Every load runs it first, so no later step
    reads those rows. Returns the batches finished."""
    pending = con.sql("select raw_table, batch_id, loaded_at from ops.load_purges").fetchall()
    for table, batch_id, loaded_at in pending:
        log.warning("%s: finishing batch %s: its set-aside rows go now", table, batch_id)
        _purge(con, table, batch_id, loaded_at)
    return len(pending)


class _NeedsStaging(Exception):
    """A batch of pages has a record that needs a decision (no usable id, a repeat): landed on
    the staging path instead, which keeps each record's position for its quarantine row."""


class _RepeatsWithinFile(Exception):
    """The batch has an id twice in one file; landed without insertion order it can't tell
    which copy was first."""


def _land_direct(
    con: duckdb.DuckDBPyConnection,
    spec: SourceSpec,
    paths: list[Path],
    batch_id: str,
    ordered: bool = False,
    pages: bool = False,
) -> tuple[dict, dict, dict[str, tuple[int, int]]]:
    """The staging path's outcome, with the records written once: read_json streams straight
    into the raw table (staging them in a temp table first nearly doubled the cost — the
    persistent write is most of it), and only the few rows that need a decision are taken out
    again, all inside the batch's transaction.

    Rows whose key needs a decision — unparsed, no usable id, dropped, or an id the key_expr
    changes — land under a marker batch id with their original key text (NOT NULL: '' plus a
    second marker for a missing key) and move to _irr. Repeats within the batch and ids already
    in raw are then settled on the rows concerned: a repeat that loses is deleted (and
    quarantined as before), an unchanged re-delivery is deleted, an update replaces the old row.
    Returns (outcome counts, merge counts, per-file counts) as the staging path does, leaving
    the rejects in _rej and the bad lines in _bad.

    The insert runs without preserve_insertion_order (unless `ordered`): keeping the order
    serialised DuckDB's parallel insert and cost about a third more. Row ids then follow the
    read order only within each thread's chunks, so the first copy of a repeated id is found
    by file (files are read in name order); an id repeated within one file raises
    _RepeatsWithinFile and the batch is landed again with `ordered`.

    `pages`: the records come from pages (_direct_pages_sql); a batch with any record that
    needs a decision or any repeated id raises _NeedsStaging before anything is deleted.

    Cost to know: deleting a row landed in the same transaction makes DuckDB re-append the
    whole batch at commit instead of adopting the blocks it already wrote (about 1 s per
    million rows), so a batch with any such row costs about what the staging path did.
    """
    t, k = spec.raw_table, spec.key_column
    others = [c for c in spec.payload_columns if c != k]
    mark_text, mark_null = f"{batch_id}!", f"{batch_id}!null"
    derived = f"""
        select *, case when parse_error is null then {spec.key_expr} end as rec_id,
               case when parse_error is null then {spec.cursor_expr} end as cursor_at,
               coalesce(parse_error is null and ({spec.drop_expr}), false) as is_dropped
    """
    regular = f"parse_error is null and rec_id is not null and not is_dropped and rec_id = {k}"
    source = _direct_pages_sql(spec, paths) if pages else _fast_lines_sql(spec, paths)
    # Hashes of every id in raw before this batch, kept over the batches of one load call
    # (see _seen_keys): per batch, a miss there proves an id new without scanning raw.
    con.execute(f"create temp table if not exists _seen_keys as select hash({k}) as h from {t}")
    keep_order = con.sql("select current_setting('preserve_insertion_order')").fetchall()[0][0]
    con.execute(f"set preserve_insertion_order = {'true' if ordered else 'false'}")
    try:
        n_read = con.execute(
            f"""
            insert into {t} ({k}, {", ".join(others)}, cursor_at, _source_file, _batch_id,
                             _loaded_at)
            select case when {regular} then rec_id else coalesce({k}, '') end,
                   {", ".join(others)}, cursor_at, source_file,
                   case when {regular} then $1 when {k} is null then $2 else $3 end, now()
            from ({derived} from ({source}) as recs) as s
            """,
            [batch_id, mark_null, mark_text],
        ).fetchall()[0][0]
    finally:
        con.execute(f"set preserve_insertion_order = {'true' if keep_order else 'false'}")
    # Parquet event store: the archived days this batch touches come back first (their ids join
    # _seen_keys), so the settling below sees the stored versions as in the warehouse store.
    _, day_sql = rawstore.EVENT_TABLES.get(t, (None, None))
    if day_sql:
        rawstore.pull_back(
            con,
            t,
            f"select distinct {day_sql} from {t} where _batch_id in (?, ?, ?)",
            [batch_id, mark_null, mark_text],
            seen_keys=True,
        )
    con.execute(
        f"""create or replace temp table _landed as
            select _source_file as source_file, count(*) as n from {t}
            where _batch_id = ? group by all""",
        [batch_id],
    )
    n_regular = con.sql("select coalesce(sum(n), 0)::bigint from _landed").fetchall()[0][0]
    if pages and n_read > n_regular:
        raise _NeedsStaging
    # The rows that need a decision, with the key as it was read.
    all_null = " and ".join(f"{c} is null" for c in spec.payload_columns)
    con.execute(
        f"""
        create or replace temp table _irr as
        {derived} from (
            select *, case when {all_null} then 'unparsed' end as parse_error
            from (
                select rowid as rid, _source_file as source_file, null::bigint as pos,
                       null::varchar as text, null::json as j,
                       case when _batch_id = $1 then null else {k} end as {k}, {", ".join(others)}
                from {t} where $3 and _batch_id in ($1, $2)
            )
        )
        """,
        [mark_null, mark_text, n_read > n_regular],
    )
    # The marker rows stay in raw until the batch has committed (_purge_after_commit): deleting
    # a row landed in the same transaction makes DuckDB re-append the whole batch at commit.
    if n_read > n_regular:
        _note_purge(con, t, batch_id)
    # _VERSION_ORDER without the deletion marker (typed-field streams have none), for "first"
    # streams too: the copy kept is the one a split into other batches would keep.
    order = (
        "try_cast(cursor_at as timestamptz) desc nulls last, source_file desc, pos desc, rid desc"
    )
    # The batch's candidate ids as hashes: grouping and probing 8-byte hashes is several times
    # cheaper than the ids themselves; only hashes that repeat (or are already in raw) are
    # looked at by id.
    con.execute(
        f"""
        create or replace temp table _bh as
        select hash({k}) as h from {t} where _batch_id = $1
        union all
        select hash(rec_id) from _irr
        where parse_error is null and rec_id is not null and not is_dropped
        """,
        [batch_id],
    )
    con.execute(
        "create or replace temp table _bh_rep as select h from _bh group by h having count(*) > 1"
    )
    if pages and con.sql("select count(*) from _bh_rep").fetchall()[0][0]:
        raise _NeedsStaging
    # Rank only ids that occur more than once: a window over every row would cost a full sort.
    # rid is the row id the record landed with, i.e. its position in the batch.
    con.execute(
        f"""
        create or replace temp table _rank as
        with candidates as (
            select rowid as rid, {k} as rec_id, cursor_at, _source_file as source_file,
                   null::bigint as pos, false as irr
            from {t} where _batch_id = $1 and hash({k}) in (select h from _bh_rep)
            union all
            select rid, rec_id, cursor_at, source_file, pos, true from _irr
            where parse_error is null and rec_id is not null and not is_dropped
        ),
        repeated as (
            select rec_id from candidates group by rec_id having count(*) > 1
        )
        select rid, irr, row_number() over (partition by rec_id order by {order}) as rn
        from candidates semi join repeated using (rec_id)
        """,
        [batch_id],
    )
    if not ordered:
        # Ties the order would break: two copies of an id from the same file — unless every
        # copy landed as it was read and they are equal in every column: then either copy
        # lands the same row and quarantines the same payload (an exact repeat of a line, the
        # usual case), and landing the batch again in order would only cost a second read.
        same = ", ".join(f"{c}::varchar" for c in others)
        tied = con.execute(
            f"""
            select count(*) from (
                select 1 from (
                    select {k} as rec_id, _source_file as source_file, false as irr,
                           row({same}, cursor_at) as payload
                    from {t}
                    where _batch_id = $1 and rowid in (select rid from _rank where not irr)
                    union all
                    select rec_id, source_file, true, null from _irr
                    where rid in (select rid from _rank where irr)
                ) group by rec_id, source_file
                having count(*) > 1 and (bool_or(irr) or count(distinct payload) > 1)
            )
            """,
            [batch_id],
        ).fetchall()[0][0]
        if tied:
            raise _RepeatsWithinFile
    first = spec.repeats == "first"
    loser = "duplicate" if first else "superseded"
    con.execute(f"""
        create or replace temp table _irr_out as
        select i.*, coalesce(r.rn, 1) as rn,
               case
                   when i.parse_error is not null then 'unparsed'
                   when i.is_dropped then null
                   when i.rec_id is null then 'missing_id'
                   when coalesce(r.rn, 1) > 1 and {first} then 'duplicate'
               end as reject_rule
        from _irr as i left join (select rid, rn from _rank where irr) as r using (rid)
    """)
    pairs = ", ".join(others)
    con.execute(
        f"""
        create or replace temp table _rej as
        select b._source_file as source_file, null::bigint as pos, b.{k} as rec_id,
               'duplicate' as reject_rule, null::varchar as text, b.{k}, {pairs}
        from {t} as b
        where {first} and b._batch_id = $1
          and b.rowid in (select rid from _rank where not irr and rn > 1)
        union all
        select source_file, pos, rec_id, reject_rule, text, {k}, {pairs} from _irr_out
        where reject_rule is not null and reject_rule <> 'unparsed'
        """,
        [batch_id],
    )
    n_lost = con.sql("select count(*) from _rank where not irr and rn > 1").fetchall()[0][0]
    if n_lost:  # tombstoned here, deleted once the batch has committed (_purge_after_commit)
        _note_purge(con, t, batch_id)
        con.execute(
            f"""update {t} set _batch_id = $2 where _batch_id = $1
                and rowid in (select rid from _rank where not irr and rn > 1)""",
            [batch_id, f"{batch_id}{_PURGE_MARK}"],
        )
    counts = dict(
        con.execute("""
            select coalesce(reject_rule, case when is_dropped then 'dropped'
                                              when rn = 1 then 'accepted'
                                              else 'superseded' end) as outcome, count(*)
            from _irr_out group by all
        """).fetchall()
    )
    counts["accepted"] = counts.get("accepted", 0) + n_regular - n_lost
    if n_lost:
        counts[loser] = counts.get(loser, 0) + n_lost
    counts = {c: n for c, n in counts.items() if n}
    # Bad lines are unparsed rows; only files with such rows are read again for their text.
    unparsed_files = [
        _readable(f)
        for (f,) in con.sql(
            "select distinct source_file from _irr_out where reject_rule = 'unparsed'"
        ).fetchall()
    ]
    if unparsed_files:
        con.execute(f"create or replace temp table _bad as {_bad_lines_sql(unparsed_files)}")
    else:
        con.execute(
            "create or replace temp table _bad (source_file varchar, pos bigint, text varchar, "
            "reject_rule varchar)"
        )
    for rule, n in con.sql("select reject_rule, count(*) from _bad group by all").fetchall():
        counts[rule] = counts.get(rule, 0) + n
    merged = _settle_direct(con, spec, batch_id)
    per_file = {
        path: (n, bad)
        for path, n, bad in con.execute("""
            select source_file, sum(n)::bigint, sum(bad)::bigint from (
                select source_file, n, 0 as bad from _landed
                union all
                select source_file,
                       count(*) filter (where reject_rule is distinct from 'unparsed'), 0
                from _irr_out group by all
                union all
                select source_file, 0, count(*) from _rej group by all
                union all
                select source_file, count(*), count(*) from _bad group by all
            ) group by all
        """).fetchall()
    }
    return _settle_unparsed(spec, counts), merged, per_file


def _settle_direct(
    con: duckdb.DuckDBPyConnection, spec: SourceSpec, batch_id: str
) -> dict[str, int]:
    """Merge the batch's landed rows (and its accepted _irr rows) with the ids already in raw."""
    t, k = spec.raw_table, spec.key_column
    others = [c for c in spec.payload_columns if c != k]
    cols = ", ".join(others)
    accepted_irr = "from _irr_out where reject_rule is null and not is_dropped and rn = 1"
    batch = f"""
        select rowid as rid, false as irr, {k} as rec_id, {cols}, cursor_at,
               _source_file as source_file
        from {t} where _batch_id = $1
        union all
        select rid, true, rec_id, {cols}, cursor_at, source_file {accepted_irr}
    """
    overlap = con.sql("select count(*) from _bh semi join _seen_keys using (h)").fetchall()[0][0]
    con.execute("insert into _seen_keys select h from _bh")
    if overlap:  # a hash seen before: the exact check on the ids
        overlap = con.execute(
            f"""select count(*) from ({batch}) as b
                semi join (select {k} from {t} where not starts_with(_batch_id, $1)) as r
                    on r.{k} = b.rec_id""",
            [batch_id],
        ).fetchall()[0][0]
    insert_irr = f"""
        insert into {t} ({k}, {cols}, cursor_at, _source_file, _batch_id, _loaded_at)
        select rec_id, {cols}, cursor_at, source_file, $1, now() {accepted_irr}
    """
    if overlap == 0:
        # First sight of every id in the batch (the common case): nothing to merge.
        con.execute(insert_irr, [batch_id])
        n = con.execute(f"select count(*) from {t} where _batch_id = ?", [batch_id]).fetchall()
        return {"inserted": n[0][0], "updated": 0, "unchanged": 0}
    same = " and ".join(f"b.{c}::varchar is not distinct from r.{c}::varchar" for c in others)
    # The stored row loses only to a later version in _VERSION_ORDER (timestamp, then file), as
    # in _merge_raw: the same row whatever order or batches the files came in.
    bt, rt = "try_cast(b.cursor_at as timestamptz)", "try_cast(r.cursor_at as timestamptz)"
    older = f"""(
        coalesce({bt} < {rt}, {bt} is null and {rt} is not null)
        or ({bt} is not distinct from {rt} and b.source_file < r._source_file)
    )"""
    con.execute(
        f"""
        create or replace temp table _accepted as
        select b.rid, b.irr, r.old_rid,
               case when r.{k} is null then 'inserted'
                    when {same} then 'unchanged'
                    when {older} then 'unchanged'
                    else 'updated' end as outcome
        from ({batch}) as b
        left join (select rowid as old_rid, * from {t} where not starts_with(_batch_id, $1))
            as r on r.{k} = b.rec_id
        """,
        [batch_id],
    )
    # An unchanged re-delivery leaves the stored row as it was; an update replaces it with the
    # batch's row (the same values an in-place update would write).
    n_same = con.execute(
        f"""update {t} set _batch_id = $2 where _batch_id = $1
            and rowid in (select rid from _accepted where outcome = 'unchanged' and not irr)""",
        [batch_id, f"{batch_id}{_PURGE_MARK}"],
    ).fetchall()[0][0]
    if n_same:
        _note_purge(con, t, batch_id)
    con.execute(
        f"""delete from {t} where not starts_with(_batch_id, $1)
            and rowid in (select old_rid from _accepted where outcome = 'updated')""",
        [batch_id],
    )
    con.execute(
        f"{insert_irr} and rid not in "
        "(select rid from _accepted where irr and outcome = 'unchanged')",
        [batch_id],
    )
    out = dict(con.sql("select outcome, count(*) from _accepted group by all").fetchall())
    return {k2: out.get(k2, 0) for k2 in ("inserted", "updated", "unchanged")}


def _settle_unparsed(spec: SourceSpec, counts: dict) -> dict:
    """Fast path: unparsed rows are the bad lines (their text is in _bad); any excess are
    valid JSON objects with none of the declared fields."""
    unparsed = counts.pop("unparsed", 0)
    n_bad = sum(v for k, v in counts.items() if k in ("invalid_json", "not_an_object"))
    if spec.fast_lines and unparsed > n_bad:
        counts["missing_id"] = counts.get("missing_id", 0) + unparsed - n_bad
    return counts


def _staged_file_counts(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[int, int]]:
    """Records and quarantined records per file of a staged batch (_batch_v and _bad)."""
    return {
        path: (n, bad)
        for path, n, bad in con.execute("""
            select source_file, sum(n)::bigint, sum(bad)::bigint from (
                select source_file,
                       count(*) filter (where reject_rule is distinct from 'unparsed') as n,
                       count(reject_rule) filter (where reject_rule <> 'unparsed') as bad
                from _batch_v group by all
                union all
                select source_file, count(*), count(*) from _bad group by all
            ) group by all
        """).fetchall()
    }


def _record_files(
    con: duckdb.DuckDBPyConnection,
    spec: SourceSpec,
    batch: list[tuple[Path, int, int]],
    batch_id: str,
    per_file: dict[str, tuple[int, int]],
    rejected: dict[str, screening.Reject] | None = None,
) -> None:
    rejected = rejected or {}
    rows = []
    for p, size, mtime in batch:
        r = rejected.get(str(p))
        rows.append(
            [
                spec.source,
                str(p),
                size,
                mtime,
                *per_file.get(str(p), (0, 0)),
                batch_id,
                "rejected" if r else "loaded",
                r.rule if r else None,
                r.sha256 if r else None,
            ]
        )
    con.executemany(
        """insert into ops.loaded_files by name
               select ? as source, ? as path, ? as size_bytes, ? as mtime_ns, ? as n_records,
                      ? as n_quarantined, ? as batch_id, now() as loaded_at, ? as status,
                      ? as reject_rule, ? as sha256""",
        rows,
    )
    con.execute(
        "delete from ops.loaded_files a using ops.loaded_files b "
        "where a.source = b.source and a.path = b.path and a.loaded_at < b.loaded_at"
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


def _merge_raw(con: duckdb.DuckDBPyConnection, spec: SourceSpec, batch_id: str) -> dict[str, int]:
    """Merge accepted records on the stable id; a newer cursor (or changed payload) wins."""
    t, k = spec.raw_table, spec.key_column
    cols = spec.payload_columns
    src = cols if spec.fields else ["j"]
    accepted = "from _batch_v where rn = 1 and reject_rule is null and not is_dropped"
    _, day_sql = rawstore.EVENT_TABLES.get(t, (None, None))
    if day_sql:  # Parquet event store: the archived days the batch touches come back first
        as_raw = ", ".join(f"{s} as {c}" for s, c in zip(src, cols, strict=True))
        rawstore.pull_back(con, t, f"select distinct {day_sql} from (select {as_raw} {accepted})")
    overlap = con.execute(
        f"select count(*) from (select rec_id {accepted}) b semi join {t} r on r.{k} = b.rec_id"
    ).fetchall()[0][0]
    values = ", ".join(v for v, c in zip(src, cols, strict=True) if c != k)
    if overlap == 0:
        # First sight of every id in the batch (the common case): insert straight through.
        n = con.execute(
            f"""insert into {t} ({k}, {", ".join(c for c in cols if c != k)}, cursor_at,
                                 _source_file, _batch_id, _loaded_at)
                select rec_id, {values}, cursor_at, source_file, ?, now()
                {accepted}""",
            [batch_id],
        ).fetchall()[0][0]
        return {"inserted": n, "updated": 0, "unchanged": 0}
    same = (
        " and ".join(f"b.{c}::varchar is not distinct from r.{c}::varchar" for c in cols if c != k)
        if spec.fields
        else "b.j::varchar = r.payload::varchar"
    )
    # The stored row loses only to a later version in _VERSION_ORDER (timestamp, deleted, file):
    # the same outcome whatever order or batches the files came in.
    deleted = "false" if spec.fields else spec.deleted_expr
    bt, rt = "try_cast(b.cursor_at as timestamptz)", "try_cast(r.cursor_at as timestamptz)"
    older = f"""(
        coalesce({bt} < {rt}, {bt} is null and {rt} is not null)
        or ({bt} is not distinct from {rt}
            and (b.is_deleted::int < r._is_deleted::int
                 or (b.is_deleted = r._is_deleted and b.source_file < r._source_file)))
    )"""
    con.execute(f"""
        create or replace temp table _accepted as
        select b.*,
               case when r.{k} is null then 'inserted'
                    when {same} then 'unchanged'
                    when {older} then 'unchanged'
                    else 'updated' end as outcome
        from (select * {accepted}) b
        left join (
            select * exclude (j), coalesce({deleted}, false) as _is_deleted
            from (select *, {"null::json" if spec.fields else "payload"} as j from {t}
                  where {k} in (select rec_id {accepted}))
        ) r on r.{k} = b.rec_id
    """)
    assign = ", ".join(f"{c} = a.{s}" for s, c in zip(src, cols, strict=True) if c != k)
    con.execute(
        f"""
        update {t} set {assign}, cursor_at = a.cursor_at,
                       _source_file = a.source_file, _batch_id = ?, _loaded_at = now()
        from _accepted a where a.outcome = 'updated' and {t}.{k} = a.rec_id
    """,
        [batch_id],
    )
    con.execute(
        f"""
        insert into {t} ({k}, {", ".join(c for c in cols if c != k)}, cursor_at, _source_file,
                         _batch_id, _loaded_at)
        select rec_id, {", ".join(s for s, c in zip(src, cols, strict=True) if c != k)}, cursor_at,
               source_file, ?, now()
        from _accepted where outcome = 'inserted'
    """,
        [batch_id],
    )
    out = dict(con.sql("select outcome, count(*) from _accepted group by all").fetchall())
    return {k2: out.get(k2, 0) for k2 in ("inserted", "updated", "unchanged")}


REJECT_REASONS = {
    "invalid_json": "line is not valid JSON",
    "invalid_json_file": "export page is not valid JSON; the whole page was set aside",
    "not_an_object": "record is valid JSON but not an object",
    "missing_id": "record has no usable stable id",
    "duplicate": "same id delivered twice in one batch; the newest copy was kept "
    "(vendor timestamp, then the later file and line)",
    "duplicate_key": "the key appears more than once in this file with different values; "
    "no copy was used",
    "duplicate_row": "the same row appears again in this file; the first copy was kept",
    "missing_column": "a required column is missing; the file was set aside",
    "unreadable_file": "the file could not be read; it was set aside",
    # Set by the screen (screening.screen_files), with what is wrong and where in the reason:
    "invalid_utf8": "line is not valid UTF-8",
    "undecodable_file": "file is binary, corrupt gzip or (a page) not UTF-8; set aside whole",
    "html_file": "file is an HTML/XML document; set aside whole",
    "unexpected_page_shape": "page lacks the vendor's record list; set aside whole",
    "error_page": "page is an error body, not data; set aside whole",
}


def _quarantine_load_rejects(
    con: duckdb.DuckDBPyConnection, spec: SourceSpec, run_id: str, rejects: str = "_batch_v"
) -> int:
    """Quarantine the rejected records of `rejects` (_batch_v, or _rej on the direct path) and
    the bad lines in _bad; returns how many."""
    reasons = " ".join(
        f"when {sql_literal(rule)} then {sql_literal(text)}"
        for rule, text in REJECT_REASONS.items()
    )
    _redact_bad_lines(con)
    payload = f"coalesce(text, {payload_text(spec)})"
    # Table layouts say per row what to fix (which column a file lacks, which check failed).
    detail = "reject_detail" if spec.layout == "table" else "null::varchar"
    con.execute(f"""
        create or replace temp table _rejects as
        with rejected as (
            select source_file, pos, rec_id, reject_rule, {payload} as payload,
                   {detail} as detail
            from {rejects} where reject_rule is not null and reject_rule <> 'unparsed'
            union all
            select source_file, pos, null, reject_rule, text, null from _bad
        )
        -- One row per rejected record: the key holds the file and the line/position, and for
        -- identical rejects without a position (copies of one line) the copy's index.
        , numbered as (
            select *, row_number() over (
                       partition by source_file, pos, reject_rule, rec_id::varchar, payload
                   ) as copy_no
            from rejected
        )
        select md5(concat_ws('|', 'load', {sql_literal(spec.raw_table)}, reject_rule,
                             coalesce(rec_id::varchar, ''), payload, source_file,
                             coalesce(pos::varchar, ''), copy_no::varchar)) as quarantine_id,
               'load' as stage, {sql_literal(spec.source)} as source,
               {sql_literal(spec.raw_table)} as table_name, rec_id::varchar as record_key,
               reject_rule as rule,
               coalesce(detail, case reject_rule {reasons} end)
                   || ' (' || regexp_extract(source_file, '[^/]+$')
                   || coalesce(' #' || pos, '') || ')' as reason,
               payload, source_file
        from numbered
    """)
    record_quarantine(con, "_rejects", "load", [spec.raw_table], run_id)
    return (
        con.sql(
            f"select count(*) from {rejects} where reject_rule is not null "
            "and reject_rule <> 'unparsed'"
        ).fetchall()[0][0]
        + con.sql("select count(*) from _bad").fetchall()[0][0]
    )


def _redact_bad_lines(con: duckdb.DuckDBPyConnection) -> None:
    """Lines set aside before parsing never went through the record redaction; the quarantine
    keeps only their redacted text (e-mails, phones, cards, names in their forms, tokens).
    Bad lines are few: they are redacted in Python and only changed ones written back."""
    changed = [
        (red, rowid)
        for rowid, text in con.sql("select rowid, text from _bad where text is not null").fetchall()
        if (red := redact.redact_text(text)) != text
    ]
    if changed:
        con.executemany("update _bad set text = ? where rowid = ?", changed)


def _advance_cursor(
    con: duckdb.DuckDBPyConnection, spec: SourceSpec, run_id: str, state: dict[str, Any] | None
) -> None:
    """Store the stream's cursor in the same transaction as the data it covers.

    Connectors pass their own resumable state; for file sources the cursor is the newest record
    cursor landed so far (informational: unchanged files are skipped by ops.loaded_files).
    """
    # File sources keep their own row, so they never clobber an API connector's cursor.
    stream = spec.stream if state is not None else f"files:{spec.stream}"
    prev = con.execute(
        "select cursor_value, updated_at from ops.sync_state where source = ? and stream = ?",
        [spec.source, stream],
    ).fetchall()
    con.execute("delete from ops.sync_state where source = ? and stream = ?", [spec.source, stream])
    if state is not None:
        con.execute(
            "insert into ops.sync_state values (?, ?, ?, null, now(), ?)",
            [spec.source, spec.stream, json.dumps(state, sort_keys=True, default=str), run_id],
        )
        return
    newest = "max(try_cast(cursor_at as timestamptz))"
    if prev:
        # The newest cursor so far and the rows landed since (by any loader; the previous
        # batch's rows carry its now(), counted already); a full scan of raw per batch grew
        # with the table (quadratic over a large load). load_source recomputes it exactly once
        # at the end (_refresh_file_cursor).
        newest = f"""greatest(try_cast($5 as timestamptz),
                             (select {newest} from {spec.raw_table} where _loaded_at > $6))"""
    con.execute(
        f"""
        insert into ops.sync_state
        select $1, $2, {newest}::varchar,
               (select count(*) from ops.loaded_files where source = $3),
               now(), $4
        {"" if prev else f"from {spec.raw_table}"}
        """,
        [spec.source, stream, spec.source, run_id, *(prev[0][:2] if prev else ())],
    )


def _refresh_file_cursor(con: duckdb.DuckDBPyConnection, spec: SourceSpec) -> None:
    """Recompute a file source's newest cursor once per load that updated rows: per batch it
    only grows, so a row updated to an older (or unreadable) cursor would leave it too high.
    (A full scan of raw: skipped when the load only inserted, where the per-batch value is
    already exact.)"""
    con.execute(
        f"""
        update ops.sync_state set cursor_value = newest.v
        from (select max(try_cast(cursor_at as timestamptz))::varchar as v
              from {spec.raw_table}) as newest
        where source = ? and stream = ? and cursor_value is distinct from newest.v
        """,
        [spec.source, f"files:{spec.stream}"],
    )


def read_state(con: duckdb.DuckDBPyConnection, source: str, stream: str) -> dict[str, Any] | None:
    """The connector state committed by the last successful page batch, or None."""
    rows = con.execute(
        "select cursor_value from ops.sync_state where source = ? and stream = ?",
        [source, stream],
    ).fetchall()
    if not rows or rows[0][0] is None:
        return None
    try:
        state = json.loads(rows[0][0])
    except json.JSONDecodeError:
        return None
    return state if isinstance(state, dict) else None


# Pages fetched ahead of the one being landed (load_pages): the next requests and their JSON
# checks run while DuckDB lands and commits the current batch. At most FETCH_AHEAD pages and
# FETCH_AHEAD_BYTES of bodies wait in memory (always at least one page). 0 = fetch only when the
# loader asks.
FETCH_AHEAD = 8
FETCH_AHEAD_BYTES = 64 * 1024 * 1024


class _FetchAhead:
    """Iterates `pages` in a thread of its own, up to `depth` pages (and about `max_bytes` of
    page bodies) ahead of the consumer.

    The order is kept and a fetch error is raised at the point of the iteration where it
    happened: the pages before it are handed over first. The cursor is unaffected: a page
    fetched ahead is only ever stored with the batch that lands it, so a crash (or an early
    stop) loses at most pages that were never committed, and the next run fetches them again
    from the committed cursor. `close()` stops the thread after its current fetch and waits
    for it, so no request outlives the load. The thread runs in a copy of the caller's
    context (Prefect's run context: connector logs still reach the run)."""

    _END = object()

    def __init__(self, pages: Iterable[Any], depth: int, max_bytes: int | None = None) -> None:
        self._pages = pages
        self._depth = max(1, depth)
        self._max_bytes = max_bytes
        self._items: deque[tuple[Any, BaseException | None, int]] = deque()
        self._bytes = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        ctx = contextvars.copy_context()
        self._thread = threading.Thread(
            target=ctx.run, args=(self._produce,), name="fetch-ahead", daemon=True
        )
        self._thread.start()

    def _room(self) -> bool:
        """Wait until another page may be fetched (False: stopped)."""
        with self._cond:
            while not self._stop.is_set():
                full = len(self._items) >= self._depth or (
                    self._max_bytes is not None and self._bytes >= self._max_bytes
                )
                if not full:
                    return True
                self._cond.wait(0.1)
        return False

    def _put(self, item: Any, error: BaseException | None = None) -> None:
        size = len(getattr(item, "body", b"") or b"")
        with self._cond:
            self._items.append((item, error, size))
            self._bytes += size
            self._cond.notify_all()

    def _produce(self) -> None:
        it = iter(self._pages)
        try:
            while self._room():
                try:
                    page = next(it)
                except StopIteration:
                    break
                except BaseException as exc:  # handed to the consumer, raised there
                    self._put(None, exc)
                    return
                self._put(page)
            self._put(self._END)
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> Iterator[Any]:
        while True:
            with self._cond:
                while not self._items:
                    self._cond.wait()
                item, error, size = self._items.popleft()
                self._bytes -= size
                self._cond.notify_all()
            if error is not None:
                raise error
            if item is self._END:
                return
            yield item

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join()


def load_pages(
    con: duckdb.DuckDBPyConnection,
    spec: SourceSpec,
    pages: Iterable[Any],
    run_id: str,
    landing_dir: Path,
    *,
    batch_bytes: int = BATCH_BYTES,
    progress: Callable[[str], None] | None = None,
    commit_lock: AbstractContextManager[Any] | None = None,
    fetch_ahead: int | None = None,
) -> LoadStats:
    """Load a connector's pages (tasks.clients.base.LandedPage) into `spec.raw_table`.

    Pages are written to `landing_dir` and loaded in batches of about `batch_bytes`; each batch
    commits together with the state of its last page, so a crash (or a failing page) leaves the
    cursor at the last committed batch and a rerun re-fetches from there — the merge on the
    stable id absorbs anything fetched twice. Landing files are removed once committed.

    Each page is screened as it arrives (screening.screen_files): a page that is not the vendor's
    documented shape (an error body, HTML, invalid JSON, the record list missing) is quarantined
    without its text and the load stops before it — the pages before it commit, the cursor stays
    before it, and the next run fetches it again.

    `commit_lock`: when connectors are pulled in parallel (tasks/extract.py), fetching, landing
    and screening go on unlocked and only each batch's transaction holds the lock, so the
    warehouse has one writer at a time and a commit still carries exactly its batch's cursor.
    At most one batch of landed pages (on disk, about `batch_bytes`) waits for it.

    `fetch_ahead` (default FETCH_AHEAD): how many pages a thread fetches ahead of the page being
    landed (_FetchAhead), so requests overlap the batch's transaction; 0 fetches a page only
    after the one before it is handled. Either way a commit carries its own pages' cursor only.
    """
    started = time.perf_counter()
    stats = LoadStats(source=spec.source)
    commit = commit_lock if commit_lock is not None else nullcontext()
    landing_dir.mkdir(parents=True, exist_ok=True)
    # Pages a killed run fetched but never committed: they are fetched again from the committed
    # cursor, and they may hold unredacted text, so they must not linger.
    for stale in landing_dir.glob(f"{spec.source}-{spec.stream}-*"):
        stale.unlink(missing_ok=True)
    suffix = "jsonl" if spec.layout == "lines" else "json"
    pending: list[tuple[Path, int, int]] = []
    size = 0
    last_state: dict[str, Any] | None = None

    work = Path(tempfile.mkdtemp(prefix="feedback-pages-"))  # gunzipped/cleaned copies
    screened = screening.Screen()

    def flush() -> None:
        nonlocal pending, size, screened
        if not pending:
            return
        with commit:
            _load_batch(con, spec, pending, run_id, stats, state=last_state, screen=screened)
        stats.files_loaded += len(pending)
        if progress:
            progress(f"{spec.source}: committed {stats.records_read:,} records so far")
        for p, _, _ in pending:
            p.unlink(missing_ok=True)
        for copy in screened.aliases:
            Path(copy).unlink(missing_ok=True)
        pending, size, screened = [], 0, screening.Screen()

    with commit:
        finish_purges(con)
    depth = FETCH_AHEAD if fetch_ahead is None else fetch_ahead
    ahead = _FetchAhead(pages, depth, FETCH_AHEAD_BYTES) if depth > 0 else None
    _forget_seen_keys(con)
    try:
        for i, page in enumerate(ahead if ahead is not None else pages):
            path = landing_dir / f"{spec.source}-{spec.stream}-{run_id}-{i:06d}.{suffix}"
            path.write_bytes(page.body)
            stats.files_seen += 1
            screen = screening.screen_files(
                con, spec, [path], work, getattr(page, "shape_checked", False)
            )
            if screen.rejected_files:
                flush()  # the pages before it, with their cursor
                try:
                    with commit:
                        _load_batch(
                            con,
                            spec,
                            [(path, len(page.body), 0)],
                            run_id,
                            stats,
                            state=None,
                            screen=screen,
                            keep_cursor=True,
                        )
                finally:
                    path.unlink(missing_ok=True)
                stats.warnings.append(
                    f"{spec.source}: stopped before page {i + 1}; the cursor stays before it "
                    "and the next run fetches it again"
                )
                break
            pending.append((path, len(page.body), 0))
            screened.extend(screen)
            size += len(page.body)
            last_state = page.state
            if size >= batch_bytes:
                flush()
        flush()
    finally:  # a failed fetch or batch: its pages are fetched again next run
        if ahead is not None:
            ahead.close()
        _forget_seen_keys(con)
        for p, _, _ in pending:
            p.unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)
    stats.seconds = round(time.perf_counter() - started, 3)
    log.info("loaded %s pages: %s", spec.source, stats.as_dict())
    return stats
