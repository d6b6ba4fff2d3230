"""Land vendor export files (PostHog JSON lines, Zendesk export pages, GitHub issue pages) in raw.*.

Everything streams through DuckDB: files are read by `read_csv`/`read_text`, parsed with DuckDB's
JSON functions and merged on the stable id in one transaction per batch of files, together with
the quarantine rows and the file/cursor bookkeeping — so a crash never leaves a half-advanced state.
"""

from __future__ import annotations

import glob
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb

from tasks.db import sql_literal
from tasks.quality import record_quarantine

log = logging.getLogger(__name__)

BATCH_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class SourceSpec:
    """How one vendor export lands: the facts as data, the SQL below uses them."""

    source: str
    stream: str
    raw_table: str
    key_column: str
    # SQL expression over `j` (the record JSON) giving the stable id; NULL = missing id.
    key_expr: str
    cursor_expr: str
    # SQL predicate over `j` for records that are not ours to keep (e.g. GitHub pull requests).
    drop_expr: str = "false"
    # "newest" = repeats of an id in one batch are versions (latest cursor wins);
    # "first" = repeats are duplicate deliveries of an immutable record (quarantined).
    repeats: str = "newest"
    # "lines": one JSON record per line; otherwise a JSONPath to the record list in each file.
    layout: str = "lines"


POSTHOG_EVENTS = SourceSpec(
    source="posthog",
    stream="events",
    raw_table="raw.posthog__events",
    key_column="event_id",
    key_expr="nullif(trim(j ->> 'uuid'), '')",
    cursor_expr="j ->> 'timestamp'",
    repeats="first",
    layout="lines",
)
ZENDESK_TICKETS = SourceSpec(
    source="zendesk",
    stream="tickets",
    raw_table="raw.zendesk__tickets",
    key_column="ticket_id",
    key_expr=(
        "case when json_type(j, '$.id') in ('UBIGINT', 'BIGINT') then (j ->> 'id')::bigint end"
    ),
    cursor_expr="j ->> 'updated_at'",
    layout="$.tickets[*]",
)
GITHUB_ISSUES = SourceSpec(
    source="github",
    stream="issues",
    raw_table="raw.github__issues",
    key_column="node_id",
    key_expr="nullif(trim(j ->> 'node_id'), '')",
    cursor_expr="j ->> 'updated_at'",
    drop_expr="json_exists(j, '$.pull_request')",
    layout="$[*]",
)
SPECS = {s.source: s for s in (POSTHOG_EVENTS, ZENDESK_TICKETS, GITHUB_ISSUES)}


@dataclass
class LoadStats:
    source: str
    files_seen: int = 0
    files_loaded: int = 0
    files_skipped: int = 0
    records_read: int = 0
    n_inserted: int = 0
    n_updated: int = 0
    n_unchanged: int = 0
    n_superseded: int = 0
    n_dropped: int = 0
    n_quarantined: int = 0
    seconds: float = 0.0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def n_landed(self) -> int:
        return self.n_inserted + self.n_updated + self.n_unchanged

    def as_dict(self) -> dict:
        return asdict(self) | {"n_landed": self.n_landed}


class LoadError(RuntimeError):
    """A batch could not be loaded; nothing of it was committed."""


def _list_files(pattern: str) -> list[Path]:
    return sorted(Path(p) for p in glob.glob(os.path.expanduser(pattern), recursive=True))


def _pending_files(
    con: duckdb.DuckDBPyConnection, source: str, files: list[Path]
) -> list[tuple[Path, int, int]]:
    """Files never loaded, or changed (size/mtime) since they were loaded."""
    known = {
        (p, size, mtime)
        for p, size, mtime in con.execute(
            "select path, size_bytes, mtime_ns from ops.loaded_files where source = ?", [source]
        ).fetchall()
    }
    out = []
    for f in files:
        st = f.stat()
        if (str(f), st.st_size, st.st_mtime_ns) not in known:
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


