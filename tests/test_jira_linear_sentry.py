"""Jira Cloud, Linear and Sentry: connectors and trackers against vendor-shaped local fakes."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tasks import load
from tasks.clients.http import (
    AuthError,
    InvalidResponseError,
    RetriesExhaustedError,
    RetryPolicy,
)
from tasks.clients.jira import (
    JiraConnector,
    JiraSettings,
    jql_lower_bound,
    jql_upper_bound,
)
from tasks.clients.linear import LinearConnector, LinearSettings
from tasks.clients.sentry import SentryConnector, SentrySettings
from tasks.settings import SQL_DIR
from tasks.trackers.adf import adf_text, find_marker, markdown_to_adf
from tasks.trackers.base import marker_for
from tasks.trackers.jira import JiraTracker, JiraTrackerSettings, JiraWorkflowError
from tasks.trackers.linear import LinearTracker, LinearTrackerSettings
from tasks.writeback import content_hash, render_body
from tests.fakes.jira import custom_workflow, jira_api
from tests.fakes.linear import linear_api, ratelimited
from tests.fakes.linear import ts as linear_ts
from tests.fakes.sentry import sentry_api
from tests.fakes.server import FakeServer, Request, Response

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
FAST = RetryPolicy(max_attempts=4, base_delay_s=0.01, max_delay_s=5.0, jitter=0.0)
FP = "health:exports"


@pytest.fixture
def srv():
    with FakeServer() as server:
        yield server


@pytest.fixture
def creds(monkeypatch):
    monkeypatch.setenv("JIRA_EMAIL", "bot@acme.test")
    monkeypatch.setenv("JIRA_API_TOKEN", "jira-test-token-123")
    monkeypatch.setenv("LINEAR_API_KEY", "lin_api_TestKey1234567890")
    monkeypatch.setenv("SENTRY_AUTH_TOKEN", "sntrys_TestToken1234567890")


class Sleeps(list):
    """An injected sleep that records the waits instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(round(seconds, 3))


def land(con, connector, pages, tmp_path: Path, run_id: str = "run-1") -> load.LoadStats:
    con.execute((SQL_DIR / "ddl" / f"raw_{connector.source}.sql").read_text())
    return load.load_pages(con, connector.spec, pages, run_id, tmp_path / "landing")


def staged(con, source: str) -> dict[str, dict[str, Any]]:
    sql = (SQL_DIR / "staging" / source / f"stg_{source}__issues.sql").read_text()
    rel = con.sql(sql)
    cols = rel.columns
    return {row[0]: dict(zip(cols, row, strict=True)) for row in rel.fetchall()}


# ---------------------------------------------------------------------------------------------
# ADF


_BLOCKS = {"paragraph", "heading", "bulletList", "orderedList", "table", "codeBlock", "rule"}
_CELL = {"paragraph", "heading", "bulletList", "orderedList", "codeBlock", "rule"}
_CHILDREN = {
    "doc": _BLOCKS,
    "paragraph": {"text", "hardBreak"},
    "heading": {"text", "hardBreak"},
    "bulletList": {"listItem"},
    "orderedList": {"listItem"},
    "listItem": {"paragraph", "bulletList", "orderedList", "codeBlock"},
    "table": {"tableRow"},
    "tableRow": {"tableHeader", "tableCell"},
    "tableHeader": _CELL,
    "tableCell": _CELL,
    "codeBlock": {"text"},
    "rule": set(),
}
_MARKS = {"strong", "em", "code", "link", "strike", "underline"}


def adf_errors(node: Any, parent: str | None = None, path: str = "doc") -> list[str]:
    """Structural ADF check: node types per parent, required attrs, text and mark rules."""
    errors: list[str] = []
    if not isinstance(node, dict) or "type" not in node:
        return [f"{path}: not a node"]
    kind = node["type"]
    if parent is None:
        if kind != "doc" or node.get("version") != 1 or not isinstance(node.get("content"), list):
            errors.append(f"{path}: root must be a version-1 doc with content")
    elif kind not in _CHILDREN.get(parent, set()):
        errors.append(f"{path}: {kind} not allowed in {parent}")
    if kind == "text":
        if not isinstance(node.get("text"), str) or not node["text"]:
            errors.append(f"{path}: text node needs non-empty text")
        marks = node.get("marks", [])
        types = [m.get("type") for m in marks]
        if len(set(types)) != len(types) or not set(types) <= _MARKS:
            errors.append(f"{path}: bad marks {types}")
        if "code" in types and not set(types) <= {"code", "link"}:
            errors.append(f"{path}: code combined with {types}")
        if parent == "codeBlock" and marks:
            errors.append(f"{path}: marks inside a codeBlock")
        for m in marks:
            if m["type"] == "link" and not (m.get("attrs") or {}).get("href"):
                errors.append(f"{path}: link without href")
        return errors
    content = node.get("content", [])
    if kind == "heading" and (node.get("attrs") or {}).get("level") not in range(1, 7):
        errors.append(f"{path}: heading level")
    if kind == "orderedList" and not isinstance((node.get("attrs") or {}).get("order", 1), int):
        errors.append(f"{path}: order")
    containers = ("bulletList", "orderedList", "table", "tableRow", "tableHeader", "tableCell")
    if kind in containers and not content:
        errors.append(f"{path}: {kind} must not be empty")
    if kind == "listItem" and (not content or content[0].get("type") != "paragraph"):
        errors.append(f"{path}: listItem must start with a paragraph")
    if kind == "table" and len({len(r.get("content", [])) for r in content}) > 1:
        errors.append(f"{path}: table rows differ in width")
    if kind == "rule" and content:
        errors.append(f"{path}: rule has content")
    for i, child in enumerate(content):
        errors += adf_errors(child, kind, f"{path}/{kind}[{i}]")
    return errors


