"""Run the SQL models in sql/: staging, then (after validation) intermediate and marts."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import date

import duckdb

from tasks.db import build_relation, sql_text

log = logging.getLogger(__name__)

FORMULA_VERSION = "health-v1"

STAGING_MODELS = ("stg_usage_events", "stg_support_tickets", "stg_bug_issues")
# Rebuilt in full each run (they describe the current state of the data).
CURRENT_MODELS = (
    ("intermediate", "int_event_feature_map"),
    ("intermediate", "int_feature_user_days"),
    ("intermediate", "int_tickets_mapped"),
    ("intermediate", "int_bugs_mapped"),
    ("intermediate", "int_feature_metrics"),
    ("marts", "feature_daily"),
    ("marts", "catalog_coverage"),
)
# Kept per as-of date: a rerun for the same date replaces that date's rows, other dates stay.
HISTORY_MODELS = (
    ("marts", "feature_health_components"),
    ("marts", "feature_health"),
    ("marts", "backlog_suggestions"),
)
COMMENTS = {
    "marts.feature_health_components": "grain: one row per as_of_date x feature x component; "
    "key: (as_of_date, feature_key, component). Contributions sum to the health score.",
    "marts.feature_health": "grain: one row per as_of_date x feature; key: (as_of_date, "
    "feature_key). Explainable health score, formula_version and confidence.",
    "marts.backlog_suggestions": "grain: one row per as_of_date x suggestion; key: (as_of_date, "
    "fingerprint). Ranked by priority_rank, with evidence.",
    "marts.feature_daily": "grain: one row per feature x day; key: (feature_key, day).",
    "marts.catalog_coverage": "grain: one row per signal; key: signal. Catalog mapping coverage.",
}


@dataclass(frozen=True)
class ScoreParams:
    as_of: date
    window_days: int
    weights: dict[str, float]
    run_id: str


def set_score_variables(con: duckdb.DuckDBPyConnection, p: ScoreParams) -> None:
    con.execute("set variable as_of = ?::date", [p.as_of.isoformat()])
    con.execute("set variable window_days = ?::integer", [p.window_days])
    con.execute("set variable run_id = ?", [p.run_id])
    con.execute("set variable formula_version = ?", [FORMULA_VERSION])
    for name, weight in p.weights.items():
        con.execute(f"set variable w_{name} = ?::double", [weight])


def build_staging(con: duckdb.DuckDBPyConnection, hash_salt: str) -> dict[str, int]:
    """Rebuild the staging tables from raw.* (the salt only lives in this session's variables)."""
    con.execute("set variable hash_salt = ?", [hash_salt])
    try:
        counts = {}
        for name in STAGING_MODELS:
            counts[name] = build_relation(con, "staging", name)
            con.execute(
                f"comment on table staging.{name} is "
                f"'{sql_text(f'staging/{name}.sql').splitlines()[0][3:].replace(chr(39), '')}'"
            )
        return counts
    finally:
        con.execute("reset variable hash_salt")


def build_marts(con: duckdb.DuckDBPyConnection, params: ScoreParams) -> dict[str, float]:
    """Build intermediate and mart models; returns seconds per model."""
    set_score_variables(con, params)
    timings: dict[str, float] = {}
    for layer, name in CURRENT_MODELS:
        started = time.perf_counter()
        build_relation(con, layer, name)
        timings[f"{layer}.{name}"] = round(time.perf_counter() - started, 3)
    for layer, name in HISTORY_MODELS:
        started = time.perf_counter()
        _build_history(con, layer, name)
        timings[f"{layer}.{name}"] = round(time.perf_counter() - started, 3)
    for table, comment in COMMENTS.items():
        con.execute(f"comment on table {table} is '{comment}'")
    return timings


def _build_history(con: duckdb.DuckDBPyConnection, layer: str, name: str) -> None:
    select = sql_text(f"{layer}/{name}.sql").strip().rstrip(";")
    con.execute(f"create or replace temp table _model as\n{select}")
    exists = con.execute(
        "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
        [layer, name],
    ).fetchall()[0][0]
    if not exists:
        con.execute(f"create table {layer}.{name} as select * from _model limit 0")
    con.execute(f"delete from {layer}.{name} where as_of_date = getvariable('as_of')::date")
    con.execute(f"insert into {layer}.{name} by name select * from _model")
    con.execute("drop table _model")


def default_as_of(con: duckdb.DuckDBPyConnection) -> date:
    """Yesterday (UTC), or the last day with usage data if the data ends earlier (demo files)."""
    from datetime import UTC, datetime, timedelta

    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    last = con.sql("select max(occurred_at)::date from staging.stg_usage_events").fetchall()[0][0]
    return min(yesterday, last) if last else yesterday
