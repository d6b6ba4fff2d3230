"""Run the SQL models in sql/: staging, then (after validation) intermediate and marts."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import date

import duckdb

from tasks import rawstore
from tasks.comments import document
from tasks.db import build_relation, sql_text, transaction
from tasks.settings import SQL_DIR, DetectionSettings

log = logging.getLogger(__name__)

FORMULA_VERSION = "health-v2"

# Canonical staging relations. Vendor models (sql/staging/<vendor>/) are views; the union of
# the vendors ("__unvalidated", what the GX suite checks) is a view for the high-volume events
# (no second copy of every event) and a table for tickets and bugs (materialised while the hash
# salt is set); the canonical relation is a view leaving out quarantined rows.
STAGING_MODELS = (
    "stg_usage_events",
    "stg_support_tickets",
    "stg_bug_issues",
    "stg_accounts",
    "stg_error_signals",
)
MATERIALISED_UNIONS = ("stg_support_tickets", "stg_bug_issues")
# Rebuilt in full each run (they describe the current state of the data).
# int_event_feature_map and int_feature_user_days (the big usage rollups) are maintained
# incrementally by build_usage_rollups before these.
CURRENT_MODELS = (
    ("intermediate", "int_tickets_mapped"),
    ("intermediate", "int_bugs_mapped"),
    ("intermediate", "int_errors_mapped"),
    ("marts", "feature_daily"),
    ("intermediate", "int_feature_baseline"),
    ("intermediate", "int_feature_evidence"),
    ("intermediate", "int_feature_problems"),
    ("intermediate", "int_feature_metrics"),
    ("marts", "catalog_coverage"),
)
# Kept per as-of date: a rerun for the same date replaces that date's rows, other dates stay.
HISTORY_MODELS = (
    ("marts", "feature_errors"),
    ("marts", "feature_problems"),
    ("marts", "feature_health_components"),
    ("marts", "feature_health"),
    ("marts", "backlog_suggestions"),
)
# Views over the newest as-of day (sql/marts/<name>.sql), for people querying by hand.
LATEST_VIEWS = ("latest_feature_health", "latest_suggestions")


@dataclass(frozen=True)
class ScoreParams:
    as_of: date
    window_days: int
    weights: dict[str, float]
    run_id: str
    detection: DetectionSettings = field(default_factory=DetectionSettings)
    reach: str = "arr_weighted"
    full_refresh: bool = False


def set_score_variables(con: duckdb.DuckDBPyConnection, p: ScoreParams) -> None:
    con.execute("set variable as_of = ?::date", [p.as_of.isoformat()])
    con.execute("set variable window_days = ?::integer", [p.window_days])
    con.execute("set variable run_id = ?", [p.run_id])
    con.execute("set variable formula_version = ?", [FORMULA_VERSION])
    for name, weight in p.weights.items():
        con.execute(f"set variable w_{name} = ?::double", [weight])
    for name, value in p.detection.model_dump().items():
        cast = "integer" if isinstance(value, int) else "double"
        con.execute(f"set variable {name} = ?::{cast}", [value])
    con.execute("set variable reach_mode = ?", [p.reach])


# Not counted by build_staging: a view over the whole raw event history, so counting it reads
# every event each night (2-3 s at 10M events); the validation counts the rows it judges
# (quality.validation_batches.rows_in, quality.table_status).
UNCOUNTED_UNIONS = ("stg_usage_events",)


def build_staging(con: duckdb.DuckDBPyConnection, hash_salt: str) -> dict[str, int]:
    """(Re)create the staging relations; returns rows per canonical table before validation
    (UNCOUNTED_UNIONS left out).

    The salt only lives in this session's variables while the salted unions are materialised.
    """
    from tasks.sources import VENDORS

    con.execute("set variable hash_salt = ?", [hash_salt])
    try:
        for v in VENDORS:
            path = SQL_DIR / "staging" / v.source / f"{v.staging_model}.sql"
            if path.exists():
                select = path.read_text(encoding="utf-8").strip().rstrip(";")
                con.execute(f"create or replace view staging.{v.staging_model} as\n{select}")
                document(con, "staging", v.staging_model)
        counts = {}
        for name in STAGING_MODELS:
            union = sql_text(f"staging/{name}__unvalidated.sql").strip().rstrip(";")
            kind = "table" if name in MATERIALISED_UNIONS else "view"
            _drop_relation(con, "staging", f"{name}__unvalidated")
            con.execute(f"create {kind} staging.{name}__unvalidated as\n{union}")
            document(con, "staging", f"{name}__unvalidated")
            _drop_relation(con, "staging", name)
            select = sql_text(f"staging/{name}.sql").strip().rstrip(";")
            con.execute(f"create or replace view staging.{name} as\n{select}")
            document(con, "staging", name)
            if name not in UNCOUNTED_UNIONS:
                n = con.sql(f"select count(*) from staging.{name}__unvalidated").fetchall()
                counts[name] = n[0][0]
        return counts
    finally:
        con.execute("reset variable hash_salt")


def _drop_relation(con: duckdb.DuckDBPyConnection, schema: str, name: str) -> None:
    """Drop a table or view (DuckDB wants the right kind named), e.g. when a model changes kind."""
    for (kind,) in con.execute(
        "select table_type from information_schema.tables where table_schema = ? "
        "and table_name = ?",
        [schema, name],
    ).fetchall():
        con.execute(f"drop {'view' if kind == 'VIEW' else 'table'} {schema}.{name}")


def build_marts(con: duckdb.DuckDBPyConnection, params: ScoreParams) -> dict[str, float]:
    """Build intermediate and mart models; returns seconds per model."""
    set_score_variables(con, params)
    _build_tracker_effort(con)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    rollup = build_usage_rollups(con, full_refresh=params.full_refresh)
    # Rollups kept across runs: a warehouse built before their docs existed gets them here.
    for name in ("int_event_feature_map", "int_feature_user_days"):
        document(con, "intermediate", name)
    timings["intermediate.usage_rollups"] = round(time.perf_counter() - started, 3)
    timings["usage_rollup_days"] = rollup["days"]
    timings["usage_rollup_full"] = rollup["full"]
    for layer, name in CURRENT_MODELS:
        started = time.perf_counter()
        try:
            build_relation(con, layer, name)
        except duckdb.Error as exc:
            raise type(exc)(f"{layer}.{name}: {exc}") from None
        timings[f"{layer}.{name}"] = round(time.perf_counter() - started, 3)
    for layer, name in HISTORY_MODELS:
        started = time.perf_counter()
        try:
            _build_history(con, layer, name)
        except duckdb.Error as exc:
            raise type(exc)(f"{layer}.{name}: {exc}") from None
        timings[f"{layer}.{name}"] = round(time.perf_counter() - started, 3)
    for name in LATEST_VIEWS:
        select = sql_text(f"marts/{name}.sql").strip().rstrip(";")
        con.execute(f"create or replace view marts.{name} as\n{select}")
        document(con, "marts", name)
    return timings


# bump when the usage rollups (USAGE_ROLLUPS) change (2: tie-break; 3: coverage and
# feature x day rollups added; 4: ops.rollup_load_days, built in full once)
ROLLUP_VERSION = "4"
# The incremental usage rollups, in build order; every one but the map is rebuilt per changed
# day (column activity_date), the map only gains the pairs it does not hold yet.
USAGE_ROLLUPS = (
    "int_event_feature_map",
    "int_feature_user_days",
    "int_event_coverage_days",
    "int_feature_usage_daily",
)


def build_usage_rollups(con: duckdb.DuckDBPyConnection, full_refresh: bool = False) -> dict:
    """Maintain the usage rollups (USAGE_ROLLUPS) incrementally: the event -> feature map, the
    feature x user x day rollup, the day x event x path root coverage counts and the feature x
    day usage counts.

    Only the days touched since the last build are recomputed: days of raw events landed after
    the watermark (late events included, by their event day) and days of events that entered or
    left the validation quarantine. A changed day's events are read only from the loads that
    hold events of that day (ops.rollup_load_days: load time x event day, kept with the rows),
    as a range on ingested_at that reaches the raw tables' _loaded_at zone maps — a night's cost
    follows the loads it touches, not the whole history. A changed catalog (feature rules), a
    new rollup version, a missing table or `full_refresh` rebuilds everything; both paths give
    identical rows (tested).
    The watermark and the quarantined keys it saw are committed with the rows. A night without
    new data reads only the events landed after the watermark (none) and the quarantine keys.
    Days before the raw retention horizon (rawstore.expired_before: their events are deleted)
    keep their rows, in the incremental and the full path alike.
    """
    rules_hash = con.sql(
        "select coalesce(md5(string_agg(feature_key || '|' || signal || '|' || pattern || '|' "
        "|| feature_order, ',' order by feature_key, signal, pattern)), '') "
        "from marts.feature_rules"
    ).fetchall()[0][0]
    fingerprint = f"{ROLLUP_VERSION}:{rules_hash}"
    con.execute(
        "create table if not exists ops.rollup_state (model varchar primary key, "
        "fingerprint varchar not null, watermark timestamptz, built_at timestamptz not null)"
    )
    con.execute(
        "create table if not exists ops.rollup_quarantined_keys (record_key varchar not null)"
    )
    con.execute(
        "create table if not exists ops.rollup_load_days (ingested_at timestamptz, "
        "activity_date date not null, n_rows bigint not null)"
    )
    for name in ("rollup_state", "rollup_quarantined_keys", "rollup_load_days"):
        document(con, "ops", name)
    state = con.execute(
        "select fingerprint, watermark from ops.rollup_state where model = 'usage'"
    ).fetchall()
    tables_exist = con.execute(
        "select count(*) from information_schema.tables where table_schema = 'intermediate' "
        "and list_contains(?, table_name)",
        [list(USAGE_ROLLUPS)],
    ).fetchall()[0][0] == len(USAGE_ROLLUPS)
    quarantined = (
        "select record_key from quality.quarantine "
        "where stage = 'validate' and table_name = 'staging.stg_usage_events'"
    )
    full = full_refresh or not state or state[0][0] != fingerprint or not tables_exist
    expired = rawstore.expired_before(con)
    try:
        with transaction(con):
            if full:
                new_mark = con.sql(
                    "select max(ingested_at) from staging.stg_usage_events__unvalidated"
                ).fetchall()[0][0]
                con.execute("set variable rollup_days = null")
                con.execute("set variable rollup_loads = null")
                # Days past the raw retention horizon (Parquet event store) have no events left:
                # their rollup rows are kept as they are and the rebuild covers the days after.
                kept = [n for n in USAGE_ROLLUPS[1:] if expired and tables_exist]
                for name in kept:
                    con.execute(
                        f"create or replace temp table _kept_{name} as select * from "
                        f"intermediate.{name} where activity_date < ?",
                        [expired],
                    )
                for name in USAGE_ROLLUPS:
                    build_relation(con, "intermediate", name)
                for name in kept:
                    con.execute(
                        f"delete from intermediate.{name} where activity_date < ?", [expired]
                    )
                    con.execute(
                        f"insert into intermediate.{name} by name select * from _kept_{name}"
                    )
                    con.execute(f"drop table _kept_{name}")
                con.execute("delete from ops.rollup_load_days")
                con.execute(
                    "insert into ops.rollup_load_days select ingested_at, occurred_at::date, "
                    "count(*) from staging.stg_usage_events__unvalidated "
                    "where occurred_at is not null group by all"
                )
                n_days = con.sql(
                    "select count(distinct activity_date) from intermediate.int_feature_user_days"
                ).fetchall()[0][0]
            else:
                days, new_mark = _changed_days(con, state[0][1], quarantined)
                if expired:  # days past the raw retention horizon keep the rollups they have
                    days = [d for d in days if d >= expired]
                n_days = len(days)
                if days:
                    con.execute("set variable rollup_days = ?::date[]", [days])
                    con.execute(
                        "set variable rollup_loads = (select coalesce(list(distinct ingested_at), "
                        "[])::timestamptz[] from ops.rollup_load_days "
                        "where list_contains(getvariable('rollup_days'), activity_date))"
                    )
                    # The changed days' events are read (and their JSON parsed) once, for all three
                    # models that read them.
                    con.execute(
                        f"create or replace temp table {_SCOPED_EVENTS} as select * from "
                        f"{_USAGE_EVENTS} where in_rollup_scope(occurred_at::date, ingested_at)"
                    )
                    try:
                        _insert_new_pairs(con)
                        for name in USAGE_ROLLUPS[1:]:  # in order: each reads the one before
                            con.execute(
                                f"delete from intermediate.{name} "
                                "where list_contains(getvariable('rollup_days'), activity_date)"
                            )
                            con.execute(f"insert into intermediate.{name} by name\n{_scoped(name)}")
                    finally:
                        con.execute(f"drop table if exists {_SCOPED_EVENTS}")
            con.execute("delete from ops.rollup_quarantined_keys")
            con.execute(f"insert into ops.rollup_quarantined_keys {quarantined}")
            con.execute(
                "insert or replace into ops.rollup_state values ('usage', ?, ?, now())",
                [fingerprint, new_mark],
            )
    finally:
        con.execute("set variable rollup_days = null")
        con.execute("set variable rollup_loads = null")
    return {"full": full, "days": n_days}


def _changed_days(con: duckdb.DuckDBPyConnection, mark, quarantined: str) -> tuple[list, object]:
    """The UTC days to recompute since watermark `mark`, and the new watermark; records the
    new loads' event days in ops.rollup_load_days.

    Only events landed after the mark are read (the filter on ingested_at reaches the raw
    tables' _loaded_at, where the zone maps skip the older row groups) — the new watermark is
    their newest ingested_at, or the old one when nothing landed. The quarantine side joins the
    events to the keys that entered or left the quarantine, which is empty on most nights.
    """
    con.execute(
        """
        create or replace temp table _landed as
        select ingested_at, occurred_at::date as day, count(*) as n
        from staging.stg_usage_events__unvalidated
        where ingested_at > coalesce(?::timestamptz, '-infinity'::timestamptz)
        group by all
        """,
        [mark],
    )
    con.execute("insert into ops.rollup_load_days select * from _landed where day is not null")
    newest, days = con.sql(
        "select max(ingested_at), coalesce(list(distinct day) filter (day is not null), []) "
        "from _landed"
    ).fetchall()[0]
    con.execute("drop table _landed")
    new_mark = max([d for d in (newest, mark) if d is not None], default=None)
    days = set(days)
    con.execute(
        f"""
        create or replace temp table _moved_keys as
        (select record_key from ops.rollup_quarantined_keys
         except select record_key from ({quarantined}))
        union all
        (select record_key from ({quarantined})
         except select record_key from ops.rollup_quarantined_keys)
        """
    )
    try:
        if con.sql("select count(*) from _moved_keys").fetchall()[0][0]:
            days |= {
                r[0]
                for r in con.sql(
                    "select distinct u.occurred_at::date "
                    "from staging.stg_usage_events__unvalidated as u "
                    "semi join _moved_keys as m on u.event_id = m.record_key "
                    "where u.occurred_at is not null"
                ).fetchall()
            }
    finally:
        con.execute("drop table _moved_keys")
    return sorted(days), new_mark


_USAGE_EVENTS = "staging.stg_usage_events"
_SCOPED_EVENTS = "_rollup_events"


def _scoped(name: str) -> str:
    """Model `name`'s SQL reading the changed days' events from _SCOPED_EVENTS (a temp table of
    the same columns, filtered by the same in_rollup_scope) instead of the staging view (a model
    that does not read the view is unchanged)."""
    select = sql_text(f"intermediate/{name}.sql").strip().rstrip(";")
    if select.count(f"from {_USAGE_EVENTS}\n") > 1:
        raise ValueError(f"intermediate/{name}.sql may read {_USAGE_EVENTS} once at most")
    return select.replace(f"from {_USAGE_EVENTS}\n", f"from {_SCOPED_EVENTS}\n")


def _insert_new_pairs(con: duckdb.DuckDBPyConnection) -> None:
    """Add the (event_name, url_path) pairs of the changed days that the map does not hold."""
    select = _scoped("int_event_feature_map")
    con.execute(
        f"""insert into intermediate.int_event_feature_map by name
            select * from ({select}) as fresh
            anti join intermediate.int_event_feature_map as known
                using (event_name, url_path)"""
    )


def _build_tracker_effort(con: duckdb.DuckDBPyConnection) -> None:
    """The effort each tracker issue carries (ops.writeback_ledger, recorded by the write-back),
    as a relation the scores left-join; empty before the ledger has effort columns."""
    ledger_cols = {
        r[0]
        for r in con.execute(
            "select column_name from information_schema.columns where table_schema = 'ops' "
            "and table_name = 'writeback_ledger'"
        ).fetchall()
    }
    if {"effort", "effort_source"} <= ledger_cols:
        select = (
            "select fingerprint, effort, effort_source from ops.writeback_ledger "
            "where effort is not null and effort > 0 "
            "qualify row_number() over (partition by fingerprint order by updated_at desc) = 1"
        )
    else:
        select = (
            "select null::varchar as fingerprint, null::double as effort, "
            "null::varchar as effort_source where false"
        )
    con.execute(f"create or replace table intermediate.int_tracker_effort as {select}")
    document(con, "intermediate", "int_tracker_effort")


def _build_history(con: duckdb.DuckDBPyConnection, layer: str, name: str) -> None:
    select = sql_text(f"{layer}/{name}.sql").strip().rstrip(";")
    con.execute(f"create or replace temp table _model as\n{select}")
    exists = con.execute(
        "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
        [layer, name],
    ).fetchall()[0][0]
    if not exists:
        con.execute(f"create table {layer}.{name} as select * from _model limit 0")
    else:  # a newer formula adds columns; rows of older formulas keep theirs (NULL in new ones)
        have = {
            r[0]
            for r in con.execute(
                "select column_name from information_schema.columns where table_schema = ? "
                "and table_name = ?",
                [layer, name],
            ).fetchall()
        }
        for col, col_type in con.execute(
            "select column_name, data_type from information_schema.columns "
            "where table_name = '_model' and table_catalog = 'temp' order by ordinal_position"
        ).fetchall():
            if col not in have:
                con.execute(f'alter table {layer}.{name} add column "{col}" {col_type}')
    con.execute(f"delete from {layer}.{name} where as_of_date = getvariable('as_of')::date")
    con.execute(f"insert into {layer}.{name} by name select * from _model")
    con.execute("drop table _model")
    document(con, layer, name)


def default_as_of(con: duckdb.DuckDBPyConnection) -> date:
    """Yesterday (UTC), or the last day with usage data if the data ends earlier (demo files)."""
    from datetime import UTC, datetime, timedelta

    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    last = _last_usage_day(con)
    return min(yesterday, last) if last else yesterday


def _last_usage_day(con: duckdb.DuckDBPyConnection) -> date | None:
    """The newest UTC day of the validated events, without reading every event when the usage
    rollups can tell: their newest day (as of their last build) or the day of an event that
    landed after their watermark or left the quarantine since. When an event entered the
    quarantine since (the rollups may hold a day it alone made) or there are no rollups yet,
    every event is read."""
    full = "select max(occurred_at)::date from staging.stg_usage_events"
    have = {
        r[0]
        for r in con.execute(
            "select table_schema || '.' || table_name from information_schema.tables "
            "where table_schema in ('ops', 'intermediate')"
        ).fetchall()
    }
    if (
        not {
            "ops.rollup_state",
            "ops.rollup_quarantined_keys",
            "intermediate.int_event_coverage_days",
        }
        <= have
    ):
        return con.sql(full).fetchall()[0][0]
    state = con.sql("select watermark from ops.rollup_state where model = 'usage'").fetchall()
    quarantined = (
        "select record_key from quality.quarantine "
        "where stage = 'validate' and table_name = 'staging.stg_usage_events'"
    )
    entered = con.sql(
        f"select count(*) from ({quarantined} except "
        "select record_key from ops.rollup_quarantined_keys)"
    ).fetchall()[0][0]
    if not state or entered:
        return con.sql(full).fetchall()[0][0]
    return con.execute(
        f"""
        select max(day) from (
            select max(activity_date) as day from intermediate.int_event_coverage_days
            union all
            select max(occurred_at)::date from staging.stg_usage_events
            where ingested_at > coalesce(?::timestamptz, '-infinity'::timestamptz)
            union all
            select max(u.occurred_at)::date from staging.stg_usage_events as u
            semi join (
                select record_key from ops.rollup_quarantined_keys
                except {quarantined}
            ) as moved on u.event_id = moved.record_key
        )
        """,
        [state[0][0]],
    ).fetchall()[0][0]
