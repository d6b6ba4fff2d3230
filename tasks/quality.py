"""Data-quality gate: Great Expectations suites on raw, staging, intermediate and mart tables.

Every run ends with a verdict per source kind (usage, tickets, bugs) in `quality.source_status`:
a critical failure blocks the write-back of the suggestions that depend on the source and marks
the run Degraded; a warning lowers the confidence of the scores that use it and says why (the
reason flows into marts.feature_health.confidence_reasons). Advisory kinds (accounts: revenue
weighting) never block and never degrade the run: a failure only lowers confidence, saying why.
Failing staging rows are quarantined with their reason and original payload; rows in = accepted +
quarantined is checked every run.
A source that failed to load this run (GateParams.failed_loads: a connector whose credentials
were refused, say) fails its kind as a critical load-layer verdict, like a failed critical check.

Two gates, both plain functions (the Prefect tasks in tasks/steps.py wrap them):
- `check_inputs` (before scoring): profile the raw payloads against their schema baseline,
  count rows per day against the same weekday of the 4 weeks before, validate raw.* and
  staging.*__unvalidated, quarantine, then validate the catalog mapping coverage
  (intermediate.int_tickets_mapped / int_bugs_mapped).
- `check_marts` (after scoring, before write-back): mart invariants; a critical failure blocks
  every suggestion of the as-of date.

All checks run inside DuckDB (GX's SQL engine, tasks/validation.py); nothing pulls a table into
Python. Results: quality.dq_results, quality.table_status, quality.source_status,
quality.schema_profile/schema_baseline/schema_drift, quality.volume_daily, quality.quarantine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time as _time
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import duckdb

from tasks.contracts import SPECS, WHOLE_FILE_RULES, payload_text
from tasks.db import sql_literal, sql_text, transaction
from tasks.db import warehouse as open_warehouse
from tasks.settings import EXPECTATIONS_DIR
from tasks.validation import UNEXPECTED_ROWS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StagingTable:
    table: str
    key: str
    source_kind: str  # usage | tickets | bugs | accounts


STAGING_TABLES = (
    StagingTable("stg_usage_events", "event_id", "usage"),
    StagingTable("stg_support_tickets", "ticket_id", "tickets"),
    StagingTable("stg_bug_issues", "issue_id", "bugs"),
    StagingTable("stg_accounts", "account_key", "accounts"),
    StagingTable("stg_error_signals", "issue_id", "errors"),
)
# Catalog mapping coverage, validated before scoring: (relation, key, source kind).
COVERAGE_TABLES = (
    ("int_tickets_mapped", "ticket_id", "tickets"),
    ("int_bugs_mapped", "issue_id", "bugs"),
)
# Mart invariants, validated after scoring: (relation, key used to list failing rows).
MART_TABLES = (
    ("feature_health", "feature_key"),
    ("feature_health_components", "feature_key"),
    ("backlog_suggestions", "fingerprint"),
)

WARNING_CONFIDENCE = 0.8
CRITICAL_CONFIDENCE = 0.5
FACTORS = {"fail": CRITICAL_CONFIDENCE, "warn": WARNING_CONFIDENCE, "pass": 1.0}
# Source kinds that refine priorities rather than provide evidence: a failure never blocks
# write-back nor degrades the run; it lowers confidence by these factors and says what it means.
ADVISORY_KINDS = {
    "accounts": (
        {"fail": WARNING_CONFIDENCE, "warn": 0.9, "pass": 1.0},
        "ARR weighting is off (priorities are not revenue-weighted)",
    ),
    # Error signals (Sentry) are context beside the scores, not evidence they are built from.
    "errors": (
        {"fail": 0.9, "warn": 1.0, "pass": 1.0},
        "error signals (Sentry) are incomplete (feature_errors may undercount)",
    ),
}
# Raw records profiled per table and run for schema drift (a reservoir sample).
PROFILE_SAMPLE = 50_000
# Schema-drift rules that fail critically; the baseline is not updated while they fail.
DRIFT_CRITICAL = ("missing", "retyped")
_NUMBER_TYPES = "('BIGINT', 'UBIGINT', 'DOUBLE', 'HUGEINT', 'INTEGER', 'UHUGEINT')"


@dataclass
class TableVerdict:
    """One validated table: its suite's verdict and row accounting (JSON-ready)."""

    table: str  # the suite name = the table name (raw_<vendor>__<stream> for raw tables)
    source_kind: str | None
    verdict: str  # pass | warn | fail
    rows_in: int
    rows_accepted: int
    rows_quarantined: int
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    layer: str = "staging"  # raw | staging | intermediate | marts
    relation: str = ""  # schema.table
    reason: str | None = None
    # full: every row was judged; incremental: the new batch only (rows_in = new rows)
    mode: str = "full"


@dataclass(frozen=True)
class GateParams:
    run_id: str
    run_started_at: datetime
    as_of: date | None = None  # None: yesterday, or the last day with usage data
    check_days: int = 28  # days up to as_of checked for volume (the scoring window)
    # Raw tables to validate, by vendor (posthog, zendesk, ...): the configured ones. Vendors
    # with rows in their raw table are always validated; None = only those.
    vendors: tuple[str, ...] | None = None
    catalog_path: Path | None = None  # None: no mapping-coverage check
    memory_limit: str | None = None
    # Sources whose load failed this run (load-layer verdicts): (source, kind, one-line reason).
    # Each fails its source kind critically: dependent suggestions are blocked, the run Degraded.
    failed_loads: tuple[tuple[str, str, str], ...] = ()
    # Validate every row again (the run's --full-refresh), not only the rows loaded since the
    # last validated watermark (quality.validation_state).
    full_refresh: bool = False


@dataclass
class GateResult:
    run_id: str
    as_of: date
    verdicts: list[TableVerdict]
    sources: list[dict[str, Any]]  # quality.source_status rows of the run
    checks: list[dict[str, Any]]  # one row per expectation, for the Prefect table artifact
    seconds: float = 0.0
    # What each raw/staging table's validation covered: table, mode (full | incremental),
    # reason, rows_in (the rows judged) and since (the previous watermark), as plain values.
    batches: list[dict[str, Any]] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return run_verdict(self.verdicts)


# --- entry points -------------------------------------------------------------------------------


