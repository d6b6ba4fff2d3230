"""The data-quality gate against planted source failures, one at a time.

Small generated demo exports (63 days, 400 users) go through the real pipeline functions: load ->
staging -> input gate (raw, staging, mapping coverage) -> marts -> mart gate -> write-back plan.
For each plant the test asserts the verdict per source, the quarantine counts (load and validate
stage, with rows in = accepted + quarantined), the confidence change (and that the suggestion
says why) and which suggestions write-back skips as blocked.
"""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tasks import catalog as catalog_mod
from tasks import contracts, db, load, quality, transform, writeback
from tasks.clients.zendesk import ZENDESK_TICKETS_SPEC
from tasks.demo_data import DemoConfig, generate_demo_data
from tasks.redact import register_duckdb
from tasks.settings import DEFAULT_CATALOG, Settings
from tasks.trackers.markdown import MarkdownTracker

# The gate judges against the run's real start (future bound, records loaded this run), so the
# demo data ends yesterday, like a nightly run's.
END = datetime.now(UTC).date() - timedelta(days=1)
SALT = "matrix-salt"
FILES = (
    (contracts.POSTHOG_EVENTS, "posthog/*.jsonl"),
    (ZENDESK_TICKETS_SPEC, "zendesk/*.json"),
    (contracts.GITHUB_ISSUES, "github/*.json"),
)
VENDORS = ("github", "posthog", "zendesk")


@dataclass
class Run:
    verdict: str  # pass | warn | degraded
    sources: dict[str, dict[str, Any]]  # source kind -> quality.source_status row
    tables: dict[str, quality.TableVerdict]  # suite name -> verdict
    load_quarantined: dict[str, int]  # source -> rows quarantined at load this run
    load_rules: dict[str, dict[str, int]]
    validate_quarantined: dict[str, int]  # staging table -> rows in quarantine
    validate_reasons: dict[str, int]  # quarantine reason -> rows (validate stage)
    health: dict[str, dict[str, Any]]  # feature -> n_users, confidence, confidence_reasons
    suggestions: dict[str, dict[str, Any]]  # fingerprint -> suggestion row
    plan: dict[str, writeback.PlanItem]


def run_pipeline(data: Path, db_path: Path, run_id: str, tracker_dir: Path) -> Run:
    started = datetime.now(UTC)
    load_quarantined: dict[str, int] = {}
    load_rules: dict[str, dict[str, int]] = {}
    with db.warehouse(db_path) as con:
        db.ensure_schema(con)
        register_duckdb(con, SALT)
        for spec, pattern in FILES:
            stats = load.load_source(con, spec, str(data / pattern), run_id)
            # rows in = landed + superseded + dropped + quarantined, for every load
            assert stats.records_read == (
                stats.n_landed + stats.n_superseded + stats.n_dropped + stats.n_quarantined
            )
            load_quarantined[spec.source] = stats.n_quarantined
            load_rules[spec.source] = dict(stats.quarantine_reasons)
        transform.build_staging(con, SALT)
    gate = quality.check_inputs(
        db_path,
        quality.GateParams(
            run_id=run_id, run_started_at=started, vendors=VENDORS, catalog_path=DEFAULT_CATALOG
        ),
    )
    for v in gate.verdicts:
        assert v.rows_in == v.rows_accepted + v.rows_quarantined, v
    with db.warehouse(db_path) as con:
        catalog_mod.publish_catalog(con, catalog_mod.load_catalog(DEFAULT_CATALOG))
        transform.build_marts(
            con,
            transform.ScoreParams(
                as_of=gate.as_of,
                window_days=28,
                weights=Settings().score.weights.normalised(),
                run_id=run_id,
            ),
        )
    marts = quality.check_marts(db_path, run_id, gate.as_of, started)
    with db.warehouse(db_path) as con:
        validate_quarantined = dict(
            con.sql(
                "select table_name, count(distinct record_key) from quality.quarantine "
                "where stage = 'validate' group by all"
            ).fetchall()
        )
        validate_reasons = dict(
            con.sql(
                "select reason, count(*) from quality.quarantine where stage = 'validate' "
                "group by all"
            ).fetchall()
        )
        health = {
            r[0]: {"n_users": r[1], "confidence": r[2], "confidence_reasons": r[3]}
            for r in con.execute(
                "select feature_key, n_users, confidence, confidence_reasons "
                "from marts.feature_health where as_of_date = ?",
                [gate.as_of],
            ).fetchall()
        }
        suggestions = writeback.load_suggestions(con, gate.as_of.isoformat())
        plan = writeback.plan_writeback(con, MarkdownTracker(tracker_dir), suggestions, 50)
    return Run(
        verdict=quality.run_verdict(gate.verdicts + marts.verdicts),
        sources={s["source_kind"]: s for s in gate.sources},
        tables={v.table: v for v in gate.verdicts + marts.verdicts},
        load_quarantined=load_quarantined,
        load_rules=load_rules,
        validate_quarantined=validate_quarantined,
        validate_reasons=validate_reasons,
        health=health,
        suggestions={s["fingerprint"]: s for s in suggestions},
        plan={p.fingerprint: p for p in plan},
    )


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("matrix")
    data = root / "data"
    manifest = generate_demo_data(
        DemoConfig(out_dir=data, end_date=END, days=63, users=400, accounts=40)
    )
    run = run_pipeline(data, root / "clean.duckdb", "clean-1", root / "tracker")
    return {
        "root": root,
        "data": data,
        "db": root / "clean.duckdb",
        "run": run,
        "manifest": manifest,
    }