def suggestion() -> dict[str, Any]:
    """A suggestion row as writeback.load_suggestions gives it."""
    return {
        "fingerprint": FP,
        "title": "Fix: exports fail for large accounts",
        "why": "Tickets about **exports** doubled; see the `export_failed` events.",
        "health_score": 41.0,
        "health_rank": 1,
        "n_features": 8,
        "as_of_date": "2026-11-25",
        "formula_version": "health-v1",
        "confidence": 0.9,
        "explanation": "support (-12.0), bugs (-8.0)",
        "confidence_reasons": None,
        "components": [
            ("support", 20.0, 0.2, 4.0, "31 tickets"),
            ("bugs", 10.0, 0.2, 2.0, "2 open s1/s2"),
        ],
        "evidence": {
            "n_users": 1234,
            "n_accounts": 40,
            "recent_weekly_users": 300,
            "baseline_weekly_users": 400,
            "usage_trend": -0.25,
            "n_tickets_14d": 31,
            "n_tickets_prior_28d": 12,
            "ticket_spike_ratio": 2.6,
            "tickets_per_1k_users": 25.1,
            "n_open_bugs": 3,
            "n_open_high_sev_bugs": 2,
            "n_new_high_sev_bugs_14d": 1,
            "top_tickets": [
                {
                    "id": "zendesk:101",
                    "url": "https://acme.zendesk.com/agent/tickets/101",
                    "priority": "high",
                    "status": "open",
                    "created_at": "2026-11-20",
                    "subject": "Export stuck at 99%",
                }
            ],
            "top_bugs": [
                {
                    "id": "jira:10001",
                    "title": "CSV export times out",
                    "url": "https://acme.atlassian.net/browse/ABC-1",
                    "severity": "s2",
                    "state": "open",
                    "created_at": "2026-11-18",
                }
            ],
        },
        "reach": 1234,
        "impact": 2.0,
        "effort": 3.0,
        "priority_score": 740.4,
        "priority_rank": 1,
        "kind": "fix",
        "problem": "health",
    }


def test_adf_of_a_real_suggestion_body_is_valid_and_keeps_the_marker_last():
    body = render_body(suggestion()) + "\n" + marker_for(FP)
    doc = markdown_to_adf(body)
    assert adf_errors(doc) == []
    kinds = [n["type"] for n in doc["content"]]
    assert {"heading", "paragraph", "table", "bulletList"} <= set(kinds)
    last = doc["content"][-1]
    assert last == {
        "type": "paragraph",
        "content": [
            {"type": "text", "text": f"feedback-loop:fingerprint={FP}", "marks": [{"type": "code"}]}
        ],
    }
    assert find_marker(doc) == FP
    assert "<!--" not in json.dumps(doc)
    table = next(n for n in doc["content"] if n["type"] == "table")
    assert [c["type"] for c in table["content"][0]["content"]] == ["tableHeader"] * 5
    assert adf_text(table["content"][1]["content"][0]) == "support"
    links = [
        m["attrs"]["href"] for n in _walk(doc) for m in n.get("marks", []) if m["type"] == "link"
    ]
    assert "https://acme.zendesk.com/agent/tickets/101" in links


def _walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    out = [node]
    for child in node.get("content", []):
        out += _walk(child)
    return out


def test_adf_inline_marks_lists_and_code():
    doc = markdown_to_adf(
        "# Title\n\n"
        "Plain **bold [link](https://x.test/a?b=1)** and `code` and _em_ and \\*stars\\*.\n"
        "continued line\n\n"
        "1. one\n2. two\n   - nested\n\n"
        "```sql\nselect 1;\n```\n\n---\n"
    )
    assert adf_errors(doc) == []
    heading, para, ordered, code, rule = doc["content"]
    assert heading["attrs"] == {"level": 1}
    assert para["content"] == [
        {"type": "text", "text": "Plain "},
        {"type": "text", "text": "bold ", "marks": [{"type": "strong"}]},
        {
            "type": "text",
            "text": "link",
            "marks": [
                {"type": "strong"},
                {"type": "link", "attrs": {"href": "https://x.test/a?b=1"}},
            ],
        },
        {"type": "text", "text": " and "},
        {"type": "text", "text": "code", "marks": [{"type": "code"}]},
        {"type": "text", "text": " and "},
        {"type": "text", "text": "em", "marks": [{"type": "em"}]},
        {"type": "text", "text": " and *stars*. continued line"},
    ]
    assert ordered["type"] == "orderedList" and ordered["attrs"] == {"order": 1}
    assert ordered["content"][1]["content"][1]["type"] == "bulletList"
    assert code == {
        "type": "codeBlock",
        "attrs": {"language": "sql"},
        "content": [{"type": "text", "text": "select 1;"}],
    }
    assert rule == {"type": "rule"}


def test_adf_validator_catches_broken_documents():
    assert adf_errors({"type": "doc", "version": 2, "content": []})
    bad = {"type": "doc", "version": 1, "content": [{"type": "text", "text": "loose"}]}
    assert adf_errors(bad)
    code_bold = markdown_to_adf("x")
    code_bold["content"][0]["content"][0]["marks"] = [{"type": "code"}, {"type": "strong"}]
    assert adf_errors(code_bold)


# ---------------------------------------------------------------------------------------------
# Jira connector


def jira_connector(srv: FakeServer, sleeps: Sleeps | None = None, **kw: Any) -> JiraConnector:
    settings = JiraSettings(base_url=srv.url, project="ABC", start_days=7, page_size=2, **kw)
    return JiraConnector(settings, sleep=sleeps if sleeps is not None else Sleeps(), retry=FAST)


