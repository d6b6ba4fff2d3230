"""Rows a batch sets aside in raw (markers, losers among repeats, unchanged re-deliveries):
tombstoned under '<batch>!…' inside the batch's transaction and noted in ops.load_purges, then
deleted right after the commit (_purge_after_commit). finish_purges, run first by every load,
finishes a purge that a process dying between the commit and the purge left."""

from __future__ import annotations

import logging
from typing import Any

import duckdb

from tasks.db import transaction

# One logger for the whole loader (tasks.load), whichever of its modules logs.
log = logging.getLogger("tasks.load")


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
