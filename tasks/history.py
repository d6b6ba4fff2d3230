"""Scoring past days: the backdated-run rule of write-back, backfill day ranges and per-day
results, and the kind of a run in ops.runs.

The marts keep one set of rows per as-of day, so any past day can be scored again. Writing such a
day back to a tracker is another matter: an older day's suggestions are stale, and a problem
absent from them is not a recovery (it may simply not have started yet). So a run whose as-of day
is older than the newest day already scored writes nothing unless asked to, and even then never
decides that an issue's state changed (recovered, closed, reopened): that is the newest day's job.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import duckdb

from tasks import db
from tasks.settings import Settings

# A backfill is one flow run; longer ranges are split (the flow's timeout is 3 h and a day
# costs about 2 s on the demo data, GX's mart checks included).
MAX_BACKFILL_DAYS = 400
# Write-back statuses that are a clean run: nothing went wrong, whatever was written.
CLEAN_WRITEBACK_STATUSES = ("ok", "dry_run", "backdated")
RUN_KINDS = ("nightly", "manual", "backfill")


@dataclass(frozen=True)
class Backdating:
    """Where a run's as-of day stands against the newest day already scored in the marts."""

    as_of: date
    newest_scored: date | None  # None: nothing scored yet

    @property
    def is_backdated(self) -> bool:
        return self.newest_scored is not None and self.as_of < self.newest_scored

    @property
    def why(self) -> str:
        return f"as_of {self.as_of} < newest scored day {self.newest_scored}"

    @property
    def skip_reason(self) -> str:
        """The reason of every plan item of a backdated run that may not write."""
        return (
            f"backdated run ({self.why}): nothing written; pass allow_backdated_writeback to write"
        )

    @property
    def held_reason(self) -> str:
        """Why a backdated run that may write still leaves issue states alone (no recovery
        comment or close, no reopen)."""
        return f"this run is backdated ({self.why}); issue states change on the newest day only"

    def as_dict(self) -> dict[str, Any]:
        return {
            "as_of": self.as_of.isoformat(),
            "newest_scored_day": self.newest_scored.isoformat() if self.newest_scored else None,
            "is_backdated": self.is_backdated,
        }


def newest_scored_day(con: duckdb.DuckDBPyConnection) -> date | None:
    """The newest as-of day in marts.feature_health (None before the first scoring).

    Read after this run scored its own day, it still tells whether that day is older than the
    newest one scored before: adding the run's own day cannot make it older than the maximum."""
    exists = con.execute(
        "select count(*) from information_schema.tables "
        "where table_schema = 'marts' and table_name = 'feature_health'"
    ).fetchall()[0][0]
    if not exists:
        return None
    return con.sql("select max(as_of_date) from marts.feature_health").fetchall()[0][0]


def backdating(con: duckdb.DuckDBPyConnection, as_of: date | str) -> Backdating:
    """The backdated-run decision for a run scoring `as_of` (one place for the rule)."""
    day = date.fromisoformat(as_of) if isinstance(as_of, str) else as_of
    return Backdating(as_of=day, newest_scored=newest_scored_day(con))


def day_range(start: date, end: date, max_days: int = MAX_BACKFILL_DAYS) -> list[date]:
    """Every day from `start` to `end`, both included; ValueError (one line) when the range is
    empty, longer than `max_days` or ends after today (UTC)."""
    if end < start:
        raise ValueError(f"backfill range: end {end} is before start {start}")
    today = datetime.now(UTC).date()
    if end > today:
        # A future day would become the newest scored day and hold every later nightly run
        # as backdated.
        raise ValueError(f"backfill range: end {end} is in the future; end today at the latest")
    n = (end - start).days + 1
    if n > max_days:
        raise ValueError(
            f"backfill range: {start} to {end} is {n} days; at most {max_days} per run "
            "(split the range)"
        )
    return [start + timedelta(days=i) for i in range(n)]


def day_result(con: duckdb.DuckDBPyConnection, as_of: date) -> dict[str, Any]:
    """What the marts hold for one scored day: features scored, those with any usage, ticket or
    bug evidence in the window, and suggestions. A day before the data (or long after it) still
    has a row per feature, with nothing behind it: `note` says so."""
    n_features, n_with_data, n_with_usage, n_suggestions = con.execute(
        """
        with day as (select * from marts.feature_health where as_of_date = $1)
        select
            count(*),
            count(*) filter (
                where coalesce(n_users, 0) > 0 or coalesce(n_tickets_window, 0) > 0
                or coalesce(n_open_bugs, 0) > 0
            ),
            count(*) filter (where coalesce(n_users, 0) > 0),
            (select count(*) from marts.backlog_suggestions where as_of_date = $1)
        from day
        """,
        [as_of],
    ).fetchall()[0]
    if not n_with_data:
        note = "no usage, ticket or bug data in the window"
    elif not n_with_usage:
        note = "no usage data in the window"
    else:
        note = ""
    return {
        "as_of": as_of.isoformat(),
        "features": n_features,
        "features_with_data": n_with_data,
        "suggestions": n_suggestions,
        "note": note,
    }


def record_run_kind(settings: Settings, run_id: str, kind: str) -> None:
    """Set ops.runs.kind of a run started by `start_run` (nightly | manual | backfill), so an
    analyst can tell a backfill's row (as_of_date = its last day) from a night's."""
    if kind not in RUN_KINDS:
        raise ValueError(f"run kind {kind!r}: use one of {', '.join(RUN_KINDS)}")
    with db.warehouse(settings.duckdb_path, memory_limit=settings.duckdb_memory_limit) as con:
        con.execute("update ops.runs set kind = ? where run_id = ?", [kind, run_id])


def nightly_run_kind(tags: list[str] | tuple[str, ...]) -> str:
    """A run of the nightly flow: `nightly` when its deployment is the scheduled one (its flow
    run carries the `scheduled` tag, prefect.yaml), else `manual` (the manual deployment, the
    CLI, a test)."""
    return "nightly" if "scheduled" in tags else "manual"