def test_jql_bounds_survive_the_dst_fall_back_hour():
    berlin = ZoneInfo("Europe/Berlin")
    # 00:30Z is 02:30 CEST; 02:30 happens twice that night (01:30Z too). Jira may read the
    # later one, so the lower bound steps back an hour to stay at or before the moment.
    moment = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert jql_lower_bound(moment, berlin) == "2026-10-25 01:30"
    text, complete_at = jql_upper_bound(datetime(2026, 10, 25, 1, 30, tzinfo=UTC), berlin)
    assert text == "2026-10-25 02:30"
    assert complete_at == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # the earlier reading
    assert jql_lower_bound(datetime(2026, 11, 25, 12, 0, 59, tzinfo=UTC), berlin) == (
        "2026-11-25 13:00"
    )


def test_jira_pages_search_in_the_user_time_zone_and_land_in_staging(srv, creds, con, tmp_path):
    fake = jira_api(srv, time_zone="America/New_York")
    priorities = ["Highest", "High", "Medium", "Low", "Lowest", None]
    made = [
        fake.add_issue(
            NOW - timedelta(days=6 - i),
            priority=p,
            labels=["Area:Exports", "customer"],
            components=["Exports"],
            votes=i,
            status="Done" if i == 2 else "To Do",
            resolution="Won't Do" if i == 2 else None,
        )
        for i, p in enumerate(priorities)
    ]
    fake.add_issue(NOW - timedelta(days=9))  # before the start: not asked for
    fake.add_issue(NOW + timedelta(minutes=30))  # after the window: next run
    fake.add_issue(NOW - timedelta(days=1), issue_type="Task")  # not a bug
    connector = jira_connector(srv)

    pages = list(connector.pages(None, NOW))

    assert [p.n_records for p in pages] == [2, 2, 2]
    # JQL dates are minute precision in the API user's zone (New York, UTC-5 in November).
    assert (
        fake.jqls
        == [
            'project = "ABC" AND issuetype in ("Bug") AND updated >= "2026-11-18 06:45" '
            'AND updated <= "2026-11-25 07:00" ORDER BY updated ASC'
        ]
        * 3
    )
    bodies = fake.search_bodies
    assert "nextPageToken" not in bodies[0] and bodies[1]["nextPageToken"]
    assert {"summary", "status", "priority", "votes", "updated"} <= set(bodies[0]["fields"])
    last = json.loads(pages[-1].body)
    assert "nextPageToken" not in last and last["isLast"] is True
    # Oldest first, so each page's newest `updated` is a safe resume point.
    assert pages[0].state == {"updated_since": (NOW - timedelta(days=5)).isoformat()}
    assert pages[-1].state == {"updated_since": NOW.isoformat()}

    stats = land(con, connector, pages, tmp_path)
    assert stats.n_inserted == 6
    rows = staged(con, "jira")
    first = rows[f"jira:{made[0]['id']}"]
    assert first["url"] == f"{srv.url}/browse/{made[0]['key']}"
    assert first["labels"] == ["area:exports", "customer"] and first["components"] == ["Exports"]
    assert [rows[f"jira:{m['id']}"]["severity"] for m in made] == [
        "s1",
        "s2",
        "s3",
        "s4",
        "s4",
        "s3",
    ]
    closed = rows[f"jira:{made[2]['id']}"]
    assert (closed["state"], closed["state_reason"], closed["votes"]) == (
        "closed",
        "not_planned",
        2,
    )
    assert closed["closed_at"] is not None and first["state"] == "open"
    assert first["updated_at"] == NOW - timedelta(days=6)

    # Second run: only the new window (from the committed state, minus the overlap).
    state = load.read_state(con, "jira", "issues")
    assert state == {"updated_since": NOW.isoformat()}
    fake.jqls.clear()
    later = list(connector.pages(state, NOW + timedelta(hours=2)))
    assert fake.jqls == [
        'project = "ABC" AND issuetype in ("Bug") AND updated >= "2026-11-25 06:45" '
        'AND updated <= "2026-11-25 09:00" ORDER BY updated ASC'
    ]
    assert [p.n_records for p in later] == [1]
    srv.assert_clean()


def test_jira_429_and_5xx_are_waited_out(srv, creds):
    fake = jira_api(srv)
    for i in range(3):
        fake.add_issue(NOW - timedelta(hours=i + 1))
    srv.script(
        "POST",
        r"/rest/api/3/search/jql",
        [Response(429, {"errorMessages": ["Rate limit"]}, {"Retry-After": "2"}), Response(503)],
        then=fake.search,
    )
    sleeps = Sleeps()
    pages = list(jira_connector(srv, sleeps).pages(None, NOW))
    assert sum(p.n_records for p in pages) == 3
    assert sleeps == [2.0, 0.02]
    srv.assert_clean()


def test_jira_401_fails_fast_naming_the_setting(srv, creds, monkeypatch):
    jira_api(srv)
    monkeypatch.setenv("JIRA_API_TOKEN", "wrong-token-000")
    with pytest.raises(AuthError) as err:
        jira_connector(srv).check()
    assert "JIRA_API_TOKEN" in str(err.value) and "wrong-token" not in str(err.value)
    assert len(srv.requests) == 1


@pytest.mark.parametrize(
    "page",
    [
        Response(200, b'{"issues": [{"id": "10001", "fields": {'),  # truncated
        Response.json({"issues": [], "isLast": False}),  # more promised, no token
        Response.json({"total": 0}),  # not a search page
    ],
)
def test_jira_invalid_page_fails_and_the_cursor_stays(srv, creds, con, tmp_path, page):
    jira_api(srv)
    srv.route("POST", r"/rest/api/3/search/jql", page)
    connector = jira_connector(srv)
    with pytest.raises(InvalidResponseError):
        land(con, connector, connector.pages(None, NOW), tmp_path)
    assert load.read_state(con, "jira", "issues") is None


# ---------------------------------------------------------------------------------------------
# Linear connector


def linear_connector(srv: FakeServer, sleeps: Sleeps | None = None, **kw: Any) -> LinearConnector:
    kw.setdefault("page_size", 2)
    settings = LinearSettings(base_url=srv.url, team_key="ENG", start_days=7, **kw)
    return LinearConnector(
        settings,
        sleep=sleeps if sleeps is not None else Sleeps(),
        retry=FAST,
        clock=lambda: NOW.timestamp(),
    )


