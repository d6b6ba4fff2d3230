"""GX validation of staging tables in a real DuckDB file: outcomes, severities, failing keys."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from tasks import db, quality
from tasks import validation as v
from tasks.settings import EXPECTATIONS_DIR

MAX_AT = "2026-06-02T00:00:00+00:00"
# reference_at: end of the run's as-of day, for the freshness rules (events end on 2026-05-01).
PARAMS = {
    v.MAX_ALLOWED_AT: MAX_AT,
    "reference_at": "2026-05-02T00:00:00+00:00",
    "as_of": "2026-05-01",
    "run_id": "test",
}
KNOWN_PARAMETERS = {v.MAX_ALLOWED_AT, "reference_at", "as_of", "run_id"}
N_GOOD = 400  # so one or two bad rows per rule stay under 1% and pass `mostly: 0.99`

EVENTS_DDL = """
create table staging.stg_usage_events (
    event_id varchar, source varchar, occurred_at timestamptz, ingested_at timestamptz,
    user_key varchar, account_key varchar, event_name varchar, url_path varchar, properties json
)"""
TICKETS_DDL = """
create table staging.stg_support_tickets (
    ticket_id varchar, source varchar, created_at timestamptz, updated_at timestamptz,
    status varchar, priority varchar, channel varchar, subject varchar, body varchar,
    tags varchar[], requester_key varchar, account_key varchar, is_deleted boolean
)"""
ISSUES_DDL = """
create table staging.stg_bug_issues (
    issue_id varchar, source varchar, url varchar, title varchar, state varchar,
    severity varchar, labels varchar[], components varchar[], created_at timestamptz,
    updated_at timestamptz, closed_at timestamptz, votes integer, is_deleted boolean
)"""


def good_events(con: duckdb.DuckDBPyConnection, n: int, prefix: str = "ev") -> None:
    con.execute(f"""
        insert into staging.stg_usage_events
        select '{prefix}-' || i, 'posthog',
               timestamptz '2026-05-01 00:00:00+00' + to_minutes(i),
               timestamptz '2026-05-01 00:05:00+00' + to_minutes(i),
               'user-' || (i % 37), 'acct-' || (i % 5), 'export_started', '/exports', '{{}}'
        from range({n}) t(i)""")


def event(
    con,
    key,
    *,
    source="posthog",
    occurred_at="2026-05-10 12:00:00+00",
    event_name="export_started",
    user_key="user-1",
):
    con.execute(
        "insert into staging.stg_usage_events values "
        "(?, ?, ?::timestamptz, ?::timestamptz, ?, 'acct-1', ?, '/x', '{}')",
        [key, source, occurred_at, "2026-05-10 12:01:00+00", user_key, event_name],
    )


def make_db(path: Path, build) -> Path:
    con = duckdb.connect(str(path))
    db.ensure_schema(con)  # the warehouse contract, and the (empty) quality.* relations the
    quality.ensure_quality_tables(con)  # table-level rules read
    build(con)
    _add_staging_check_columns(con)
    _record_newest(con)
    con.close()  # the caller closes its connection before validating (the documented contract)
    return path


def _record_newest(con: duckdb.DuckDBPyConnection) -> None:
    """What the gate records per table before validating (quality.validation_batches): the
    newest record up to max_allowed_at (the suite's meta.newest_record), read by the freshness
    rules. Here every row is the batch."""
    tables = {
        f"{s}.{t}"
        for s, t in con.sql(
            "select table_schema, table_name from information_schema.tables"
        ).fetchall()
    }
    for path in sorted(EXPECTATIONS_DIR.glob("*.json")):
        suite = v.load_suite(path)
        expr = suite.get("meta", {}).get("newest_record")
        table = suite.get("meta", {}).get("table") or f"staging.{suite['name']}"
        if not expr or table not in tables:
            continue
        columns = {d[0] for d in con.sql(f"select * from {table} limit 0").description}
        if not set(re.findall(r"\w+", expr)) & columns:
            continue  # a test's deliberately broken table
        con.execute(
            f"""insert into quality.validation_batches
                select $1, $2, $3, 'full', 'test', null, null, count(*),
                       max({expr}) filter (where {expr} <= $4::timestamptz), 'h', now()
                from {table}""",
            [PARAMS["run_id"], table, suite["name"], PARAMS[v.MAX_ALLOWED_AT]],
        )


def _add_staging_check_columns(con: duckdb.DuckDBPyConnection) -> None:
    """The staging unions' check columns (type_error; the vendor value of an unknown enum),
    NULL unless a test sets them, added after the test's own columns so its inserts stay
    positional."""
    extra = {
        "stg_usage_events": ["type_error"],
        "stg_support_tickets": ["type_error", "status_unknown", "priority_unknown"],
        "stg_bug_issues": ["type_error", "state_unknown", "severity_unknown"],
    }
    have = {
        r[0]
        for r in con.execute(
            "select table_name from information_schema.tables where table_schema = 'staging'"
        ).fetchall()
    }
    for table, cols in extra.items():
        if table in have:
            for col in cols:
                con.execute(f"alter table staging.{table} add column if not exists {col} varchar")


def validate(path: Path, table: str, key: str, params=PARAMS) -> v.TableValidation:
    return v.validate_table(path, "staging", table, key, EXPECTATIONS_DIR / f"{table}.json", params)


def by_rule(result: v.TableValidation) -> dict[tuple[str, str | None], v.ExpectationOutcome]:
    return {(o.expectation_type, o.column): o for o in result.outcomes}


# --- stg_usage_events: a handful of planted bad rows ------------------------------------------


@pytest.fixture(scope="module")
def events_few_bad(tmp_path_factory) -> tuple[Path, v.TableValidation]:
    def build(con):
        con.execute(EVENTS_DDL)
        good_events(con, N_GOOD)
        event(con, None)  # null key
        event(con, "bad-source", source="segment")  # unknown enum
        event(con, "bad-old", occurred_at="1999-12-31 23:59:59+00")  # before 2000
        event(con, "bad-future", occurred_at="2026-06-02 00:00:01+00")  # after max_allowed_at
        event(con, "bad-name", event_name=None)  # required field null
        event(con, "dup-1")
        event(con, "dup-1")  # duplicate key

    path = make_db(tmp_path_factory.mktemp("few") / "w.duckdb", build)
    return path, validate(path, "stg_usage_events", "event_id")


def test_few_bad_rows_are_listed_for_quarantine_without_failing_row_rules(events_few_bad):
    _, result = events_few_bad
    rules = by_rule(result)
    n_rows = N_GOOD + 7

    missing_key = rules["expect_column_values_to_not_be_null", "event_id"]
    assert (missing_key.success, missing_key.unexpected_count) == (True, 1)
    assert missing_key.failing_keys == [] and missing_key.null_key_count == 1
    assert missing_key.element_count == n_rows

    expected = {
        ("expect_column_values_to_be_in_set", "source"): ["bad-source"],
        ("expect_column_values_to_be_between", "occurred_at"): ["bad-future", "bad-old"],
        ("expect_column_values_to_not_be_null", "event_name"): ["bad-name"],
        ("expect_column_values_to_not_be_null", "user_key"): [],
    }
    for rule, keys in expected.items():
        o = rules[rule]
        assert o.success, rule  # under 1% bad: mostly=0.99 tolerates, quarantine handles them
        assert o.row_level and o.severity == "critical"
        assert o.failing_keys == keys and o.failing_keys_complete
        assert o.unexpected_count == len(keys)

    assert result.quarantine() == {
        "unknown_source": ["bad-source"],
        "occurred_at_out_of_range": ["bad-future", "bad-old"],
        "missing_event_name": ["bad-name"],
    }
    assert result.null_key_rows == 1


def test_duplicate_keys_fail_critically_and_are_reported_not_quarantined(events_few_bad):
    _, result = events_few_bad
    unique = by_rule(result)["expect_column_proportion_of_unique_values_to_be_between", "event_id"]
    assert not unique.success and unique.severity == "critical"
    assert unique.row_level is False and unique.quarantine_reason is None
    assert unique.failing_keys == ["dup-1"]
    assert unique.observed_value < 1.0
    assert "dup-1" not in sum(result.quarantine().values(), [])
    assert result.success is False and result.max_severity_failure == "critical"


def test_outcomes_follow_the_suite_with_parameters_resolved(events_few_bad):
    _, result = events_few_bad
    suite = v.load_suite(EXPECTATIONS_DIR / "stg_usage_events.json")
    assert [o.expectation_type for o in result.outcomes] == [
        e["type"] for e in suite["expectations"]
    ]
    assert result.suite_name == "stg_usage_events" and result.params == PARAMS
    between = "expect_column_values_to_be_between"
    ranges = [o for o in result.outcomes if o.expectation_type == between]
    assert {o.kwargs["max_value"] for o in ranges} == {MAX_AT}
    assert all(o.kwargs["min_value"] == "2000-01-01T00:00:00+00:00" for o in ranges)
    json.dumps([o.kwargs for o in result.outcomes])  # ready for quality.dq_results
    json.dumps([o.observed_value for o in result.outcomes])
    assert result.seconds > 0


def test_validation_releases_the_file(events_few_bad):
    path, _ = events_few_bad
    # Same process, other settings: raises while any validation connection is still open.
    con = duckdb.connect(str(path), config={"memory_limit": "1GB"})
    con.close()
    # Another process can take the write lock.
    code = f"import duckdb; duckdb.connect({str(path)!r}).execute('select 1').fetchall()"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --- a large share of bad rows fails the rule; keys stay complete ----------------------------


def test_large_share_of_bad_rows_fails_critical_rule_with_complete_keys(tmp_path):
    n_bad = 60  # 60 / 460 = 13% > 1%, and more than GX's partial list (20) would hold

    def build(con):
        con.execute(EVENTS_DDL)
        good_events(con, N_GOOD)
        con.execute(f"""
            insert into staging.stg_usage_events
            select 'noname-' || lpad(i::varchar, 3, '0'), 'posthog',
                   timestamptz '2026-05-02 00:00:00+00', null, 'user-1', null, null, null, null
            from range({n_bad}) t(i)""")

    path = make_db(tmp_path / "w.duckdb", build)
    result = validate(path, "stg_usage_events", "event_id")
    o = by_rule(result)["expect_column_values_to_not_be_null", "event_name"]
    assert not o.success and o.severity == "critical"
    assert o.unexpected_count == n_bad and len(o.failing_keys) == n_bad > v.PARTIAL_UNEXPECTED_COUNT
    assert o.failing_keys == [f"noname-{i:03d}" for i in range(n_bad)]
    assert result.max_severity_failure == "critical"
    # ingested_at is NULL on those rows: NULLs are the not-null rules' business, not the range's
    assert by_rule(result)["expect_column_values_to_be_between", "ingested_at"].success


def test_clean_table_passes(tmp_path):
    def build(con):
        con.execute(EVENTS_DDL)
        good_events(con, 50)

    result = validate(make_db(tmp_path / "w.duckdb", build), "stg_usage_events", "event_id")
    assert result.success and result.max_severity_failure is None
    assert all(o.failing_keys == [] and o.null_key_count == 0 for o in result.outcomes)


# --- tickets and bugs --------------------------------------------------------------------------


def test_tickets_enums_null_priority_and_warning_severity(tmp_path):
    def build(con):
        con.execute(TICKETS_DDL)
        con.execute(f"""
            insert into staging.stg_support_tickets
            select 'zendesk:' || i, 'zendesk', timestamptz '2026-04-01 00:00:00+00' + to_hours(i),
                   timestamptz '2026-04-02 00:00:00+00' + to_hours(i),
                   (['new','open','pending','hold','solved','closed','deleted'])[1 + i % 7],
                   case when i % 3 = 0 then null
                        else (['urgent','high','normal','low'])[1 + i % 4] end,
                   'email', 's', 'b', ['exports'], 'r', 'a', false
            from range({N_GOOD}) t(i)""")
        rows = [
            ("zendesk:bad-status", "escalated", "normal", "2026-04-01"),
            ("zendesk:no-status", None, "normal", "2026-04-01"),
            ("zendesk:no-created", "open", "normal", None),
        ] + [(f"zendesk:p{i:02d}", "open", "p1", "2026-04-01") for i in range(30)]
        for key, status, priority, created in rows:
            con.execute(
                "insert into staging.stg_support_tickets values (?, 'zendesk', ?::timestamptz, "
                "null, ?, ?, 'web', 's', 'b', [], 'r', 'a', false)",
                [key, created, status, priority],
            )

    params = {**PARAMS, "reference_at": "2026-04-19T00:00:00+00:00"}  # tickets end on 04-18
    path = make_db(tmp_path / "w.duckdb", build)
    result = validate(path, "stg_support_tickets", "ticket_id", params)
    rules = by_rule(result)
    status = rules["expect_column_values_to_be_in_set", "status"]
    assert status.success and status.failing_keys == ["zendesk:bad-status"]
    assert rules["expect_column_values_to_not_be_null", "status"].failing_keys == [
        "zendesk:no-status"
    ]
    assert rules["expect_column_values_to_not_be_null", "created_at"].failing_keys == [
        "zendesk:no-created"
    ]
    priority = rules["expect_column_values_to_be_in_set", "priority"]
    # ~134 NULL priorities are allowed; 30 unknown values of ~300 non-null fail the warning rule
    assert not priority.success and priority.severity == "warning" and priority.row_level
    assert priority.failing_keys == [f"zendesk:p{i:02d}" for i in range(30)]
    assert result.max_severity_failure == "warning"  # no critical rule failed
    assert result.quarantine()["unknown_priority"] == priority.failing_keys


def test_bug_issues_rules(tmp_path):
    def build(con):
        con.execute(ISSUES_DDL)
        con.execute(f"""
            insert into staging.stg_bug_issues
            select 'github:I_' || i, 'github', 'https://github.com/acme/a/issues/' || i,
                   'Issue ' || i, case when i % 2 = 0 then 'open' else 'closed' end,
                   case when i % 5 = 0 then null else 's' || (1 + i % 4) end,
                   ['bug'], [], timestamptz '2026-03-01 00:00:00+00' + to_hours(i),
                   timestamptz '2026-03-02 00:00:00+00' + to_hours(i), null, i % 7, false
            from range({N_GOOD}) t(i)""")
        for key, title, state, severity, created in [
            ("github:no-title", None, "open", "s2", "2026-03-01"),
            ("github:weird-state", "t", "merged", "s2", "2026-03-01"),
            ("github:s5", "t", "open", "s5", "2026-03-01"),
            ("github:future", "t", "open", "s1", "2030-01-01"),
        ]:
            con.execute(
                "insert into staging.stg_bug_issues values (?, 'github', 'u', ?, ?, ?, [], [], "
                "?::timestamptz, null, null, 0, false)",
                [key, title, state, severity, created],
            )

    result = validate(make_db(tmp_path / "w.duckdb", build), "stg_bug_issues", "issue_id")
    assert result.quarantine() == {
        "missing_title": ["github:no-title"],
        "unknown_state": ["github:weird-state"],
        "unknown_severity": ["github:s5"],
        "created_at_out_of_range": ["github:future"],
    }
    assert result.success and result.max_severity_failure is None


# --- the DuckDB fix and the pinned versions ---------------------------------------------------


def test_versions_are_the_ones_the_duckdb_fix_was_verified_with():
    # Upgrading GX or duckdb-engine? Re-run this file, re-read GX's
    # SqlAlchemyExecutionEngine.execute_query and update the pins in tasks/validation.py.
    assert importlib.metadata.version("great_expectations") == v.TESTED_GX_VERSION
    assert importlib.metadata.version("duckdb_engine") == v.TESTED_DUCKDB_ENGINE_VERSION


def test_duckdb_metrics_are_real_not_empty(tmp_path):
    """Fails if the result-buffering fix stops working: GX would then see empty metrics."""

    def build(con):
        con.execute(EVENTS_DDL)
        good_events(con, 123)
        event(con, "no-user", user_key=None)

    result = validate(make_db(tmp_path / "w.duckdb", build), "stg_usage_events", "event_id")
    o = by_rule(result)["expect_column_values_to_not_be_null", "user_key"]
    assert o.element_count == 124
    assert o.unexpected_count == 1 and o.failing_keys == ["no-user"]


def test_gx_still_drops_duckdb_results_without_the_fix(tmp_path):
    """Documents why the fix exists; when this fails, GX fixed it upstream and the fix can go."""
    import sqlalchemy as sa

    v._import_gx()
    from great_expectations.execution_engine import SqlAlchemyExecutionEngine

    path = make_db(tmp_path / "w.duckdb", lambda con: None)
    engine = SqlAlchemyExecutionEngine(connection_string=f"duckdb:///{path}")
    query = sa.select(sa.literal(42))
    try:
        assert engine.execute_query(query).fetchall() == [(42,)]  # patched
        unpatched = SqlAlchemyExecutionEngine.execute_query.__wrapped__
        assert unpatched(engine, query).fetchall() == []
    finally:
        engine.engine.dispose()


def test_gx_errors_raise_instead_of_reading_as_bad_data(tmp_path):
    def build(con):
        con.execute("create table staging.stg_usage_events (event_id varchar, source varchar)")
        con.execute("insert into staging.stg_usage_events values ('a', 'posthog')")

    path = make_db(tmp_path / "w.duckdb", build)
    with pytest.raises(v.ValidationRuntimeError, match="event_name"):
        validate(path, "stg_usage_events", "event_id")
    with pytest.raises(v.ValidationRuntimeError, match="stg_bug_issues"):
        validate(path, "stg_bug_issues", "issue_id")
    duckdb.connect(str(path), config={"threads": 1}).close()  # released after failures too


def test_open_connection_in_same_process(tmp_path):
    def build(con):
        con.execute(EVENTS_DDL)
        good_events(con, 10)

    path = make_db(tmp_path / "w.duckdb", build)
    holder = duckdb.connect(str(path))  # default settings: validation shares that instance
    try:
        assert validate(path, "stg_usage_events", "event_id").success
        assert holder.execute("select count(*) from staging.stg_usage_events").fetchall() == [(10,)]
    finally:
        holder.close()
    holder = duckdb.connect(str(path), config={"memory_limit": "1GB"})
    try:
        with pytest.raises(v.WarehouseInUseError):
            validate(path, "stg_usage_events", "event_id")
    finally:
        holder.close()


# --- suites and parameters ----------------------------------------------------------------------


@pytest.mark.parametrize("table", ["stg_usage_events", "stg_support_tickets", "stg_bug_issues"])
def test_repo_suites_are_well_formed(table):
    suite = v.load_suite(EXPECTATIONS_DIR / f"{table}.json")
    assert suite["name"] == table
    assert v.suite_parameters(suite) | v.suite_variables(suite) <= KNOWN_PARAMETERS
    row_level = [e for e in suite["expectations"] if e["meta"]["row_level"]]
    assert row_level and all(e["kwargs"].get("mostly") == 0.99 for e in row_level)


def test_every_suite_is_named_like_its_table_and_explains_each_rule():
    from tasks.sources import VENDORS

    paths = sorted(EXPECTATIONS_DIR.glob("*.json"))
    names = {p.stem for p in paths}
    assert {f"raw_{x.source}__{x.stream}" for x in VENDORS} <= names
    assert {t.table for t in quality.STAGING_TABLES} <= names
    assert {t for t, _, _ in quality.COVERAGE_TABLES} | {t for t, _ in quality.MART_TABLES} <= names
    for path in paths:
        suite = v.load_suite(path)
        assert suite["name"] == path.stem
        assert v.suite_parameters(suite) | v.suite_variables(suite) <= KNOWN_PARAMETERS, path
        for exp in suite["expectations"]:
            assert exp.get("description"), (path.name, exp["type"])
            if not path.stem.startswith("stg_"):
                assert not exp["meta"]["row_level"], path.name  # only staging rows are quarantined


def test_unexpected_rows_rules_report_their_rows_and_need_their_variables(tmp_path):
    def build(con):
        con.execute(EVENTS_DDL)
        good_events(con, 20)

    path = make_db(tmp_path / "w.duckdb", build)
    suite = {
        "name": "t",
        "expectations": [
            {
                "type": "unexpected_rows_expectation",
                "kwargs": {
                    "unexpected_rows_query": "select event_id, 'late ' || event_id as detail "
                    "from {batch} where occurred_at > getvariable('reference_at')::timestamptz "
                    "- interval 1 hour order by event_id"
                },
                "severity": "warning",
                "description": "lateness: nothing after the hour before the reference",
                "meta": {"row_level": False},
            },
            {
                "type": "unexpected_rows_expectation",
                "kwargs": {
                    "unexpected_rows_query": "select e.event_id from {batch} as e inner join "
                    "staging.stg_usage_events as f on e.event_id = f.event_id "
                    "where e.event_id is null"
                },
                "severity": "critical",
                "description": "joins alias the batch themselves",
                "meta": {"row_level": False},
            },
        ],
    }
    suite_path = tmp_path / "t.json"
    suite_path.write_text(json.dumps(suite))
    params = {**PARAMS, "reference_at": "2026-05-01T01:18:00+00:00"}
    result = v.validate_table(path, "staging", "stg_usage_events", "event_id", suite_path, params)
    late, joined = result.outcomes
    assert not late.success and late.severity == "warning" and not late.row_level
    assert late.observed_value["unexpected_rows"] == 1 and late.details == ["late ev-19"]
    assert late.label == "lateness: nothing after the hour before the reference"
    assert joined.success and result.max_severity_failure == "warning"
    no_reference = {k: x for k, x in PARAMS.items() if k != "reference_at"}
    with pytest.raises(v.SuiteError, match="reference_at"):
        v.validate_table(path, "staging", "stg_usage_events", "event_id", suite_path, no_reference)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: e.update(severity="fatal"), "severity"),
        (lambda e: e["meta"].pop("row_level"), "row_level"),
        (lambda e: e["meta"].pop("quarantine_reason"), "quarantine_reason"),
        (lambda e: e.update(type="expect_column_values_to_be_unique"), "not quarantined"),
    ],
)
def test_load_suite_rejects_bad_suites(tmp_path, change, message):
    suite = json.loads((EXPECTATIONS_DIR / "stg_usage_events.json").read_text())
    row_rule = next(e for e in suite["expectations"] if e["meta"]["row_level"])
    change(row_rule)
    path = tmp_path / "s.json"
    path.write_text(json.dumps(suite))
    with pytest.raises(v.SuiteError, match=message):
        v.load_suite(path)


def test_default_future_bound_is_now_plus_one_day():
    now = datetime(2026, 11, 20, 2, 30, tzinfo=UTC)
    assert v.default_params(now) == {v.MAX_ALLOWED_AT: "2026-11-21T02:30:00+00:00"}


def test_importing_the_module_does_not_import_gx():
    code = "import sys, tasks.validation; assert 'great_expectations' not in sys.modules"
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, timeout=60)


def test_raw_rules_report_duplicates_staleness_and_drift(tmp_path):
    def build(con):
        con.execute("""
            insert into raw.zendesk__tickets
            select i % 9, '2026-04-0' || (1 + i % 9) || 'T10:00:00Z', {'id': i}::json,
                   null, 'b1', now()
            from range(10) t(i)""")  # ticket 0 twice; newest cursor 2026-04-09
        con.execute("""
            insert into quality.schema_drift (raw_table, field, change, detail) values
            ('raw.zendesk__tickets', 'id', 'retyped', 'id: NUMBER before, now VARCHAR'),
            ('raw.zendesk__tickets', 'extra', 'new', 'extra: new field'),
            ('raw.github__issues', 'title', 'missing', 'title: gone')""")

    path = make_db(tmp_path / "w.duckdb", build)
    result = v.validate_table(
        path,
        "raw",
        "zendesk__tickets",
        "ticket_id",
        EXPECTATIONS_DIR / "raw_zendesk__tickets.json",
        PARAMS,
    )
    failed = {o.label.split(":")[0]: o for o in result.outcomes if not o.success}
    assert failed["duplicates"].details == ["0 appears 2 times"]
    assert failed["duplicates"].severity == "critical"
    assert failed["freshness"].severity == "warning"  # per vendor; staging fails the kind
    assert failed["freshness"].details[0].startswith("newest zendesk record at 2026-04-09")
    drift = [o for o in result.outcomes if (o.description or "").startswith("schema drift")]
    assert [(o.success, o.severity, o.details) for o in drift] == [
        (True, "critical", []),  # missing: only github's row, not this table's
        (False, "critical", ["id: NUMBER before, now VARCHAR"]),
        (False, "warning", ["extra: new field"]),
    ]


def test_mass_failures_list_a_capped_sample_and_keep_the_full_query(tmp_path, monkeypatch):
    monkeypatch.setattr(v, "KEY_LIST_LIMIT", 10)

    def build(con):
        con.execute(EVENTS_DDL)
        good_events(con, N_GOOD)
        con.execute("""
            insert into staging.stg_usage_events
            select 'noname-' || lpad(i::varchar, 3, '0'), 'posthog',
                   timestamptz '2026-05-01 00:00:00+00', null, 'u', null, null, null, null
            from range(30) t(i)""")

    path = make_db(tmp_path / "w.duckdb", build)
    result = validate(path, "stg_usage_events", "event_id")
    o = by_rule(result)["expect_column_values_to_not_be_null", "event_name"]
    assert o.unexpected_count == 30 and o.failing_keys == [f"noname-{i:03d}" for i in range(10)]
    assert not o.failing_keys_complete
    con = duckdb.connect(str(path), read_only=True)
    con.execute("set search_path = 'staging'")
    n = con.sql(f"select count(*) from ({o.failing_keys_query})").fetchall()[0][0]
    con.close()
    assert n == 30  # quarantine runs this query inside DuckDB, whatever the cap
