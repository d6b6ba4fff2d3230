"""DuckDB access: connections with lock retry, SQL files from sql/, the analyst snapshot."""

from __future__ import annotations

import logging
import os
import random
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
            return duckdb.connect(str(path), read_only=read_only, config=config)
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
# read by every DuckDB from 1.1 on (tests/test_snapshot_compat.py opens it with 1.1.3 and the
# 1.x CLI); the live warehouse keeps the newest format.
SNAPSHOT_STORAGE_VERSION = "v1.1.0"


def publish_snapshot(con: duckdb.DuckDBPyConnection, db_path: Path, snapshot_path: Path) -> float:
    """Copy the warehouse into a fresh file (storage SNAPSHOT_STORAGE_VERSION) and atomically
    swap it in for analysts.

    Readers of the previous copy are undisturbed; the nightly writer never waits for them.
    Returns seconds taken.
    """
    started = time.perf_counter()
    snapshot_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = snapshot_path.with_name(snapshot_path.name + ".tmp")
    for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
        leftover.unlink(missing_ok=True)
    catalog = con.sql("select current_database()").fetchall()[0][0]
    con.execute(
        f"attach '{_sql_str(tmp)}' as fl_snapshot (storage_version '{SNAPSHOT_STORAGE_VERSION}')"
    )
    try:
        con.execute(f'copy from database "{catalog}" to fl_snapshot')
    finally:
        con.execute("detach fl_snapshot")
    os.replace(tmp, snapshot_path)
    return time.perf_counter() - started


def _sql_str(p: Path | str) -> str:
    return str(p).replace("'", "''")


def sql_literal(value: str | Path) -> str:
    """Quote a value for the few places DuckDB takes no parameters (ATTACH, table functions)."""
    return "'" + _sql_str(value) + "'"