def _issue_calls(fake) -> list[dict[str, Any]]:
    return [q["variables"] for q in fake.ops("issues")]


def test_linear_pages_by_cursor_with_archived_and_land_in_staging(srv, creds, con, tmp_path):
    fake = linear_api(srv)
    made = [
        fake.add_issue(
            NOW - timedelta(days=1), priority=1, labels=["Bug", ("Exports", "Component")]
        ),
        fake.add_issue(NOW - timedelta(days=2), priority=0, labels=["component:alerts"]),
        fake.add_issue(NOW - timedelta(days=3), priority=4, state="Done"),
        fake.add_issue(NOW - timedelta(days=4), priority=2, state="Canceled"),
        fake.add_issue(NOW - timedelta(days=5), priority=3, archived=True),
        fake.add_issue(NOW - timedelta(days=6), priority=2, state="Duplicate"),
    ]
    fake.add_issue(NOW - timedelta(days=8))  # before the start
    fake.add_issue(NOW + timedelta(minutes=5))  # after the window end
    connector = linear_connector(srv)

    pages = list(connector.pages(None, NOW))

    assert [p.n_records for p in pages] == [2, 2, 2]
    # The API key goes in Authorization as it is — no "Bearer".
    graphql = srv.requests_to(r"/graphql")
    assert {r.headers["Authorization"] for r in graphql} == {"lin_api_TestKey1234567890"}
    assert all("includeArchived: true" in q["query"] for q in fake.ops("issues"))
    calls = _issue_calls(fake)
    window = {"gt": "2026-11-18T11:55:00.000Z", "lte": "2026-11-25T12:00:00.000Z"}
    assert [c["filter"]["updatedAt"] for c in calls] == [window] * 3
    assert calls[0]["after"] is None and calls[1]["after"] and calls[2]["after"]
    assert calls[0]["filter"]["team"] == {"key": {"eq": "ENG"}}
    assert pages[0].state == {
        "window_gt": window["gt"],
        "window_lte": window["lte"],
        "after": calls[1]["after"],
    }
    assert pages[-1].state == {"updated_since": window["lte"]}

    assert land(con, connector, pages, tmp_path).n_inserted == 6
    rows = staged(con, "linear")
    by = {i: rows[f"linear:{m['id']}"] for i, m in enumerate(made)}
    assert [by[i]["severity"] for i in range(6)] == ["s1", "s3", "s4", "s2", "s3", "s2"]
    assert [by[i]["state"] for i in range(6)] == [
        "open",
        "open",
        "closed",
        "closed",
        "open",
        "closed",
    ]
    assert [by[i]["state_reason"] for i in (2, 3, 5)] == ["completed", "not_planned", "duplicate"]
    assert by[4]["is_deleted"] and not by[0]["is_deleted"]
    assert by[0]["labels"] == ["bug", "exports"] and by[0]["components"] == ["Exports"]
    assert by[1]["components"] == ["alerts"]
    assert by[0]["url"] == made[0]["url"] and by[0]["updated_at"] == NOW - timedelta(days=1)

    # Second run: only the new window.
    state = load.read_state(con, "linear", "issues")
    fake.queries.clear()
    later = list(connector.pages(state, NOW + timedelta(hours=1)))
    assert [c["filter"]["updatedAt"] for c in _issue_calls(fake)] == [
        {"gt": "2026-11-25T11:55:00.000Z", "lte": "2026-11-25T13:00:00.000Z"}
    ]
    assert [p.n_records for p in later] == [1]
    srv.assert_clean()


def test_linear_resumes_an_interrupted_window_at_its_cursor(srv, creds):
    fake = linear_api(srv)
    for d in range(1, 6):
        fake.add_issue(NOW - timedelta(days=d))
    connector = linear_connector(srv)
    first = next(connector.pages(None, NOW))  # crash after the first committed page
    fake.queries.clear()
    rest = list(connector.pages(first.state, NOW + timedelta(hours=1)))
    calls = _issue_calls(fake)
    assert calls[0]["after"] == first.state["after"]
    assert calls[0]["filter"]["updatedAt"]["lte"] == first.state["window_lte"]
    assert calls[-1]["filter"]["updatedAt"] == {
        "gt": "2026-11-25T11:55:00.000Z",
        "lte": "2026-11-25T13:00:00.000Z",
    }
    assert first.n_records + sum(p.n_records for p in rest) == 5
    assert rest[-1].state == {"updated_since": "2026-11-25T13:00:00.000Z"}


@pytest.mark.parametrize("status", [200, 400])
def test_linear_ratelimited_graphql_error_is_waited_out(srv, creds, status):
    fake = linear_api(srv)
    fake.add_issue(NOW - timedelta(hours=1))
    reset_ms = int((NOW.timestamp() + 3) * 1000)
    srv.script(
        "POST",
        r"/graphql",
        [ratelimited(status, reset_ms=reset_ms), ratelimited(status)],
        then=fake.handle,
    )
    sleeps = Sleeps()
    connector = linear_connector(srv, sleeps)
    pages = list(connector.pages(None, NOW))
    assert [p.n_records for p in pages] == [1]
    assert sleeps[0] == 3.5  # until the requests budget resets (+0.5 s)
    assert 3.0 <= sleeps[1] <= 5.0  # no reset header: backoff
    assert connector.gql.n_rate_limited == 2
    srv.assert_clean()


def test_linear_rate_limit_that_never_lifts_fails(srv, creds):
    linear_api(srv)
    srv.route("POST", r"/graphql", ratelimited(200))
    connector = linear_connector(srv, max_rate_limit_waits=2)
    with pytest.raises(RetriesExhaustedError, match="rate limited"):
        list(connector.pages(None, NOW))
    assert len(srv.requests) == 3


