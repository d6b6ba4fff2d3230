"""Types are enforced at staging: a wrongly typed field quarantines its row with the reason
wrong_type:<field> (never a silent NULL), and an unknown enum value keeps the row as 'unknown'
with a data-quality warning. Raw rows are inserted directly (the loader is tested elsewhere), the
staging SQL and the real GX suites run on a real DuckDB file."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tasks import db, quality, transform
from tasks.redact import register_duckdb
from tasks.sources import BY_SOURCE
from tasks.validation import load_suite, validate_table

SALT = "types-salt"
TS = "2026-11-20T10:00:00Z"
EPOCH = 1_795_000_000  # 2026-11-18

# One valid record per vendor (the fields its staging model reads).
GOOD: dict[str, dict] = {
    "posthog": {
        "event": "export_started",
        "distinct_id": "user-1",
        "event_time": TS,
        "properties": {"$pathname": "/exports", "$groups": {"company": "acct-1"}},
    },
    "amplitude": {
        "event_type": "export_started",
        "user_id": "user-1",
        "event_time": "2026-11-20 10:00:00.000",
        "event_properties": {"path": "/exports"},
        "groups": {"company": ["acct-1"]},
    },
    "mixpanel": {
        "event": "export_started",
        "properties": {"time": EPOCH, "distinct_id": "user-1", "company_id": "acct-1"},
    },
    "zendesk": {
        "created_at": TS,
        "updated_at": TS,
        "status": "open",
        "priority": "high",
        "via": {"channel": "email"},
        "subject": "Export fails",
        "description": "It fails.",
        "tags": ["export"],
        "requester_id": 42,
        "url": "https://acme.zendesk.com/api/v2/tickets/1.json",
    },
    "intercom": {
        "created_at": EPOCH,
        "updated_at": EPOCH,
        "state": "open",
        "priority": "priority",
        "title": "Export fails",
        "source": {"type": "conversation", "body": "It fails."},
        "tags": {"tags": [{"name": "export"}]},
    },
    "freshdesk": {
        "created_at": TS,
        "updated_at": TS,
        "status": 2,
        "priority": 3,
        "source": 1,
        "subject": "Export fails",
        "description_text": "It fails.",
        "tags": ["export"],
        "requester_id": 7,
    },
    "github": {
        "html_url": "https://github.com/acme/app/issues/1",
        "title": "Export crashes",
        "state": "open",
        "labels": [{"name": "bug"}],
        "created_at": TS,
        "updated_at": TS,
        "reactions": {"+1": 2},
    },
    "jira": {
        "self": "https://acme.atlassian.net/rest/api/3/issue/1",
        "key": "APP-1",
        "fields": {
            "summary": "Export crashes",
            "status": {"statusCategory": {"key": "new"}},
            "priority": {"name": "High"},
            "labels": ["export"],
            "components": [{"name": "Exports"}],
            "created": TS,
            "updated": TS,
        },
    },
    "linear": {
        "url": "https://linear.app/acme/issue/ENG-1",
        "title": "Export crashes",
        "state": {"type": "started", "name": "In Progress"},
        "priority": 2,
        "labels": {"nodes": [{"name": "bug"}]},
        "createdAt": TS,
        "updatedAt": TS,
    },
    "sentry": {
        "permalink": "https://sentry.io/issues/1/",
        "title": "TypeError",
        "culprit": "/exports",
        "level": "error",
        "status": "unresolved",
        "count": "12",
        "userCount": 3,
        "firstSeen": TS,
        "lastSeen": TS,
        "project": {"slug": "app"},
    },
    "accounts": {"arr": 1200.0, "plan": "pro", "segment": "smb", "updated_at": TS},
}

# (vendor, JSON path in the record as a list of keys, wrong value, field named in the reason)
WRONG: list[tuple[str, list[str], object, str]] = [
    ("posthog", ["event"], {"name": "x"}, "event"),
    ("posthog", ["distinct_id"], ["u1", "u2"], "distinct_id"),
    ("posthog", ["event_time"], 1_795_000_000, "timestamp"),
    ("posthog", ["event_time"], "yesterday-ish", "timestamp"),
    ("posthog", ["properties"], "$pathname=/exports", "properties"),
    ("posthog", ["properties", "$groups"], "acct-1", "$groups"),
    ("posthog", ["properties", "$pathname"], {"p": "/x"}, "$pathname"),
    ("amplitude", ["event_type"], {"name": "x"}, "event_type"),
    ("amplitude", ["event_time"], 1_795_000_000, "event_time"),
    ("amplitude", ["event_properties"], "path=/x", "event_properties"),
    ("amplitude", ["groups", "company"], {"id": 1}, "groups.company"),
    ("mixpanel", ["event"], ["a"], "event"),
    ("mixpanel", ["properties", "time"], "2026-11-20", "properties.time"),
    ("mixpanel", ["properties", "distinct_id"], {"id": 1}, "properties.distinct_id"),
    ("zendesk", ["updated_at"], 1_795_000_000, "updated_at"),
    ("zendesk", ["created_at"], "not a date", "created_at"),
    ("zendesk", ["status"], {"name": "open"}, "status"),
    ("zendesk", ["priority"], ["high"], "priority"),
    ("zendesk", ["tags"], "export,billing", "tags"),
    ("zendesk", ["via"], "email", "via"),
    ("zendesk", ["subject"], {"text": "x"}, "subject"),
    ("intercom", ["updated_at"], "2026-11-20T10:00:00Z", "updated_at"),
    ("intercom", ["source"], "conversation", "source"),
    ("intercom", ["tags", "tags"], "export", "tags.tags"),
    ("intercom", ["title"], ["x"], "title"),
    ("freshdesk", ["updated_at"], 1_795_000_000, "updated_at"),
    ("freshdesk", ["status"], {"id": 2}, "status"),
    ("freshdesk", ["tags"], "export", "tags"),
    ("freshdesk", ["spam"], "no", "spam"),
    ("github", ["updated_at"], 1_795_000_000, "updated_at"),
    ("github", ["title"], {"t": "x"}, "title"),
    ("github", ["labels"], "bug", "labels"),
    ("github", ["state"], ["open"], "state"),
    ("jira", ["fields"], "summary", "fields"),
    ("jira", ["fields", "updated"], 1_795_000_000, "fields.updated"),
    ("jira", ["fields", "labels"], "export", "fields.labels"),
    ("jira", ["fields", "status"], "Done", "fields.status"),
    ("linear", ["updatedAt"], 1_795_000_000, "updatedAt"),
    ("linear", ["state"], "started", "state"),
    ("linear", ["priority"], "high", "priority"),
    ("sentry", ["lastSeen"], 1_795_000_000, "lastSeen"),
    ("sentry", ["status"], {"s": 1}, "status"),
    ("sentry", ["project"], "app", "project"),
    ("accounts", ["arr"], "lots", "arr"),
    ("accounts", ["updated_at"], "soon", "updated_at"),
]


def _with(record: dict, path: list[str], value: object) -> dict:
    out = copy.deepcopy(record)
    node = out
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return out


def _insert(con, vendor: str, key: str, record: dict) -> None:
    v = BY_SOURCE[vendor]
    raw_key = int(key) if vendor in ("zendesk", "freshdesk") else key
    if vendor == "posthog":
        con.execute(
            "insert into raw.posthog__events values (?, ?, ?, ?::json, ?::json, ?, 'f', 'b', "
            "now())",
            [
                key,
                r if isinstance(r := record.get("event"), str) else json.dumps(r),
                r if isinstance(r := record.get("distinct_id"), str) else json.dumps(r),
                json.dumps(record.get("event_time")),
                json.dumps(record.get("properties")),
                TS,
            ],
        )
        return
    con.execute(
        f"insert into {v.raw_table} ({v.raw_key}, cursor_at, payload, _source_file, _batch_id, "
        "_loaded_at) values (?, ?, ?::json, 'f', 'b', now())",
        [raw_key, TS, json.dumps(record)],
    )


def _staged_key(vendor: str, key: str) -> str:
    return key if vendor == "accounts" else f"{vendor}:{key}"


def _union(vendor: str) -> tuple[str, str]:
    v = BY_SOURCE[vendor]
    table = v.canonical
    key = {"usage": "event_id", "tickets": "ticket_id", "bugs": "issue_id"}.get(v.kind)
    key = key or ("account_key" if v.kind == "accounts" else "issue_id")
    return f"staging.{table}__unvalidated", key


@pytest.fixture
def wh(tmp_path: Path):
    c = db.connect(tmp_path / "w.duckdb")
    db.ensure_schema(c)
    register_duckdb(c, SALT)
    yield c, tmp_path / "w.duckdb"
    c.close()


@pytest.mark.parametrize(
    ("vendor", "path", "value", "field"),
    WRONG,
    ids=[f"{v}-{'.'.join(p)}-{type(x).__name__}" for v, p, x, _ in WRONG],
)
def test_a_wrongly_typed_field_is_named_in_type_error(wh, vendor, path, value, field):
    con, _ = wh
    _insert(con, vendor, "1", GOOD[vendor])
    _insert(con, vendor, "2", _with(GOOD[vendor], path, value))
    transform.build_staging(con, SALT)
    relation, key = _union(vendor)
    got = dict(con.execute(f"select {key}, type_error from {relation}").fetchall())
    assert got == {
        _staged_key(vendor, "1"): None,
        _staged_key(vendor, "2"): f"wrong_type:{field}",
    }


def test_absent_and_null_optional_fields_are_not_type_errors(wh):
    con, _ = wh
    _insert(con, "zendesk", "1", {**GOOD["zendesk"], "priority": None, "tags": None})
    _insert(con, "github", "1", {k: v for k, v in GOOD["github"].items() if k != "labels"})
    transform.build_staging(con, SALT)
    assert con.sql(
        "select type_error from staging.stg_support_tickets__unvalidated "
        "union all select type_error from staging.stg_bug_issues__unvalidated"
    ).fetchall() == [(None,), (None,)]


def _validate_staging(con, db_path: Path, kinds: set[str] | None = None):
    as_of = datetime(2026, 11, 20).date()
    started = datetime.now(UTC)
    quality.ensure_quality_tables(con)
    params = quality.run_params(started, as_of, "r1")
    staging = [t for t in quality.STAGING_TABLES if kinds is None or t.source_kind in kinds]
    # the gate's own batches (a first validation: every row), read by the freshness rules
    gate = quality.GateParams(run_id="r1", run_started_at=started)
    batches = quality.prepare_batches(con, gate, params, [], staging)
    quality.update_volume_rows(con, list(batches.values()))
    quality.build_check_relations(con, as_of, 28)
    con.execute("checkpoint")
    results = [
        validate_table(
            db_path,
            "staging",
            batches[t.table].relation,
            t.key,
            Path("expectations") / f"{t.table}.json",
            params,
        )
        for t in staging
    ]
    verdicts = quality.apply_staging_validation(con, results, "r1")
    return {v.table: v for v in verdicts}, results


KINDS = ["tickets", "usage", "bugs", "errors", "accounts"]


@pytest.mark.parametrize(
    "kind",
    # tickets by default (the fast path); every other kind too with -m slow (GX per suite)
    [k if k == "tickets" else pytest.param(k, marks=pytest.mark.slow) for k in KINDS],
)
def test_wrong_types_are_quarantined_with_their_reason_and_rows_add_up(wh, kind):
    """Per vendor: rows in = rows staged + rows quarantined, the bad rows quarantined with
    wrong_type:<field>, the good ones staged."""
    con, db_path = wh
    vendors = [v for v in GOOD if BY_SOURCE[v].kind == kind]
    expected: dict[str, str] = {}
    per_vendor: dict[str, int] = {}
    bad_per_vendor: dict[str, int] = dict.fromkeys(vendors, 0)
    for vendor in vendors:
        _insert(con, vendor, "1", GOOD[vendor])
        per_vendor[vendor] = 1
    n = 100
    for vendor, path, value, field in WRONG:
        if vendor not in vendors:
            continue
        key = str(n)
        n += 1
        _insert(con, vendor, key, _with(GOOD[vendor], path, value))
        expected[_staged_key(vendor, key)] = f"wrong_type:{field}"
        per_vendor[vendor] += 1
        bad_per_vendor[vendor] += 1
    transform.build_staging(con, SALT)
    verdicts, _ = _validate_staging(con, db_path, {kind})

    got = dict(
        con.sql(
            "select record_key, string_agg(distinct reason, ',' order by reason) "
            "from quality.quarantine where stage = 'validate' and rule like '%type_error%' "
            "group by record_key"
        ).fetchall()
    )
    assert got == expected
    for vendor, rows_in in per_vendor.items():
        relation, key = _union(vendor)
        staged = con.sql(
            f"select count(*) from {relation.removesuffix('__unvalidated')} "
            f"where source = '{vendor}'"
        ).fetchall()[0][0]
        quarantined = con.sql(
            f"select count(distinct record_key) from quality.quarantine where stage = 'validate' "
            f"and source = '{vendor}'"
        ).fetchall()[0][0]
        assert rows_in == staged + quarantined, vendor
        assert quarantined == bad_per_vendor[vendor], vendor
    for v in verdicts.values():
        assert v.rows_in == v.rows_accepted + v.rows_quarantined


def test_unknown_enum_values_keep_the_row_as_unknown_with_a_warning(wh):
    con, db_path = wh
    _insert(con, "zendesk", "1", GOOD["zendesk"])
    _insert(con, "zendesk", "2", {**GOOD["zendesk"], "priority": "URGENT!! mail a@b.example.com"})
    _insert(con, "zendesk", "3", {**GOOD["zendesk"], "status": "escalated-tier-3"})
    _insert(con, "github", "1", GOOD["github"])
    _insert(con, "github", "2", {**GOOD["github"], "state": "triage"})
    _insert(con, "sentry", "1", GOOD["sentry"])
    _insert(con, "sentry", "2", {**GOOD["sentry"], "level": "catastrophic"})
    transform.build_staging(con, SALT)
    verdicts, results = _validate_staging(con, db_path, {"tickets", "bugs", "errors"})

    tickets = dict(
        con.sql(
            "select ticket_id, struct_pack(status, priority) from staging.stg_support_tickets"
        ).fetchall()
    )
    assert tickets == {
        "zendesk:1": {"status": "open", "priority": "high"},
        "zendesk:2": {"status": "open", "priority": "unknown"},
        "zendesk:3": {"status": "unknown", "priority": "high"},
    }
    bugs = dict(con.sql("select issue_id, state from staging.stg_bug_issues").fetchall())
    assert bugs == {"github:1": "open", "github:2": "unknown"}
    errors = dict(con.sql("select issue_id, level from staging.stg_error_signals").fetchall())
    assert errors == {"sentry:1": "error", "sentry:2": "unknown"}
    assert con.sql("select count(*) from quality.quarantine").fetchall() == [(0,)]

    warnings = {
        o.description.split(":")[0]: o
        for r in results
        for o in r.outcomes
        if o.expectation_type == "unexpected_rows_expectation" and not o.success
    }
    assert set(warnings) == {"unknown status", "unknown priority", "unknown state", "unknown level"}
    assert all(o.severity == "warning" for o in warnings.values())
    detail = warnings["unknown priority"].details[0]
    assert detail.startswith("priority: 1 row(s)")
    # free text is withheld from the example; an enum-like value is shown
    assert "(e.g. [withheld])" in detail and "mail" not in detail
    assert "a@b.example.com" not in detail
    assert warnings["unknown status"].details[0].startswith("status: 1 row(s)")
    assert "(e.g. escalated-tier-3)" in warnings["unknown status"].details[0]
    assert verdicts["stg_support_tickets"].verdict == "warn"
    assert "unknown priority" in verdicts["stg_support_tickets"].reason


@pytest.mark.parametrize("suite", ["stg_support_tickets", "stg_bug_issues", "stg_error_signals"])
def test_suites_accept_unknown_where_they_enumerate_values(suite):
    for exp in load_suite(Path("expectations") / f"{suite}.json")["expectations"]:
        if exp["type"] == "expect_column_values_to_be_in_set" and exp["kwargs"]["column"] != (
            "source"
        ):
            assert "unknown" in exp["kwargs"]["value_set"], exp["kwargs"]["column"]


def test_a_few_unknown_values_are_logged_without_failing_the_rule(wh, caplog):
    """Below 1% of the rows the warning rule passes (like the row rules' mostly: 0.99); the
    unknown values are still reported, as a logged warning with the count and examples."""
    con, _ = wh
    for i in range(1, 201):
        _insert(con, "zendesk", str(i), GOOD["zendesk"])
    _insert(con, "zendesk", "999", {**GOOD["zendesk"], "priority": "P0 call +1 415 555 0100"})
    transform.build_staging(con, SALT)
    suite = load_suite(Path("expectations") / "stg_support_tickets.json")
    (rule,) = [
        e
        for e in suite["expectations"]
        if "priority_unknown" in e["kwargs"].get("unexpected_rows_query", "")
    ]
    query = rule["kwargs"]["unexpected_rows_query"].replace(
        "{batch}", "(select * from staging.stg_support_tickets__unvalidated) as subselect"
    )
    assert con.sql(query).fetchall() == []  # 1 of 201 rows: under the 1% bound
    with caplog.at_level("WARNING", logger="tasks.quality"):
        messages = quality.log_unknown_enums(con, "stg_support_tickets")
    assert messages == [
        "staging.stg_support_tickets: 1 row(s) with an unknown priority, kept as 'unknown' "
        "(e.g. [withheld])"
    ]
    assert messages[0] in caplog.text and "555" not in caplog.text
    assert con.sql(
        "select priority from staging.stg_support_tickets__unvalidated "
        "where ticket_id = 'zendesk:999'"
    ).fetchall() == [("unknown",)]
