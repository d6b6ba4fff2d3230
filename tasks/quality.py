"""Data-quality gate: run the GX suites on staging, store results, quarantine failing rows,
and turn the outcome into a per-source verdict that scores and write-back depend on."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb

from tasks.db import sql_literal
from tasks.settings import EXPECTATIONS_DIR

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StagingTable:
    table: str
    key: str
    source_kind: str  # usage | tickets | bugs


STAGING_TABLES = (
    StagingTable("stg_usage_events", "event_id", "usage"),
    StagingTable("stg_support_tickets", "ticket_id", "tickets"),
    StagingTable("stg_bug_issues", "issue_id", "bugs"),
)


WARNING_CONFIDENCE = 0.8
CRITICAL_CONFIDENCE = 0.5


@dataclass
class TableVerdict:
    table: str
    source_kind: str
    verdict: str  # pass | warn | fail
    rows_in: int
    rows_accepted: int
    rows_quarantined: int
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0


def record_quarantine(
    con: duckdb.DuckDBPyConnection, rejects: str, stage: str, tables: list[str], run_id: str
) -> None:
    """Merge the rows of temp table `rejects` into quality.quarantine, idempotently.

    `rejects` has quarantine_id, stage, source, table_name, record_key, rule, reason, payload,
    source_file. For the validate stage the set is recomputed each run, so rows that no longer
    fail (a newer version fixed them) leave quarantine.
    """
    if stage == "validate":
        con.execute(
            f"""delete from quality.quarantine q
                where q.stage = 'validate'
                  and q.table_name in ({", ".join(sql_literal(t) for t in tables)})
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


def validation_params(run_started_at: datetime) -> dict:
    """Run-time suite parameters, fixed by the run's start so a rerun judges the same way."""
    from tasks.validation import default_params

    return default_params(run_started_at)


def validate_staging(
    db_path: Path, run_started_at: datetime, sources: list[str], memory_limit: str | None = None
) -> list:
    """Run every suite against its staging table (GX opens the file itself: no other
    connection of ours may be open). Returns GX TableValidation objects."""
    from tasks.validation import validate_table

    results = []
    for t in STAGING_TABLES:
        if t.source_kind not in sources:
            continue
        results.append(
            validate_table(
                db_path,
                "staging",
                f"{t.table}__unvalidated",
                t.key,
                EXPECTATIONS_DIR / f"{t.table}.json",
                params=validation_params(run_started_at),
                memory_limit=memory_limit,
            )
        )
    return results


def apply_validation(
    con: duckdb.DuckDBPyConnection, results: list, run_id: str, sources: list[str]
) -> list[TableVerdict]:
    """Store results, quarantine failing rows (the canonical staging views leave them out),
    set source verdicts. Rows in (the unvalidated union) = accepted + quarantined, checked."""
    verdicts: list[TableVerdict] = []
    by_table = {r.table.removesuffix("__unvalidated"): r for r in results}
    con.execute("delete from quality.dq_results where run_id = ?", [run_id])
    con.execute("delete from quality.source_status where run_id = ?", [run_id])
    for t in STAGING_TABLES:
        if t.source_kind not in sources:
            continue
        res = by_table[t.table]
        rows_in = con.sql(f"select count(*) from staging.{t.table}__unvalidated").fetchall()[0][0]
        con.execute(
            "create or replace temp table _failing (record_key varchar, rule varchar, "
            "reason varchar)"
        )
        dq_rows = []
        for o in res.outcomes:
            keys = sorted(set(o.failing_keys)) if o.row_level else []
            rule = o.expectation_type + (f"({o.column})" if o.column else "")
            if keys:
                con.executemany(
                    "insert into _failing values (?, ?, ?)",
                    [[k, rule, o.quarantine_reason or rule] for k in keys],
                )
            dq_rows.append(
                [
                    run_id,
                    t.table,
                    t.source_kind,
                    res.suite_name,
                    o.expectation_type,
                    o.column,
                    json.dumps(o.kwargs, default=str),
                    o.severity,
                    o.success,
                    o.element_count,
                    o.unexpected_count,
                    o.unexpected_percent,
                    len(keys),
                    None if o.observed_value is None else json.dumps(o.observed_value, default=str),
                ]
            )
        if dq_rows:
            con.executemany(
                "insert into quality.dq_results values "
                "(?, ?, ?, ?, ?, ?, ?::json, ?, ?, ?, ?, ?, ?, ?, now())",
                dq_rows,
            )
        _build_rejects(con, t)
        record_quarantine(con, "_rejects", "validate", [f"staging.{t.table}"], run_id)
        n_quarantined = con.sql("select count(distinct record_key) from _failing").fetchall()[0][0]
        rows_accepted = con.sql(f"select count(*) from staging.{t.table}").fetchall()[0][0]
        if rows_in != rows_accepted + n_quarantined:
            raise RuntimeError(
                f"staging.{t.table}: rows in {rows_in} != accepted {rows_accepted} + "
                f"quarantined {n_quarantined}"
            )
        failed_critical = [
            f"{o.expectation_type}({o.column or ''})"
            for o in res.outcomes
            if not o.success and o.severity == "critical"
        ]
        failed_warning = [
            f"{o.expectation_type}({o.column or ''})"
            for o in res.outcomes
            if not o.success and o.severity == "warning"
        ]
        verdict = "fail" if failed_critical else "warn" if failed_warning else "pass"
        factor = {"fail": CRITICAL_CONFIDENCE, "warn": WARNING_CONFIDENCE, "pass": 1.0}[verdict]
        reason = None
        if verdict != "pass":
            reason = ("critical: " if failed_critical else "warning: ") + ", ".join(
                failed_critical or failed_warning
            )
        con.execute(
            "insert into quality.source_status values (?, ?, ?, ?, ?, ?, ?)",
            [
                run_id,
                t.source_kind,
                f"staging.{t.table}",
                verdict,
                factor,
                verdict == "fail",
                reason,
            ],
        )
        verdicts.append(
            TableVerdict(
                table=t.table,
                source_kind=t.source_kind,
                verdict=verdict,
                rows_in=rows_in,
                rows_accepted=rows_accepted,
                rows_quarantined=n_quarantined,
                failed=failed_critical + failed_warning,
                seconds=round(res.seconds, 3),
            )
        )
    con.execute("drop table if exists _failing")
    con.execute("drop table if exists _rejects")
    return verdicts


def _build_rejects(con: duckdb.DuckDBPyConnection, t: StagingTable) -> None:
    """Temp table _rejects: each failing row with its original raw record, per vendor."""
    from tasks.load import SPECS, _payload_text
    from tasks.sources import vendors_of

    parts = []
    for v in vendors_of(t.source_kind):
        spec = next((s for s in SPECS.values() if s.raw_table == v.raw_table), None)
        payload = _payload_text(spec, alias="r") if spec and spec.fields else "r.payload::varchar"
        raw_key = v.raw_key_from_id.format(k="f.record_key")
        parts.append(f"""
            select f.record_key, f.rule, f.reason, {sql_literal(v.source)} as source,
                   {payload} as payload, r._source_file as source_file
            from _failing f join {v.raw_table} r on r.{v.raw_key} = {raw_key}
            where f.record_key like {sql_literal(v.source + ":%")}""")
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


def run_verdict(verdicts: list[TableVerdict]) -> str:
    if any(v.verdict == "fail" for v in verdicts):
        return "degraded"
    if any(v.verdict == "warn" for v in verdicts):
        return "warn"
    return "pass"
