"""GitHub reader and tracker against a stateful fake GitHub that checks every request against
GitHub's OpenAPI description (tests/fakes/github_openapi)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
import requests

from tasks import contracts, load, writeback
from tasks.clients.github import GitHubIssuesConnector, GitHubSettings, make_client
from tasks.clients.http import (
    AuthError,
    ClientRequestError,
    HttpClient,
    InvalidBodyError,
    NotFoundError,
    RequestBudget,
    RetryPolicy,
)
from tasks.contracts import LandedPage
from tasks.settings import ConfigError
from tasks.trackers.base import TrackerIssue, marker_for
from tasks.trackers.github import GitHubIssue, GitHubTracker, WritePacer
from tests.fakes.github import SPEC_PATH, Call, FakeGitHub, ts
from tests.fakes.server import Request, Response
from tests.test_writeback import suggestion

WINDOW_END = datetime(2026, 12, 31, tzinfo=UTC)
BODY = "## Why\nExports fail for large accounts.\n\n| a | b |\n|---|---:|\n| 1 | 2 |"
ISSUES = r"/repos/acme/analytics/issues"
ONE_ISSUE = r"/repos/acme/analytics/issues/\d+"


class FakeClock:
    """monotonic() and sleep() for budgets and retries: sleeping advances time, instantly."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += max(0.0, seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def gh() -> Iterator[FakeGitHub]:
    with FakeGitHub() as fake:
        yield fake
        fake.assert_clean()  # every request valid per the OpenAPI description, none unplanned


def settings_for(fake: FakeGitHub, **overrides: object) -> GitHubSettings:
    return GitHubSettings(base_url=fake.url, owner=fake.owner, repo=fake.repo, **overrides)


def client_for(
    fake: FakeGitHub, settings: GitHubSettings, clock: FakeClock, token: str | None = None
) -> HttpClient:
    return make_client(
        settings,
        token=token or fake.token,
        budget=RequestBudget(5000, 3600, clock=clock, sleep=clock.sleep),
        sleep=clock.sleep,
        wall_clock=lambda: fake.now.timestamp(),
    )


def reader(fake: FakeGitHub, clock: FakeClock, **overrides: object) -> GitHubIssuesConnector:
    settings = settings_for(fake, **overrides)
    return GitHubIssuesConnector(settings, client=client_for(fake, settings, clock))


def tracker(fake: FakeGitHub, clock: FakeClock, **overrides: object) -> GitHubTracker:
    settings = settings_for(fake, **overrides)
    return GitHubTracker(
        settings,
        client=client_for(fake, settings, clock),
        pacer=WritePacer(clock=clock, sleep=clock.sleep),
    )


def numbers(pages: list[LandedPage]) -> list[int]:
    return [item["number"] for page in pages for item in json.loads(page.body)]


def land(
    con: duckdb.DuckDBPyConnection, pages: list[LandedPage], run_id: str, tmp_path: Path
) -> load.LoadStats:
    """Through the real loader: raw rows and the cursor state commit together."""
    return load.load_pages(con, contracts.GITHUB_ISSUES, pages, run_id, tmp_path / "landing")


# -- the spec and the fake ------------------------------------------------------------------


def test_trimmed_spec_records_its_origin() -> None:
    spec = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
    origin = spec["info"]["x-feedback-loop-trimmed-from"]
    assert origin["package"] == "@octokit/openapi"
    assert origin["version"] == spec["info"]["version"]
    readme = (SPEC_PATH.parent / "README.md").read_text(encoding="utf-8")
    assert f"`@octokit/openapi` {origin['version']}" in readme
    assert (SPEC_PATH.parent / "LICENSE").read_text(encoding="utf-8").startswith("MIT License")
    operations = {op["operationId"] for ops in spec["paths"].values() for op in ops.values()}
    assert (
        operations
        == set(origin["operations"])
        == {
            "repos/get",
            "issues/list-for-repo",
            "issues/get",
            "issues/create",
            "issues/update",
            "issues/create-comment",
        }
    )