def _records_sql(spec: SourceSpec, paths: list[Path]) -> str:
    """One row per source record: file, position, raw text, parsed JSON (NULL if invalid)."""
    file_list = "[" + ", ".join(sql_literal(p) for p in paths) + "]"
    if spec.layout == "lines":
        # Read each line as one opaque string, so a single bad line is quarantined instead of
        # failing the file; delimiter/quote are set to characters valid JSON text never holds raw.
        return f"""
            select filename as source_file,
                   row_number() over (partition by filename) as pos,
                   line as text,
                   case when json_valid(line) then line::json end as j,
                   case when not json_valid(line) then 'invalid_json' end as parse_error
            from read_csv({file_list}, columns = {{'line': 'VARCHAR'}}, delim = '\x1f',
                          quote = '', escape = '', header = false, auto_detect = false,
                          filename = true, strict_mode = false)
            where line is not null and trim(line) <> ''
        """
    return f"""
        with files as (
            select filename, content, json_valid(content) as ok
            from read_text({file_list})
        ),
        records as (
            select filename, unnest(json_extract(content::json, '{spec.layout}')) as j
            from files where ok
        )
        select filename as source_file,
               row_number() over (partition by filename) as pos,
               j::varchar as text, j, null as parse_error
        from records
        union all
        select filename, 0, left(content, 100000), null, 'invalid_json_file'
        from files where not ok
    """


def load_source(
    con: duckdb.DuckDBPyConnection,
    spec: SourceSpec,
    pattern: str,
    run_id: str,
    progress: Callable[[str], None] | None = None,
) -> LoadStats:
    """Load every new or changed file matching `pattern` into `spec.raw_table`."""
    started = time.perf_counter()
    stats = LoadStats(source=spec.source)
    files = _list_files(pattern) if pattern else []
    stats.files_seen = len(files)
    pending = _pending_files(con, spec.source, files)
    stats.files_skipped = len(files) - len(pending)
    for i, batch in enumerate(_batches(pending), start=1):
        if progress:
            progress(f"{spec.source}: batch {i}, {len(batch)} file(s)")
        _load_batch(con, spec, batch, run_id, stats)
        stats.files_loaded += len(batch)
    stats.seconds = round(time.perf_counter() - started, 3)
    log.info("loaded %s: %s", spec.source, stats.as_dict())
    return stats


def _load_batch(
    con: duckdb.DuckDBPyConnection,
    spec: SourceSpec,
    batch: list[tuple[Path, int, int]],
    run_id: str,
    stats: LoadStats,
) -> None:
    batch_id = f"{spec.source}-{uuid.uuid4().hex[:12]}"
    paths = [p for p, _, _ in batch]
    order = (
        "source_file, pos"
        if spec.repeats == "first"
        else "try_cast(cursor_at as timestamptz) desc nulls last, source_file desc, pos desc"
    )
    con.execute("begin transaction")
    try:
        con.execute(f"""
            create or replace temp table _batch as
            with recs as ({_records_sql(spec, paths)}),
            keyed as (
                select *,
                       case when j is not null then {spec.key_expr} end as rec_id,
                       case when j is not null then {spec.cursor_expr} end as cursor_at,
                       coalesce(j is not null and ({spec.drop_expr}), false) as is_dropped,
                       j is not null and json_type(j) <> 'OBJECT' as not_object
                from recs
            ),
            ranked as (
                select *,
                       case when rec_id is not null and not is_dropped and parse_error is null
                            then row_number() over (partition by rec_id order by {order}) end as rn
                from keyed
            )
            select *,
                   case
                       when parse_error = 'invalid_json_file' then 'invalid_json_file'
                       when parse_error is not null then 'invalid_json'
                       when not_object then 'not_an_object'
                       when is_dropped then null
                       when rec_id is null then 'missing_id'
                       when rn > 1 and {spec.repeats == "first"} then 'duplicate'
                   end as reject_rule
            from ranked
        """)
        counts = dict(
            con.execute("""
                select coalesce(reject_rule, case when is_dropped then 'dropped'
                                                  when rn = 1 then 'accepted'
                                                  else 'superseded' end) as outcome, count(*)
                from _batch group by all
            """).fetchall()
        )
        merged = _merge_raw(con, spec, batch_id)
        n_quarantined = _quarantine_load_rejects(con, spec, run_id)
        con.executemany(
            """insert into ops.loaded_files by name
               select ? as source, ? as path, ? as size_bytes, ? as mtime_ns, ? as n_records,
                      ? as n_quarantined, ? as batch_id, now() as loaded_at""",
            [
                [spec.source, str(p), size, mtime, *_file_counts(con, p), batch_id]
                for p, size, mtime in batch
            ],
        )
        con.execute(
            "delete from ops.loaded_files a using ops.loaded_files b "
            "where a.source = b.source and a.path = b.path and a.loaded_at < b.loaded_at"
        )
        _advance_cursor(con, spec, run_id)
        con.execute("commit")
    except Exception as exc:
        con.execute("rollback")
        names = ", ".join(p.name for p in paths[:3]) + ("…" if len(paths) > 3 else "")
        raise LoadError(f"{spec.source}: loading {names} failed, nothing committed: {exc}") from exc

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