@pytest.mark.parametrize("status", [401, 400])
def test_linear_auth_failure_names_the_setting(srv, creds, monkeypatch, status):
    linear_api(srv)
    monkeypatch.setenv("LINEAR_API_KEY", "lin_api_Wrong000000000")
    if status == 400:  # the same error as a GraphQL error on a 400
        from tests.fakes.linear import gql_error

        srv.route(
            "POST",
            r"/graphql",
            gql_error(
                "Authentication required", "AUTHENTICATION_ERROR", "authentication error", 400
            ),
        )
    with pytest.raises(AuthError) as err:
        linear_connector(srv).check()
    assert "LINEAR_API_KEY" in str(err.value) and "Wrong0000" not in str(err.value)
    assert len(srv.requests) == 1


@pytest.mark.parametrize(
    "page",
    [
        Response(200, b'{"data": {"issues": {"nodes": [{"id": "a"'),
        Response.json({"data": {"issues": {"nodes": []}}}),  # no pageInfo
        Response.json({"data": {"issues": {"nodes": [], "pageInfo": {"hasNextPage": True}}}}),
        Response.json({"data": None}),
    ],
)
def test_linear_invalid_page_is_an_invalid_response(srv, creds, con, tmp_path, page):
    linear_api(srv)
    srv.route("POST", r"/graphql", page)
    connector = linear_connector(srv)
    with pytest.raises(InvalidResponseError):
        land(con, connector, connector.pages(None, NOW), tmp_path)
    assert load.read_state(con, "linear", "issues") is None


# ---------------------------------------------------------------------------------------------
# Sentry connector


def sentry_connector(srv: FakeServer, sleeps: Sleeps | None = None, **kw: Any) -> SentryConnector:
    kw.setdefault("page_size", 3)
    settings = SentrySettings(base_url=srv.url, org="acme", start_days=7, **kw)
    return SentryConnector(settings, sleep=sleeps if sleeps is not None else Sleeps(), retry=FAST)


def test_sentry_stops_on_results_false_and_lands_error_signals(srv, creds, con, tmp_path):
    fake = sentry_api(srv, now=NOW + timedelta(hours=1))
    statuses = [
        "unresolved",
        "resolved",
        "ignored",
        "unresolved",
        "resolved",
        "unresolved",
        "unresolved",
    ]
    made = [
        fake.add_issue(NOW - timedelta(hours=3 * i + 1), status=s, count=100 + i, users=i)
        for i, s in enumerate(statuses)
    ]
    fake.add_issue(NOW - timedelta(days=8))  # last seen before the start
    fake.add_issue(NOW + timedelta(minutes=20))  # after window_end: next run

    connector = sentry_connector(srv)
    pages = list(connector.pages(None, NOW))

    assert [p.n_records for p in pages] == [3, 3, 1]
    calls = srv.requests_to(r"/api/0/organizations/acme/issues/")
    assert len(calls) == 3  # the third page's next link says results="false": no 4th request
    assert calls[0].arg("query") == "lastSeen:>=2026-11-18T11:50:00 lastSeen:<=2026-11-25T12:00:00"
    assert calls[0].arg("limit") == "3" and calls[0].arg("statsPeriod") == "14d"
    assert calls[1].arg("cursor") == "0:3:0" and calls[1].arg("query") == calls[0].arg("query")
    # The query is always explicit: resolved and ignored issues are listed too.
    assert sorted(p["status"] for pg in pages for p in json.loads(pg.body)) == sorted(statuses)
    start = (NOW - timedelta(days=7)).isoformat()
    assert [p.state for p in pages] == [
        {"last_seen_since": start},
        {"last_seen_since": start},
        {"last_seen_since": NOW.isoformat()},
    ]

    assert land(con, connector, pages, tmp_path).n_inserted == 7
    rows = staged(con, "sentry")
    row = rows[f"sentry:{made[1]['id']}"]
    assert row["source"] == "sentry" and row["url"] == made[1]["permalink"]
    assert (row["n_events"], row["n_users"], row["status"], row["level"]) == (
        101,
        1,
        "resolved",
        "error",
    )
    assert row["url_path"] == "/exports/{id}" and row["components"] == ["web"]
    assert row["last_seen_at"] == NOW - timedelta(hours=4)
    assert row["culprit"] == "GET /exports/{id}" and row["project"] == "web"

    state = load.read_state(con, "sentry", "issues")
    later = list(connector.pages(state, NOW + timedelta(hours=1)))
    assert srv.requests_to(r"/api/0/organizations/acme/issues/")[-1].arg("query") == (
        "lastSeen:>=2026-11-25T11:50:00 lastSeen:<=2026-11-25T13:00:00"
    )
    assert [p.n_records for p in later] == [1]
    srv.assert_clean()


def test_sentry_base_query_is_kept_and_projects_are_sent(srv, creds):
    fake = sentry_api(srv)
    fake.add_issue(NOW - timedelta(hours=1), status="resolved")
    fake.add_issue(NOW - timedelta(hours=2))
    pages = list(sentry_connector(srv, query="is:unresolved", projects=[2, 5]).pages(None, NOW))
    assert [p.n_records for p in pages] == [1]
    call = srv.requests_to(r"/api/0/organizations/acme/issues/")[0]
    assert call.arg("query").startswith("is:unresolved lastSeen:>=")
    assert call.query["project"] == ["2", "5"]


def test_sentry_auth_and_invalid_page(srv, creds, monkeypatch):
    sentry_api(srv)
    srv.route("GET", r"/api/0/organizations/acme/issues/", Response.json({"detail": "?"}))
    with pytest.raises(InvalidResponseError):
        list(sentry_connector(srv).pages(None, NOW))
    monkeypatch.setenv("SENTRY_AUTH_TOKEN", "sntrys_Wrong00000000")
    with pytest.raises(AuthError) as err:
        sentry_connector(srv).check()
    assert "SENTRY_AUTH_TOKEN" in str(err.value) and "Wrong0000" not in str(err.value)