def test_fake_answers_422_to_requests_the_spec_does_not_allow(gh: FakeGitHub) -> None:
    gh.add_issue()
    headers = {"Authorization": f"Bearer {gh.token}"}
    bad = [
        ("POST", "/repos/acme/analytics/issues", {"body": "no title"}, None),
        ("PATCH", "/repos/acme/analytics/issues/1", {"state_reason": "finished"}, None),
        ("PATCH", "/repos/acme/analytics/issues/1", {"labels": "bug"}, None),
        ("POST", "/repos/acme/analytics/issues/1/comments", {"text": "hi"}, None),
        ("GET", "/repos/acme/analytics/issues", None, {"per_page": "many"}),
        ("GET", "/repos/acme/analytics/issues", None, {"state": "done"}),
        ("GET", "/repos/acme/analytics/issues", None, {"since": "yesterday"}),
        ("GET", "/repos/acme/analytics/issues", None, {"q": "is:open"}),
    ]
    for method, path, body, params in bad:
        resp = requests.request(
            method, gh.url + path, json=body, params=params, headers=headers, timeout=5
        )
        assert resp.status_code == 422, (method, path, body, params)
    assert len(gh.invalid) >= len(bad)
    assert not gh.issues[1]["labels"] and gh.issues[1]["state"] == "open"  # nothing applied
    # A nullable enum takes null (API_NOTES: the spec needs null added to validate).
    resp = requests.patch(
        gh.url + "/repos/acme/analytics/issues/1",
        json={"state": "open", "state_reason": None},
        headers=headers,
        timeout=5,
    )
    assert resp.status_code == 200
    gh.invalid.clear()


# -- tracker: create / update / labels / comment / close -----------------------------------


def test_create_writes_marker_and_labels_and_find_returns_it(
    gh: FakeGitHub, clock: FakeClock
) -> None:
    t = tracker(gh, clock)
    issue = t.create("fp-exports", "Fix exports", BODY, ["feedback-loop", "area:exports"])

    assert isinstance(issue, GitHubIssue)
    assert issue.ref == str(issue.number) and issue.node_id.startswith("I_")
    assert (issue.state, issue.state_reason, issue.locked) == ("open", None, False)
    assert issue.title == "Fix exports" and issue.body == BODY  # marker hidden from callers
    assert issue.labels == ("feedback-loop", "area:exports")
    stored = gh.issues[issue.number]
    assert stored["body"] == f"{BODY}\n\n{marker_for('fp-exports')}\n"
    [post] = gh.calls_to("POST", ISSUES)
    assert post.body == {
        "title": "Fix exports",
        "body": stored["body"],
        "labels": ["feedback-loop", "area:exports"],
    }
    assert t.find("fp-exports") == issue


def test_create_always_adds_the_tracking_label(gh: FakeGitHub, clock: FakeClock) -> None:
    t = tracker(gh, clock, label="fl-suggestion")
    issue = t.create("fp", "T", BODY, ["area:exports"])
    assert issue.labels == ("fl-suggestion", "area:exports")
    assert t.find("fp") == issue


def test_update_sends_only_changed_fields_and_merges_labels(
    gh: FakeGitHub, clock: FakeClock
) -> None:
    t = tracker(gh, clock)
    created = t.create("fp", "Title", BODY, ["feedback-loop"])
    gh.update_issue(created.number, labels=["feedback-loop", "needs-triage"])  # a person's label
    current = t.find("fp")
    assert current is not None and current.labels == ("feedback-loop", "needs-triage")

    assert t.update(current, "fp", "Title", BODY, ["feedback-loop"]) == current
    assert gh.calls_to("PATCH", ONE_ISSUE) == []  # nothing changed, nothing sent

    new_body = BODY + "\n\nTickets doubled this week."
    gh.update_issue(created.number, labels=["feedback-loop", "needs-triage", "p1"])  # just now
    updated = t.update(current, "fp", "Title", new_body, ["feedback-loop", "area:exports"])
    [patch] = gh.calls_to("PATCH", ONE_ISSUE)
    assert set(patch.body) == {"body", "labels"}
    # PATCH labels replace the set: the people's labels (even one added after find) are kept.
    assert patch.body["labels"] == ["feedback-loop", "needs-triage", "p1", "area:exports"]
    assert updated.body == new_body
    assert updated.labels == ("feedback-loop", "needs-triage", "p1", "area:exports")
    assert gh.issues[created.number]["body"].endswith(marker_for("fp") + "\n")

    t.update(updated, "fp", "New title", new_body, ["feedback-loop"])
    assert gh.calls_to("PATCH", ONE_ISSUE)[-1].body == {"title": "New title"}


