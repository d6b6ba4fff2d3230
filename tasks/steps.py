"""Prefect tasks of the nightly run: thin, typed wrappers over the plain functions in tasks/."""

from __future__ import annotations

import json
import logging
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import duckdb
from prefect import get_run_logger, task

from tasks import catalog as catalog_mod
from tasks import contracts, db, html_report, load, quality, reporting, transform, writeback
from tasks.settings import Settings

if TYPE_CHECKING:
    from tasks.extract import Pull


class SourceKind(StrEnum):
    usage = "usage"
    tickets = "tickets"
    bugs = "bugs"


ALL_SOURCES = [SourceKind.usage, SourceKind.tickets, SourceKind.bugs]
log = logging.getLogger(__name__)


@task(name="prepare-demo-data")
def prepare_demo_data(settings: Settings) -> dict[str, Any] | None:
    """Generate the bundled demo exports when demo mode is on and they are not there yet."""
    from tasks.demo_data import DemoConfig, generate_demo_data

    logger = get_run_logger()
    manifest = settings.demo.out_dir / "_manifest.json"
    if not settings.demo.enabled or manifest.exists():
        return None
    end = datetime.now(UTC).date() - timedelta(days=1)
    logger.info("generating demo data in %s (90 days up to %s)", settings.demo.out_dir, end)
    cfg = DemoConfig(
        out_dir=settings.demo.out_dir,
        end_date=end,
        days=settings.demo.days,
        users=settings.demo.users,
        accounts=settings.demo.accounts,
        events=settings.demo.events,
        seed=settings.demo.seed,
    )
    return generate_demo_data(cfg, progress=logger.info)


@task(name="load-sources", retries=0)
def load_sources(
    settings: Settings,
    sources: list[SourceKind],
    run_id: str,
    window_end: datetime,
    landed: dict[str, dict] | None = None,
) -> dict[str, dict]:
    """Export files and API connectors, pulled concurrently; each batch commits with its cursor.

    Up to `settings.max_parallel_pulls` sources are fetched and landed at the same time, each in
    its own `pull-<source>` task run (tasks/extract.py); their warehouse commits take turns.
    Each file source and each connector is isolated: one that fails (credentials refused,
    retries exhausted, an unreadable batch) is recorded with a one-line masked reason
    (`failed`, and its source kind in `kind`), its cursor stays at its last committed batch, and
    the others still load. The quality gate turns the failures into load-layer verdicts. The
    result lists the file sources, then the connectors, in the configured order.

    No Prefect retries: the HTTP layer already retried what is transient, and a rerun resumes
    from the last committed cursor.

    `landed` (extraction on workers, flows/extract.py): {connector source: {"folder": its landed
    batch} or {"error": why its extract run failed}}. The connectors' pages are then not
    fetched here but read from those folders and committed one source at a time through the
    same load_pages (a failed extract is that source's failed load).
    """
    from tasks.clients.zendesk import redact_landed_rows
    from tasks.connectors import build_connectors
    from tasks.extract import pull_all
    from tasks.redact import register_duckdb

    logger = get_run_logger()
    kinds = {k.value for k in sources}
    if "bugs" in kinds:
        kinds.add("errors")  # error signals (Sentry) travel with the bug trackers
    files = _file_pulls(settings, sources, run_id)
    connectors = build_connectors(settings, kinds)
    pulls = files + _connector_pulls(settings, connectors, files, run_id, window_end, landed)
    parallel = settings.max_parallel_pulls if landed is None else 1  # commits only: serial
    secrets = _credential_values(settings)

    def settle(log_to, pull: Pull, outcome: load.LoadStats | Exception) -> dict:
        if isinstance(outcome, Exception):
            return _failed_load(log_to, pull.key, pull.kind, outcome, secrets)
        _log_stats(log_to, pull.key, outcome)
        return outcome.as_dict()

    with db.warehouse(settings.duckdb_path, memory_limit=settings.duckdb_memory_limit) as con:
        db.ensure_schema(con)
        register_duckdb(con, settings.hash_salt.get_secret_value())
        redact_landed_rows(con)  # once per warehouse: tickets landed before landing redaction
        out = pull_all(con, pulls, settle, max_parallel=parallel, logger=logger)
        if settings.sources.accounts:
            out["accounts"] = _load_accounts(con, settings.sources.accounts, run_id, logger)
    return out


