"""DuckDB access: connections with lock retry, SQL files from sql/, the analyst snapshot."""

from __future__ import annotations

import json
import logging
import os
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb

from tasks.settings import SQL_DIR

log = logging.getLogger(__name__)


class WarehouseLockedError(RuntimeError):
    """Another process holds the DuckDB file."""


# How long a writer waits for another process's DuckDB lock on the file (an analyst's open
# session, say) before it gives up with a clear message; a run sets it from its settings
# (lock_wait_seconds) with `set_lock_wait`.
LOCK_WAIT_SECONDS = 600.0
_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (.+?) \(PID (\d+)\)")


# Called with every connection `connect` opens, in the order added: a module that must prepare
# connections (tasks.rawstore registers the run's raw event store) adds itself, so db imports
# none of them.
_ON_CONNECT: dict[str, Callable[[duckdb.DuckDBPyConnection], None]] = {}


def on_connect(name: str, prepare: Callable[[duckdb.DuckDBPyConnection], None]) -> None:
    """Call `prepare(con)` on every connection `connect` opens from now on (`name` replaces an
    earlier hook of that name)."""
    _ON_CONNECT[name] = prepare


def set_lock_wait(seconds: float) -> None:
    global LOCK_WAIT_SECONDS
    LOCK_WAIT_SECONDS = float(seconds)


def connect(
    path: Path,
    *,
    read_only: bool = False,
    memory_limit: str | None = None,
    lock_timeout_s: float | None = None,
) -> duckdb.DuckDBPyConnection:
    """Open the warehouse, retrying with jitter while another process holds the lock.

    DuckDB fails at once on a conflicting lock instead of waiting (STACK_NOTES), so a short
    analyst query would otherwise make the nightly writer crash. The wait is bounded
    (`lock_timeout_s`, default LOCK_WAIT_SECONDS), announced once with the holding process, and
    ends in WarehouseLockedError naming it.
    """
    path = Path(path)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    config = {"memory_limit": memory_limit} if memory_limit else {}
    wait = LOCK_WAIT_SECONDS if lock_timeout_s is None else lock_timeout_s
    started = time.monotonic()
    delay = 0.2
    next_report = started
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only, config=config)
            break
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise
            who = _lock_holder(str(exc))
            now = time.monotonic()
            if now - started >= wait:
                raise WarehouseLockedError(
                    f"{path} is locked by {who} and stayed locked for {now - started:.0f} s "
                    "(an open analyst session or another program?). Close it — analysts can "
                    "query the snapshot (feedback-loop query) instead — and run again."
                ) from None
            if now >= next_report:
                log.warning(
                    "warehouse %s is locked by %s; waiting up to %.0f s more",
                    path,
                    who,
                    wait - (now - started),
                )
                next_report = now + 30.0
            time.sleep(delay + random.uniform(0, delay / 2))
            delay = min(delay * 2, 3.0)
    for prepare in _ON_CONNECT.values():
        prepare(con)
    return con


def _lock_holder(message: str) -> str:
    """`process (PID n)` from DuckDB's lock error, else "another process"."""
    m = _LOCK_HOLDER.search(message)
    return f"{Path(m.group(1)).name} (PID {m.group(2)})" if m else "another process"


