"""Raw event history as Parquet day files (setting `raw_events_store = "parquet"`).

Every batch still lands in the warehouse's raw event table exactly as in the "warehouse" mode
(tasks/load/: one transaction, merge on the stable id, quarantine, cursors). After the
night's rollups have consumed the rows, `archive` moves the event days (UTC day of the event's
own time) older than `raw_events_hot_days` out of the DuckDB file into
`<raw_events_path>/<table>/day=YYYY-MM-DD/part-<id>.parquet`:

1. the day files are written under new names (nothing reads them yet);
2. one transaction records them in the manifest `ops.raw_event_files`, deletes the moved rows
   from the warehouse table and re-creates the view `raw.<vendor>__events_all`
   (the warehouse rows UNION ALL the manifest's files — an explicit list, never a glob);
3. files no longer in the manifest (a day rewritten, expired, pulled back, or written by a run
   that died before step 2) are deleted.

A crash before 2 commits leaves the rows in the warehouse and unlisted files that no view
reads (deleted by the next run); after it, only unlisted files: no loss, no double rows, and a
rerun does the same work again (idempotent). Each (table, day) is in exactly one place.

A late or re-delivered event for a day already in Parquet: inside the load's batch transaction
(`pull_back`), the days the batch touches that are in the manifest — only those — are read back
into the warehouse table and leave the manifest, so the ordinary merge decides between the
stored and the delivered version (same rule, same counts as the warehouse mode); the next
archive writes the day again. Limitation: an event redelivered with a changed event time that
moves it to another archived day is not matched (event ids are immutable for the vendors here).

Retention (`raw_events_retention_days` > 0): days older than the horizon are deleted (files and
any warehouse rows) and the horizon is recorded in `ops.raw_event_retention`; the usage rollups
keep what they computed for those days and never recompute them (tasks/transform.py).

s3:// paths are reached through fsspec (s3fs) registered with every DuckDB connection
(`register`, hooked into tasks.db.connect for every connection at import): DuckDB's
COPY TO and read_parquet use the registered filesystem, so no httpfs extension is needed.
Credentials come only from the standard AWS environment / profile chain of s3fs/botocore.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from tasks import db
from tasks.db import sql_literal, transaction
from tasks.sources import VENDORS

log = logging.getLogger(__name__)

# raw event table -> (key column, SQL over its columns giving the event's UTC day; NULL = no
# readable time: the row stays in the warehouse): every vendor declared with an event_day_sql
# (tasks/sources.py). The staging models parse the same fields.
EVENT_TABLES: dict[str, tuple[str, str]] = {
    v.raw_table: (v.raw_key, v.event_day_sql) for v in VENDORS if v.event_day_sql
}
HISTORY_SUFFIX = "_all"
MANIFEST = "ops.raw_event_files"
RETENTION = "ops.raw_event_retention"


def history(table: str) -> str:
    """The relation with the full history of a raw event table (its warehouse rows and its
    Parquet days): `raw.<vendor>__events_all`."""
    return table + HISTORY_SUFFIX


@dataclass(frozen=True)
class RawStore:
    """Where the raw event history lives (from the raw_events_* settings)."""

    mode: str = "warehouse"
    root: str = ""
    endpoint_url: str = ""
    region: str = ""
    hot_days: int = 3
    retention_days: int = 0

    @classmethod
    def from_settings(cls, settings: Any) -> RawStore:
        root = settings.raw_events_path or str(Path(settings.duckdb_path).parent / "raw_events")
        return cls(
            mode=settings.raw_events_store,
            root=root.removeprefix("file://").rstrip("/"),
            endpoint_url=settings.raw_events_s3_endpoint_url,
            region=settings.raw_events_s3_region,
            hot_days=settings.raw_events_hot_days,
            retention_days=settings.raw_events_retention_days,
        )

    @property
    def is_s3(self) -> bool:
        return self.root.startswith("s3://")

    def uri(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def filesystem(self):
        """fsspec filesystem of the root: s3fs for s3:// (credentials from the environment,
        never passed here), the local filesystem otherwise."""
        import fsspec

        if not self.is_s3:
            return fsspec.filesystem("file")
        try:
            import s3fs
        except ImportError:  # pragma: no cover - depends on the install
            raise RuntimeError(
                "raw_events_path is s3:// but s3fs is not installed (pip install "
                "'feedback-loop[s3]')"
            ) from None
        client_kwargs = {"region_name": self.region} if self.region else {}
        return s3fs.S3FileSystem(
            endpoint_url=self.endpoint_url or None, client_kwargs=client_kwargs
        )


_ACTIVE: RawStore | None = None


def activate(settings: Any) -> RawStore:
    """Make the run's raw event store known to every connection tasks.db.connect opens (an
    s3:// store registers its filesystem there: the views read its files)."""
    global _ACTIVE
    _ACTIVE = RawStore.from_settings(settings)
    return _ACTIVE