def _file_pulls(settings: Settings, sources: list[SourceKind], run_id: str) -> list[Pull]:
    """The export-file sources of the run (those with a glob), as pulls (tasks/extract.py)."""
    from tasks.clients.github import GITHUB_ISSUES_SPEC
    from tasks.clients.zendesk import ZENDESK_TICKETS_SPEC
    from tasks.extract import Pull

    file_specs = {
        SourceKind.usage: (contracts.POSTHOG_EVENTS, "posthog_events"),
        # Zendesk export pages get the same landing redaction as the API pages.
        SourceKind.tickets: (ZENDESK_TICKETS_SPEC, "zendesk_tickets"),
        # GitHub issue files too: titles and bodies are redacted at landing.
        SourceKind.bugs: (GITHUB_ISSUES_SPEC, "github_issues"),
    }
    pulls = []
    for kind in sources:
        spec, attr = file_specs[kind]
        pattern = getattr(settings.sources, attr)
        if not pattern:
            continue

        def load_files(con, commit_lock, logger, spec=spec, pattern=pattern) -> load.LoadStats:
            stats = load.load_source(
                con, spec, pattern, run_id, progress=logger.info, commit_lock=commit_lock
            )
            if stats.files_seen == 0:
                logger.warning("%s: no files match %r", spec.source, pattern)
            return stats

        pulls.append(Pull(spec.source, spec.source, str(kind), spec.raw_table, load_files))
    return pulls


def _connector_pulls(
    settings: Settings,
    connectors: list[Any],
    files: list[Pull],
    run_id: str,
    window_end: datetime,
    landed: dict[str, dict] | None = None,
) -> list[Pull]:
    """The API connectors of the run, as pulls; one beside its vendor's export files is keyed
    `<source> (api)`. Each resumes from the cursor its last committed batch stored (with
    `landed`: commits the pages its extract run landed from that cursor)."""
    from tasks.extract import Pull

    with_files = {p.source for p in files}
    pulls = []
    for connector in connectors:

        def load_api(con, commit_lock, logger, connector=connector) -> load.LoadStats:
            state = load.read_state(con, connector.source, connector.stream)
            if landed is not None:
                return _commit_landed(
                    settings,
                    con,
                    connector,
                    state,
                    landed.get(connector.source) or {"error": "no extract run"},
                    run_id,
                    commit_lock,
                    logger,
                )
            logger.info("%s: pulling from %s", connector.source, state or "the configured start")
            return load.load_pages(
                con,
                connector.spec,
                connector.pages(state, window_end),
                run_id,
                settings.landing_dir,
                progress=logger.info,
                commit_lock=commit_lock,
            )

        source = connector.source
        pulls.append(
            Pull(
                source,
                f"{source} (api)" if source in with_files else source,
                "bugs" if connector.kind == "errors" else connector.kind,
                connector.spec.raw_table,
                load_api,
            )
        )
    return pulls


def _commit_landed(
    settings: Settings,
    con: duckdb.DuckDBPyConnection,
    connector: Any,
    state: dict[str, Any] | None,
    got: dict,
    run_id: str,
    commit_lock: Any,
    logger: Any,
) -> load.LoadStats:
    """Commit the pages a connector's extract run landed (tasks/extract.py), through load_pages
    as an in-process pull would; the folder is removed once its batches have committed."""
    import shutil
    from pathlib import Path

    from tasks.extract import ExtractFailed, landed_pages, read_manifest

    if got.get("error"):
        raise ExtractFailed(f"extract run failed: {got['error']}")
    folder = Path(got["folder"])
    manifest = read_manifest(folder)
    if manifest is None:
        raise ExtractFailed(f"no complete landed batch in {folder}")
    if manifest["state_in"] != state:  # landed from another cursor: not this batch
        raise ExtractFailed(
            f"landed batch {folder.name} starts from another cursor than the committed one"
        )
    logger.info(
        "%s: committing %d landed page(s) from %s", connector.source, manifest["n_pages"], folder
    )
    stats = load.load_pages(
        con,
        connector.spec,
        landed_pages(folder, manifest),
        run_id,
        settings.landing_dir,
        progress=logger.info,
        commit_lock=commit_lock,
    )
    shutil.rmtree(folder, ignore_errors=True)  # committed, its cursor with it
    return stats


