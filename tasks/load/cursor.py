"""The stream's cursor in ops.sync_state, written in the same transaction as the data it
covers: a connector's resumable state (read back by read_state), or a file source's newest
record cursor (_advance_cursor per batch, _refresh_file_cursor once per load)."""

from __future__ import annotations

import json
from typing import Any

import duckdb

from tasks.contracts import SourceSpec


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