def register(con: duckdb.DuckDBPyConnection) -> None:
    """Prepare `con` for the active Parquet store: keep Parquet footers cached between queries
    (each query over a *_all view otherwise re-reads every day file's footer; files are never
    rewritten under the same name, so the cache cannot go stale) and register an s3 store's
    filesystem."""
    store = _ACTIVE
    if store is None:
        return
    if store.mode == "parquet":
        con.execute("set parquet_metadata_cache = true")
    if not store.is_s3:
        return
    fs = store.filesystem()
    if not con.filesystem_is_registered(
        fs.protocol[0] if isinstance(fs.protocol, tuple) else fs.protocol
    ):
        con.register_filesystem(fs)


# Every connection tasks.db opens is prepared for the active store (nothing when none is).
db.on_connect("rawstore", register)


def ensure(con: duckdb.DuckDBPyConnection) -> None:
    """The manifest and retention tables (also in sql/ddl/warehouse.sql); idempotent."""
    con.execute(
        f"create table if not exists {MANIFEST} (table_name varchar not null, day date not null, "
        "file varchar not null, n_rows bigint not null, n_bytes bigint, "
        "written_at timestamptz not null)"
    )
    con.execute(
        f"create table if not exists {RETENTION} (table_name varchar not null, "
        "expired_before date not null, expired_at timestamptz not null)"
    )


def _exists(con: duckdb.DuckDBPyConnection, relation: str) -> bool:
    schema, name = relation.split(".", 1)
    return bool(
        con.execute(
            "select count(*) from duckdb_tables() where database_name = current_database() "
            "and schema_name = ? and table_name = ?",
            [schema, name],
        ).fetchall()[0][0]
    )