def test_browser_edit_line_endings_do_not_count_as_a_change(
    gh: FakeGitHub, clock: FakeClock
) -> None:
    t = tracker(gh, clock)
    created = t.create("fp", "T", BODY, [])
    stored = gh.issues[created.number]["body"]
    gh.update_issue(created.number, body=stored.replace("\n", "\r\n"))  # saved from the web UI
    current = t.find("fp")
    assert current is not None and current.body == BODY
    t.update(current, "fp", "T", BODY, [])
    assert gh.calls_to("PATCH", ONE_ISSUE) == []


def test_labels_github_dropped_are_reported(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    # A GitHub App token: no `permissions` object to check up front, labels silently dropped.
    with FakeGitHub(permissions=None, can_label=False) as fake:
        t = tracker(fake, clock)
        with caplog.at_level(logging.WARNING, logger="tasks.trackers.github"):
            issue = t.create("fp", "T", BODY, ["feedback-loop", "area:exports"])
        assert issue.labels == ()
        assert "feedback-loop, area:exports were not applied" in caplog.text
        assert "find() cannot see this issue again" in caplog.text
        fake.assert_clean()


def test_token_that_cannot_label_is_refused_before_anything_is_created() -> None:
    clock = FakeClock()
    read_only = {"admin": False, "maintain": False, "push": False, "triage": False, "pull": True}
    with FakeGitHub(permissions=read_only, can_label=False) as fake:
        t = tracker(fake, clock)
        with pytest.raises(AuthError, match="GITHUB_TOKEN"):
            t.create("fp", "T", BODY, ["feedback-loop"])
        assert fake.calls_to("POST", ISSUES) == []
        fake.assert_clean()


def test_comment(gh: FakeGitHub, clock: FakeClock) -> None:
    t = tracker(gh, clock)
    issue = t.create("fp", "T", BODY, [])
    t.comment(issue, "Still happening: 12 more tickets this week.")
    [post] = gh.calls_to("POST", ONE_ISSUE + "/comments")
    assert post.body == {"body": "Still happening: 12 more tickets this week."}
    assert [c["body"] for c in gh.comments[issue.number]] == [post.body["body"]]


def test_locked_issue_is_detected_and_not_commented(
    gh: FakeGitHub, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    gh.add_issue("T", f"{BODY}\n\n{marker_for('fp')}\n", labels=["feedback-loop"], locked=True)
    t = tracker(gh, clock)
    issue = t.find("fp")
    assert issue is not None and issue.locked
    with caplog.at_level(logging.WARNING, logger="tasks.trackers.github"):
        t.comment(issue, "more evidence")
    assert "locked" in caplog.text
    assert gh.calls_to("POST", ONE_ISSUE + "/comments") == []


@pytest.mark.parametrize("reason", ["completed", "not_planned"])
def test_close_with_state_reason(gh: FakeGitHub, clock: FakeClock, reason: str) -> None:
    t = tracker(gh, clock)
    issue = t.create("fp", "T", BODY, [])
    closed = t.close(issue, reason)
    assert (closed.state, closed.state_reason) == ("closed", reason)
    assert gh.calls_to("PATCH", ONE_ISSUE)[0].body == {"state": "closed", "state_reason": reason}
    assert gh.issues[issue.number]["closed_at"] is not None
    assert t.close(closed, "completed") == closed  # closed stays as closed: no second write
    assert len(gh.calls_to("PATCH", ONE_ISSUE)) == 1
    with pytest.raises(ValueError, match="close reason"):
        t.close(closed, "wontfix")


def test_close_as_duplicate_then_reopen(gh: FakeGitHub, clock: FakeClock) -> None:
    t = tracker(gh, clock)
    issue = t.create("fp", "T", BODY, [])
    closed = t.close(issue, "duplicate")
    assert (closed.state, closed.state_reason) == ("closed", "duplicate")
    assert closed.closed_at == datetime.fromisoformat(gh.issues[issue.number]["closed_at"])
    reopened = t.reopen(closed)
    assert (reopened.state, reopened.state_reason, reopened.closed_at) == ("open", "reopened", None)
    assert gh.calls_to("PATCH", ONE_ISSUE)[-1].body == {"state": "open", "state_reason": "reopened"}
    assert t.reopen(reopened) == reopened  # open stays open: no second write
    assert len(gh.calls_to("PATCH", ONE_ISSUE)) == 2


def test_fake_refuses_a_state_reason_that_contradicts_the_state(
    gh: FakeGitHub, clock: FakeClock
) -> None:
    """Valid per the schema, refused by GitHub: the fake says so too (a 422)."""
    t = tracker(gh, clock)
    issue = t.create("fp", "T", BODY, [])
    with pytest.raises(ClientRequestError):
        t._write("PATCH", t._issue_path(issue), {"state": "open", "state_reason": "completed"}, 200)
    assert gh.issues[issue.number]["state"] == "open"


def test_find_falls_back_to_legacy_markers_and_update_rewrites_the_marker(
    gh: FakeGitHub, clock: FakeClock
) -> None:
    t = tracker(gh, clock)
    legacy = t.create("investigate:exports", "Investigate: exports", BODY, [])
    assert t.find("fix:exports") is None  # a legacy fingerprint is looked up exactly
    found = t.find("health:exports")
    assert (found.ref, found.fingerprint) == (legacy.ref, "investigate:exports")
    moved = t.update(found, "health:exports", found.title, BODY, [])
    [patch] = gh.calls_to("PATCH", ONE_ISSUE)
    assert patch.body == {"body": f"{BODY}\n\n{marker_for('health:exports')}\n"}
    assert moved.fingerprint == "health:exports"
    assert t.find("health:exports").fingerprint == "health:exports"
    assert t.find("investigate:exports") is None


# -- tracker: find ----------------------------------------------------------------------------


def test_find_lists_by_label_and_follows_link_pages(gh: FakeGitHub, clock: FakeClock) -> None:
    for i in range(7):
        gh.add_issue(f"other {i}", f"text\n\n{marker_for(f'fp-{i}')}", labels=["feedback-loop"])
    gh.add_issue("a PR", marker_for("fp-target"), labels=["feedback-loop"], pr=True)
    target = gh.add_issue(
        "target",
        f"body\n\n{marker_for('fp-target')}",
        labels=["feedback-loop"],
        state="closed",
        state_reason="not_planned",
    )
    gh.add_issue("unrelated", "no marker", labels=["bug"])
    t = tracker(gh, clock, per_page=3)

    found = t.find("fp-target")

    assert found is not None and found.ref == str(target["number"])
    assert (found.state, found.state_reason) == ("closed", "not_planned")
    lists = gh.calls_to("GET", r".*/issues")
    assert len(lists) == 3
    assert lists[0].path == "/repos/acme/analytics/issues"
    assert lists[0].query == {"labels": "feedback-loop", "state": "all", "per_page": "3"}
    # The next links name the repository by id; they were followed as given.
    assert [c.path for c in lists[1:]] == ["/repositories/4242/issues"] * 2
    assert [c.query["page"] for c in lists[1:]] == ["2", "3"]
    assert all(c.query["labels"] == "feedback-loop" for c in lists)
    assert not [c for c in gh.calls if "search" in c.path]  # never the lagging search API


def test_find_matches_the_exact_marker_among_other_issues(gh: FakeGitHub, clock: FakeClock) -> None:
    gh.add_issue("Fix exports", marker_for("fp-1-old"), labels=["feedback-loop"])
    gh.add_issue("Fix exports", "mentions feedback-loop:fingerprint=fp-1", labels=["feedback-loop"])
    gh.add_issue("Fix exports", None, labels=["feedback-loop"])  # body null
    want = gh.add_issue("Fix exports", f"x\n\n{marker_for('fp-1')}", labels=["Feedback-Loop"])
    t = tracker(gh, clock)
    found = t.find("fp-1")
    assert found is not None and found.ref == str(want["number"])
    assert t.find("fp-2") is None


def test_find_prefers_the_original_over_a_copy_closed_as_duplicate(
    gh: FakeGitHub, clock: FakeClock
) -> None:
    text = f"x\n\n{marker_for('fp')}"
    gh.add_issue("copy", text, labels=["feedback-loop"], state="closed", state_reason="duplicate")
    original = gh.add_issue("original", text, labels=["feedback-loop"])
    found = tracker(gh, clock).find("fp")
    assert found is not None and found.ref == str(original["number"])


# -- rate limits and pacing ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "retry_after", "primary", "expected_wait"),
    [
        pytest.param(403, 7, False, 7.0, id="403-secondary-retry-after"),
        pytest.param(403, None, False, None, id="403-secondary-no-retry-after"),
        pytest.param(403, None, True, 60.0, id="403-primary-until-reset"),
        pytest.param(429, 3, False, 3.0, id="429-retry-after"),
        pytest.param(429, None, False, None, id="429-no-retry-after"),
    ],
)
def test_rate_limited_reads_are_waited_out(
    gh: FakeGitHub,
    clock: FakeClock,
    status: int,
    retry_after: int | None,
    primary: bool,
    expected_wait: float | None,
) -> None:
    gh.add_issue("a")
    gh.fail_next(status, retry_after=retry_after, primary=primary, times=2)
    pages = list(reader(gh, clock).pages(None, WINDOW_END))
    assert numbers(pages) == [1]
    assert [c.status for c in gh.calls] == [status, status, 200]
    assert len(clock.sleeps) == 2 and all(s > 0 for s in clock.sleeps)
    if expected_wait is not None:
        assert clock.sleeps == [pytest.approx(expected_wait)] * 2
    elif status == 403:
        # GitHub: a secondary limit without Retry-After means wait at least one minute.
        assert all(s >= 60 for s in clock.sleeps), clock.sleeps


@pytest.mark.parametrize(("status", "retry_after"), [(403, 5), (403, None), (429, 2), (429, None)])
def test_rate_limited_writes_are_waited_out_and_applied_once(
    gh: FakeGitHub, clock: FakeClock, status: int, retry_after: int | None
) -> None:
    t = tracker(gh, clock)
    t.check()
    gh.fail_next(status, retry_after=retry_after, method="POST")
    issue = t.create("fp", "T", BODY, [])
    t.comment(issue, "note")
    assert len(gh.issues) == 1 and len(gh.comments[issue.number]) == 1
    assert [c.status for c in gh.calls_to("POST", ISSUES)] == [status, 201]
    assert clock.sleeps and all(s > 0 for s in clock.sleeps)


def test_writes_are_at_least_one_second_apart(gh: FakeGitHub, clock: FakeClock) -> None:
    sent: list[float] = []
    gh.on_request(lambda fake, call: sent.append(clock.t) if call.method != "GET" else None)
    t = tracker(gh, clock)
    a = t.create("fp-a", "A", BODY, [])
    b = t.create("fp-b", "B", BODY, [])
    t.comment(a, "note")
    t.update(b, "fp-b", "B2", BODY, [])
    t.close(a, "completed")
    assert len(sent) == 5
    assert all(later - earlier >= 1.0 for earlier, later in zip(sent, sent[1:], strict=False))


def test_write_pacer_keeps_80_per_minute_and_500_per_hour(clock: FakeClock) -> None:
    burst = WritePacer(min_interval_s=0, clock=clock, sleep=clock.sleep)
    times = []
    for _ in range(161):
        burst.budget.acquire()
        times.append(clock.t)
    assert times[79] == times[0]  # 80 may go at once ...
    assert times[80] - times[0] >= 60  # ... the 81st waits for the minute
    assert all(times[i + 80] - times[i] >= 60 for i in range(len(times) - 80))

    paced = WritePacer(clock=clock, sleep=clock.sleep)
    times = []
    for _ in range(501):
        paced.budget.acquire()
        times.append(clock.t)
    assert all(later - earlier >= 1.0 for earlier, later in zip(times, times[1:], strict=False))
    assert times[499] - times[0] < 600
    assert times[500] - times[0] >= 3600  # the 501st waits for the hour


# -- reader: incremental pages ------------------------------------------------------------


def test_incremental_read_pages_then_resumes_from_the_stored_since(
    gh: FakeGitHub, clock: FakeClock, con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    for i in range(7):
        gh.add_issue(f"bug {i}", labels=["bug"])
        gh.tick(600)
    gh.add_issue("a PR", pr=True)
    gh.add_issue("another PR", pr=True)
    r = reader(gh, clock, per_page=3, overlap_minutes=5)

    first = list(r.pages(None, WINDOW_END))

    assert len(first) == 3 and [p.n_records for p in first] == [3, 3, 3]
    lists = gh.calls_to("GET", r".*/issues")
    assert lists[0].path == "/repos/acme/analytics/issues"
    assert lists[0].query == {
        "state": "all",
        "sort": "updated",
        "direction": "asc",
        "per_page": "3",
    }
    assert [c.path for c in lists[1:]] == ["/repositories/4242/issues"] * 2
    # Mid-run pages keep the run's start (a crash re-reads); the last one moves the watermark.
    assert [p.state["since"] for p in first[:-1]] == [None, None]
    newest = max(i["updated_at"] for i in gh.issues.values())
    since = datetime.fromisoformat(newest.replace("Z", "+00:00")) - timedelta(minutes=5)
    assert first[-1].state == {"since": ts(since), "max_updated_at": newest}

    stats = land(con, first, "run1", tmp_path)
    assert (stats.n_inserted, stats.n_dropped, stats.n_quarantined) == (7, 2, 0)
    n_prs = con.sql(
        "select count(*) from raw.github__issues where json_exists(payload, '$.pull_request')"
    ).fetchall()[0][0]
    assert n_prs == 0

    gh.tick(3600)
    gh.update_issue(2, title="bug 1 (edited)")
    new = gh.add_issue("bug new")
    stored = load.read_state(con, "github", "issues")
    assert stored == first[-1].state
    second = list(r.pages(stored, WINDOW_END))

    again = gh.calls_to("GET", r".*/issues")[len(lists)]
    assert again.query["since"] == first[-1].state["since"]
    # Only what changed since, plus the overlap (both PRs were updated within 5 minutes).
    assert numbers(second) == [8, 9, 2, new["number"]]
    stats = land(con, second, "run2", tmp_path)
    assert (stats.n_inserted, stats.n_updated, stats.n_dropped) == (1, 1, 2)
    title = con.sql(
        "select payload ->> 'title' from raw.github__issues where node_id = ?",
        params=[gh.issues[2]["node_id"]],
    ).fetchall()[0][0]
    assert title == "bug 1 (edited)"


def test_issue_skipped_by_a_concurrent_update_is_read_next_run(
    gh: FakeGitHub, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    for i in range(6):
        gh.add_issue(f"bug {i}")

    def edit_issue_1_while_paging(fake: FakeGitHub, call: Call) -> None:
        if call.query.get("page") == "2" and fake.issues[1]["title"] == "bug 0":
            fake.update_issue(1, title="bug 0 (edited meanwhile)")

    gh.on_request(edit_issue_1_while_paging)
    r = reader(gh, clock, per_page=2, overlap_minutes=0)
    with caplog.at_level(logging.WARNING, logger="tasks.clients.github"):
        first = list(r.pages(None, WINDOW_END))

    # #1 moved to the end, everything shifted one slot left: #3 was never served.
    assert numbers(first) == [1, 2, 4, 5, 6, 1]
    assert "changed while paging" in caplog.text
    # So the next run starts at the newest update read up to #1's first page, not at the max.
    assert first[-1].state["since"] == gh.issues[2]["updated_at"]
    second = list(r.pages(first[-1].state, WINDOW_END))
    assert 3 in numbers(second)


def test_enterprise_base_url_with_a_path(clock: FakeClock) -> None:
    with FakeGitHub(prefix="/api/v3") as fake:
        for i in range(3):
            fake.add_issue(f"bug {i}")
        pages = list(reader(fake, clock, per_page=2).pages(None, WINDOW_END))
        assert numbers(pages) == [1, 2, 3]
        assert all(c.path.startswith("/api/v3/") for c in fake.calls)
        assert fake.url.endswith("/api/v3")
        fake.assert_clean()


def test_bad_token_fails_fast_naming_the_setting(gh: FakeGitHub, clock: FakeClock) -> None:
    settings = settings_for(gh)
    client = client_for(gh, settings, clock, token="ghp_wrongTokenValue99")
    with pytest.raises(AuthError) as err:
        list(GitHubIssuesConnector(settings, client=client).pages(None, WINDOW_END))
    assert "GITHUB_TOKEN" in str(err.value)
    assert "ghp_wrongTokenValue99" not in str(err.value)
    assert len(gh.calls) == 1 and clock.sleeps == []  # never retried


@pytest.mark.parametrize("mode", ["truncated", "object"])
def test_invalid_or_truncated_page_fails_the_batch(
    gh: FakeGitHub, clock: FakeClock, mode: str
) -> None:
    for i in range(4):
        gh.add_issue(f"bug {i}")
    pages = reader(gh, clock, per_page=2).pages(None, WINDOW_END)
    assert next(pages).state["since"] is None  # the watermark has not moved
    # broken on every attempt of the (default) retry policy: InvalidBodyError
    gh.corrupt += [mode] * RetryPolicy().max_attempts
    with pytest.raises(InvalidBodyError) as err:
        next(pages)
    assert str(err.value).startswith("github: ") and gh.token not in str(err.value)


@pytest.mark.parametrize("mode", ["truncated", "object"])
def test_a_page_broken_once_is_retried(gh: FakeGitHub, clock: FakeClock, mode: str) -> None:
    for i in range(4):
        gh.add_issue(f"bug {i}")
    pages = reader(gh, clock, per_page=2).pages(None, WINDOW_END)
    first = next(pages)
    gh.corrupt.append(mode)
    assert numbers([first, *pages]) == [1, 2, 3, 4]
    assert len(clock.sleeps) == 1


def test_token_comes_from_env_or_a_secret_block(
    gh: FakeGitHub, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    budget = RequestBudget(5000, 3600, clock=clock, sleep=clock.sleep)
    settings = settings_for(gh)
    monkeypatch.setenv("GITHUB_TOKEN", gh.token)
    GitHubIssuesConnector(settings, client=make_client(settings, budget=budget)).check()

    monkeypatch.delenv("GITHUB_TOKEN")
    with pytest.raises(ConfigError, match="GITHUB_TOKEN"):
        make_client(settings, budget=budget)

    asked = []

    def fake_resolve(env_name: str, block: str | None = None) -> str:
        asked.append((env_name, block))
        return gh.token

    monkeypatch.setattr("tasks.clients.github.resolve_secret", fake_resolve)
    with_block = settings_for(gh, token_block="github-token")
    GitHubIssuesConnector(with_block, client=make_client(with_block, budget=budget)).check()
    assert asked == [("GITHUB_TOKEN", "github-token")]


def test_check_reports_a_repository_it_cannot_see(gh: FakeGitHub, clock: FakeClock) -> None:
    reader(gh, clock).check()
    settings = GitHubSettings(base_url=gh.url, owner="acme", repo="secret")
    connector = GitHubIssuesConnector(settings, client=client_for(gh, settings, clock))
    with pytest.raises(NotFoundError, match="repository acme/secret not found or token lacks"):
        connector.check()


def test_check_issue_reports_transferred_and_deleted_issues(
    gh: FakeGitHub, clock: FakeClock
) -> None:
    stays, moves, goes = (gh.add_issue(t) for t in ("stays", "moves", "deleted"))
    gh.transfer(moves["number"], to_repo_id=9999, new_number=77)
    gh.delete(goes["number"])
    checks = reader(gh, clock).check_issues([stays["number"], moves["number"], goes["number"], 99])
    assert [c.status for c in checks] == ["present", "moved", "deleted", "not_found"]
    assert checks[0].node_id == stays["node_id"] and not checks[0].is_gone
    assert checks[1].moved_to is not None and checks[1].moved_to.endswith("/9999/issues/77")
    assert all(c.is_gone for c in checks[1:])


def test_renamed_repository_is_not_mistaken_for_transferred_issues(clock: FakeClock) -> None:
    with FakeGitHub(renamed_from="acme/old-name") as fake:
        issue = fake.add_issue("still here")
        settings = GitHubSettings(base_url=fake.url, owner="acme", repo="old-name")
        connector = GitHubIssuesConnector(settings, client=client_for(fake, settings, clock))
        assert connector.check_issue(issue["number"]).status == "present"
        assert numbers(list(connector.pages(None, WINDOW_END))) == [issue["number"]]
        fake.assert_clean()


def test_update_and_close_accept_an_issue_known_only_by_its_ref(
    gh: FakeGitHub, clock: FakeClock
) -> None:
    t = tracker(gh, clock)
    created = t.create("fp", "T", BODY, [])
    from_ledger = TrackerIssue(
        ref=created.ref, url="", state="open", state_reason=None, body="", title=""
    )
    updated = t.update(from_ledger, "fp", "T", BODY + "\nmore", [])
    assert gh.calls_to("PATCH", ONE_ISSUE)[0].body == {
        "body": f"{BODY}\nmore\n\n{marker_for('fp')}\n"
    }
    assert updated.body == BODY + "\nmore"
    assert t.close(from_ledger, "not_planned").state_reason == "not_planned"


# -- with the write-back planner ----------------------------------------------------------


def write_back(
    con: duckdb.DuckDBPyConnection, t: GitHubTracker, run_id: str, **changes: object
) -> tuple[str, str]:
    plan = writeback.plan_writeback(con, t, [suggestion(**changes)], max_new=5)
    writeback.apply_plan(con, t, plan, run_id)
    return plan[0].action, plan[0].reason


def test_write_back_creates_once_updates_in_place_and_respects_a_closed_issue(
    gh: FakeGitHub, clock: FakeClock, con: duckdb.DuckDBPyConnection
) -> None:
    t = tracker(gh, clock)
    assert write_back(con, t, "r1")[0] == "create"
    assert write_back(con, t, "r2") == ("skip", "unchanged")
    assert write_back(con, t, "r3", why="Weekly users fell 60%.")[0] == "update"
    [patch] = gh.calls_to("PATCH", ONE_ISSUE)
    assert set(patch.body) == {"body"}
    [number] = gh.issues
    gh.update_issue(number, state="closed", state_reason="not_planned")  # a person decides
    action, reason = write_back(con, t, "r4", why="Weekly users fell 70%.")
    assert action == "skip" and "closed as not_planned" in reason
    assert len(gh.issues) == 1 and len(gh.calls_to("PATCH", ONE_ISSUE)) == 1


def test_create_that_may_have_landed_is_not_repeated_and_the_next_run_adopts_it(
    gh: FakeGitHub, clock: FakeClock, con: duckdb.DuckDBPyConnection
) -> None:
    t = tracker(gh, clock)
    gh.fail_next(502, method="POST", after_apply=True)  # created, but the answer was lost
    action, reason = write_back(con, t, "r1")  # the run goes on; this item is re-checked
    assert action == "create" and "outcome uncertain" in reason
    assert con.sql("select state from ops.writeback_ledger").fetchall() == [("pending",)]
    assert len(gh.issues) == 1 and len(gh.calls_to("POST", ISSUES)) == 1
    assert write_back(con, t, "r2")[0] == "adopt"  # found by its marker, body unchanged
    assert write_back(con, t, "r3") == ("skip", "unchanged")
    assert len(gh.issues) == 1


def test_a_garbled_answer_to_a_create_is_uncertain_and_the_next_run_adopts_it(
    gh: FakeGitHub, clock: FakeClock, con: duckdb.DuckDBPyConnection
) -> None:
    def cut(req: Request) -> Response:  # created, but the 201 body arrives cut short
        payload, _ = gh._handle(req).encoded()
        return Response.cut_short(payload, status=201)

    gh.server.route("POST", ISSUES, cut)
    t = tracker(gh, clock)
    action, reason = write_back(con, t, "r1")
    assert action == "create" and "outcome uncertain" in reason
    assert len(gh.issues) == 1 and len(gh.calls_to("POST", ISSUES)) == 1  # not repeated
    assert con.sql("select state from ops.writeback_ledger").fetchall() == [("pending",)]
    assert write_back(con, t, "r2")[0] == "adopt"
    assert len(gh.issues) == 1