# ---------------------------------------------------------------------------------------------
# Shared behaviour, one case per vendor


def _vendor(name: str, srv: FakeServer, sleeps: Sleeps):
    if name == "jira":
        fake = jira_api(srv)
        fake.add_issue(NOW - timedelta(hours=1))
        return jira_connector(srv, sleeps), "POST", r"/rest/api/3/search/jql", fake.search
    if name == "linear":
        fake = linear_api(srv)
        fake.add_issue(NOW - timedelta(hours=1))
        return linear_connector(srv, sleeps), "POST", r"/graphql", fake.handle
    fake = sentry_api(srv)
    fake.add_issue(NOW - timedelta(hours=1))
    path = r"/api/0/organizations/acme/issues/"
    return sentry_connector(srv, sleeps), "GET", path, fake.list_issues


@pytest.mark.parametrize("vendor", ["jira", "linear", "sentry"])
def test_429_with_retry_after_then_5xx_then_success(srv, creds, vendor):
    sleeps = Sleeps()
    connector, method, path, handler = _vendor(vendor, srv, sleeps)
    srv.script(
        method,
        path,
        [Response(429, "slow down", {"Retry-After": "1"}), Response(502, "bad gateway")],
        then=handler,
    )
    pages = list(connector.pages(None, NOW))
    assert sum(p.n_records for p in pages) == 1
    assert sleeps == [1.0, 0.02]
    srv.assert_clean()


@pytest.mark.parametrize(
    ("vendor", "path"),
    [
        ("jira", r"/rest/api/3/myself"),
        ("linear", r"/graphql"),
        ("sentry", r"/api/0/organizations/acme/"),
    ],
)
def test_check_is_one_cheap_authenticated_call(srv, creds, vendor, path):
    connector, *_ = _vendor(vendor, srv, Sleeps())
    connector.check()
    assert [r.path for r in srv.requests] == [path.replace("\\", "")]


# ---------------------------------------------------------------------------------------------
# Jira tracker


def jira_tracker(srv: FakeServer) -> JiraTracker:
    settings = JiraTrackerSettings(base_url=srv.url, project="ABC", issue_type="Task")
    return JiraTracker(settings, sleep=Sleeps(), retry=FAST)


BODY = render_body(suggestion())
TITLE = "Fix: exports fail for large accounts"


def test_jira_tracker_create_then_find_reports_what_was_written(srv, creds):
    fake = jira_api(srv, search_lag=True)
    tracker = jira_tracker(srv)
    assert tracker.find(FP) is None

    issue = tracker.create(FP, TITLE, BODY, ["feedback-loop", "area exports"])

    (stored,) = fake.issues.values()
    f = stored["fields"]
    assert f["labels"] == ["feedback-loop", "area-exports"]  # no spaces in Jira labels
    assert adf_errors(f["description"]) == []
    assert find_marker(f["description"]) == FP
    assert fake.properties[stored["id"]]["feedback-loop"] == {"fingerprint": FP, "body_md": BODY}
    (link,) = fake.links[stored["id"]].values()
    assert link["globalId"] == "https://feedback-loop.local/suggestion/health:exports"
    assert link["object"]["url"] == link["globalId"]
    assert (issue.ref, issue.state, issue.body) == (stored["id"], "open", BODY)
    assert issue.url == f"{srv.url}/browse/{stored['key']}"

    # Search lags a fresh create; the same tracker still finds it (by id)...
    found = tracker.find(FP)
    assert found is not None and found.ref == issue.ref
    assert content_hash(found.title, found.body) == content_hash(TITLE, BODY)
    # ...and a new process finds it through JQL once the index caught up.
    assert jira_tracker(srv).find(FP) is None
    fake.settle()
    again = jira_tracker(srv).find(FP)
    assert again is not None and again.body == BODY and again.title == TITLE
    assert 'labels = "feedback-loop"' in fake.jqls[-1]
    srv.assert_clean()


def test_jira_tracker_retried_create_does_not_duplicate(srv, creds):
    fake = jira_api(srv)
    first = jira_tracker(srv).create(FP, TITLE, BODY, ["feedback-loop"])
    # A retried create (say, the task retried after a crash before the ledger write):
    second = jira_tracker(srv).create(FP, TITLE, BODY, ["feedback-loop"])
    assert second.ref == first.ref
    assert len(fake.issues) == 1
    assert len(srv.requests_to(r"/rest/api/3/issue", "POST")) == 1


def test_jira_tracker_create_whose_answer_is_lost_is_found_not_repeated(srv, creds):
    fake = jira_api(srv)

    def applied_then_502(req: Request) -> Response:
        fake.create_issue(req)
        return Response(502, "Bad Gateway")

    srv.script("POST", r"/rest/api/3/issue", [applied_then_502], then=fake.create_issue)
    issue = jira_tracker(srv).create(FP, TITLE, BODY, ["feedback-loop"])
    assert len(fake.issues) == 1 and issue.ref in fake.issues
    assert len(srv.requests_to(r"/rest/api/3/issue", "POST")) == 1  # never repeated
    assert fake.links[issue.ref]  # the remote link was still made