def check_inputs(db_path: Path, p: GateParams) -> GateResult:
    """Validate raw, staging and mapping coverage; quarantine; set the source verdicts.

    Runs after build_staging and before scoring. GX opens the file itself between the steps,
    so the caller must not hold a connection to `db_path` with other settings.
    """
    from tasks.sources import BY_SOURCE

    started = _time.perf_counter()
    with open_warehouse(db_path, memory_limit=p.memory_limit) as con:
        ensure_quality_tables(con)
        as_of = resolve_as_of(con, p.as_of, p.run_started_at)
        params = run_params(p.run_started_at, as_of, p.run_id)
        vendors = active_vendors(con, p.vendors)
        profile_raw_schemas(
            con, p.run_id, p.run_started_at, [BY_SOURCE[v].raw_table for v in vendors]
        )
        # A kind without any active vendor (no help desk, say) has nothing to judge.
        active_kinds = {BY_SOURCE[v].kind for v in vendors}
        staging = [t for t in STAGING_TABLES if t.source_kind in active_kinds]
        batches = prepare_batches(con, p, params, vendors, staging)
        update_volume_rows(con, [batches[t.table] for t in staging])
        build_check_relations(con, as_of, p.check_days)

    try:
        raw_results = [
            _validate(
                db_path,
                "raw",
                batches[_raw_suite(v)].relation,
                BY_SOURCE[v].raw_key,
                _raw_suite(v),
                params,
                p.memory_limit,
            )
            for v in vendors
        ]
        staging_results = [
            _validate(
                db_path,
                "staging",
                batches[t.table].relation,
                t.key,
                t.table,
                params,
                p.memory_limit,
            )
            for t in staging
        ]
        with open_warehouse(db_path, memory_limit=p.memory_limit) as con:
            incremental = {b.suite for b in batches.values() if b.mode == "incremental"}
            staging_verdicts = apply_staging_validation(
                con, staging_results, p.run_id, incremental=incremental
            )
            if p.catalog_path is not None:
                build_coverage_relations(con, p.catalog_path)
        coverage_results = []
        if p.catalog_path is not None:
            coverage_results = [
                _validate(db_path, "intermediate", name, key, name, params, p.memory_limit)
                for name, key, kind in COVERAGE_TABLES
                if kind in active_kinds
            ]

        kinds = {_raw_suite(v): BY_SOURCE[v].kind for v in vendors}
        kinds.update({name: kind for name, _, kind in COVERAGE_TABLES})
        with open_warehouse(db_path, memory_limit=p.memory_limit) as con:
            verdicts = [_plain_verdict(con, r, "raw", kinds[r.suite_name]) for r in raw_results]
            for v in verdicts:
                v.mode = batches[v.table].mode
            flag_load_rejections(con, p.run_id, verdicts)
            verdicts += staging_verdicts
            verdicts += [
                _plain_verdict(con, r, "intermediate", kinds[r.suite_name])
                for r in coverage_results
            ]
            verdicts += load_verdicts(p.failed_loads)
            results = raw_results + staging_results + coverage_results
            # The results and the advanced watermarks in one transaction: a run that dies
            # before this commit validates the same batch again next time.
            with transaction(con):
                store_results(
                    con, p.run_id, results, verdicts, ("load", "raw", "staging", "intermediate")
                )
                sources = record_source_status(con, p.run_id, verdicts)
                update_schema_baseline(con, p.run_id, raw_results)
                commit_validation_state(con, p.run_id, batches.values())
    finally:
        with open_warehouse(db_path, memory_limit=p.memory_limit) as con:
            drop_batches(con, batches.values())
    out = GateResult(
        run_id=p.run_id,
        as_of=as_of,
        verdicts=verdicts,
        sources=sources,
        checks=check_rows(results, verdicts),
        seconds=round(_time.perf_counter() - started, 3),
        batches=[
            {
                "table": b.table,
                "mode": b.mode,
                "reason": b.reason,
                "rows_in": b.rows_in,
                "since": b.since.isoformat() if b.since else None,
            }
            for b in batches.values()
        ],
    )
    log.info("input gate %s: %s in %.1fs", p.run_id, out.verdict, out.seconds)
    return out


def check_marts(
    db_path: Path,
    run_id: str,
    as_of: date,
    run_started_at: datetime,
    *,
    memory_limit: str | None = None,
) -> GateResult:
    """Validate the mart invariants after scoring. A critical failure blocks the write-back of
    every suggestion of `as_of` (marts.backlog_suggestions.is_blocked), so a broken formula never
    reaches a tracker."""
    started = _time.perf_counter()
    params = run_params(run_started_at, as_of, run_id)
    with open_warehouse(db_path, memory_limit=memory_limit) as con:
        ensure_quality_tables(con)
    results = [
        _validate(db_path, "marts", name, key, name, params, memory_limit)
        for name, key in MART_TABLES
    ]
    with open_warehouse(db_path, memory_limit=memory_limit) as con:
        verdicts = [_plain_verdict(con, r, "marts", None) for r in results]
        store_results(con, run_id, results, verdicts, ("marts",))
        failed = [v for v in verdicts if v.verdict == "fail"]
        if failed:
            reason = "marts (" + "; ".join(f"{v.table}: {v.reason}" for v in failed) + ")"
            con.execute(
                "update marts.backlog_suggestions set is_blocked = true, "
                "blocked_by = concat_ws('; ', blocked_by, ?) where as_of_date = ?",
                [reason, as_of],
            )
    return GateResult(
        run_id=run_id,
        as_of=as_of,
        verdicts=verdicts,
        sources=[],
        checks=check_rows(results, verdicts),
        seconds=round(_time.perf_counter() - started, 3),
    )


def load_verdicts(failed_loads: tuple[tuple[str, str, str], ...]) -> list[TableVerdict]:
    """One critical load-layer verdict per source that failed to load this run."""
    from tasks.sources import BY_SOURCE

    out = []
    for source, kind, reason in failed_loads:
        vendor = BY_SOURCE.get(source.removesuffix(" (api)"))
        out.append(
            TableVerdict(
                table=f"load_{source.removesuffix(' (api)')}",
                source_kind=kind,
                verdict="fail",
                rows_in=0,
                rows_accepted=0,
                rows_quarantined=0,
                failed=["load failed"],
                layer="load",
                relation=vendor.raw_table if vendor else f"load.{source}",
                reason=f"critical: {source} failed to load: {reason}",
            )
        )
    return out


def run_verdict(verdicts: list[TableVerdict]) -> str:
    if any(v.verdict == "fail" and v.source_kind not in ADVISORY_KINDS for v in verdicts):
        return "degraded"
    if any(v.verdict in ("fail", "warn") for v in verdicts):  # a failed advisory kind warns
        return "warn"
    return "pass"


# --- preparation: parameters, schema profiles, daily volumes -------------------------------------


def ensure_quality_tables(con: duckdb.DuckDBPyConnection) -> None:
    """The gate's own tables (sql/quality/quality_tables.sql); idempotent."""
    con.execute(sql_text("quality/quality_tables.sql"))
    from tasks.comments import document_schema

    document_schema(con, "quality")