def fresh(clean, tmp_path: Path) -> Path:
    """A copy of the clean exports to plant one failure in; loaded into an empty warehouse."""
    shutil.copytree(clean["data"], tmp_path / "data")
    return tmp_path / "data"


def events_file(data: Path, day: date) -> Path:
    return data / "posthog" / f"events-{day.isoformat()}.jsonl"


def rewrite_lines(path: Path, change) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    path.write_text("\n".join(change(lines)) + "\n", encoding="utf-8")
    return lines


def planted(clean, tmp_path, plant, *, incremental: bool = False) -> Run:
    data = fresh(clean, tmp_path)
    plant(data)
    db_path = tmp_path / "w.duckdb"
    if incremental:  # the next night of an existing warehouse
        shutil.copy(clean["db"], db_path)
    return run_pipeline(data, db_path, "planted-1", tmp_path / "tracker")


# --- assertions shared by the matrix ------------------------------------------------------------


def assert_confidence(run: Run, clean_run: Run, factors: dict[str, float]) -> float:
    """Feature confidence = evidence x the product of the source factors, and says why.
    Returns the mean confidence ratio against the clean run."""
    dq = 1.0
    for kind, factor in factors.items():
        assert run.sources[kind]["confidence_factor"] == factor, kind
        dq *= factor
    for feature, h in run.health.items():
        assert h["confidence"] == pytest.approx(min(1.0, h["n_users"] / 30) * dq, abs=1e-3)
        reasons = h["confidence_reasons"] or ""
        for kind, factor in factors.items():
            assert (f"{kind}: " in reasons) == (factor < 1), (feature, reasons)
    for fp, s in run.suggestions.items():
        if dq < 1:  # the suggestion itself says why its confidence is lower
            assert (
                s["confidence_reasons"]
                and "critical" in s["confidence_reasons"]
                or ("warning" in s["confidence_reasons"])
            ), fp
            assert "Confidence lowered" in run.plan[fp].body, fp
    ratios = [
        run.health[f]["confidence"] / clean_run.health[f]["confidence"]
        for f in run.health
        if clean_run.health[f]["confidence"]
    ]
    return sum(ratios) / len(ratios)


def blocked(run: Run) -> set[str]:
    out = {fp for fp, s in run.suggestions.items() if s["is_blocked"]}
    for fp in out:  # write-back skips them and says so
        assert run.plan[fp].action == "skip" and "blocked" in run.plan[fp].reason, fp
    return out


def depending_on(run: Run, kind: str) -> set[str]:
    return {fp for fp, s in run.suggestions.items() if kind in s["depends_on"]}


def load_delta(run: Run, clean_run: Run, source: str) -> int:
    return run.load_quarantined[source] - clean_run.load_quarantined[source]


def validate_delta(run: Run, clean_run: Run, table: str) -> int:
    key = f"staging.{table}"
    return run.validate_quarantined.get(key, 0) - clean_run.validate_quarantined.get(key, 0)


# --- the clean run ----------------------------------------------------------------------------