@contextmanager
def warehouse(
    path: Path, *, read_only: bool = False, memory_limit: str | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    con = connect(path, read_only=read_only, memory_limit=memory_limit)
    try:
        yield con
    finally:
        con.close()


def sql_text(relative: str) -> str:
    return (SQL_DIR / relative).read_text(encoding="utf-8")


def run_sql_file(con: duckdb.DuckDBPyConnection, relative: str) -> None:
    con.execute(sql_text(relative))


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Schemas, ops/quality tables and every vendor's raw table (sql/ddl/*.sql); idempotent."""
    run_sql_file(con, "ddl/warehouse.sql")
    for path in sorted((SQL_DIR / "ddl").glob("raw_*.sql")):
        con.execute(path.read_text(encoding="utf-8"))
    run_sql_file(con, "functions/macros.sql")
    from tasks.comments import document_schema

    for schema in ("raw", "ops", "quality"):
        document_schema(con, schema)


def build_relation(con: duckdb.DuckDBPyConnection, layer: str, name: str) -> int:
    """(Re)build `<layer>.<name>` from `sql/<layer>/<name>.sql` and its comments
    (sql/docs/<layer>.yml); returns its row count.

    The file holds a bare SELECT (pasteable into the duckdb CLI once its variables are set).
    """
    from tasks.comments import document

    select = sql_text(f"{layer}/{name}.sql").strip().rstrip(";")
    con.execute(f"create or replace table {layer}.{name} as\n{select}")
    document(con, layer, name)
    return con.sql(f"select count(*) from {layer}.{name}").fetchall()[0][0]


# The analyst snapshot is written in DuckDB's v1.1.0 storage format: the warehouse's own format
# (DuckDB 2.0, storage version 69) cannot be read by the DuckDB analysts have — the newest
# `duckdb-cli` on the package index (1.5.x) reads versions 64-68 only, 1.1.x the same. v1.1.0 is
# read by every DuckDB from 1.1 on (tests/test_nightly_e2e.py opens it with 1.1.3 and the 1.x
# CLI); the live warehouse keeps the newest format.
SNAPSHOT_STORAGE_VERSION = "v1.1.0"
SNAPSHOT_MODES = ("parquet", "full")
# History-sized relations: the raw event tables (`raw.<vendor>__events`) and the feature x user x
# day rollup. In the `parquet` mode the snapshot does not copy them: they are exported as Parquet,
# one folder per day (for the event tables the UTC day their rows were loaded, `_loaded_at`; for
# the rollup its activity_date), and the snapshot holds views of the same name over those files.
# A night's load lands in one new day; older days change only when rows leave them (a newer
# version of an event replaces the old row, which is loaded again today), so a publish writes the
# new rows and rewrites only the days that lost rows (see _export_days). Everything else (marts,
# quality, ops, the small rollups, ticket/bug/account raw and staging tables) is small and copied
# as tables; the staging views (stg_usage_events and the vendor views) are views in the snapshot
# as in the warehouse, now reading the Parquet views.
PARQUET_SCHEMA = "raw"
PARQUET_SUFFIX = "__events"
# History-sized rollups kept incrementally per day (tasks/transform.py build_usage_rollups):
# exported as Parquet by that day column, a day rewritten when its row count or row digest
# changed (a rollup day is recomputed whole, so there is no append).
PARQUET_DAY_TABLES = {"intermediate.int_feature_user_days": "activity_date"}
# Not in the analyst snapshot: bookkeeping of the run itself that grows with every row of
# history (the validation's per-row volume index; quality.volume_daily has its daily counts).
SNAPSHOT_SKIP = frozenset({"quality.volume_rows"})
_MANIFEST = "_manifest.json"
MANIFEST_VERSION = 2
# A day with this many part files is written again as one (several runs on one load day).
MAX_DAY_PARTS = 8
_DAY_US = 86_400_000_000


@dataclass
class SnapshotStats:
    """What one publish did: seconds, tables copied, Parquet day files written / kept."""

    seconds: float = 0.0
    mode: str = "parquet"
    tables_copied: int = 0
    parquet_tables: list[str] = field(default_factory=list)
    days_written: int = 0
    parts_appended: int = 0
    days_kept: int = 0
    days_dropped: int = 0
    rows_written: int = 0
    bytes_written: int = 0
    files_deleted: int = 0


def parquet_dir(snapshot_path: Path) -> Path:
    """The folder next to the snapshot that holds its Parquet files (`<stem>_parquet`)."""
    return snapshot_path.with_name(snapshot_path.stem + "_parquet")


def publish_snapshot(
    con: duckdb.DuckDBPyConnection,
    db_path: Path,
    snapshot_path: Path,
    mode: str = "parquet",
) -> SnapshotStats:
    """Publish the read-only analyst copy (storage SNAPSHOT_STORAGE_VERSION) and swap it in
    atomically (os.replace); readers of the previous copy are undisturbed.

    `parquet` (default): every table is copied except the raw event tables, which are kept as
    Parquet day files next to the snapshot (`parquet_dir`), rewritten only for the days that
    changed since the last publish, and read by views of the same name. Files the previous
    snapshot still reads are kept until the publish after (so a session open on it keeps working
    for a night); older ones are deleted. `full`: one standalone file, everything copied
    (`COPY FROM DATABASE`), cost growing with the history.
    """
    if mode not in SNAPSHOT_MODES:
        raise ValueError(f"snapshot mode must be one of {SNAPSHOT_MODES}, not {mode!r}")
    started = time.perf_counter()
    stats = SnapshotStats(mode=mode)
    snapshot_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = snapshot_path.with_name(snapshot_path.name + ".tmp")
    for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
        leftover.unlink(missing_ok=True)
    catalog = con.sql("select current_database()").fetchall()[0][0]
    if mode == "full":
        con.execute(
            f"attach {sql_literal(tmp)} as fl_snapshot "
            f"(storage_version '{SNAPSHOT_STORAGE_VERSION}')"
        )
        try:
            con.execute(f'copy from database "{catalog}" to fl_snapshot')
        finally:
            con.execute("detach fl_snapshot")
        os.replace(tmp, snapshot_path)
        stats.tables_copied = len(_tables(con, catalog))
        stats.seconds = time.perf_counter() - started
        return stats

    folder = parquet_dir(snapshot_path)
    folder.mkdir(parents=True, exist_ok=True)
    old = _read_manifest(folder)
    gen = f"{time.time_ns():x}"
    tables = _tables(con, catalog)
    exported = {t for t in tables if _is_parquet_table(con, catalog, t)}
    new_tables = {
        table: _export_days(con, catalog, table, old["tables"].get(table), folder, gen, stats)
        for table in sorted(exported)
    }
    stats.parquet_tables = sorted(exported)

    con.execute(
        f"attach {sql_literal(tmp)} as fl_snapshot (storage_version '{SNAPSHOT_STORAGE_VERSION}')"
    )
    try:
        # Schemas, tables (empty), views, macros and comments; then the rows of the copied
        # tables, and the event tables replaced by views over their Parquet files.
        con.execute(f'copy from database "{catalog}" to fl_snapshot (schema)')
        for table in SNAPSHOT_SKIP & set(tables):
            con.execute(f"drop table fl_snapshot.{_ident(table)}")
        for table in tables:
            if table in exported or table in SNAPSHOT_SKIP:
                continue
            con.execute(
                f"insert into fl_snapshot.{_ident(table)} select * from {_qual(catalog, table)}"
            )
            stats.tables_copied += 1
        for table in sorted(exported):
            _create_parquet_view(con, catalog, table, new_tables[table], folder)
    finally:
        con.execute("detach fl_snapshot")

    current = _manifest_files(new_tables)
    _write_manifest(folder, {"version": MANIFEST_VERSION, "tables": new_tables})
    os.replace(tmp, snapshot_path)
    # The files of the snapshot just replaced stay until the next publish (open sessions on it).
    stats.files_deleted = _collect_garbage(folder, current | old["current_files"])
    stats.seconds = time.perf_counter() - started
    return stats


def _tables(con: duckdb.DuckDBPyConnection, catalog: str) -> list[str]:
    """`schema.table` of every base table in the warehouse catalog."""
    rows = con.execute(
        "select schema_name, table_name from duckdb_tables() "
        "where database_name = ? and not temporary order by all",
        [catalog],
    ).fetchall()
    return [f"{s}.{t}" for s, t in rows]


def _is_parquet_table(con: duckdb.DuckDBPyConnection, catalog: str, table: str) -> bool:
    """A raw event table with rows and a `_loaded_at` column, or a day-partitioned rollup
    (PARQUET_DAY_TABLES) with rows and no NULL day (an empty one is copied: no files to read,
    nothing to save)."""
    schema, name = table.split(".", 1)
    columns = dict(_columns(con, catalog, table))
    if table in PARQUET_DAY_TABLES:
        day = _quote(PARQUET_DAY_TABLES[table])
        if PARQUET_DAY_TABLES[table] not in columns:
            return False
        n, nulls = con.sql(
            f"select count(*), count(*) filter (where {day} is null) from {_qual(catalog, table)}"
        ).fetchall()[0]
        return n > 0 and nulls == 0
    if schema != PARQUET_SCHEMA or not name.endswith(PARQUET_SUFFIX):
        return False
    if "_loaded_at" not in columns:
        return False
    return bool(con.sql(f"select exists (select 1 from {_qual(catalog, table)})").fetchall()[0][0])


def _columns(con: duckdb.DuckDBPyConnection, catalog: str, table: str) -> list[tuple[str, str]]:
    schema, name = table.split(".", 1)
    return [
        (c, t)
        for c, t in con.execute(
            "select column_name, data_type from duckdb_columns() where database_name = ? "
            "and schema_name = ? and table_name = ? order by column_index",
            [catalog, schema, name],
        ).fetchall()
    ]


def _export_days(
    con: duckdb.DuckDBPyConnection,
    catalog: str,
    table: str,
    before: dict | None,
    folder: Path,
    gen: str,
    stats: SnapshotStats,
) -> dict:
    """Write the Parquet files of `table` that changed since `before` (its manifest entry);
    returns the table's new manifest entry (columns, and per load day its rows, newest
    _loaded_at and part files).

    Rows are only ever added with a `_loaded_at` later than every row already there (the load
    stamps `now()`; runs of a warehouse take turns), so per day: the same row count and newest
    `_loaded_at` as the last publish → kept; a later newest with every earlier row still there
    (the count up to the old newest is unchanged) → the new rows are written as one more part
    file of that day, the old parts untouched (a second run on the same day costs what it
    loaded); anything else (a row replaced or deleted, a part file gone, too many parts, the
    table's columns changed) → the day is written again as one file. One scan of `_loaded_at`
    finds the changed days; no row is read from an unchanged day.

    A rollup of PARQUET_DAY_TABLES is split by its own day column instead, and a day is written
    again (one file) when its row count or the sum of its rows' hashes changed: the rollup
    recomputes a changed day whole, and one pass over its few columns costs far less than
    copying them.
    """
    columns = _columns(con, catalog, table)
    day_column = PARQUET_DAY_TABLES.get(table)
    if day_column:  # a rollup: its day column, and a digest of every row of the day
        row = ", ".join(_quote(c) for c, _ in columns)
        days_now = {
            str(day): (int(n), str(digest))
            for day, n, digest in con.sql(
                f"select {_quote(day_column)}::varchar, count(*), sum(hash({row})) "
                f"from {_qual(catalog, table)} group by all"
            ).fetchall()
        }
    else:
        days_now = {
            str(day): (int(n), int(newest))
            for day, n, newest in con.sql(
                f"select strftime(make_timestamp(epoch_us(_loaded_at) // {_DAY_US} * {_DAY_US}), "
                f"'%Y-%m-%d') as day, count(*), epoch_us(max(_loaded_at)) "
                f"from {_qual(catalog, table)} group by all"
            ).fetchall()
        }
    same_shape = before is not None and [list(c) for c in columns] == before["columns"]
    old_days = before["days"] if same_shape else {}
    entry = {"columns": [list(c) for c in columns], "days": {}}
    token_key = "digest" if day_column else "max_loaded_at_us"
    cols = ", ".join(_quote(c) for c, _ in columns)

    def write_part(day: str, after_us: int | None) -> dict:
        # a plain file read by a range on _loaded_at (zone maps skip other days): cheaper than
        # one partitioned COPY, and the name is new, so no reader sees it half done
        start = _day_number(day) * 86_400
        rel = f"{table}/day={day}/part-{gen}.parquet"
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if day_column:
            where = f"{_quote(day_column)} = date '{day}'"
        else:
            where = (
                f"_loaded_at >= to_timestamp({start}) "
                f"and _loaded_at < to_timestamp({start + 86_400})"
            )
        if after_us is not None:
            where += f" and _loaded_at > {_ts_literal(after_us)}"
        n = con.execute(
            f"copy (select {cols} from {_qual(catalog, table)} where {where}) "
            f"to {sql_literal(target)} (format parquet)"
        ).fetchall()[0][0]
        stats.rows_written += n
        stats.bytes_written += target.stat().st_size
        return {"file": rel, "rows": n}

    for day, (n, newest) in days_now.items():
        old = old_days.get(day)
        intact = old is not None and all((folder / part["file"]).exists() for part in old["parts"])
        if intact and old["rows"] == n and old[token_key] == newest:
            entry["days"][day] = old
            stats.days_kept += 1
            continue
        parts: list[dict] = []
        appendable = not day_column and intact and len(old["parts"]) < MAX_DAY_PARTS
        if appendable and newest > old[token_key]:
            start = _day_number(day) * 86_400
            still = con.execute(
                f"select count(*) from {_qual(catalog, table)} "
                f"where _loaded_at >= to_timestamp({start}) "
                f"and _loaded_at <= {_ts_literal(old['max_loaded_at_us'])}"
            ).fetchall()[0][0]
            if still == old["rows"]:
                parts = [*old["parts"], write_part(day, old["max_loaded_at_us"])]
                stats.parts_appended += 1
        if not parts:
            parts = [write_part(day, None)]
            stats.days_written += 1
        entry["days"][day] = {"rows": n, token_key: newest, "parts": parts}
    stats.days_dropped += len(set(old_days) - set(days_now))
    entry["days"] = dict(sorted(entry["days"].items()))
    return entry


def _create_parquet_view(
    con: duckdb.DuckDBPyConnection, catalog: str, table: str, entry: dict, folder: Path
) -> None:
    """Replace the (empty) copied table by a view of the same name, columns and types over its
    Parquet files, with the warehouse's comments (the relation's says where the rows are)."""
    files = ", ".join(
        sql_literal((folder / part["file"]).resolve())
        for d in entry["days"].values()
        for part in d["parts"]
    )
    cols = ", ".join(f"{_quote(c)}::{t} as {_quote(c)}" for c, t in entry["columns"])
    schema, name = table.split(".", 1)
    comment, col_comments = _comments_of(con, catalog, schema, name)
    con.execute(f"drop table fl_snapshot.{_ident(table)}")
    con.execute(
        f"create view fl_snapshot.{_ident(table)} as select {cols} "
        f"from read_parquet([{files}], hive_partitioning = false)"
    )
    if table in PARQUET_DAY_TABLES:
        note = (
            f"In the analyst snapshot: a view over Parquet files ({folder.name}/{table}/"
            f"day=YYYY-MM-DD/), one per {PARQUET_DAY_TABLES[table]}; a publish rewrites only "
            "the days whose rows changed."
        )
    else:
        note = (
            f"In the analyst snapshot: a view over Parquet files ({folder.name}/{table}/"
            "day=YYYY-MM-DD/), per UTC day the rows were loaded (_loaded_at); a publish adds "
            "the new rows of a day as one more file and rewrites only days that lost rows."
        )
    con.execute(
        f"comment on view fl_snapshot.{_ident(table)} is "
        f"{sql_literal(((comment or '') + ' ' + note).strip())}"
    )
    for col, text in col_comments:
        if text:
            con.execute(
                f"comment on column fl_snapshot.{_ident(table)}.{_quote(col)} is "
                f"{sql_literal(text)}"
            )


def _comments_of(
    con: duckdb.DuckDBPyConnection, catalog: str, schema: str, name: str
) -> tuple[str | None, list[tuple[str, str | None]]]:
    rel = con.execute(
        "select comment from duckdb_tables() where database_name = ? and schema_name = ? "
        "and table_name = ?",
        [catalog, schema, name],
    ).fetchall()
    cols = con.execute(
        "select column_name, comment from duckdb_columns() where database_name = ? "
        "and schema_name = ? and table_name = ? order by column_index",
        [catalog, schema, name],
    ).fetchall()
    return (rel[0][0] if rel else None), cols


def _read_manifest(folder: Path) -> dict:
    """The last publish's manifest: tables and the files its snapshot reads (empty if none or
    unreadable: then every day is written again)."""
    path = folder / _MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        tables = data["tables"]
        if data.get("version") == 1:  # one file per day
            for t in tables.values():
                for d in t["days"].values():
                    d["parts"] = [{"file": d.pop("file"), "rows": d["rows"]}]
        elif data.get("version") != MANIFEST_VERSION:
            tables = {}
        current = _manifest_files(tables)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {"tables": {}, "current_files": set()}
    return {"tables": tables, "current_files": current}


def _manifest_files(tables: dict) -> set[str]:
    return {p["file"] for t in tables.values() for d in t["days"].values() for p in d["parts"]}


def _write_manifest(folder: Path, manifest: dict) -> None:
    tmp = folder / (_MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, folder / _MANIFEST)


def _collect_garbage(folder: Path, keep: set[str]) -> int:
    """Delete Parquet files neither snapshot reads (the new one, the one it replaced) and
    leftovers of interrupted publishes; returns files deleted."""
    n = 0
    for path in folder.glob("*/day=*/*.parquet"):
        if path.relative_to(folder).as_posix() not in keep:
            path.unlink(missing_ok=True)
            n += 1
    for d in sorted(folder.glob("*/day=*"), reverse=True) + sorted(folder.glob("*")):
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()
    return n


def _ts_literal(epoch_us: int) -> str:
    """A TIMESTAMPTZ literal for microseconds since the epoch, exact (no float)."""
    at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=epoch_us)
    return f"'{at.isoformat()}'::timestamptz"


def _day_number(day: str) -> int:
    return (date.fromisoformat(day) - date(1970, 1, 1)).days


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _ident(table: str) -> str:
    schema, name = table.split(".", 1)
    return f"{_quote(schema)}.{_quote(name)}"


def _qual(catalog: str, table: str) -> str:
    return f"{_quote(catalog)}.{_ident(table)}"


def _sql_str(p: Path | str) -> str:
    return str(p).replace("'", "''")


def sql_literal(value: str | Path) -> str:
    """Quote a value for the few places DuckDB takes no parameters (ATTACH, table functions)."""
    return "'" + _sql_str(value) + "'"


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """BEGIN, then COMMIT when the block ends; ROLLBACK and re-raise when it (or the commit)
    raises anything, a KeyboardInterrupt included."""
    con.execute("begin transaction")
    try:
        yield con
        con.execute("commit")
    except BaseException:
        con.execute("rollback")
        raise


def sql_list(items: Iterable[str | Path]) -> str:
    """A DuckDB list literal of quoted strings: ['a', 'b'] (e.g. the files read_json reads)."""
    return "[" + ", ".join(sql_literal(x) for x in items) + "]"