def configured_vendors(settings: Any) -> tuple[str, ...]:
    """Vendors this deployment pulls: export-file sources with a pattern, plus API connectors.
    The optional accounts source counts once its glob matches a file (a glob matching nothing
    means no accounts table: nothing to judge); once loaded, its rows keep it judged."""
    import glob
    import os

    files = {
        "posthog": settings.sources.posthog_events,
        "zendesk": settings.sources.zendesk_tickets,
        "github": settings.sources.github_issues,
    }
    accounts = settings.sources.accounts
    if accounts and glob.glob(os.path.expanduser(accounts), recursive=True):
        files["accounts"] = accounts
    return tuple(sorted({v for v, pattern in files.items() if pattern} | set(settings.connectors)))


def active_vendors(con: duckdb.DuckDBPyConnection, configured: tuple[str, ...] | None) -> list[str]:
    """Configured vendors (an empty raw table then fails: the source returned nothing) plus any
    vendor whose raw table holds rows; only vendors with a suite in expectations/."""
    from tasks import rawstore
    from tasks.sources import VENDORS

    out = []
    for v in VENDORS:
        if not (EXPECTATIONS_DIR / f"raw_{v.source}__{v.stream}.json").exists():
            continue
        wanted = configured is not None and v.source in configured
        # the full history (raw.<vendor>__events_all) of an event table: in the Parquet event
        # store its warehouse table may hold no rows after a quiet spell
        rel = rawstore.history(v.raw_table) if v.raw_table in rawstore.EVENT_TABLES else v.raw_table
        if wanted or con.sql(f"select exists (select 1 from {rel})").fetchall()[0][0]:
            out.append(v.source)
    return out


def resolve_as_of(
    con: duckdb.DuckDBPyConnection, as_of: date | None, run_started_at: datetime
) -> date:
    """The run's as-of day: given, else yesterday (UTC) or the last day with credible usage data
    if the data ends earlier (as transform.default_as_of, ignoring future timestamps)."""
    if as_of is not None:
        return as_of
    yesterday = run_started_at.astimezone(UTC).date() - timedelta(days=1)
    bound = run_params(run_started_at, yesterday, "")["max_allowed_at"]
    last = con.execute(
        "select max(occurred_at)::date from staging.stg_usage_events__unvalidated "
        "where occurred_at <= ?::timestamptz",
        [bound],
    ).fetchall()[0][0]
    return min(yesterday, last) if last else yesterday


def run_params(run_started_at: datetime, as_of: date, run_id: str) -> dict[str, Any]:
    """Suite parameters (GX $PARAMETERs and DuckDB variables), fixed by the run: a rerun of the
    same night judges the same way. reference_at = end of the as-of day (freshness)."""
    from tasks.validation import default_params

    reference = datetime.combine(as_of + timedelta(days=1), time(0), tzinfo=UTC)
    return {
        **default_params(run_started_at),
        "reference_at": reference.isoformat(),
        "as_of": as_of.isoformat(),
        "run_id": run_id,
    }


def profile_raw_schemas(
    con: duckdb.DuckDBPyConnection, run_id: str, since: datetime, raw_tables: list[str]
) -> dict[str, int]:
    """Profile the top-level fields of the records each raw table received in this run (loaded at
    or after `since`; a sample of PROFILE_SAMPLE) into quality.schema_profile, and seed the
    baseline of a raw table seen for the first time. Returns records profiled per table."""
    con.execute("delete from quality.schema_profile where run_id = ?", [run_id])
    out = {}
    for raw_table in raw_tables:
        select = _profile_sql(con, raw_table)
        con.execute(
            f"""insert into quality.schema_profile by name
                select $1 as run_id, $2 as raw_table, *, now() as profiled_at from ({select})""",
            [run_id, raw_table, since],
        )
        n = con.execute(
            "select coalesce(max(n_records), 0) from quality.schema_profile "
            "where run_id = ? and raw_table = ?",
            [run_id, raw_table],
        ).fetchall()[0][0]
        out[raw_table] = n
    con.execute(
        """insert into quality.schema_baseline
           select raw_table, field, n_records, n_present, n_nonnull, json_type, run_id, run_id,
                  now()
           from quality.schema_profile as p
           where p.run_id = ? and not exists (
               select 1 from quality.schema_baseline as b where b.raw_table = p.raw_table)""",
        [run_id],
    )
    return out


def _profile_sql(con: duckdb.DuckDBPyConnection, raw_table: str) -> str:
    """SELECT (field, n_records, n_present, n_nonnull, json_type, type_share) over the raw
    records loaded since $1. Payload tables: the keys of `payload`. Typed tables (the loader's
    fast path): each typed column (named by its source key) plus the keys of JSON objects."""
    schema, table = raw_table.split(".")
    columns = {
        name
        for (name,) in con.execute(
            "select column_name from information_schema.columns "
            "where table_schema = ? and table_name = ?",
            [schema, table],
        ).fetchall()
    }

    def keys_of(col: str, prefix: str) -> str:
        path = "'$.\"' || replace(k, '\"', '\\\"') || '\"'"
        return f"""
            select {sql_literal(prefix)} || k as field, json_type({col}, {path}) as t
            from (select unnest(json_keys({col})) as k, {col} from recs
                  where json_type({col}) = 'OBJECT')"""

    if "payload" in columns:
        cols = ["payload"]
        observed = [keys_of("payload", "")]
    else:
        spec = next((s for s in SPECS.values() if s.raw_table == raw_table and s.fields), None)
        if spec is None:
            raise ValueError(f"{raw_table}: neither a payload column nor typed fields")
        cols = [col for col, _, _ in spec.fields]
        observed = []
        for col, key, typ in spec.fields:
            if col == spec.key_column:
                continue
            t = f"json_type({col})" if typ == "JSON" else sql_literal(typ)
            observed.append(
                f"select {sql_literal(key)} as field, {t} as t from recs where {col} is not null"
            )
            if typ == "JSON":
                observed.append(keys_of(col, key + "."))
    return f"""
        with recs as (
            select * from (select {", ".join(cols)} from {raw_table} where _loaded_at >= $3)
            using sample reservoir({PROFILE_SAMPLE} rows) repeatable (17)
        ),
        size as (select count(*) as n_records from recs),
        observed as ({" union all ".join(observed)}),
        typed as (
            select field,
                   case when t in {_NUMBER_TYPES} then 'NUMBER' else t end as t,
                   count(*) as n
            from observed group by all
        ),
        per_field as (
            select field, sum(n) as n_present,
                   coalesce(sum(n) filter (where t <> 'NULL'), 0) as n_nonnull,
                   arg_max(t, n) filter (where t <> 'NULL') as json_type,
                   max(n) filter (where t <> 'NULL') as n_top
            from typed group by all
        )
        select field, size.n_records, n_present::bigint as n_present,
               n_nonnull::bigint as n_nonnull, json_type,
               n_top / nullif(n_nonnull, 0) as type_share
        from per_field cross join size
    """