def failure_reason(exc: BaseException, secrets: tuple[str, ...] = ()) -> str:
    """An exception as one short line without credentials or customer contact details: the
    exception type and the first line of its message, masked and redacted, at most 300 chars."""
    from tasks.clients.http import mask_text
    from tasks.redact import redact_text

    lines = [part.strip() for part in str(exc).splitlines() if part.strip()]
    text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    text = redact_text(mask_text(text, secrets)) or type(exc).__name__
    return text if len(text) <= 300 else text[:299] + "…"


def _credential_values(settings: Settings) -> tuple[str, ...]:
    """Values of the credential variables a run may use (scrubbed from failure reasons)."""
    import os

    from tasks.connectors import CONNECTOR_TYPES

    names = {n for t in CONNECTOR_TYPES.values() for n in t.env_vars}
    values = [os.environ.get(n, "") for n in sorted(names)]
    return tuple(v for v in [*values, settings.hash_salt.get_secret_value()] if v)


def _failed_load(logger, key: str, kind: str, exc: BaseException, secrets) -> dict:
    """A load that failed: nothing of its batch in flight was committed (its cursor stays at the
    last committed batch); the row carries the source kind and the masked one-line reason."""
    reason = failure_reason(exc, secrets)
    logger.error("%s: load failed, the other sources go on: %s", key, reason)
    return load.LoadStats(source=key, errors=[reason]).as_dict() | {
        "failed": True,
        "kind": kind,
        "reason": reason,
    }


def failed_loads(loads: dict[str, dict]) -> dict[str, dict[str, str]]:
    """{source: {"kind": usage|tickets|bugs, "reason": one line}} of the loads that failed."""
    return {
        name: {"kind": st["kind"], "reason": st["reason"]}
        for name, st in loads.items()
        if st.get("failed")
    }


def _load_accounts(con, pattern: str, run_id: str, logger) -> dict:
    """The optional accounts source (revenue and segments), loaded last and on every run: a
    broken accounts file never stops the run, it is reported (and judged by the quality gate)."""
    try:
        stats = load.load_source(con, contracts.ACCOUNTS, pattern, run_id, progress=logger.info)
    except load.LoadError as exc:  # nothing of the failed batch was committed
        stats = load.LoadStats(source="accounts", errors=[str(exc)])
    except (OSError, duckdb.Error) as exc:
        stats = load.LoadStats(source="accounts", errors=[f"accounts: {exc}"])
    for message in stats.errors:
        logger.error("%s; ARR weighting is off until it is fixed", message)
    if stats.files_seen == 0 and not stats.errors:
        logger.warning("accounts: no files match %r; priorities are not revenue-weighted", pattern)
    _log_stats(logger, "accounts", stats)
    return stats.as_dict()


def _log_stats(logger, name: str, stats: load.LoadStats) -> None:
    for message in stats.warnings:  # files/pages set aside whole: what, where, sha256; no text
        logger.warning("%s", message)
    logger.info(
        "%s: %d file(s)/page(s) loaded, %d skipped as unchanged, %d rejected whole; %d records "
        "read -> %d new, %d updated, %d unchanged, %d superseded, %d dropped, %d quarantined",
        name,
        stats.files_loaded,
        stats.files_skipped,
        stats.files_rejected,
        stats.records_read,
        stats.n_inserted,
        stats.n_updated,
        stats.n_unchanged,
        stats.n_superseded,
        stats.n_dropped,
        stats.n_quarantined,
    )


@task(name="build-staging")
def build_staging(settings: Settings) -> dict[str, int]:
    with db.warehouse(settings.duckdb_path, memory_limit=settings.duckdb_memory_limit) as con:
        counts = transform.build_staging(con, settings.hash_salt.get_secret_value())
    get_run_logger().info(
        "staging rows before validation: %s (%s: views over the raw event history, not counted "
        "here; the validation counts the rows it judges)",
        counts,
        ", ".join(transform.UNCOUNTED_UNIONS),
    )
    return counts