def test_jira_tracker_update_batches_only_changes(srv, creds):
    fake = jira_api(srv)
    tracker = jira_tracker(srv)
    issue = tracker.create(FP, TITLE, BODY, ["feedback-loop"])
    fake.issues[issue.ref]["fields"]["labels"].append("triaged")  # a person's label

    assert tracker.update(issue, FP, TITLE, BODY, ["feedback-loop"]) == issue
    assert srv.requests_to(r"/rest/api/3/issue/\d+", "PUT") == []

    new_body = BODY.replace("31 tickets", "40 tickets")
    updated = tracker.update(issue, FP, TITLE, new_body, ["feedback-loop", "exports"])
    (put,) = srv.requests_to(r"/rest/api/3/issue/\d+", "PUT")
    sent = put.json()
    assert set(sent["fields"]) == {"description"}
    assert sent["update"] == {"labels": [{"add": "exports"}]}
    assert sent["properties"][0]["value"]["body_md"] == new_body
    assert fake.issues[issue.ref]["fields"]["labels"] == ["feedback-loop", "triaged", "exports"]
    assert updated.body == new_body
    found = tracker.find(FP)
    assert found.body == new_body and "40 tickets" in adf_text(
        fake.issues[issue.ref]["fields"]["description"]
    )

    # A person rewrote the description: find reports the text, so the hash differs.
    fake.issues[issue.ref]["fields"]["description"] = markdown_to_adf(
        "Handled in ABC-9.\n\n" + marker_for(FP)
    )
    edited = tracker.find(FP)
    assert edited is not None and edited.body != new_body and "Handled in ABC-9." in edited.body


def test_jira_tracker_comment_and_close_by_status_category(srv, creds):
    fake = jira_api(srv)
    tracker = jira_tracker(srv)
    a = tracker.create(FP, TITLE, BODY, [])
    b = tracker.create("health:alerts", "Alerts", "Why: **alerts** fail", [])

    tracker.comment(a, "Still failing: **31** tickets, see [dash](https://x.test).")
    (comment,) = fake.comments[a.ref]
    assert adf_errors(comment["body"]) == []
    (comment_post,) = srv.requests_to(rf"/rest/api/3/issue/{a.ref}/comment", "POST")

    done = tracker.close(a, "completed")
    declined = tracker.close(b, "not_planned")
    posts = [r.json() for r in srv.requests_to(r"/rest/api/3/issue/\d+/transitions", "POST")]
    assert posts == [
        {"transition": {"id": "31"}, "fields": {"resolution": {"name": "Done"}}},
        {"transition": {"id": "31"}, "fields": {"resolution": {"name": "Won't Do"}}},
    ]
    assert (done.state, done.state_reason) == ("closed", "completed")
    assert (declined.state, declined.state_reason) == ("closed", "not_planned")
    found = tracker.find("health:alerts")
    assert (found.state, found.state_reason) == ("closed", "not_planned")


def test_jira_tracker_close_on_a_workflow_with_other_names(srv, creds):
    fake = jira_api(srv, workflow=custom_workflow())
    tracker = jira_tracker(srv)
    a = tracker.create(FP, TITLE, BODY, [])
    b = tracker.create("health:alerts", "Alerts", "x", [])
    tracker.close(a, "completed")
    tracker.close(b, "not_planned")
    posts = [r.json() for r in srv.requests_to(r"/rest/api/3/issue/\d+/transitions", "POST")]
    # No resolution screen on these transitions: none is sent (Jira would reject it).
    assert posts == [{"transition": {"id": "51"}}, {"transition": {"id": "61"}}]
    assert fake.issues[a.ref]["fields"]["status"]["name"] == "Released"
    assert fake.issues[b.ref]["fields"]["status"]["name"] == "Won't Do"

    fake.workflow = [{"id": "11", "name": "Start progress", "to": "In Progress"}]
    with pytest.raises(JiraWorkflowError, match="no transition into a done status"):
        tracker.close(a, "completed")


def test_jira_tracker_reopens_through_a_transition_out_of_done(srv, creds):
    fake = jira_api(srv)
    tracker = jira_tracker(srv)
    a = tracker.create(FP, TITLE, BODY, [])
    closed = tracker.close(a, "duplicate")
    assert closed.state_reason == "duplicate"
    assert fake.issues[a.ref]["fields"]["resolution"] == {"name": "Duplicate"}

    reopened = tracker.reopen(closed)
    posts = [r.json() for r in srv.requests_to(r"/rest/api/3/issue/\d+/transitions", "POST")]
    # "Reopen" (to To Do) is offered from Done only; "Start progress" is not the way back.
    assert posts[-1] == {"transition": {"id": "41"}}
    assert (reopened.state, reopened.state_reason) == ("open", None)
    found = jira_tracker(srv).find(FP)
    assert (found.state, found.state_reason) == ("open", None)
    assert fake.issues[a.ref]["fields"]["status"]["name"] == "To Do"
    assert fake.issues[a.ref]["fields"]["resolution"] is None

    fake.workflow = [{"id": "31", "name": "Done", "to": "Done"}]
    with pytest.raises(JiraWorkflowError, match="no transition out of its done status"):
        tracker.reopen(found)
    srv.assert_clean()


def test_jira_tracker_reopen_on_a_workflow_with_other_names(srv, creds):
    fake = jira_api(srv, workflow=custom_workflow())
    tracker = jira_tracker(srv)
    a = tracker.create(FP, TITLE, BODY, [])
    tracker.reopen(tracker.close(a, "completed"))
    posts = [r.json() for r in srv.requests_to(r"/rest/api/3/issue/\d+/transitions", "POST")]
    assert posts == [{"transition": {"id": "51"}}, {"transition": {"id": "21"}}]
    assert fake.issues[a.ref]["fields"]["status"]["name"] == "To Do"


# ---------------------------------------------------------------------------------------------
# Linear tracker


def linear_tracker(srv: FakeServer) -> LinearTracker:
    settings = LinearTrackerSettings(base_url=srv.url, team_key="ENG")
    return LinearTracker(settings, sleep=Sleeps(), retry=FAST, clock=lambda: NOW.timestamp())