def build_check_relations(con: duckdb.DuckDBPyConnection, as_of: date, check_days: int) -> None:
    """quality.schema_drift (latest profile vs baseline) and quality.volume_daily (rows per day
    vs the same weekday of the 4 weeks before), read by the suites' table-level rules."""
    con.execute(
        "create or replace table quality.schema_drift as\n"
        + sql_text("quality/schema_drift.sql").strip().rstrip(";")
    )
    con.execute("set variable as_of = ?::date", [as_of.isoformat()])
    con.execute("set variable dq_check_days = ?::integer", [check_days])
    try:
        con.execute(
            "create or replace table quality.volume_daily as\n"
            + sql_text("quality/volume_daily.sql").strip().rstrip(";")
        )
    finally:
        con.execute("reset variable dq_check_days")
    from tasks.comments import document

    document(con, "quality", "schema_drift")
    document(con, "quality", "volume_daily")


# --- batches: which rows a run validates ----------------------------------------------------------

# Staging tables whose rows feed quality.volume_daily: (record time, content hash of a row).
VOLUME_TABLES = {
    "stg_usage_events": ("occurred_at", "hash(user_key, event_name, occurred_at)"),
    "stg_support_tickets": ("created_at", "hash(ticket_id)"),
}
_EPOCH = "'-infinity'::timestamptz"


@dataclass
class Batch:
    """The rows of one raw or staging table a run validates, as relation `schema.relation`:
    every row (mode full: first validation, a changed suite, --full-refresh) or the rows loaded
    or updated (raw `_loaded_at`) after `since` up to `watermark` (mode incremental)."""

    table: str  # schema.name judged: raw.posthog__events, staging.stg_usage_events
    suite: str
    schema: str
    relation: str  # <name>__batch: a view on the table (full) or a table of the new rows
    mode: str  # full | incremental
    reason: str
    suite_hash: str
    since: datetime | None
    watermark: datetime | None
    rows_in: int = 0
    newest_record_at: datetime | None = None
    materialized: bool = False


def _raw_suite(vendor: str) -> str:
    from tasks.sources import BY_SOURCE

    return f"raw_{vendor}__{BY_SOURCE[vendor].stream}"


def suite_hash(suite: str) -> str:
    """Content hash of expectations/<suite>.json: a changed suite validates every row again."""
    return hashlib.sha256((EXPECTATIONS_DIR / f"{suite}.json").read_bytes()).hexdigest()[:16]


def prepare_batches(
    con: duckdb.DuckDBPyConnection,
    p: GateParams,
    params: dict[str, Any],
    vendors: list[str],
    staging: list[StagingTable],
) -> dict[str, Batch]:
    """Per raw table of `vendors` and per staging table: the batch relation GX validates (in the
    table's schema, dropped again by drop_batches), its row count and the newest record so far,
    recorded in quality.validation_batches. Returns {suite name: Batch}."""
    from tasks.sources import BY_SOURCE, vendors_of

    state = {
        r[0]: r[1:]
        for r in con.execute(
            "select table_name, suite_hash, watermark, newest_record_at "
            "from quality.validation_state"
        ).fetchall()
    }
    con.execute("delete from quality.validation_batches where run_id = ?", [p.run_id])
    out: dict[str, Batch] = {}
    for v in vendors:
        vendor = BY_SOURCE[v]
        out[_raw_suite(v)] = _prepare_batch(
            con,
            p,
            params,
            state,
            table=vendor.raw_table,
            suite=_raw_suite(v),
            source=vendor.raw_table,
            loaded=[(vendor.raw_table, None)],
            filter_column="_loaded_at",
        )
    existing = {
        f"{s}.{t}"
        for s, t in con.sql(
            "select schema_name, table_name from duckdb_tables() "
            "where database_name = current_database()"
        ).fetchall()
    }
    for t in staging:
        source = f"staging.{t.table}__unvalidated"
        columns = {
            c
            for (c,) in con.execute(
                "select column_name from information_schema.columns "
                "where table_schema = 'staging' and table_name = ?",
                [f"{t.table}__unvalidated"],
            ).fetchall()
        }
        loaded = [
            (v.raw_table, v.source if v.id_prefix else None)
            for v in vendors_of(t.source_kind)
            if v.raw_table in existing
        ]
        out[t.table] = _prepare_batch(
            con,
            p,
            params,
            state,
            table=f"staging.{t.table}",
            suite=t.table,
            source=source,
            loaded=loaded,
            # staging rows carry their raw row's _loaded_at as ingested_at where the model has
            # it (a filter DuckDB pushes down to the raw scan); else by key from the raw rows
            filter_column="ingested_at" if "ingested_at" in columns else None,
            key=t.key,
        )
    return out


def _prepare_batch(
    con: duckdb.DuckDBPyConnection,
    p: GateParams,
    params: dict[str, Any],
    state: dict[str, tuple],
    *,
    table: str,
    suite: str,
    source: str,
    loaded: list[tuple[str, str | None]],  # (raw table, key prefix or None)
    filter_column: str | None,
    key: str | None = None,
) -> Batch:
    from tasks.validation import MAX_ALLOWED_AT, load_suite

    schema, name = table.split(".")
    digest = suite_hash(suite)
    prev = state.get(table)
    if p.full_refresh:
        mode, reason = "full", "--full-refresh"
    elif prev is None:
        mode, reason = "full", "first validation"
    elif prev[0] != digest:
        mode, reason = "full", f"suite {suite} changed"
    else:
        mode, reason = "incremental", "rows loaded since the last validation"
    since = prev[1] if mode == "incremental" else None
    newest_loaded = con.sql(
        "select max(t) from ("
        + " union all ".join(f"select max(_loaded_at) as t from {raw}" for raw, _ in loaded)
        + ")"
    ).fetchall()[0][0]
    watermark = newest_loaded if newest_loaded is not None else since
    relation = f"{name}__batch"
    _drop_relation(con, schema, relation)
    if mode == "full":
        con.execute(f"create view {schema}.{relation} as select * from {source}")
    else:
        lower, upper = (
            _EPOCH if t is None else f"{sql_literal(t.isoformat())}::timestamptz"
            for t in (since, watermark)
        )
        if filter_column is not None:
            where = f"{filter_column} > {lower} and {filter_column} <= {upper}"
        else:
            raw_keys = " union all ".join(
                f"select {sql_literal(prefix + ':') + ' || ' if prefix else ''}"
                f"{_raw_key(raw)}::varchar from {raw} "
                f"where _loaded_at > {lower} and _loaded_at <= {upper}"
                for raw, prefix in loaded
            )
            where = f"{key} in ({raw_keys})"
        con.execute(f"create table {schema}.{relation} as select * from {source} where {where}")
    batch = Batch(
        table=table,
        suite=suite,
        schema=schema,
        relation=relation,
        mode=mode,
        reason=reason,
        suite_hash=digest,
        since=since,
        watermark=watermark,
        materialized=mode == "incremental",
    )
    newest_expr = (
        load_suite(EXPECTATIONS_DIR / f"{suite}.json").get("meta", {}).get("newest_record")
    )
    newest = "null::timestamptz"
    if newest_expr:
        newest = (
            f"max({newest_expr}) filter (where {newest_expr} <= "
            f"{sql_literal(params[MAX_ALLOWED_AT])}::timestamptz)"
        )
    batch.rows_in, batch.newest_record_at = con.sql(
        f"select count(*), {newest} from {schema}.{relation}"
    ).fetchall()[0]
    if mode == "incremental" and prev[2] is not None:
        batch.newest_record_at = max(filter(None, (prev[2], batch.newest_record_at)))
    con.execute(
        "insert into quality.validation_batches values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now())",
        [
            p.run_id,
            table,
            suite,
            mode,
            reason,
            since,
            watermark,
            batch.rows_in,
            batch.newest_record_at,
            digest,
        ],
    )
    if mode == "full":
        log.info("validating all %d row(s) of %s (%s)", batch.rows_in, table, reason)
    else:
        log.info(
            "validating %d new row(s) of %s (loaded after %s)",
            batch.rows_in,
            table,
            since.isoformat() if since else "-",
        )
    return batch