@task(name="validate-staging")
def validate_staging(
    settings: Settings,
    run_id: str,
    started_at: datetime,
    as_of: date | None = None,
    window_days: int = 28,
    failed_loads: dict[str, dict[str, str]] | None = None,
    full_refresh: bool = False,
) -> quality.GateResult:
    """Great Expectations on the inputs: raw payloads (freshness, schema drift), staging (keys,
    enums, ranges, volume, duplicates; failing rows quarantined) and catalog mapping coverage.
    Row-level rules judge the rows loaded since the last validation (every row on a first run,
    after a suite changed, or with `full_refresh`). Sources that failed to load
    (`failed_loads(loads)`) fail their kind as load-layer verdicts. Sets the per-source verdicts
    that scores and write-back depend on."""
    from prefect.artifacts import create_table_artifact

    logger = get_run_logger()
    gate = quality.check_inputs(
        settings.duckdb_path,
        quality.GateParams(
            run_id=run_id,
            run_started_at=started_at,
            as_of=as_of,
            check_days=window_days,
            vendors=quality.configured_vendors(settings),
            catalog_path=settings.catalog_path,
            memory_limit=settings.duckdb_memory_limit,
            failed_loads=tuple(
                (name, f["kind"], f["reason"]) for name, f in (failed_loads or {}).items()
            ),
            full_refresh=full_refresh,
        ),
    )
    full = [b for b in gate.batches if b["mode"] == "full"]
    for reason in sorted({b["reason"] for b in full}):
        tables = ", ".join(b["table"] for b in full if b["reason"] == reason)
        logger.info("validating every row (%s): %s", reason, tables)
    new = [b for b in gate.batches if b["mode"] == "incremental"]
    if new:
        logger.info(
            "validating new rows only (loaded since the last validation): %s",
            ", ".join(f"{b['table']} {b['rows_in']}" for b in new),
        )
    for v in gate.verdicts:
        log = logger.warning if v.verdict != "pass" else logger.info
        log(
            "%s: %s — %d %s = %d accepted + %d quarantined%s",
            v.relation,
            v.verdict.upper(),
            v.rows_in,
            "new rows in" if v.mode == "incremental" else "in",
            v.rows_accepted,
            v.rows_quarantined,
            f"; {v.reason}" if v.reason else "",
        )
    for s in gate.sources:
        log = logger.warning if s["verdict"] != "pass" else logger.info
        log(
            "source %s: %s (confidence x%.1f%s)",
            s["source_kind"],
            s["verdict"].upper(),
            s["confidence_factor"],
            ", write-back blocked" if s["is_writeback_blocked"] else "",
        )
    create_table_artifact(
        key="data-quality",
        table=gate.checks,
        description=f"Data-quality checks of run {run_id} (raw, staging, mapping coverage): "
        f"{gate.verdict.upper()}",
    )
    return gate


@task(name="validate-marts")
def validate_marts(
    settings: Settings, run_id: str, as_of: str, started_at: datetime
) -> quality.GateResult:
    """Mart invariants (scores in 0-100, components summing to the score, blocks honoured); a
    critical failure blocks the write-back of every suggestion of the as-of date."""
    from prefect.artifacts import create_table_artifact

    logger = get_run_logger()
    gate = quality.check_marts(
        settings.duckdb_path,
        run_id,
        date.fromisoformat(as_of),
        started_at,
        memory_limit=settings.duckdb_memory_limit,
    )
    for v in gate.verdicts:
        log = logger.warning if v.verdict != "pass" else logger.info
        log("%s: %s%s", v.relation, v.verdict.upper(), f" — {v.reason}" if v.reason else "")
    create_table_artifact(
        key="data-quality-marts",
        table=gate.checks,
        description=f"Mart invariants of run {run_id}: {gate.verdict.upper()}",
    )
    return gate


