"""The nightly Prefect flow: load -> stage -> validate -> score -> suggest -> write back -> publish.

It orchestrates only; every step is a task in tasks/steps.py over plain, tested functions.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Annotated

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run
from prefect.states import Failed
from pydantic import Field

from flows.extract import config_path_for_workers, run_extracts
from tasks import quality, reporting, runtime
from tasks.history import CLEAN_WRITEBACK_STATUSES, nightly_run_kind, record_run_kind
from tasks.preflight import preflight
from tasks.settings import ConfigError
from tasks.steps import (
    ALL_SOURCES,
    SourceKind,
    archive_raw_events,
    build_staging,
    collect_results,
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
    write_back,
    write_report,
)


@flow(name="nightly", log_prints=False, timeout_seconds=3 * 3600)
def nightly(
    as_of: Annotated[
        date | None,
        Field(description="Score as of this day (UTC). Empty: yesterday, or the last data day."),
    ] = None,
    window_days: runtime.WindowDaysParam = None,
    sources: Annotated[
        list[SourceKind],
        Field(description="Sources to pull this run; the others keep what they loaded before."),
    ] = ALL_SOURCES,
    dry_run: Annotated[
        bool, Field(description="Plan the write-back (create/update/skip), write nothing.")
    ] = False,
    max_new_suggestions: Annotated[
        int | None, Field(ge=0, le=50, description="Cap on new tracker issues; empty = config.")
    ] = None,
    config_path: runtime.ConfigPathParam = None,
    full_refresh: Annotated[
        bool,
        Field(
            description="Rebuild the usage rollups from all events, not only changed days, "
            "and validate every row again, not only new rows."
        ),
    ] = False,
    allow_backdated_writeback: Annotated[
        bool,
        Field(
            description="Write back even when as_of is older than the newest scored day "
            "(creates/updates only; recovery, close and reopen stay with the newest day)."
        ),
    ] = False,
    extract_on_workers: Annotated[
        bool,
        Field(
            description="Pull each API connector in its own `extract` flow run on the work "
            "pool (needs the extract deployment and workers); commits stay in this run."
        ),
    ] = False,
):
    """Pull usage, tickets and bugs; check them; score every feature; write back suggestions.

    Args:
        as_of: Score as of this day (UTC). Empty: yesterday, or the last day with data.
        window_days: Length of the scoring window in days; empty = the config value (28).
        sources: Sources to pull this run; the others keep what they loaded before.
        dry_run: Plan the tracker write-back (create/update/skip) but write nothing.
        max_new_suggestions: Cap on new tracker issues this run; empty = the config value.
        config_path: Settings file (TOML); empty = $FEEDBACK_LOOP_CONFIG, else (production
            deployments) the Prefect Variable feedback_loop_config, else the embedded demo.
        full_refresh: Rebuild the daily usage rollups from every event instead of the days
            touched by new or changed data (same result, slower), and validate every row again
            instead of the rows loaded since the last validation.
        allow_backdated_writeback: A run whose as_of is older than the newest day already
            scored writes nothing to the tracker (its stale suggestions would undo newer ones,
            and a problem absent on an older day is no recovery) unless this is set; even then
            it never comments or closes a recovery or reopens (tasks/history.py).
        extract_on_workers: Start one `extract` flow run per API connector on the work pool
            (flows/extract.py), wait for them, then commit their landed pages here, one
            source at a time; a failed extract run is a failed load of its source (Degraded).
            Off: the connectors are pulled in this run's threads (max_parallel_pulls).
    """
    logger = get_run_logger()
    settings = runtime.run_settings(config_path)  # production: a settings file, never the demo
    preflight(settings, sources=sources)  # ConfigError before anything is loaded or written
    if as_of is not None and as_of > datetime.now(UTC).date():
        # It would become the newest scored day and make every later nightly run backdated.
        raise ConfigError(f"as_of {as_of} is in the future; a run scores today or an earlier day")
    window_days = settings.window_days if window_days is None else window_days
    run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    max_new = (
        settings.writeback.max_new_suggestions
        if max_new_suggestions is None
        else max_new_suggestions
    )
    # The settings file the extract runs read (None: the workers' Prefect Variable).
    extract_config = {"config_path": config_path_for_workers(config_path)}
    # One writer per warehouse: a second run (any deployment, the CLI, a backfill) waits here,
    # in the AwaitingWarehouse state, until this one has finished.
    with runtime.writer(settings, flow="nightly", run_id=run_id, logger=logger):
        summary, reasons = _run(
            settings,
            run_id,
            as_of,
            window_days,
            list(sources),
            dry_run,
            max_new,
            full_refresh,
            allow_backdated_writeback,
            extract_config if extract_on_workers else False,
        )
    if reasons:
        # A FAILED-type state named Degraded: red in the run list, counted by the dashboard and
        # matched by the failure automations; the name and message say the data was published.
        return Failed(name="Degraded", data=summary, message="; ".join(reasons))
    return summary


def _run(
    settings,
    run_id: str,
    as_of: date | None,
    window_days: int,
    sources: list[SourceKind],
    dry_run: bool,
    max_new: int,
    full_refresh: bool,
    allow_backdated_writeback: bool,
    on_workers: dict | bool = False,
) -> tuple[dict, list[str]]:
    """The run itself, holding the writer lock: returns its summary and Degraded reasons."""
    logger = get_run_logger()
    started_at = datetime.now(UTC)
    timed = runtime.StageTimer()
    timings = timed.timings

    # Rows of runs that died are marked abandoned first (each one logged by tasks.steps).
    start_run(settings, run_id, flow_run.get_id(), started_at, window_days, dry_run)
    logger.info(
        "run %s: db=%s tracker=%s", run_id, settings.duckdb_path, settings.writeback.tracker_dir
    )
    try:
        record_run_kind(settings, run_id, nightly_run_kind(flow_run.get_tags()))
        timed("demo_data", prepare_demo_data, settings)
        landed = None
        if on_workers:  # fetched by extract runs on the work pool, committed below
            landed = timed(
                "extract",
                run_extracts,
                settings,
                {str(k) for k in sources},
                run_id,
                started_at,
                on_workers["config_path"],
                logger,
            )
        loads = timed("load", load_sources, settings, sources, run_id, started_at, landed)
        failed = failed_loads(loads)  # isolated failures: the other sources loaded
        staged = timed("staging", build_staging, settings)
        gate = timed(
            "validate",
            validate_staging,
            settings,
            run_id,
            started_at,
            as_of,
            window_days,
            failed,
            full_refresh,
        )
        scored = timed("score", score_features, settings, as_of, window_days, run_id, full_refresh)
        marts_gate = timed(
            "validate_marts", validate_marts, settings, run_id, scored["as_of"], started_at
        )
        # The rollups and checks have consumed the night's rows: older event days can move out.
        timed("archive_raw", archive_raw_events, settings)
        verdicts = gate.verdicts + marts_gate.verdicts
        wb = timed(
            "write_back",
            write_back,
            settings,
            scored["as_of"],
            run_id,
            dry_run,
            max_new,
            quality.run_verdict(verdicts),
            allow_backdated_writeback,
        )

        dq_verdict = quality.run_verdict(verdicts)
        summary = {
            "run_id": run_id,
            "as_of": scored["as_of"],
            "window_days": window_days,
            "dry_run": dry_run,
            "dq_verdict": dq_verdict,
            "loads": loads,
            "staging_rows": staged,
            "validation": quality.verdicts_as_dicts(verdicts),
            "data_sources": gate.sources,
            "coverage": scored["coverage"],
            "catalog_version": scored["catalog_version"],
            "timings": timings,
            "plan": wb["plan"],
            "writeback": {k: v for k, v in wb.items() if k != "plan"},
            "failed_sources": failed,
            "extract_runs": landed,
            "db_path": str(settings.duckdb_path),
            "snapshot_path": str(settings.snapshot_path),
            "tracker_dir": str(settings.writeback.tracker_dir),
        }
        health, suggestions = collect_results(settings, scored["as_of"], wb["plan"])
        summary["health"] = health
        summary["suggestions"] = suggestions
        summary["n_blocked"] = sum(1 for r in suggestions if r.get("is_blocked"))
        reasons = degraded_reasons(summary, verdicts, gate.sources)
        summary["degraded_reasons"] = reasons
        # The row is final before the snapshot is taken, so analysts never see this run running.
        status = "degraded" if reasons else "completed"
        finish_run(settings, run_id, status, scored["as_of"], dq_verdict, summary)
        timed("snapshot", publish_snapshot, settings)  # published whatever write-back did
        summary["report"] = timed("report", write_report, settings, scored["as_of"])
        record_stage_seconds(settings, run_id, timings)
    except Exception:
        finish_run(settings, run_id, "failed", None, None, {"timings": timings})
        raise

    report = reporting.summary_markdown(summary)
    settings.reports_dir.mkdir(parents=True, exist_ok=True)
    (settings.reports_dir / f"{scored['as_of']}.md").write_text(report, encoding="utf-8")
    create_markdown_artifact(
        key="nightly-summary",
        markdown=report,
        description="Counts, timings and the data-quality verdict of this run",
    )
    create_table_artifact(
        key="top-suggestions",
        table=reporting.suggestion_artifact_rows(suggestions) or [{"suggestion": "none"}],
        description="Ranked backlog suggestions and what write-back did",
    )
    create_table_artifact(
        key="feature-health",
        table=reporting.health_artifact_rows(health),
        description="Health score per feature, least healthy first",
    )
    return summary, reasons


def degraded_reasons(
    summary: dict, verdicts: list[quality.TableVerdict], sources: list[dict]
) -> list[str]:
    """Why a completed run is Degraded, one line each (empty: a clean run): sources that failed
    to load, critical data-quality failures and the suggestions they blocked, and a write-back
    that did not end ok. Shown in the run state's message, the summary, the report and ops.runs."""
    out = [f"{name} failed to load: {f['reason']}" for name, f in summary["failed_sources"].items()]
    blocked = [
        v.table
        for v in verdicts
        if v.verdict == "fail" and v.layer != "load" and v.source_kind not in quality.ADVISORY_KINDS
    ]
    kinds = [s["source_kind"] for s in sources if s["is_writeback_blocked"]]
    if blocked:
        out.append(
            f"critical data-quality failure in {', '.join(blocked)}; suggestions depending on "
            f"{', '.join(kinds) or 'the marts'} were not written back"
        )
    if summary["n_blocked"]:
        out.append(
            f"{summary['n_blocked']} suggestion(s) blocked from write-back "
            f"(source kinds failing: {', '.join(kinds) or 'the marts'})"
        )
    wb = summary["writeback"]
    if wb["status"] not in CLEAN_WRITEBACK_STATUSES:  # a backdated run writes nothing by design
        counts = ", ".join(f"{k} {v}" for k, v in wb["counts"].items())
        detail = "; ".join(x for x in (wb["stop_reason"], wb["error"], counts) if x)
        out.append(
            f"write-back to {wb['tracker']} {wb['status']}" + (f": {detail}" if detail else "")
        )
    return out