def _raw_key(raw_table: str) -> str:
    from tasks.sources import VENDORS

    return next(v.raw_key for v in VENDORS if v.raw_table == raw_table)


def _drop_relation(con: duckdb.DuckDBPyConnection, schema: str, name: str) -> None:
    kinds = con.execute(
        "select 'view' from duckdb_views() where schema_name = $1 and view_name = $2 "
        "and database_name = current_database() union all select 'table' from duckdb_tables() "
        "where schema_name = $1 and table_name = $2 and database_name = current_database()",
        [schema, name],
    ).fetchall()
    for (kind,) in kinds:
        con.execute(f"drop {kind} if exists {schema}.{name}")


def drop_batches(con: duckdb.DuckDBPyConnection, batches) -> None:
    """Drop the batch relations (they hold nothing the warehouse keeps)."""
    for b in batches:
        _drop_relation(con, b.schema, b.relation)


def update_volume_rows(con: duckdb.DuckDBPyConnection, batches: list[Batch]) -> None:
    """Keep quality.volume_rows (one narrow row per staging row: key hash, record time, content
    hash) up to date from the batches of the volume-checked tables: a full batch replaces the
    table's rows, an incremental one replaces the rows of its keys (an updated row moves).
    Then quality.volume_day_counts is recomputed for the days those rows left or entered (every
    day after a full batch, or when the counts are missing)."""
    for b in batches:
        name = b.table.split(".")[1]
        if name not in VOLUME_TABLES:
            continue
        at, content = VOLUME_TABLES[name]
        key = next(t.key for t in STAGING_TABLES if t.table == name)
        batch = f"{b.schema}.{b.relation}"
        have_counts = con.execute(
            "select exists (select 1 from quality.volume_day_counts where table_name = ?)",
            [b.table],
        ).fetchall()[0][0]
        every_day = b.mode == "full" or not have_counts
        if b.mode == "full":
            con.execute("delete from quality.volume_rows where table_name = ?", [b.table])
        else:
            con.execute(
                f"""create or replace temp table _volume_days as
                    select distinct happened_at::date as day from quality.volume_rows
                    where table_name = $1 and key_hash in (select hash({key}) from {batch})
                    union select distinct ({at})::date from {batch}""",
                [b.table],
            )
            con.execute(
                f"delete from quality.volume_rows where table_name = ? "
                f"and key_hash in (select hash({key}) from {batch})",
                [b.table],
            )
        con.execute(
            f"""insert into quality.volume_rows
                select $1, source, hash({key}), {at}, {content} from {batch}""",
            [b.table],
        )
        _update_volume_day_counts(con, b.table, every_day)


# Days per query when every day is counted again: the distinct count holds one chunk's rows.
_VOLUME_CHUNK_DAYS = 14


def _update_volume_day_counts(con: duckdb.DuckDBPyConnection, table: str, every_day: bool) -> None:
    """Recompute quality.volume_day_counts of `table` for the days in _volume_days (or every
    day, _VOLUME_CHUNK_DAYS at a time, so memory follows a chunk, not the history)."""
    count = """insert into quality.volume_day_counts
        select table_name, source, day, count(*), count(*) - count(distinct content_hash)
        from (select *, happened_at::date as day from quality.volume_rows
              where table_name = $1 and happened_at is not null)
        where {days}
        group by all"""
    if not every_day:
        days = "day in (select day from _volume_days where day is not null)"
        con.execute(
            f"delete from quality.volume_day_counts where table_name = $1 and {days}", [table]
        )
        con.execute(count.format(days=days), [table])
        con.execute("drop table _volume_days")
        return
    con.execute("drop table if exists _volume_days")
    con.execute("delete from quality.volume_day_counts where table_name = $1", [table])
    first, last = con.execute(
        "select min(happened_at)::date, max(happened_at)::date from quality.volume_rows "
        "where table_name = $1",
        [table],
    ).fetchall()[0]
    while first is not None and first <= last:
        end = first + timedelta(days=_VOLUME_CHUNK_DAYS)
        con.execute(count.format(days=f"day >= date '{first}' and day < date '{end}'"), [table])
        first = end


def commit_validation_state(con: duckdb.DuckDBPyConnection, run_id: str, batches) -> None:
    """Advance each table's watermark, suite hash and newest record to what this run judged
    (call inside the transaction that stores the run's results)."""
    for b in batches:
        con.execute("delete from quality.validation_state where table_name = ?", [b.table])
        con.execute(
            "insert into quality.validation_state values (?, ?, ?, ?, ?, ?, now())",
            [b.table, b.suite, b.suite_hash, b.watermark, b.newest_record_at, run_id],
        )


def build_coverage_relations(con: duckdb.DuckDBPyConnection, catalog_path: Path) -> None:
    """Publish the catalog and build the mapped tickets/bugs from the validated staging rows, so
    mapping coverage is judged before scoring (score_features rebuilds them identically)."""
    from tasks import catalog as catalog_mod
    from tasks.db import build_relation

    catalog_mod.publish_catalog(con, catalog_mod.load_catalog(catalog_path))
    for name, _, _ in COVERAGE_TABLES:
        build_relation(con, "intermediate", name)