@task(name="score-features")
def score_features(
    settings: Settings,
    as_of: date | None,
    window_days: int,
    run_id: str,
    full_refresh: bool = False,
) -> dict[str, Any]:
    """Catalog -> intermediate -> marts: health per feature and ranked suggestions."""
    logger = get_run_logger()
    cat = catalog_mod.load_catalog(settings.catalog_path)
    with db.warehouse(settings.duckdb_path, memory_limit=settings.duckdb_memory_limit) as con:
        resolved = as_of or transform.default_as_of(con)
        catalog_mod.publish_catalog(con, cat)
        params = transform.ScoreParams(
            as_of=resolved,
            window_days=window_days,
            weights=settings.score.weights.normalised(),
            run_id=run_id,
            detection=settings.score.detection,
            reach=settings.score.reach,
            full_refresh=full_refresh,
        )
        timings = transform.build_marts(con, params)
        logger.info(
            "usage rollups: %s, %s day(s) recomputed",
            "full rebuild" if timings.pop("usage_rollup_full") else "incremental",
            timings.pop("usage_rollup_days"),
        )
        coverage = reporting.coverage_rows(con)
    for row in coverage:
        logger.info(
            "catalog coverage %s: %.1f%% of %d mapped; biggest unmapped: %s",
            row["signal"],
            100 * (row["mapped_share"] or 0),
            row["n_records"],
            row["top_unmapped"] or "-",
        )
    return {
        "as_of": resolved.isoformat(),
        "timings": timings,
        "coverage": coverage,
        "catalog_version": cat.version,
    }


@task(name="write-back")
def write_back(
    settings: Settings,
    as_of: str,
    run_id: str,
    dry_run: bool,
    max_new: int,
    dq_verdict: str = "pass",
    allow_backdated: bool = False,
) -> dict[str, Any]:
    """Plan (and unless dry run, apply) the tracker write-back. Returns the plan rows and the
    write-back status (see `run_write_back`); a tracker failure never fails the data run."""
    return run_write_back(
        settings,
        as_of,
        run_id,
        dry_run,
        max_new,
        dq_verdict,
        get_run_logger(),
        allow_backdated=allow_backdated,
    )


def run_write_back(
    settings: Settings,
    as_of: str,
    run_id: str,
    dry_run: bool,
    max_new: int,
    dq_verdict: str,
    logger,
    *,
    allow_backdated: bool = False,
) -> dict[str, Any]:
    """The write-back step as a plain function: {"plan": rows, "status", "counts",
    "stop_reason", "error", "tracker", "backdating"}.

    `status` is apply_plan's (ok | partial | uncertain | failed), or `dry_run`, or `backdated`:
    `as_of` is older than the newest day already scored (tasks/history.py) and
    `allow_backdated` is off, so every suggestion is a skip saying why and the tracker is not
    contacted at all (a clean run: nothing was meant to be written). With `allow_backdated` a
    backdated run plans creates and updates but never a recovery, close or reopen. An HTTP,
    tracker or file error that escapes planning or applying (a refused credential at the
    tracker's check, say) ends write-back as `failed` with a one-line masked `error`; the plan
    made so far is kept. Programming errors still raise."""
    from tasks import history
    from tasks.settings import ConfigError
    from tasks.trackers.factory import build_tracker
    from tasks.trackers.limits import BudgetExhausted

    out: dict[str, Any] = {
        "tracker": settings.writeback.tracker,
        "plan": [],
        "status": "dry_run" if dry_run else "ok",
        "counts": {},
        "stop_reason": None,
        "error": None,
        "backdating": None,
    }
    plan: list[writeback.PlanItem] = []
    try:
        with db.warehouse(settings.duckdb_path, memory_limit=settings.duckdb_memory_limit) as con:
            when = history.backdating(con, as_of)
            out["backdating"] = when.as_dict()
            hold = when.is_backdated and not allow_backdated
            tracker = None if hold else build_tracker(settings)
            suggestions = writeback.load_suggestions(con, as_of, settings.report_link(as_of))
            if tracker is None:
                plan = writeback.plan_held(suggestions, when.skip_reason)
                out["status"] = "backdated"
                out["stop_reason"] = f"{when.why}; pass allow_backdated_writeback to write"
                logger.info("backdated run (%s): nothing is written to the tracker", when.why)
            else:
                plan = writeback.plan_writeback(
                    con,
                    tracker,
                    suggestions,
                    max_new,
                    on_recovery=settings.writeback.on_recovery,
                    allow_recovery=dq_verdict != "degraded",
                    as_of=as_of,
                    backdated=when.held_reason if when.is_backdated else None,
                )
            for item in plan:
                logger.info(
                    "%s %s [%s]: %s",
                    "PLAN" if dry_run else "DO",
                    item.action.upper(),
                    item.fingerprint,
                    item.reason,
                )
            if tracker is not None and not dry_run:
                result = writeback.apply_plan(con, tracker, plan, run_id)
                out["status"] = result.status
                out["counts"] = {k: v for k, v in result.items() if k != "status" and v}
                out["stop_reason"] = result.stop_reason
                logger.info("write-back to %s: %s", tracker.name, dict(result))
    except (RuntimeError, OSError, ConfigError, BudgetExhausted) as exc:
        out["status"] = "failed"
        out["error"] = failure_reason(exc, _credential_values(settings))
        logger.error(
            "write-back to %s failed; the data run goes on: %s",
            settings.writeback.tracker,
            out["error"],
        )
    if out["status"] not in history.CLEAN_WRITEBACK_STATUSES:
        logger.warning(
            "write-back %s: %s", out["status"].upper(), out["stop_reason"] or out["error"] or ""
        )
    out["plan"] = writeback.plan_as_rows(plan)
    return out