def test_clean_exports_pass_and_write_everything(clean):
    run = clean["run"]
    assert run.verdict == "pass", {t: v.reason for t, v in run.tables.items() if v.reason}
    assert {k: s["verdict"] for k, s in run.sources.items()} == {
        "bugs": "pass",
        "tickets": "pass",
        "usage": "pass",
    }
    assert set(run.tables) >= {
        "raw_posthog__events",
        "raw_zendesk__tickets",
        "raw_github__issues",
        "stg_usage_events",
        "int_tickets_mapped",
        "feature_health_components",
        "backlog_suggestions",
    }
    # The demo's own malformed records: 3 posthog lines and 1 zendesk ticket at load (the
    # duplicate line, bad JSON, no id), the wrong-typed ones in validation (named by their
    # field); the unknown enum values (a zendesk priority, a github state) stay, as 'unknown'.
    assert run.load_quarantined == {"posthog": 3, "zendesk": 1, "github": 1}
    assert sum(run.validate_quarantined.values()) == 2
    assert run.validate_reasons["wrong_type:timestamp"] == 1
    assert run.validate_reasons["wrong_type:created_at"] == 1
    assert_confidence(run, run, {"usage": 1.0, "tickets": 1.0, "bugs": 1.0})
    assert run.suggestions and not blocked(run)
    assert all(p.action == "create" for p in run.plan.values())


# --- the matrix -------------------------------------------------------------------------------


def test_missing_day_fails_usage_and_blocks_every_suggestion(clean, tmp_path):
    day = END - timedelta(days=10)
    run = planted(clean, tmp_path, lambda data: events_file(data, day).unlink())
    base = clean["run"]

    assert run.verdict == "degraded"
    assert (
        run.sources["usage"]["verdict"] == "fail" and run.sources["usage"]["is_writeback_blocked"]
    )
    assert run.sources["tickets"]["verdict"] == run.sources["bugs"]["verdict"] == "pass"
    events = run.tables["stg_usage_events"]
    assert events.failed == [
        "volume: no day of the checked window has under half the events of the same weekday "
        "in the 4 weeks before (a missing or partial day)"
    ]
    assert f"posthog {day.isoformat()}: 0 rows" in events.reason
    # nothing to quarantine: the rows never arrived
    assert load_delta(run, base, "posthog") == 0
    assert validate_delta(run, base, "stg_usage_events") == 0
    ratio = assert_confidence(run, base, {"usage": 0.5, "tickets": 1.0, "bugs": 1.0})
    assert ratio < 0.55
    # every suggestion uses usage: none is written
    assert run.suggestions and blocked(run) == set(run.suggestions) == depending_on(run, "usage")


def test_duplicated_export_is_quarantined_at_load_and_changes_nothing(clean, tmp_path):
    day = END - timedelta(days=5)
    n_lines = {}

    def plant(data):
        original = events_file(data, day)
        copy = original.with_name("events-resent-copy.jsonl")
        shutil.copy(original, copy)
        n_lines["copy"] = len(copy.read_text(encoding="utf-8").splitlines())

    run = planted(clean, tmp_path, plant)
    base = clean["run"]
    assert run.verdict == "pass"
    assert load_delta(run, base, "posthog") == n_lines["copy"] > 100
    assert run.load_rules["posthog"]["duplicate"] == n_lines["copy"] + 1  # + the demo's own
    assert validate_delta(run, base, "stg_usage_events") == 0
    assert run.tables["stg_usage_events"].rows_in == base.tables["stg_usage_events"].rows_in
    assert assert_confidence(run, base, {"usage": 1.0, "tickets": 1.0, "bugs": 1.0}) == 1.0
    assert not blocked(run)
    assert {fp: p.action for fp, p in run.plan.items()} == {
        fp: p.action for fp, p in base.plan.items()
    }


def test_duplicated_export_under_new_ids_warns_and_lowers_confidence(clean, tmp_path):
    day = END - timedelta(days=5)

    def plant(data):
        original = events_file(data, day)
        resent = []
        for line in original.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
                record["uuid"] = str(uuid.uuid4())
                resent.append(json.dumps(record))
            except (json.JSONDecodeError, TypeError):
                continue
        original.with_name("events-reexport.jsonl").write_text("\n".join(resent) + "\n")

    run = planted(clean, tmp_path, plant)
    base = clean["run"]
    assert run.verdict == "warn"
    assert run.sources["usage"]["verdict"] == "warn"
    assert not run.sources["usage"]["is_writeback_blocked"]
    reason = run.sources["usage"]["reason"]
    assert reason.startswith("warning: volume in stg_usage_events: posthog " + day.isoformat())
    assert "duplicates in stg_usage_events" in reason
    assert load_delta(run, base, "posthog") == 0  # new ids: nothing the loader could catch
    assert validate_delta(run, base, "stg_usage_events") == 0
    ratio = assert_confidence(run, base, {"usage": 0.8, "tickets": 1.0, "bugs": 1.0})
    assert 0.75 < ratio < 0.85
    assert all("usage: warning" in s["confidence_reasons"] for s in run.suggestions.values())
    assert not blocked(run)