def test_linear_tracker_create_find_update_comment_close(srv, creds):
    fake = linear_api(srv)
    tracker = linear_tracker(srv)
    assert tracker.find(FP) is None

    issue = tracker.create(FP, TITLE, BODY, ["feedback-loop"])

    (stored,) = fake.issues.values()
    assert stored["description"] != BODY  # Linear re-serialised the Markdown
    assert [n["name"] for n in stored["labels"]["nodes"]] == ["feedback-loop"]
    (att,) = fake.attachments
    assert att["url"] == "https://feedback-loop.local/suggestion/health:exports"
    assert att["issueId"] == stored["id"] == issue.ref and att["metadata"]["fingerprint"] == FP
    assert (issue.state, issue.body, issue.url) == ("open", BODY, stored["url"])

    found = linear_tracker(srv).find(FP)
    assert found is not None and found.ref == issue.ref
    assert content_hash(found.title, found.body) == content_hash(TITLE, BODY)

    # Title change only: one issueUpdate carrying just the title.
    tracker.update(found, FP, "Fix: exports (again)", BODY, ["feedback-loop"])
    assert fake.ops("issueUpdate")[-1]["variables"]["input"] == {"title": "Fix: exports (again)"}
    new_body = BODY.replace("31 tickets", "40 tickets")
    tracker.update(tracker.find(FP), FP, "Fix: exports (again)", new_body, ["feedback-loop", "exp"])
    sent = fake.ops("issueUpdate")[-1]["variables"]["input"]
    assert set(sent) == {"description", "addedLabelIds"}
    assert tracker.find(FP).body == new_body and len(fake.attachments) == 1

    tracker.comment(issue, "Still failing.")
    assert fake.comments == [{"issueId": issue.ref, "body": "Still failing."}]

    closed = tracker.close(issue, "not_planned")
    assert fake.issues[issue.ref]["state"]["name"] == "Canceled"  # not "Duplicate"
    assert (closed.state, closed.state_reason) == ("closed", "not_planned")
    assert tracker.find(FP).state_reason == "not_planned"
    other = tracker.create("health:alerts", "Alerts", "x", [])
    assert tracker.close(other, "completed").state_reason == "completed"
    assert fake.issues[other.ref]["state"]["name"] == "Done"
    # The label was created once and reused.
    assert len(fake.ops("issueLabelCreate")) == 2 and len(fake.labels) == 2
    srv.assert_clean()


def test_linear_tracker_close_as_duplicate_and_reopen(srv, creds):
    fake = linear_api(srv)
    tracker = linear_tracker(srv)
    issue = tracker.create(FP, TITLE, BODY, [])
    closed = tracker.close(issue, "duplicate")
    assert fake.issues[issue.ref]["state"]["name"] == "Duplicate"
    assert (closed.state, closed.state_reason) == ("closed", "duplicate")
    assert closed.closed_at is not None

    reopened = tracker.reopen(closed)
    states_query = fake.ops("issue")[-1]["query"]
    assert '"unstarted", "backlog"' in states_query
    assert fake.issues[issue.ref]["state"]["name"] == "Todo"  # unstarted before backlog
    assert fake.issues[issue.ref]["canceledAt"] is None
    assert (reopened.state, reopened.state_reason, reopened.closed_at) == ("open", None, None)
    assert reopened.body == BODY
    assert linear_tracker(srv).find(FP).state == "open"
    srv.assert_clean()


def test_linear_find_falls_back_to_a_legacy_attachment_and_update_adds_the_canonical_one(
    srv, creds
):
    fake = linear_api(srv)
    tracker = linear_tracker(srv)
    legacy = tracker.create("investigate:exports", TITLE, BODY, [])
    found = tracker.find(FP)
    assert (found.ref, found.fingerprint) == (legacy.ref, "investigate:exports")
    moved = tracker.update(found, FP, TITLE, BODY, [])  # same text: only the attachment
    assert fake.ops("issueUpdate") == []
    assert [a["url"].rsplit("/", 1)[1] for a in fake.attachments] == ["investigate:exports", FP]
    assert moved.fingerprint == FP and tracker.find(FP).fingerprint == FP
    srv.assert_clean()


def test_linear_tracker_retried_and_lost_creates_do_not_duplicate(srv, creds):
    fake = linear_api(srv)
    first = linear_tracker(srv).create(FP, TITLE, BODY, [])
    again = linear_tracker(srv).create(FP, TITLE, BODY, [])  # a retried create
    assert again.ref == first.ref and len(fake.issues) == 1

    # The answer to issueCreate is lost (502) after Linear created the issue: the repeat
    # collides with the deterministic id and the issue is adopted, attachment and all.
    fake.drop_create_answer = 1
    lost = linear_tracker(srv).create("health:alerts", "Alerts", "x", [])
    assert len(fake.issues) == 2 and lost.ref in fake.issues
    assert len(fake.ops("issueCreate")) == 3
    assert [a["issueId"] for a in fake.attachments] == [first.ref, lost.ref]
    assert linear_tracker(srv).find("health:alerts").ref == lost.ref


def test_linear_tracker_reports_a_persons_edit(srv, creds):
    fake = linear_api(srv)
    tracker = linear_tracker(srv)
    issue = tracker.create(FP, TITLE, BODY, [])
    fake.issues[issue.ref]["description"] = "Handled in ENG-9."
    fake.issues[issue.ref]["updatedAt"] = linear_ts(NOW + timedelta(hours=1))
    assert tracker.find(FP).body == "Handled in ENG-9."


def test_jira_search_token_is_opaque_and_not_reused(srv, creds):
    """The fake's tokens really page (a guard against a fake that always answers page 1)."""
    fake = jira_api(srv)
    for i in range(5):
        fake.add_issue(NOW - timedelta(hours=i + 1))
    pages = list(jira_connector(srv).pages(None, NOW))
    ids = [i["id"] for p in pages for i in json.loads(p.body)["issues"]]
    assert len(ids) == len(set(ids)) == 5
    tokens = [b.get("nextPageToken") for b in fake.search_bodies]
    assert tokens[0] is None and len(set(tokens[1:])) == 2
    assert json.loads(base64.b64decode(tokens[1]))["offset"] == 2