@task(name="archive-raw-events")
def archive_raw_events(settings: Settings) -> dict[str, Any]:
    """raw_events_store = "parquet": move the event days older than the hot window to Parquet
    and apply the retention (tasks/rawstore.py), then compact the warehouse file when the move
    left it mostly free blocks. After the rollups; a no-op in the warehouse store."""
    from tasks import rawstore

    store = rawstore.activate(settings)
    if store.mode != "parquet":
        return {"mode": store.mode}
    with db.warehouse(settings.duckdb_path, memory_limit=settings.duckdb_memory_limit) as con:
        st = rawstore.archive(con, store)
    compacted = (
        rawstore.compact(settings.duckdb_path, settings.duckdb_memory_limit)
        if st.rows_moved or st.rows_expired
        else None
    )
    if compacted:
        get_run_logger().info(
            "warehouse file compacted after the move: %.1f MB -> %.1f MB",
            compacted[0] / 1e6,
            compacted[1] / 1e6,
        )
    get_run_logger().info(
        "raw events: %d day(s) (%d rows, %.1f MB) moved to Parquet at %s; %d day(s) past the "
        "%s-day retention deleted; %d stale file(s) removed (%.2fs)",
        st.days_written,
        st.rows_moved,
        st.bytes_written / 1e6,
        store.root,
        st.days_expired,
        store.retention_days or "no",
        st.files_deleted,
        st.seconds,
    )
    return {"mode": store.mode, "compacted": compacted, **st.__dict__}


@task(name="publish-snapshot")
def publish_snapshot(settings: Settings) -> float:
    with db.warehouse(settings.duckdb_path, memory_limit=settings.duckdb_memory_limit) as con:
        st = db.publish_snapshot(
            con, settings.duckdb_path, settings.snapshot_path, mode=settings.snapshot_mode
        )
    get_run_logger().info(
        "analyst snapshot published to %s in %.2fs (%s: %d tables copied; Parquet %s: "
        "%d day files written, %d new-rows parts added, %.1f MB, %d unchanged days kept, "
        "%d old files deleted)",
        settings.snapshot_path,
        st.seconds,
        st.mode,
        st.tables_copied,
        ", ".join(st.parquet_tables) or "none",
        st.days_written,
        st.parts_appended,
        st.bytes_written / 1e6,
        st.days_kept,
        st.files_deleted,
    )
    return st.seconds


@task(name="write-report")
def write_report(settings: Settings, as_of: str) -> dict[str, Any]:
    """The day's HTML report (`reports/<as_of>.html`, `latest.html` when it is the newest day).
    Written after the snapshot, from the final warehouse; a failure is logged and shown in the
    run summary but loses nothing (every number on the page is in the warehouse)."""
    logger = get_run_logger()
    try:
        with db.warehouse(settings.duckdb_path, memory_limit=settings.duckdb_memory_limit) as con:
            rep = html_report.write_report(con, as_of, settings.reports_dir)
    except Exception as exc:  # the run's data is committed; the page is a view of it
        logger.error("the HTML report for %s was not written: %s", as_of, failure_reason(exc))
        return {"error": failure_reason(exc)}
    logger.info(
        "report %s: %d charts, %d features, %d of %d days scored, %.0f KiB, %.1fs",
        rep.path,
        rep.n_charts,
        rep.n_features,
        rep.health_days,
        html_report.REPORT_DAYS,
        rep.size_bytes / 1024,
        rep.seconds,
    )
    return {
        "path": str(rep.path),
        "latest": str(rep.latest) if rep.latest else None,
        "size_bytes": rep.size_bytes,
        "n_charts": rep.n_charts,
        "health_days": rep.health_days,
    }


