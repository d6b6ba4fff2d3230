"""The backfill Prefect flow: score a range of past days once the data is in; write nothing back.

Load, staging and the input checks run once (the steps of tasks/steps.py, as the nightly flow
runs them); then every day from start to end is scored in order with its mart checks, the daily
usage rollups reused (incremental: only the first day may have new data to roll up). A backfill
never has a write-back step: past days' suggestions are stale, and recovery is judged on the
newest day only (tasks/history.py). The analyst snapshot is published once at the end.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, date, datetime
from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run
from prefect.states import Failed
from pydantic import Field

from tasks import db, history, quality, runtime
from tasks.preflight import (
    check_catalog,
    check_connectors,
    check_file_sources,
    check_paths,
    check_settings,
)
from tasks.settings import Settings
from tasks.steps import (
    ALL_SOURCES,
    SourceKind,
    archive_raw_events,
    build_staging,
    failed_loads,
    finish_run,
    load_sources,
    prepare_demo_data,
    publish_snapshot,
    record_stage_seconds,
    score_features,
    start_run,
    validate_marts,
    validate_staging,
    write_report,
)


@flow(name="backfill", log_prints=False, timeout_seconds=3 * 3600)
def backfill(
    start: Annotated[date, Field(description="First day to score (UTC), included.")],
    end: Annotated[date, Field(description="Last day to score (UTC), included; >= start.")],
    window_days: runtime.WindowDaysParam = None,
    sources: Annotated[
        list[SourceKind],
        Field(description="Sources to pull first; the others keep what they loaded before."),
    ] = ALL_SOURCES,
    load: Annotated[
        bool, Field(description="Pull new data once before scoring; off = score what is loaded.")
    ] = True,
    config_path: runtime.ConfigPathParam = None,
):
    """Score every day from `start` to `end` (inclusive, at most 400 days); never write back.

    Args:
        start: First day to score (UTC).
        end: Last day to score (UTC), on or after `start`.
        window_days: Length of the scoring window in days; empty = the config value (28).
        sources: Sources to pull before scoring; the others keep what they loaded before.
        load: Pull new data once first (off: score what the warehouse holds).
        config_path: Settings file (TOML); empty = $FEEDBACK_LOOP_CONFIG, else (production
            deployments) the Prefect Variable feedback_loop_config, else the embedded demo.

    Returns a summary dict (one row per day in `days`); the run is Degraded when a source
    failed to load or a critical data-quality check failed.
    """
    logger = get_run_logger()
    days = history.day_range(start, end)  # ValueError before anything is loaded or written
    settings = runtime.run_settings(config_path)  # production: a settings file, never the demo
    preflight_backfill(settings, sources if load else [])
    window_days = settings.window_days if window_days is None else window_days
    run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-bf-{uuid.uuid4().hex[:6]}"
    # The warehouse's one writer: a backfill queues behind a nightly run and the other way round.
    with runtime.writer(settings, flow="backfill", run_id=run_id, logger=logger):
        summary = _backfill(settings, run_id, days, window_days, list(sources), load)
    if summary["degraded_reasons"]:
        # FAILED-type and named Degraded, like the nightly flow's (README "Prefect").
        return Failed(name="Degraded", data=summary, message="; ".join(summary["degraded_reasons"]))
    return summary


def _backfill(
    settings: Settings,
    run_id: str,
    days: list[date],
    window_days: int,
    sources: list[SourceKind],
    load: bool,
) -> dict[str, Any]:
    """The backfill itself, holding the writer lock; returns its summary."""
    logger = get_run_logger()
    start, end = days[0], days[-1]
    started_at = datetime.now(UTC)
    timed = runtime.StageTimer()
    timings = timed.timings

    # Rows of runs that died are marked abandoned first (each one logged by tasks.steps).
    start_run(settings, run_id, flow_run.get_id(), started_at, window_days, False)
    logger.info(
        "backfill %s: %d day(s) %s to %s, window %d days, db=%s; nothing is written back",
        run_id,
        len(days),
        start,
        end,
        window_days,
        settings.duckdb_path,
    )
    try:
        history.record_run_kind(settings, run_id, "backfill")
        loads: dict[str, dict] = {}
        if load:
            timed("demo_data", prepare_demo_data, settings)
            loads = timed("load", load_sources, settings, sources, run_id, started_at)
        failed = failed_loads(loads)
        staged = timed("staging", build_staging, settings)
        # One input gate for the whole range: its volume checks reach back over every day
        # a backfilled score reads (the window before `start` up to `end`).
        check_days = window_days + len(days) - 1
        gate = timed(
            "validate",
            validate_staging,
            settings,
            run_id,
            started_at,
            end,
            check_days,
            failed,
        )
        rows, marts_verdicts = score_days(settings, days, window_days, run_id, started_at, gate)
        timings["days"] = round(sum(r["seconds"] for r in rows), 3)
        timed("archive_raw", archive_raw_events, settings)  # after every day's rollups

        verdicts = gate.verdicts + marts_verdicts
        reasons = degraded_reasons(failed, verdicts, rows)
        summary: dict[str, Any] = {
            "run_id": run_id,
            "kind": "backfill",
            "start": start.isoformat(),
            "end": end.isoformat(),
            "n_days": len(days),
            "window_days": window_days,
            "load": load,
            "dq_verdict": quality.run_verdict(verdicts),
            "loads": loads,
            "failed_sources": failed,
            "staging_rows": staged,
            "validation": quality.verdicts_as_dicts(gate.verdicts),
            "days": rows,
            "tracker_writes": 0,
            "timings": timings,
            "degraded_reasons": reasons,
            "db_path": str(settings.duckdb_path),
            "snapshot_path": str(settings.snapshot_path),
        }
        # The row is final before the snapshot is taken (analysts never see it running).
        finish_run(
            settings,
            run_id,
            "degraded" if reasons else "completed",
            end.isoformat(),
            summary["dq_verdict"],
            summary,
        )
        timed("snapshot", publish_snapshot, settings)
        # The last day's page (latest.html too when no newer day is scored): history to look at.
        summary["report"] = timed("report", write_report, settings, end.isoformat())
        record_stage_seconds(settings, run_id, timings)
    except Exception:
        finish_run(settings, run_id, "failed", None, None, {"kind": "backfill", "timings": timings})
        raise

    create_table_artifact(
        key="backfill-days",
        table=rows,
        description=f"Backfill {run_id}: {len(days)} day(s) {start} to {end} scored, "
        "nothing written back" + (f"; DEGRADED: {'; '.join(reasons)}" if reasons else ""),
    )
    logger.info(
        "backfill %s: %d day(s) scored, snapshot published, 0 tracker writes (%.1fs in all)",
        run_id,
        len(rows),
        (datetime.now(UTC) - started_at).total_seconds(),
    )
    return summary


def preflight_backfill(settings: Settings, sources: list[SourceKind]) -> None:
    """The nightly preflight minus the tracker: a backfill never writes back, so it needs no
    tracker credentials. ConfigError (one line) before anything is loaded or written."""
    kinds = {str(k.value if isinstance(k, SourceKind) else k) for k in sources}
    check_settings(settings)
    check_catalog(settings)
    check_connectors(settings, kinds)
    check_paths(settings)
    check_file_sources(settings, kinds)


def score_days(
    settings: Settings,
    days: list[date],
    window_days: int,
    run_id: str,
    started_at: datetime,
    gate: quality.GateResult,
) -> tuple[list[dict[str, Any]], list[quality.TableVerdict]]:
    """Score each day in order (marts, then the mart checks) and log its result; returns one row
    per day for the artifact and every day's mart verdicts. Each day's problem state is
    recomputed from its own evidence window, so a day scores as its night would have."""
    logger = get_run_logger()
    rows: list[dict[str, Any]] = []
    verdicts: list[quality.TableVerdict] = []
    for i, day in enumerate(days, start=1):
        t0 = time.perf_counter()
        scored = score_features(settings, day, window_days, run_id)
        marts_gate = validate_marts(settings, run_id, scored["as_of"], started_at)
        verdicts += marts_gate.verdicts
        with db.warehouse(settings.duckdb_path, memory_limit=settings.duckdb_memory_limit) as con:
            row = history.day_result(con, day)
        row["dq_verdict"] = quality.run_verdict(gate.verdicts + marts_gate.verdicts)
        row["seconds"] = round(time.perf_counter() - t0, 2)
        rows.append(row)
        logger.info(
            "day %d/%d %s: %d features (%d with data), %d suggestion(s), data quality %s, %.1fs%s",
            i,
            len(days),
            day,
            row["features"],
            row["features_with_data"],
            row["suggestions"],
            row["dq_verdict"],
            row["seconds"],
            f" — {row['note']}" if row["note"] else "",
        )
    return rows, verdicts


def degraded_reasons(
    failed: dict[str, dict[str, str]],
    verdicts: list[quality.TableVerdict],
    rows: list[dict[str, Any]],
) -> list[str]:
    """Why a completed backfill is Degraded, one line each (empty: clean): sources that failed
    to load, and critical data-quality failures (inputs, or the marts of some days)."""
    out = [f"{name} failed to load: {f['reason']}" for name, f in failed.items()]
    critical = sorted(
        {
            v.relation or v.table
            for v in verdicts
            if v.verdict == "fail"
            and v.layer != "load"
            and v.source_kind not in quality.ADVISORY_KINDS
        }
    )
    if critical:
        bad_days = [r["as_of"] for r in rows if r["dq_verdict"] == "degraded"]
        out.append(
            f"critical data-quality failure in {', '.join(critical)}; "
            f"{len(bad_days)} of {len(rows)} day(s) scored on degraded data"
        )
    return out