def test_renamed_field_is_schema_drift_and_blocks_ticket_suggestions(clean, tmp_path):
    """The help desk renames `priority` on its latest export page, the night after a clean run."""
    renamed = {}

    def plant(data):
        page = sorted((data / "zendesk").glob("*.json"))[-1]
        doc = json.loads(page.read_text(encoding="utf-8"))
        for t in doc["tickets"]:
            t["priority_level"] = t.pop("priority", None)
        renamed["n"] = len(doc["tickets"])
        page.write_text(json.dumps(doc), encoding="utf-8")

    run = planted(clean, tmp_path, plant, incremental=True)
    base = clean["run"]
    assert run.verdict == "degraded"
    assert run.sources["tickets"]["verdict"] == "fail"
    assert run.sources["usage"]["verdict"] == run.sources["bugs"]["verdict"] == "pass"
    raw = run.tables["raw_zendesk__tickets"]
    assert raw.verdict == "fail" and raw.layer == "raw"
    assert "priority: in 100% of records before, 0% of the" in raw.reason  # missing: critical
    assert "priority_level: new field in 100%" in raw.reason  # new: warning
    # staging cannot see it (a NULL priority is allowed): only the raw profile does
    assert run.tables["stg_support_tickets"].verdict == "pass"
    assert set(run.load_rules["zendesk"]) <= {"missing_id"}  # renamed tickets load as updates
    assert validate_delta(run, base, "stg_support_tickets") == 0
    assert_confidence(run, base, {"usage": 1.0, "tickets": 0.5, "bugs": 1.0})
    assert blocked(run) == depending_on(run, "tickets") != set()
    assert any(p.action == "create" for p in run.plan.values())  # usage-only ones still go out


def test_null_ids_are_quarantined_with_their_reason(clean, tmp_path):
    day = END - timedelta(days=3)

    def drop_ids(lines):
        out = []
        for i, line in enumerate(lines):
            record = json.loads(line)
            if i < 3:
                del record["uuid"]  # no event id: the loader cannot keep it
            elif i < 6:
                record["distinct_id"] = None  # no user id: validation quarantines it
            out.append(json.dumps(record))
        return out

    run = planted(clean, tmp_path, lambda data: rewrite_lines(events_file(data, day), drop_ids))
    base = clean["run"]
    assert run.verdict == "pass"  # a handful of bad rows is isolated, not a source failure
    assert load_delta(run, base, "posthog") == 3
    assert run.load_rules["posthog"]["missing_id"] == 3 + 1  # + the demo's own
    assert validate_delta(run, base, "stg_usage_events") == 3
    assert run.validate_reasons["missing_user_key"] == 3
    assert_confidence(run, base, {"usage": 1.0, "tickets": 1.0, "bugs": 1.0})
    assert not blocked(run)


def test_null_user_ids_on_whole_days_fail_usage(clean, tmp_path):
    days = [END - timedelta(days=d) for d in (1, 2, 3)]

    def drop_users(lines):
        return [json.dumps({**json.loads(line), "distinct_id": None}) for line in lines]

    def plant(data):
        for day in days:
            rewrite_lines(events_file(data, day), drop_users)

    run = planted(clean, tmp_path, plant)
    base = clean["run"]
    n_bad = sum(
        len(events_file(clean["data"], day).read_text(encoding="utf-8").splitlines())
        for day in days
    )
    assert n_bad > 0.01 * base.tables["stg_usage_events"].rows_in  # over the 1% tolerance
    assert run.verdict == "degraded" and run.sources["usage"]["verdict"] == "fail"
    assert "user_key is set in stg_usage_events" in run.sources["usage"]["reason"]
    assert validate_delta(run, base, "stg_usage_events") == n_bad  # all of them quarantined
    assert run.validate_reasons["missing_user_key"] == n_bad
    assert_confidence(run, base, {"usage": 0.5, "tickets": 1.0, "bugs": 1.0})
    assert blocked(run) == depending_on(run, "usage") != set()


def test_future_timestamps_are_quarantined(clean, tmp_path):
    day = END - timedelta(days=2)

    def to_future(lines):
        out = []
        for i, line in enumerate(lines):
            record = json.loads(line)
            if i < 5:
                record["timestamp"] = "2031-01-01T00:00:00+00:00"
            out.append(json.dumps(record))
        return out

    run = planted(clean, tmp_path, lambda data: rewrite_lines(events_file(data, day), to_future))
    base = clean["run"]
    assert run.verdict == "pass"
    assert load_delta(run, base, "posthog") == 0
    assert validate_delta(run, base, "stg_usage_events") == 5
    assert run.validate_reasons["occurred_at_out_of_range"] == 5
    assert_confidence(run, base, {"usage": 1.0, "tickets": 1.0, "bugs": 1.0})
    assert not blocked(run)