def update_schema_baseline(con: duckdb.DuckDBPyConnection, run_id: str, raw_results: list) -> None:
    """Fold this run's profile into the baseline of each raw table whose drift is not critical:
    new fields are accepted (they warn once), presence shares keep learning. While a field is
    missing or retyped, the baseline stays, so the failure persists until the source is fixed
    or the change is accepted (accept_schema_drift)."""
    blocked = {
        r.table
        for r in raw_results
        for o in r.outcomes
        if not o.success
        and o.severity == "critical"
        and "quality.schema_drift" in str(o.kwargs.get("unexpected_rows_query", ""))
    }
    tables = [
        t
        for (t,) in con.execute(
            "select distinct raw_table from quality.schema_profile where run_id = ?", [run_id]
        ).fetchall()
        if t.split(".")[1] not in blocked
    ]
    for raw_table in tables:
        seeded = con.execute(
            "select count(*) from quality.schema_baseline where raw_table = ? and last_run_id = ?",
            [raw_table, run_id],
        ).fetchall()[0][0]
        if seeded:
            continue  # seeded (or already folded) by this run
        con.execute(
            """create or replace temp table _baseline as
               with p as (select * from quality.schema_profile
                          where run_id = $1 and raw_table = $2),
                    n as (select max(n_records) as n_records from p),
                    b as (select * from quality.schema_baseline where raw_table = $2)
               select $2 as raw_table, coalesce(p.field, b.field) as field,
                      coalesce(b.n_records, 0) + n.n_records as n_records,
                      coalesce(b.n_present, 0) + coalesce(p.n_present, 0) as n_present,
                      coalesce(b.n_nonnull, 0) + coalesce(p.n_nonnull, 0) as n_nonnull,
                      coalesce(b.json_type, p.json_type) as json_type,
                      coalesce(b.first_run_id, $1) as first_run_id, $1 as last_run_id,
                      now() as updated_at
               from p full outer join b on p.field = b.field cross join n""",
            [run_id, raw_table],
        )
        con.execute("delete from quality.schema_baseline where raw_table = ?", [raw_table])
        con.execute("insert into quality.schema_baseline by name select * from _baseline")
        con.execute("drop table _baseline")


def accept_schema_drift(con: duckdb.DuckDBPyConnection, raw_table: str) -> int:
    """Accept the latest delivery's shape as the baseline of `raw_table` (after a deliberate
    vendor change); returns the number of baseline fields."""
    con.execute("delete from quality.schema_baseline where raw_table = ?", [raw_table])
    con.execute(
        """insert into quality.schema_baseline
           select raw_table, field, n_records, n_present, n_nonnull, json_type, run_id, run_id,
                  now()
           from quality.schema_profile
           where raw_table = $1 and run_id = (
               select arg_max(run_id, profiled_at) from quality.schema_profile
               where raw_table = $1)""",
        [raw_table],
    )
    return con.execute(
        "select count(*) from quality.schema_baseline where raw_table = ?", [raw_table]
    ).fetchall()[0][0]


# --- applying results -----------------------------------------------------------------------------


def _validate(
    db_path: Path,
    schema: str,
    table: str,
    key: str,
    suite: str,
    params: dict[str, Any],
    memory_limit: str | None,
):
    from tasks.validation import validate_table

    return validate_table(
        db_path,
        schema,
        table,
        key,
        EXPECTATIONS_DIR / f"{suite}.json",
        params=params,
        memory_limit=memory_limit,
    )


def record_quarantine(
    con: duckdb.DuckDBPyConnection,
    rejects: str,
    stage: str,
    tables: list[str],
    run_id: str,
    *,
    scope: str | None = None,
) -> None:
    """Merge the rows of temp table `rejects` into quality.quarantine, idempotently.

    `rejects` has quarantine_id, stage, source, table_name, record_key, rule, reason, payload,
    source_file. For the validate stage the set is recomputed for the judged rows, so rows that
    no longer fail (a newer version fixed them) leave quarantine: every row of the tables, or
    only the keys `scope` (a subquery) when the run judged a batch of new rows.
    """
    if stage == "validate":
        within = "" if scope is None else f"and q.record_key in {scope}"
        con.execute(
            f"""delete from quality.quarantine q
                where q.stage = 'validate'
                  and q.table_name in ({", ".join(sql_literal(t) for t in tables)})
                  {within}
                  and q.quarantine_id not in (select quarantine_id from {rejects})"""
        )
    con.execute(
        f"update quality.quarantine set last_run_id = ? from {rejects} r "
        "where quality.quarantine.quarantine_id = r.quarantine_id",
        [run_id],
    )
    con.execute(
        f"""insert into quality.quarantine by name
            select r.*, $1 as first_run_id, $1 as last_run_id, now() as quarantined_at
            from {rejects} r anti join quality.quarantine q using (quarantine_id)""",
        [run_id],
    )


def apply_staging_validation(
    con: duckdb.DuckDBPyConnection,
    results: list,
    run_id: str,
    *,
    incremental: set[str] | frozenset[str] = frozenset(),
) -> list[TableVerdict]:
    """Quarantine the failing rows of each staging table (the canonical staging views leave them
    out) and check rows in = accepted + quarantined over the validated relation: the whole
    unvalidated union, or for the tables in `incremental` the new batch (`<table>__batch`), whose
    rows alone are judged again (rows quarantined earlier and not in the batch stay so)."""
    verdicts: list[TableVerdict] = []
    by_table = {r.table.removesuffix("__unvalidated").removesuffix("__batch"): r for r in results}
    for t in STAGING_TABLES:
        res = by_table.get(t.table)
        if res is None:
            continue
        validated = f"staging.{res.table}"
        scope = validated if t.table in incremental else None
        rows_in = con.sql(f"select count(*) from {validated}").fetchall()[0][0]
        con.execute(
            "create or replace temp table _failing (record_key varchar, rule varchar, "
            "reason varchar)"
        )
        con.execute(f"set search_path = '{res.schema}'")  # the failing-row queries' schema
        try:
            for o in res.outcomes:
                if not (o.row_level and o.failing_keys_query):
                    continue
                rule = o.expectation_type + (f"({o.column})" if o.column else "")
                # Set-based, inside DuckDB: a mass failure quarantines millions of rows without
                # pulling their keys into Python.
                reason = "$2"
                source = f"(select #1 as k from ({o.failing_keys_query}) as failing)"
                if o.reason_column:  # each row's own reason, e.g. wrong_type:updated_at
                    reason = f'coalesce(t."{o.reason_column}"::varchar, $2)'
                    source = (
                        f'(select failing.k, t."{o.reason_column}" from {source} as failing '
                        f'join "{res.table}" as t on t."{t.key}"::varchar = failing.k::varchar)'
                    )
                con.execute(
                    f"""insert into _failing
                        select distinct k::varchar, $1, {reason}
                        from {source} as t
                        where k is not null""",
                    [rule, o.quarantine_reason or rule],
                )
        finally:
            con.execute("reset search_path")
        _build_rejects(con, t)
        record_quarantine(
            con,
            "_rejects",
            "validate",
            [f"staging.{t.table}"],
            run_id,
            scope=None if scope is None else f"(select {t.key} from {scope})",
        )
        n_quarantined = con.sql("select count(distinct record_key) from _failing").fetchall()[0][0]
        # The validated rows the canonical view keeps (as its anti-join on quality.quarantine).
        rows_accepted = con.sql(
            f"""select count(*) from {validated} as c where not exists (
                    select 1 from quality.quarantine as q
                    where q.stage = 'validate' and q.table_name = 'staging.{t.table}'
                      and q.record_key = c.{t.key})"""
        ).fetchall()[0][0]
        if rows_in != rows_accepted + n_quarantined:
            raise RuntimeError(
                f"{validated}: rows in {rows_in} != accepted {rows_accepted} + "
                f"quarantined {n_quarantined}"
            )
        verdict = _verdict(res, "staging", t.source_kind, rows_in, rows_accepted, n_quarantined)
        verdict.mode = "incremental" if scope else "full"
        verdicts.append(verdict)
        log_unknown_enums(con, t.table, res.table)
    con.execute("drop table if exists _failing")
    con.execute("drop table if exists _rejects")
    return verdicts