def _files(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    if not _exists(con, MANIFEST):
        return []
    return [
        f
        for (f,) in con.execute(
            f"select file from {MANIFEST} where table_name = ? order by day", [table]
        ).fetchall()
    ]


def refresh_view(con: duckdb.DuckDBPyConnection, table: str) -> None:
    """(Re)create `raw.<vendor>__events_all`: the warehouse rows, plus the manifest's files
    (hive_partitioning off: the `day=` folder must not become a column)."""
    files = _files(con, table)
    select = f"select * from {table}"
    if files:
        listed = ", ".join(sql_literal(f) for f in files)
        select += (
            f"\nunion all by name\nselect * from read_parquet([{listed}], "
            "union_by_name = true, hive_partitioning = false)"
        )
    con.execute(f"create or replace view {history(table)} as\n{select}")
    from tasks.comments import document

    document(con, *history(table).split("."))


def expired_before(con: duckdb.DuckDBPyConnection) -> date | None:
    """The newest retention horizon of any raw event table (days before it are gone), or None."""
    if not _exists(con, RETENTION):
        return None
    return con.sql(f"select max(expired_before) from {RETENTION}").fetchall()[0][0]


def pull_back(
    con: duckdb.DuckDBPyConnection,
    table: str,
    days_sql: str,
    params: list | None = None,
    seen_keys: bool = False,
) -> int:
    """Inside the caller's batch transaction: read the Parquet days of `table` that the batch
    touches (`days_sql`: a SELECT of the batch's event days) back into the warehouse table and
    drop them from the manifest, so the load's merge sees the stored versions. Returns the rows
    read back (0, after one manifest lookup, when the table has no Parquet days — the
    warehouse mode). `seen_keys`: also add their key hashes to the direct path's _seen_keys."""
    if table not in EVENT_TABLES or not _exists(con, MANIFEST):
        return 0
    if not con.execute(
        f"select exists (select 1 from {MANIFEST} where table_name = ?)", [table]
    ).fetchall()[0][0]:
        return 0
    key, _ = EVENT_TABLES[table]
    rows = con.execute(
        f"select day, file, n_rows from {MANIFEST} where table_name = ? "
        f"and day in (select * from ({days_sql}))",
        [table, *(params or [])],
    ).fetchall()
    if not rows:
        return 0
    files = ", ".join(sql_literal(f) for _, f, _ in rows)
    source = f"read_parquet([{files}], union_by_name = true, hive_partitioning = false)"
    con.execute(f"insert into {table} by name select * from {source}")
    if seen_keys:
        con.execute(f"insert into _seen_keys select hash({key}) from {source}")
    con.execute(
        f"delete from {MANIFEST} where table_name = ? and list_contains(?::date[], day)",
        [table, [d for d, _, _ in rows]],
    )
    refresh_view(con, table)
    n = sum(r[2] for r in rows)
    log.info(
        "%s: %d event day(s) (%d rows) read back from Parquet for a merge", table, len(rows), n
    )
    return n


@dataclass
class ArchiveStats:
    seconds: float = 0.0
    days_written: int = 0
    rows_moved: int = 0
    bytes_written: int = 0
    days_expired: int = 0
    rows_expired: int = 0
    files_deleted: int = 0
    tables: dict[str, dict] = field(default_factory=dict)


def archive(
    con: duckdb.DuckDBPyConnection,
    store: RawStore,
    today: date | None = None,
    fail_before_commit: bool = False,
) -> ArchiveStats:
    """Move event days older than the hot window to Parquet, expire days past the retention
    horizon, delete unlisted files (see the module docstring). Idempotent; run after the
    rollups. `fail_before_commit` raises after the files are written (crash tests)."""
    started = time.perf_counter()
    today = today or datetime.now(UTC).date()
    cutoff = today - timedelta(days=store.hot_days)
    horizon = today - timedelta(days=store.retention_days) if store.retention_days else None
    fs = store.filesystem()
    stats = ArchiveStats()
    ensure(con)
    for table, (key, day_sql) in EVENT_TABLES.items():
        if not _exists(con, table):
            continue
        con.execute(
            f"create or replace temp table _arch as select *, {day_sql} as _day from {table} "
            f"where {day_sql} < ?",
            [cutoff],
        )
        try:
            per_day = dict(con.sql("select _day, count(*) from _arch group by all").fetchall())
            listed = dict(
                con.execute(
                    f"select day, file from {MANIFEST} where table_name = ?", [table]
                ).fetchall()
            )
            expired = sorted(d for d in set(per_day) | set(listed) if horizon and d < horizon)
            moved = sorted(d for d in per_day if d not in expired)
            written: list[tuple] = []
            for day in moved:
                rel = f"{table}/day={day.isoformat()}/part-{uuid.uuid4().hex}.parquet"
                target = store.uri(rel)
                if not store.is_s3:
                    Path(target).parent.mkdir(parents=True, exist_ok=True)
                select = f"select * exclude (_day) from _arch where _day = date '{day}'"
                if day in listed:  # already in Parquet (a load that skipped pull_back): merge,
                    # the warehouse row wins for a key in both
                    select += (
                        f"\nunion all by name\nselect * from read_parquet("
                        f"{sql_literal(listed[day])}, hive_partitioning = false) anti join "
                        f"(select {key} from _arch where _day = date '{day}') using ({key})"
                    )
                con.execute(f"copy ({select}) to {sql_literal(target)} (format parquet)")
                n_rows = con.sql(
                    f"select count(*) from read_parquet({sql_literal(target)}, "
                    "hive_partitioning = false)"
                )
                written.append((day, target, n_rows.fetchall()[0][0], fs.size(target)))
            if fail_before_commit and written:
                raise RuntimeError("simulated crash after writing the Parquet files")
            with transaction(con):
                days = [w[0] for w in written] + expired
                con.execute(
                    f"delete from {MANIFEST} where table_name = ? "
                    "and list_contains(?::date[], day)",
                    [table, days],
                )
                for day, target, n_rows, n_bytes in written:
                    con.execute(
                        f"insert into {MANIFEST} values (?, ?, ?, ?, ?, now())",
                        [table, day, target, n_rows, n_bytes],
                    )
                con.execute(f"delete from {table} where {day_sql} < ?", [cutoff])
                if horizon:
                    con.execute(f"delete from {RETENTION} where table_name = ?", [table])
                    con.execute(f"insert into {RETENTION} values (?, ?, now())", [table, horizon])
                refresh_view(con, table)
        finally:
            con.execute("drop table if exists _arch")
        n_moved = sum(per_day[d] for d in moved)
        n_bytes = sum(w[3] for w in written)
        stats.days_written += len(written)
        stats.rows_moved += n_moved
        stats.bytes_written += n_bytes
        stats.days_expired += len(expired)
        stats.rows_expired += sum(per_day.get(d, 0) for d in expired)
        stats.files_deleted += _collect_garbage(con, store, fs, table)
        stats.tables[table] = {"days_written": len(written), "rows_moved": n_moved}
    stats.seconds = round(time.perf_counter() - started, 3)
    log.info("raw events archived: %s", stats)
    return stats


# Compact the warehouse file after a move when at least this share of its blocks, and this
# many bytes, are free: DuckDB reuses freed blocks but never gives them back to the file system,
# so without it the file would keep the size of the history it held before the first move.
COMPACT_MIN_FREE_SHARE = 0.5
COMPACT_MIN_FREE_BYTES = 64 * 1024 * 1024


def compact(
    db_path: Path,
    memory_limit: str | None = None,
    min_free_share: float = COMPACT_MIN_FREE_SHARE,
    min_free_bytes: int = COMPACT_MIN_FREE_BYTES,
) -> tuple[int, int] | None:
    """Rewrite the warehouse into a new file (ATTACH + COPY FROM DATABASE: tables, constraints,
    views, macros, comments) and swap it in with os.replace, when it is mostly free blocks.
    Returns (bytes before, bytes after), or None when not worth it. The caller holds the
    writer lock and no other connection to the file; a crash before the swap leaves the
    original untouched (the half-written copy is deleted next time)."""
    db_path = Path(db_path)
    tmp = db_path.with_name(db_path.name + ".compact")
    for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
        leftover.unlink(missing_ok=True)
    before = db_path.stat().st_size
    con = db.connect(db_path, memory_limit=memory_limit)
    try:
        con.execute("checkpoint")
        row = con.sql("pragma database_size").fetchall()[0]
        block_size, total, free = int(row[2]), int(row[3]), int(row[5])
        if not total or free < total * min_free_share or free * block_size < min_free_bytes:
            return None
        catalog = con.sql("select current_database()").fetchall()[0][0]
        con.execute(f"attach {sql_literal(tmp)} as fl_compact")
        try:
            con.execute(f'copy from database "{catalog}" to fl_compact')
        finally:
            con.execute("detach fl_compact")
    finally:
        con.close()
    if db_path.with_name(db_path.name + ".wal").exists() or _open_in_process(db_path):
        # not checkpointed, or another connection of this process still holds the database
        # (DuckDB would hand later connections that instance, i.e. the replaced file)
        tmp.unlink(missing_ok=True)
        return None
    os.replace(tmp, db_path)
    after = db_path.stat().st_size
    log.info("warehouse compacted: %.1f MB -> %.1f MB", before / 1e6, after / 1e6)
    return before, after


def _open_in_process(db_path: Path) -> bool:
    """Whether this process still has a DuckDB connection to `db_path`: opening it with a
    configuration no other connection uses fails while an instance is cached for the file."""
    try:
        probe = duckdb.connect(str(db_path), read_only=True, config={"memory_limit": "77MB"})
    except duckdb.ConnectionException:
        return True
    probe.close()
    return False


def _collect_garbage(con: duckdb.DuckDBPyConnection, store: RawStore, fs, table: str) -> int:
    """Delete the table's Parquet files that the manifest does not list."""
    listed = {_norm(f) for f in _files(con, table)}
    found = fs.glob(f"{store.uri(table)}/day=*/*.parquet")
    stale = [f for f in found if _norm(f) not in listed]
    for f in stale:
        fs.rm(f)
    for d in fs.glob(f"{store.uri(table)}/day=*"):  # empty day folders (local)
        if not store.is_s3 and not any(Path(d).iterdir()):
            Path(d).rmdir()
    return len(stale)


def _norm(path: str) -> str:
    return path.removeprefix("s3://").removeprefix("file://")


def usage(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    """(table, days, rows, bytes) in Parquet per raw event table (doctor / reports)."""
    if not _exists(con, MANIFEST):
        return []
    return con.sql(
        f"select table_name, count(*), sum(n_rows), sum(n_bytes) from {MANIFEST} "
        "group by all order by all"
    ).fetchall()