def _file_counts(con: duckdb.DuckDBPyConnection, path: Path) -> tuple[int, int]:
    return con.execute(
        "select count(*), count(reject_rule) from _batch where source_file = ?", [str(path)]
    ).fetchall()[0]


def _merge_raw(con: duckdb.DuckDBPyConnection, spec: SourceSpec, batch_id: str) -> dict[str, int]:
    """Merge accepted records on the stable id; a newer cursor (or changed payload) wins."""
    t, k = spec.raw_table, spec.key_column
    con.execute(f"""
        create or replace temp table _accepted as
        select b.rec_id, b.cursor_at, b.j as payload, b.source_file,
               case when r.{k} is null then 'inserted'
                    when b.j::varchar = r.payload::varchar then 'unchanged'
                    when try_cast(b.cursor_at as timestamptz) < try_cast(r.cursor_at as timestamptz)
                        then 'unchanged'
                    else 'updated' end as outcome
        from _batch b left join {t} r on r.{k} = b.rec_id
        where b.rn = 1 and b.reject_rule is null
    """)
    con.execute(
        f"""
        update {t} set cursor_at = a.cursor_at, payload = a.payload,
                       _source_file = a.source_file, _batch_id = ?, _loaded_at = now()
        from _accepted a where a.outcome = 'updated' and {t}.{k} = a.rec_id
    """,
        [batch_id],
    )
    con.execute(
        f"""
        insert into {t} ({k}, cursor_at, payload, _source_file, _batch_id, _loaded_at)
        select rec_id, cursor_at, payload, source_file, ?, now()
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
    "duplicate": "same id delivered twice in one batch; the first copy was kept",
}


def _quarantine_load_rejects(con: duckdb.DuckDBPyConnection, spec: SourceSpec, run_id: str) -> int:
    reasons = " ".join(
        f"when {sql_literal(rule)} then {sql_literal(text)}"
        for rule, text in REJECT_REASONS.items()
    )
    n = con.sql("select count(*) from _batch where reject_rule is not null").fetchall()[0][0]
    con.execute(f"""
        create or replace temp table _rejects as
        select md5(concat_ws('|', 'load', {sql_literal(spec.raw_table)}, reject_rule,
                             coalesce(rec_id::varchar, ''), text)) as quarantine_id,
               'load' as stage, {sql_literal(spec.source)} as source,
               {sql_literal(spec.raw_table)} as table_name, rec_id::varchar as record_key,
               reject_rule as rule,
               case reject_rule {reasons} end
                   || ' (' || regexp_extract(source_file, '[^/]+$') || ' #' || pos || ')' as reason,
               text as payload, source_file
        from _batch where reject_rule is not null
        qualify row_number() over (partition by quarantine_id order by source_file, pos) = 1
    """)
    record_quarantine(con, "_rejects", "load", [spec.raw_table], run_id)
    return n


def _advance_cursor(con: duckdb.DuckDBPyConnection, spec: SourceSpec, run_id: str) -> None:
    """For file sources the cursor is the newest record cursor landed so far."""
    con.execute(
        """
        delete from ops.sync_state where source = ? and stream = ?;
        """,
        [spec.source, spec.stream],
    )
    con.execute(
        f"""
        insert into ops.sync_state
        select ?, ?, max(try_cast(cursor_at as timestamptz))::varchar,
               (select count(*) from ops.loaded_files where source = ?),
               now(), ?
        from {spec.raw_table}
        """,
        [spec.source, spec.stream, spec.source, run_id],
    )