def test_help_desk_returning_zero_rows_fails_tickets(clean, tmp_path):
    def empty_pages(data):
        for page in (data / "zendesk").glob("*.json"):
            doc = json.loads(page.read_text(encoding="utf-8"))
            doc["tickets"], doc["users"] = [], []
            page.write_text(json.dumps(doc), encoding="utf-8")

    run = planted(clean, tmp_path, empty_pages)
    base = clean["run"]
    assert run.verdict == "degraded"
    assert run.sources["tickets"]["verdict"] == "fail"
    assert run.sources["usage"]["verdict"] == run.sources["bugs"]["verdict"] == "pass"
    assert run.tables["raw_zendesk__tickets"].failed[0].startswith("zendesk delivered records")
    assert (
        "freshness in stg_support_tickets: newest ticket at none"
        in (run.sources["tickets"]["reason"])
    )
    assert run.load_quarantined["zendesk"] == 0
    assert run.tables["stg_support_tickets"].rows_in == 0
    assert_confidence(run, base, {"usage": 1.0, "tickets": 0.5, "bugs": 1.0})
    # no ticket evidence, so no support-spike suggestion; any that uses tickets is blocked
    assert not any(s["kind"] == "investigate" for s in run.suggestions.values())
    assert blocked(run) == depending_on(run, "tickets")


def test_analytics_returning_zero_rows_blocks_everything(clean, tmp_path):
    def empty_files(data):
        for path in (data / "posthog").glob("*.jsonl"):
            path.write_text("", encoding="utf-8")

    run = planted(clean, tmp_path, empty_files)
    assert run.verdict == "degraded" and run.sources["usage"]["verdict"] == "fail"
    assert run.tables["stg_usage_events"].rows_in == 0
    assert blocked(run) == set(run.suggestions)
    assert all(p.action == "skip" for p in run.plan.values())


def test_results_are_stored_per_run(clean):
    con = duckdb.connect(str(clean["db"]), read_only=True)
    try:
        per_layer = dict(
            con.sql(
                "select layer, count(*) from quality.dq_results where run_id = 'clean-1' "
                "group by all"
            ).fetchall()
        )
        statuses = con.sql(
            "select count(*) from quality.table_status where run_id = 'clean-1'"
        ).fetchall()[0][0]
        drift = con.sql("select count(*) from quality.schema_drift").fetchall()[0][0]
        baseline = dict(
            con.sql(
                "select raw_table, count(*) from quality.schema_baseline group by all"
            ).fetchall()
        )
    finally:
        con.close()
    assert set(per_layer) == {"raw", "staging", "intermediate", "marts"}
    assert statuses == len(clean["run"].tables)
    assert drift == 0 and set(baseline) == {
        "raw.posthog__events",
        "raw.zendesk__tickets",
        "raw.github__issues",
    }


def test_broken_mart_invariants_block_every_suggestion(clean, tmp_path):
    """A scoring bug (a component that no longer sums to the score) must not reach a tracker."""
    db_path = tmp_path / "w.duckdb"
    shutil.copy(clean["db"], db_path)
    with db.warehouse(db_path) as con:
        as_of = con.sql("select max(as_of_date) from marts.feature_health").fetchall()[0][0]
        con.execute(
            "update marts.feature_health_components set contribution = contribution + 7 "
            "where component = 'trend' and feature_key = 'exports'"
        )
        con.execute(
            "update marts.feature_health set health_score = 104 where feature_key = 'search'"
        )
    gate = quality.check_marts(db_path, "clean-1", as_of, datetime.now(UTC))
    tables = {v.table: v for v in gate.verdicts}
    assert gate.verdict == "degraded"
    assert tables["feature_health"].failed[0] == "health scores are within 0-100"
    components = tables["feature_health_components"]
    assert components.verdict == "fail"
    assert "exports trend: contribution" in components.reason
    assert f"{as_of} exports: components sum to" in components.reason
    with db.warehouse(db_path) as con:
        suggestions = writeback.load_suggestions(con, as_of.isoformat())
        plan = writeback.plan_writeback(con, MarkdownTracker(tmp_path / "t"), suggestions, 50)
    assert suggestions and all(s["is_blocked"] for s in suggestions)
    assert all("marts (" in s["blocked_by"] for s in suggestions)
    assert all(p.action == "skip" and "blocked" in p.reason for p in plan)