def start_run(
    settings: Settings,
    run_id: str,
    flow_run_id: str | None,
    started_at: datetime,
    window_days: int,
    dry_run: bool,
) -> list[str]:
    """Record this run as `running`; first mark the rows of runs that died as `abandoned`
    (returns their run ids): see `mark_abandoned_runs`. Call it holding the writer lock."""
    with db.warehouse(settings.duckdb_path, memory_limit=settings.duckdb_memory_limit) as con:
        db.ensure_schema(con)
        abandoned = mark_abandoned_runs(con, started_at, run_id)
        con.execute(
            "insert into ops.runs (run_id, flow_run_id, started_at, status, window_days, "
            "is_dry_run) values (?, ?, ?, 'running', ?, ?)",
            [run_id, flow_run_id, started_at, window_days, dry_run],
        )
    return abandoned


def mark_abandoned_runs(
    con: duckdb.DuckDBPyConnection, now: datetime, own_run_id: str
) -> list[str]:
    """Every `running` row of ops.runs other than this run's becomes `abandoned`.

    Only the holder of the warehouse's writer lock (tasks.writer_lock) writes ops.runs, and the
    lock is released when its holder ends — even when it is killed — so a `running` row found
    by the next holder belongs to a run that died before it could finish its row. Returns the
    run ids marked."""
    rows = con.execute(
        "select run_id from ops.runs where status = 'running' and run_id <> ? order by started_at",
        [own_run_id],
    ).fetchall()
    abandoned = [r for (r,) in rows]
    why = f"the run ended without finishing (killed or crashed); found by run {own_run_id}"
    for run_id in abandoned:
        con.execute(
            "update ops.runs set status = 'abandoned', finished_at = coalesce(finished_at, ?), "
            "summary = coalesce(summary, json_object('abandoned', ?)) "
            "where run_id = ? and status = 'running'",
            [now, why, run_id],
        )
        log.warning("run %s marked abandoned: %s", run_id, why)
    return abandoned


def finish_run(
    settings: Settings,
    run_id: str,
    status: str,
    as_of: str | None,
    dq_verdict: str | None,
    summary: dict,
) -> None:
    """The run's final row: status, verdict, the summary, and its stage timings and row counts
    (also as their own columns, for queries)."""
    keys = ("records_read", "n_inserted", "n_updated", "n_quarantined")
    counts = {
        "loaded": {
            name: {k: st.get(k) for k in keys} for name, st in (summary.get("loads") or {}).items()
        },
        "staging": summary.get("staging_rows"),
    }
    with db.warehouse(settings.duckdb_path, memory_limit=settings.duckdb_memory_limit) as con:
        con.execute(
            "update ops.runs set finished_at = now(), status = ?, as_of_date = ?::date, "
            "dq_verdict = ?, summary = ?::json, stage_seconds = ?::json, row_counts = ?::json "
            "where run_id = ?",
            [
                status,
                as_of,
                dq_verdict,
                json.dumps(summary, default=str),
                json.dumps(summary.get("timings") or {}),
                json.dumps(counts, default=str),
                run_id,
            ],
        )


def record_stage_seconds(settings: Settings, run_id: str, timings: dict[str, float]) -> None:
    """Stage timings known only after the row was final (the snapshot's), in the live file."""
    with db.warehouse(settings.duckdb_path, memory_limit=settings.duckdb_memory_limit) as con:
        con.execute(
            "update ops.runs set stage_seconds = ?::json, "
            "summary = json_merge_patch(summary, json_object('timings', ?::json)) where run_id = ?",
            [json.dumps(timings), json.dumps(timings), run_id],
        )


@task(name="collect-results")
def collect_results(settings: Settings, as_of: str, plan: list[dict]) -> tuple[list, list]:
    """Health and suggestion rows for the artifacts and the CLI."""
    with db.warehouse(settings.duckdb_path, memory_limit=settings.duckdb_memory_limit) as con:
        return reporting.health_rows(con, as_of), reporting.suggestion_rows(con, as_of, plan)