def log_unknown_enums(
    con: duckdb.DuckDBPyConnection, table: str, relation: str | None = None
) -> list[str]:
    """Log (and return) one warning per enum column of `staging.<relation>` (default
    `<table>__unvalidated`; a run passes the batch it validated) holding values outside its
    canonical set: the field, the count and up to three examples (redacted and cut short at
    staging, in `<field>_unknown`). The rows stay, with the value 'unknown'; the suite's warning
    rule fails (lowering confidence) only above 1% of the rows."""
    relation = relation or f"{table}__unvalidated"
    columns = [
        r[0]
        for r in con.execute(
            "select column_name from information_schema.columns where table_schema = 'staging' "
            "and table_name = ? and column_name like '%\\_unknown' escape '\\' "
            "order by ordinal_position",
            [relation],
        ).fetchall()
    ]
    out = []
    for col in columns:
        field_name = col.removesuffix("_unknown")
        n, examples = con.sql(
            f"select count(*), list_slice(list_sort(list_distinct(list({col}))), 1, 3) "
            f"from staging.{relation} where {col} is not null"
        ).fetchall()[0]
        if n:
            message = (
                f"staging.{table}: {n} row(s) with an unknown {field_name}, kept as 'unknown' "
                f"(e.g. {', '.join(examples)})"
            )
            log.warning(message)
            out.append(message)
    return out


def _build_rejects(con: duckdb.DuckDBPyConnection, t: StagingTable) -> None:
    """Temp table _rejects: each failing row with its original raw record, per vendor."""
    from tasks.sources import vendors_of

    parts = []
    for v in vendors_of(t.source_kind):
        spec = next((s for s in SPECS.values() if s.raw_table == v.raw_table), None)
        payload = payload_text(spec, alias="r") if spec and spec.fields else "r.payload::varchar"
        if spec and spec.private:  # kept in raw, never copied to quarantine (an account's name)
            hidden = json.dumps(dict.fromkeys(spec.private))
            payload = f"json_merge_patch(r.payload, {sql_literal(hidden)})::varchar"
        raw_key = v.raw_key_from_id.format(k="f.record_key")
        mine = f"f.record_key like {sql_literal(v.source + ':%')}" if v.id_prefix else "true"
        parts.append(f"""
            select f.record_key, f.rule, f.reason, {sql_literal(v.source)} as source,
                   {payload} as payload, r._source_file as source_file
            from _failing f join {v.raw_table} r on r.{v.raw_key} = {raw_key}
            where {mine}""")
    table = sql_literal(f"staging.{t.table}")
    con.execute(f"""
        create or replace temp table _rejects as
        select md5(concat_ws('|', 'validate', {table}, rule, record_key, payload))
                   as quarantine_id,
               'validate' as stage, source, {table} as table_name, record_key, rule, reason,
               payload, source_file
        from ({" union all ".join(parts)})
    """)
    missing = con.sql(
        "select count(*) from _failing anti join _rejects using (record_key)"
    ).fetchall()[0][0]
    if missing:
        raise RuntimeError(f"staging.{t.table}: {missing} failing row(s) have no raw record")


def flag_load_rejections(
    con: duckdb.DuckDBPyConnection, run_id: str, verdicts: list[TableVerdict]
) -> dict[str, int]:
    """A warning on a raw table whose loader set files or pages aside whole in this run
    (undecodable, HTML, invalid JSON, error bodies, not the vendor's page shape): the data may
    be incomplete, so confidence drops and the run report says so. Returns {source: count}."""
    from tasks.sources import BY_SOURCE

    rules = ", ".join(sql_literal(r) for r in WHOLE_FILE_RULES)
    counts = dict(
        con.execute(
            f"""select source, count(*) from quality.quarantine
                where stage = 'load' and rule in ({rules}) and last_run_id = ?
                group by source""",
            [run_id],
        ).fetchall()
    )
    suites = {f"raw_{v}__{BY_SOURCE[v].stream}": v for v in counts if v in BY_SOURCE}
    for v in verdicts:
        n = counts.get(suites.get(v.table, ""), 0)
        if not n:
            continue
        note = (
            f"warning: {n} file(s)/page(s) set aside whole at load "
            "(see quality.quarantine, stage load)"
        )
        v.verdict = "warn" if v.verdict == "pass" else v.verdict
        v.failed = [*v.failed, "load: files set aside"]
        v.reason = f"{v.reason}; {note}" if v.reason else note
    return counts


def _plain_verdict(con: duckdb.DuckDBPyConnection, res, layer: str, kind: str | None):
    """Verdict of a table whose rows are never quarantined here (raw, intermediate, marts)."""
    n = con.sql(f'select count(*) from {res.schema}."{res.table}"').fetchall()[0][0]
    return _verdict(res, layer, kind, n, n, 0)


def _verdict(res, layer: str, kind: str | None, rows_in: int, accepted: int, quarantined: int):
    # On an empty table GX fails some column rules (a uniqueness share of 0 of 0); they say
    # nothing there: the table-level rules (row count, freshness) report the emptiness.
    failed = [
        o
        for o in res.outcomes
        if not o.success and (rows_in or o.expectation_type == UNEXPECTED_ROWS or o.column is None)
    ]
    critical = [o for o in failed if o.severity == "critical"]
    warning = [o for o in failed if o.severity == "warning"]
    verdict = "fail" if critical else "warn" if warning else "pass"
    reason = None
    if verdict != "pass":
        reason = "; ".join(
            f"{o.severity}: {_explain(o, res.suite_name)}" for o in critical + warning
        )
    return TableVerdict(
        table=res.suite_name,
        source_kind=kind,
        verdict=verdict,
        rows_in=rows_in,
        rows_accepted=accepted,
        rows_quarantined=quarantined,
        failed=[o.label for o in critical + warning],
        seconds=round(res.seconds, 3),
        layer=layer,
        relation=f"{res.schema}.{res.table.removesuffix('__unvalidated').removesuffix('__batch')}",
        reason=reason,
    )


def _explain(o, table: str) -> str:
    """A failed rule as people read it: what failed, where, and the evidence."""
    topic = (o.description or "").split(":", 1)[0] if ":" in (o.description or "") else None
    if o.details:
        more = f" (+{len(o.details) - 2} more)" if len(o.details) > 2 else ""
        return f"{topic or o.label} in {table}: " + "; ".join(o.details[:2]) + more
    if o.unexpected_count is not None and o.element_count:
        return f"{o.label} in {table}: {o.unexpected_count:,} of {o.element_count:,} rows fail"
    return f"{o.label} in {table} (observed {o.observed_value})"


def store_results(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    results: list,
    verdicts: list[TableVerdict],
    layers: tuple[str, ...],
) -> None:
    """Every expectation outcome into quality.dq_results, every table into quality.table_status
    (replacing this run's rows of these layers: a rerun of the step is idempotent)."""
    layer_list = ", ".join(sql_literal(x) for x in layers)
    con.execute(
        f"delete from quality.dq_results where run_id = ? and (layer in ({layer_list}) "
        "or layer is null)",
        [run_id],
    )
    con.execute(
        f"delete from quality.table_status where run_id = ? and layer in ({layer_list})", [run_id]
    )
    by_suite = {v.table: v for v in verdicts}
    rows = []
    for res in results:
        v = by_suite[res.suite_name]
        quarantined = {}
        for o in res.outcomes:
            if o.row_level:
                quarantined[id(o)] = _n_quarantined(o)
        for o in res.outcomes:
            rows.append(
                [
                    run_id,
                    v.relation,
                    v.source_kind or v.layer,
                    res.suite_name,
                    o.expectation_type,
                    o.column,
                    json.dumps(o.kwargs, default=str),
                    o.severity,
                    o.success,
                    o.element_count,
                    o.unexpected_count,
                    o.unexpected_percent,
                    quarantined.get(id(o), 0),
                    None if o.observed_value is None else json.dumps(o.observed_value, default=str),
                    v.layer,
                    o.description,
                    o.details,
                ]
            )
    if rows:
        con.executemany(
            """insert into quality.dq_results (run_id, table_name, source, suite_name,
                   expectation_type, column_name, kwargs, severity, is_success, element_count,
                   unexpected_count, unexpected_percent, n_quarantined, observed_value,
                   validated_at, layer, description, details)
               values (?, ?, ?, ?, ?, ?, ?::json, ?, ?, ?, ?, ?, ?, ?, now(), ?, ?, ?)""",
            rows,
        )
    con.executemany(
        """insert into quality.table_status values
           (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now())""",
        [
            [
                run_id,
                v.layer,
                v.relation,
                v.table,
                v.source_kind,
                v.verdict,
                v.rows_in,
                v.rows_accepted,
                v.rows_quarantined,
                v.failed,
                v.reason,
                v.seconds,
            ]
            for v in verdicts
        ],
    )


def record_source_status(
    con: duckdb.DuckDBPyConnection, run_id: str, verdicts: list[TableVerdict]
) -> list[dict[str, Any]]:
    """One verdict per source kind from all its tables: fail (critical) blocks write-back of the
    suggestions that depend on it; fail and warn lower confidence, with the reason."""
    con.execute("delete from quality.source_status where run_id = ?", [run_id])
    rows = []
    kinds = sorted({v.source_kind for v in verdicts if v.source_kind})
    staging = {t.source_kind: f"staging.{t.table}" for t in STAGING_TABLES}
    for kind in kinds:
        mine = [v for v in verdicts if v.source_kind == kind]
        verdict = (
            "fail"
            if any(v.verdict == "fail" for v in mine)
            else "warn"
            if any(v.verdict == "warn" for v in mine)
            else "pass"
        )
        reasons = [v.reason for v in mine if v.verdict == "fail" and v.reason]
        reasons += [v.reason for v in mine if v.verdict == "warn" and v.reason]
        factors, meaning = ADVISORY_KINDS.get(kind, (FACTORS, None))
        if meaning and verdict == "fail":
            reasons.insert(0, meaning)
        row = {
            "run_id": run_id,
            "source_kind": kind,
            "table_name": staging.get(kind, mine[0].relation),
            "verdict": verdict,
            "confidence_factor": factors[verdict],
            "is_writeback_blocked": verdict == "fail" and kind not in ADVISORY_KINDS,
            "reason": "; ".join(reasons) or None,
        }
        rows.append(row)
    if rows:
        con.executemany(
            "insert into quality.source_status values (?, ?, ?, ?, ?, ?, ?)",
            [list(r.values()) for r in rows],
        )
    return rows


def check_rows(results: list, verdicts: list[TableVerdict]) -> list[dict[str, Any]]:
    """One row per expectation (plain Python values) for the Prefect table artifact."""
    by_suite = {v.table: v for v in verdicts}
    rows = []
    for res in results:
        v = by_suite[res.suite_name]
        for o in res.outcomes:
            observed = o.observed_value
            if o.unexpected_count is not None and o.element_count is not None:
                observed = f"{o.unexpected_count} of {o.element_count} unexpected"
            elif o.details:
                observed = "; ".join(o.details[:2])
            rows.append(
                {  # the verdict first: Prefect's table scrolls sideways at ~1400 px
                    "result": "pass" if o.success else "FAIL",
                    "table": v.table,
                    "check": o.label,
                    "observed": "" if observed is None else str(observed)[:200],
                    "severity": o.severity,
                    "quarantined": _n_quarantined(o) if o.row_level else 0,
                    "layer": v.layer,
                }
            )
    return rows


def _n_quarantined(o) -> int:
    """Rows a row-level rule sent to quarantine (listed keys, or counted beyond the cap)."""
    if o.failing_keys_complete:
        return len(set(o.failing_keys))
    return (o.unexpected_count or 0) - o.null_key_count


def verdicts_as_dicts(verdicts: list[TableVerdict]) -> list[dict[str, Any]]:
    return [asdict(v) for v in verdicts]
