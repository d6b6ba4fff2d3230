"""Polite write-back under GitHub's secondary limits, against the stateful fake GitHub
(tests/fakes/github.py on tests/fakes/server.py, every request checked against GitHub's OpenAPI
description).

Rate-limit waits run on an injected clock (nothing sleeps a minute for real): Retry-After is
honoured, else 60 s doubling; a wait that would overrun the write-back time budget is not
started and the run reports partial, with a ledger the next run resumes from without
duplicates. Writes arrive >= 1.1 s apart (real clock). Unknown outcomes say so. Known issues are
looked up by number instead of re-listing every labelled issue.

`python -m tests.test_writeback_limits` prints the lookup figures (list requests over ten runs
with 105 old issues, before and after).
"""

from __future__ import annotations

import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tasks import db, writeback
from tasks.clients.github import make_client
from tasks.trackers.base import marker_for
from tasks.trackers.github import GitHubTracker, WritePacer
from tasks.trackers.jira import JiraTracker, JiraTrackerSettings
from tasks.trackers.limits import BudgetExhausted, TimeBudget, limit_wait
from tasks.trackers.linear import LinearTracker, LinearTrackerSettings
from tests.fakes.github import FakeGitHub
from tests.fakes.jira import ISSUE_PATH as JIRA_CREATE
from tests.fakes.jira import jira_api
from tests.fakes.linear import linear_api, ratelimited
from tests.fakes.server import FakeServer, Response
from tests.test_github import FakeClock, client_for, settings_for
from tests.test_writeback import suggestion

ISSUES = r"/repos/acme/analytics/issues"
LIST_PAGES = r"/(repos/acme/analytics|repositories/\d+)/issues"  # page 1, then Link pages
ONE_ISSUE = r"/repos/acme/analytics/issues/\d+"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def gh() -> Iterator[FakeGitHub]:
    with FakeGitHub() as fake:
        yield fake
        fake.assert_clean()


def tracker(
    gh: FakeGitHub, clock: FakeClock, budget_s: float = 900.0, **overrides: Any
) -> GitHubTracker:
    """The GitHub tracker with its pacer, retries and rate-limit waits on the fake clock."""
    settings = settings_for(gh, **overrides)
    return GitHubTracker(
        settings,
        client=client_for(gh, settings, clock),
        pacer=WritePacer(clock=clock, sleep=clock.sleep),
        time_budget=TimeBudget(budget_s, clock=clock, sleep=clock.sleep),
        wall_clock=lambda: gh.now.timestamp(),
    )


def problems(n: int, prefix: str = "f") -> list[dict[str, Any]]:
    return [suggestion(fp=f"health:{prefix}{i:03d}", rank=i + 1) for i in range(n)]


def run(
    con: duckdb.DuckDBPyConnection,
    t: Any,
    suggestions: list[dict[str, Any]],
    run_id: str = "r1",
    max_new: int = 5,
) -> tuple[writeback.ApplyResult, dict[str, writeback.PlanItem]]:
    plan = writeback.plan_writeback(con, t, suggestions, max_new)
    result = writeback.apply_plan(con, t, plan, run_id)
    return result, {p.fingerprint: p for p in plan}


def ledger(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[str, str | None]]:
    rows = con.sql("select fingerprint, state, issue_ref from ops.writeback_ledger").fetchall()
    return {fp: (state, ref) for fp, state, ref in rows}


def fingerprints_on_github(gh: FakeGitHub) -> list[str]:
    """One entry per issue on the fake, by the marker it carries (duplicates show twice)."""
    found = []
    for issue in gh.issues.values():
        m = re.search(r"feedback-loop:fingerprint=(\S+) -->", issue["body"] or "")
        assert m, issue["body"]
        found.append(m[1])
    return sorted(found)


# -- waits ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "GET"])
def test_six_secondary_limits_with_retry_after_2_are_waited_out_and_every_write_lands(
    gh: FakeGitHub, clock: FakeClock, con: duckdb.DuckDBPyConnection, method: str
) -> None:
    """The drill's case: six 403s with Retry-After: 2 ended the run with RetriesExhaustedError
    after ~12 s. Now each is waited out (never shorter than asked) and everything lands."""
    t = tracker(gh, clock)
    gh.fail_next(403, retry_after=2, method=method, times=6)
    result, _ = run(con, t, problems(3))
    assert result["status"] == "ok" and result["created"] == 3, dict(result)
    assert fingerprints_on_github(gh) == [f"health:f{i:03d}" for i in range(3)]
    assert t.budget.waits == [2.0] * 6
    limited = [c for c in gh.calls if c.status == 403]
    assert len(limited) == 6 and {c.method for c in limited} == {method}
    assert {state for state, _ in ledger(con).values()} == {"open"}


@pytest.mark.parametrize("status", [403, 429])
def test_secondary_limit_without_retry_after_waits_a_minute_then_doubles(
    gh: FakeGitHub, clock: FakeClock, con: duckdb.DuckDBPyConnection, status: int
) -> None:
    t = tracker(gh, clock)
    gh.fail_next(status, method="POST", times=3)  # GitHub's secondary-limit body, no Retry-After
    result, _ = run(con, t, problems(1))
    assert result["status"] == "ok" and result["created"] == 1
    assert t.budget.waits == [60.0, 120.0, 240.0]
    assert len(gh.issues) == 1


def test_primary_limit_waits_until_the_reset(
    gh: FakeGitHub, clock: FakeClock, con: duckdb.DuckDBPyConnection
) -> None:
    t = tracker(gh, clock)
    gh.fail_next(403, primary=True, method="POST")  # x-ratelimit-remaining: 0, reset in 60 s
    result, _ = run(con, t, problems(1))
    assert result["created"] == 1
    assert t.budget.waits == [61.0]  # the reset, plus a second for clock skew


def test_limit_wait_rules() -> None:
    """Retry-After (seconds or date) wins, then the primary reset, then 60 s doubling; a reset
    header with quota left (a secondary limit) is not a reason to retry early."""
    now = 1_800_000_000.0
    assert limit_wait({"Retry-After": "7"}, 5, now) == (7.0, "Retry-After")
    assert limit_wait({"Retry-After": "Fri, 15 Jan 2027 08:00:30 GMT"}, 1, now) == (
        30.0,
        "Retry-After",
    )
    reset = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(now) + 30)}
    assert limit_wait(reset, 1, now) == (31.0, "x-ratelimit-reset")
    quota_left = {"x-ratelimit-remaining": "4999", "x-ratelimit-reset": str(int(now) + 5)}
    assert [limit_wait(quota_left, n, now)[0] for n in (1, 2, 3, 4)] == [60, 120, 240, 480]


# -- the time budget -------------------------------------------------------------------------


def test_budget_running_out_stops_as_partial_and_the_next_run_resumes_without_duplicates(
    gh: FakeGitHub, clock: FakeClock, con: duckdb.DuckDBPyConnection
) -> None:
    t = tracker(gh, clock, budget_s=300)
    armed: list[bool] = []

    def limit_from_the_third_create(fake: FakeGitHub, call: Any) -> None:
        if call.method == "POST" and not armed and len(fake.calls_to("POST", ISSUES)) == 3:
            armed.append(True)
            fake.fail_next(403, method="POST", times=50)

    gh.on_request(limit_from_the_third_create)
    todays = problems(5)
    result, plan = run(con, t, todays, run_id="r1")

    # 60 s and 120 s fit in 300 s; 240 s more would not: not started, nothing more sent.
    assert t.budget.waits == [60.0, 120.0]
    assert result["status"] == "partial"
    assert (result["created"], result["not_attempted"]) == (2, 3)
    assert result.fingerprints["not_attempted"] == [f"health:f{i:03d}" for i in (2, 3, 4)]
    assert result.stop_reason and "time budget" in result.stop_reason
    assert all(plan[f"health:f{i:03d}"].not_attempted for i in (2, 3, 4))
    assert "not attempted" in plan["health:f002"].reason
    # The ledger holds what was really applied: two issues, no pending row for the refused one.
    assert ledger(con) == {
        "health:f000": ("open", "1"),
        "health:f001": ("open", "2"),
    }
    assert fingerprints_on_github(gh) == ["health:f000", "health:f001"]
    n_posts = len(gh.calls_to("POST", ISSUES))
    assert n_posts == 5  # two creates, then the three 403s that were waited (twice) or not

    gh.faults.clear()  # the limit has lifted by the next night
    result2, plan2 = run(con, tracker(gh, clock), todays, run_id="r2")
    assert result2["status"] == "ok"
    assert (result2["created"], result2["skipped"]) == (3, 2)
    assert fingerprints_on_github(gh) == [f"health:f{i:03d}" for i in range(5)]  # no duplicate
    assert {state for state, _ in ledger(con).values()} == {"open"} and len(ledger(con)) == 5


def test_budget_running_out_while_looking_issues_up_writes_nothing_and_says_partial(
    gh: FakeGitHub, clock: FakeClock, con: duckdb.DuckDBPyConnection
) -> None:
    t = tracker(gh, clock, budget_s=100)
    gh.fail_next(403, method="GET", times=50)  # the listing is limited
    result, plan = run(con, t, problems(3), run_id="r1")
    assert t.budget.waits == [60.0]  # then 120 s would not fit in the 40 s left
    assert result["status"] == "partial" and result["not_attempted"] == 3
    assert all(p.not_attempted and "time budget" in p.reason for p in plan.values())
    assert ledger(con) == {} and gh.issues == {} and not gh.calls_to("POST", ISSUES)

    gh.faults.clear()
    result2, _ = run(con, tracker(gh, clock), problems(3), run_id="r2")
    assert result2["status"] == "ok" and result2["created"] == 3
    assert fingerprints_on_github(gh) == [f"health:f{i:03d}" for i in range(3)]


def test_time_budget_refuses_a_wait_that_does_not_fit(clock: FakeClock) -> None:
    budget = TimeBudget(100, clock=clock, sleep=clock.sleep)
    budget.sleep(60)
    with pytest.raises(BudgetExhausted, match="40 s left"):
        budget.sleep(41)
    assert clock.sleeps == [60]  # the refused wait was not started


# -- Jira and Linear: Retry-After / reset honoured in full, within the budget -----------------


@pytest.fixture
def creds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JIRA_EMAIL", "bot@acme.test")
    monkeypatch.setenv("JIRA_API_TOKEN", "jira-test-token-123")
    monkeypatch.setenv("LINEAR_API_KEY", "lin_api_TestKey1234567890")


@pytest.fixture
def srv() -> Iterator[FakeServer]:
    with FakeServer() as server:
        yield server


@pytest.mark.parametrize(("retry_after", "status"), [(300, "ok"), (1000, "partial")])
def test_jira_429_retry_after_is_waited_in_full_or_write_back_stops_within_the_budget(
    srv: FakeServer,
    creds: None,
    clock: FakeClock,
    con: duckdb.DuckDBPyConnection,
    retry_after: int,
    status: str,
) -> None:
    fake = jira_api(srv)
    limited = Response(429, {"errorMessages": ["Rate limit"]}, {"Retry-After": str(retry_after)})
    srv.script("POST", JIRA_CREATE, [limited], then=fake.create_issue)
    budget = TimeBudget(900, clock=clock, sleep=clock.sleep)
    settings = JiraTrackerSettings(base_url=srv.url, project="ABC", issue_type="Task")
    result, plan = run(con, JiraTracker(settings, time_budget=budget), problems(1))
    assert result["status"] == status
    if status == "ok":
        assert budget.waits == [300.0]  # not cut to the HTTP layer's 120 s cap
        assert result["created"] == 1 and len(fake.issues) == 1
    else:
        assert budget.waits == []  # 1000 s does not fit in 900: not started
        assert result["not_attempted"] == 1 and "time budget" in (result.stop_reason or "")
        # Jira's create is several requests, so the pending row stays: the next run looks first.
        assert fake.issues == {} and ledger(con) == {"health:f000": ("pending", None)}
        again = JiraTracker(settings, time_budget=TimeBudget(900, clock=clock, sleep=clock.sleep))
        result2, _ = run(con, again, problems(1), run_id="r2")
        assert result2["status"] == "ok" and result2["created"] == 1 and len(fake.issues) == 1


@pytest.mark.parametrize(("reset_s", "status"), [(400, "ok"), (2000, "partial")])
def test_linear_rate_limit_reset_is_waited_in_full_or_write_back_stops_within_the_budget(
    srv: FakeServer,
    creds: None,
    clock: FakeClock,
    con: duckdb.DuckDBPyConnection,
    reset_s: int,
    status: str,
) -> None:
    fake = linear_api(srv)
    now = 1_800_000_000.0
    srv.script(
        "POST",
        r"/graphql",
        [ratelimited(200, reset_ms=int((now + reset_s) * 1000))],
        then=fake.handle,
    )
    budget = TimeBudget(900, clock=clock, sleep=clock.sleep)
    settings = LinearTrackerSettings(base_url=srv.url, team_key="ENG")
    result, plan = run(
        con, LinearTracker(settings, clock=lambda: now, time_budget=budget), problems(1)
    )
    assert result["status"] == status
    if status == "ok":
        assert budget.waits == [400.5]  # until the reset (+0.5 s), not cut to 300 s
        assert result["created"] == 1 and len(fake.issues) == 1
    else:
        assert budget.waits == []
        assert plan["health:f000"].not_attempted and result["not_attempted"] == 1
        assert fake.issues == {} and ledger(con) == {}


# -- unknown outcomes -------------------------------------------------------------------------


def test_every_create_with_an_unknown_outcome_says_uncertain_and_the_next_run_adopts_them(
    gh: FakeGitHub, clock: FakeClock, con: duckdb.DuckDBPyConnection
) -> None:
    t = tracker(gh, clock)
    gh.fail_next(502, method="POST", after_apply=True, times=3)  # created, answers lost
    result, plan = run(con, t, problems(3), run_id="r1")
    assert result["status"] == "uncertain"
    assert (result["uncertain"], result["created"]) == (3, 0)
    assert {v for v in ledger(con).values()} == {("pending", None)}
    assert all("outcome uncertain" in p.reason for p in plan.values())
    assert len(gh.issues) == 3 and len(gh.calls_to("POST", ISSUES)) == 3  # none repeated

    result2, plan2 = run(con, t, problems(3), run_id="r2")
    assert result2["status"] == "ok" and result2["adopted"] == 3
    assert fingerprints_on_github(gh) == [f"health:f{i:03d}" for i in range(3)]
    assert len(gh.calls_to("POST", ISSUES)) == 3  # found by marker, never re-created


def test_a_create_that_timed_out_after_sending_is_uncertain_and_found_by_marker_next_run(
    gh: FakeGitHub, clock: FakeClock, con: duckdb.DuckDBPyConnection
) -> None:
    """The issue was created, but the answer came after the client's read timeout."""
    settings = settings_for(gh)
    client = make_client(settings, token=gh.token, sleep=clock.sleep, timeout=(5.0, 0.3))
    t = GitHubTracker(
        settings,
        client=client,
        pacer=WritePacer(clock=clock, sleep=clock.sleep),
        time_budget=TimeBudget(900, clock=clock, sleep=clock.sleep),
    )
    real_create = gh._create
    gh._create = lambda req, params, body: Response.stall(  # type: ignore[method-assign]
        1.0, real_create(req, params, body)
    )
    result, plan = run(con, t, problems(1), run_id="r1")
    gh._create = real_create  # type: ignore[method-assign]
    assert result["status"] == "uncertain" and result["uncertain"] == 1
    assert "outcome uncertain" in plan["health:f000"].reason
    assert ledger(con) == {"health:f000": ("pending", None)}
    assert len(gh.issues) == 1 and len(gh.calls_to("POST", ISSUES)) == 1  # not repeated
    result2, plan2 = run(con, tracker(gh, clock), problems(1), run_id="r2")
    assert result2["status"] == "ok" and plan2["health:f000"].action == "adopt"
    assert fingerprints_on_github(gh) == ["health:f000"]


def test_some_uncertain_among_successes_is_partial(
    gh: FakeGitHub, clock: FakeClock, con: duckdb.DuckDBPyConnection
) -> None:
    t = tracker(gh, clock)
    armed: list[bool] = []

    def lose_the_second_answer(fake: FakeGitHub, call: Any) -> None:
        if call.method == "POST" and not armed and len(fake.calls_to("POST", ISSUES)) == 2:
            armed.append(True)
            fake.fail_next(502, method="POST", after_apply=True)

    gh.on_request(lose_the_second_answer)
    result, _ = run(con, t, problems(3))
    assert result["status"] == "partial"
    assert (result["created"], result["uncertain"]) == (2, 1)
    assert result.fingerprints["uncertain"] == ["health:f001"]


def test_an_item_that_fails_fails_alone_and_the_run_says_partial(
    gh: FakeGitHub, clock: FakeClock, con: duckdb.DuckDBPyConnection
) -> None:
    t = tracker(gh, clock)
    run(con, t, problems(2), run_id="r1")
    changed = [suggestion(fp=f"health:f{i:03d}", rank=i + 1, why="Fell 60%.") for i in range(2)]
    plan = writeback.plan_writeback(con, t, changed, 5)
    assert [p.action for p in plan] == ["update", "update"]
    gh.delete(1)  # a person deletes the first issue between plan and apply
    result = writeback.apply_plan(con, t, plan, "r2")
    assert result["status"] == "partial"
    assert result.fingerprints["failed"] == ["health:f000"]
    assert result.fingerprints["updated"] == ["health:f001"]
    assert "failed: health:f000: issue vanished" in plan[0].reason
    assert ledger(con)["health:f000"] == ("open", "1")  # untouched: nothing was written


@pytest.mark.parametrize(
    ("outcomes", "status"),
    [
        ({}, "ok"),
        ({"skipped": 2}, "ok"),
        ({"created": 1, "not_attempted": 1}, "partial"),
        ({"not_attempted": 2}, "partial"),
        ({"uncertain": 2, "not_attempted": 1}, "uncertain"),
        ({"failed": 1, "uncertain": 1}, "failed"),
        ({"created": 1, "failed": 1}, "partial"),
    ],
)
def test_status_from_outcomes(outcomes: dict[str, int], status: str) -> None:
    result = writeback.ApplyResult()
    for outcome, n in outcomes.items():
        for i in range(n):
            result.add(outcome, f"health:x{i}")
            if outcome == "created":
                result.written += 1
    assert result.finish()["status"] == status
    assert set(writeback.OUTCOMES) <= set(result)


# -- spacing ----------------------------------------------------------------------------------


def test_creates_arrive_at_least_1_1_s_apart_on_the_real_clock(
    gh: FakeGitHub, con: duckdb.DuckDBPyConnection
) -> None:
    """Measured where GitHub measures it: the fake's receive timestamps (the drill saw 0.996 s
    gaps server-side with send-to-send spacing of 1.0 s)."""
    settings = settings_for(gh)
    t = GitHubTracker(settings, client=make_client(settings, token=gh.token), pacer=WritePacer())
    result, _ = run(con, t, problems(3))
    assert result["created"] == 3
    posts = gh.calls_to("POST", ISSUES)
    gaps = [b.at - a.at for a, b in zip(posts, posts[1:], strict=False)]
    assert len(gaps) == 2 and min(gaps) >= 1.1, gaps


# -- lookups ----------------------------------------------------------------------------------

N_OLD = 105
N_NIGHTS = 10


def night_suggestions(n: int, n_old: int) -> list[dict[str, Any]]:
    """Night n: five old problems in rotation (the first one with changed evidence) and, every
    other night, one new problem."""
    out = []
    for k in range(5):
        i = (5 * n + k) % n_old
        # The evidence moves each time the problem leads a night, and only then.
        version = sum((5 * m) % n_old == i for m in range(n + 1))
        why = f"Weekly users fell {45 + version}%."
        out.append(suggestion(fp=f"health:f{i:03d}", rank=i + 1, why=why))
    if n % 2 == 0:
        out.append(suggestion(fp=f"health:new{n:02d}", rank=n_old + 1))
    return out


def lookup_figures(
    con: duckdb.DuckDBPyConnection, *, by_ledger: bool, n_old: int = N_OLD, per_page: int = 100
) -> dict[str, int]:
    """Ten runs over `n_old` old issues (all in the ledger): list requests (pages of the
    labelled issues), single-issue GETs and writes. by_ledger=False is the old lookup (one
    listing per find)."""
    with FakeGitHub() as gh:
        clock = FakeClock()
        run(con, tracker(gh, clock), problems(n_old), run_id="seed", max_new=n_old)
        assert len(gh.issues) == n_old
        t = tracker(gh, clock, per_page=per_page)
        if not by_ledger:
            t.use_ledger = None  # type: ignore[assignment,method-assign]  # plan skips it
        start = len(gh.calls)
        for n in range(N_NIGHTS):
            result, _ = run(con, t, night_suggestions(n, n_old), run_id=f"n{n}")
            assert result["status"] == "ok", dict(result)
        calls = gh.calls[start:]
        assert len(gh.issues) == n_old + N_NIGHTS // 2  # nothing duplicated either way
        gh.assert_clean()
        return {
            "list_requests": sum(
                c.method == "GET" and re.fullmatch(LIST_PAGES, c.path) is not None for c in calls
            ),
            "issue_gets": sum(
                c.method == "GET" and re.fullmatch(ONE_ISSUE, c.path) is not None for c in calls
            ),
            "writes": sum(c.method != "GET" for c in calls),
            "not_modified": sum(c.status == 304 for c in calls),  # conditional re-reads
        }


@pytest.mark.parametrize("by_ledger", [False, True], ids=["listing-per-find", "by-ledger"])
def test_known_issues_are_looked_up_by_number_not_by_relisting(
    con: duckdb.DuckDBPyConnection, by_ledger: bool
) -> None:
    """12 old issues at 5 per page (3 list pages) keep it fast; `python -m
    tests.test_writeback_limits` gives the figures with 105 at GitHub's 100 per page."""
    n_old, per_page = 12, 5
    figures = lookup_figures(con, by_ledger=by_ledger, n_old=n_old, per_page=per_page)
    assert figures["writes"] == N_NIGHTS + N_NIGHTS // 2  # an update a night, five creates
    if by_ledger:
        # Only the five nights with a new problem list the labelled issues, once each.
        labelled = [n_old + k for k in range(N_NIGHTS // 2)]  # before each of those nights
        assert figures["list_requests"] == sum(-(-n // per_page) for n in labelled), figures
        # One GET per known problem looked up, one more right before each update — that one
        # conditional, answered 304 (not counted against GitHub's primary limit).
        assert figures["issue_gets"] == N_NIGHTS * 5 + N_NIGHTS, figures
        assert figures["not_modified"] == N_NIGHTS, figures
    else:
        # Every find lists every labelled issue: 6 finds (5 on odd nights) and a re-find
        # before each update, 3-4 pages each.
        assert figures["list_requests"] >= 3 * (5 * N_NIGHTS + N_NIGHTS // 2 + N_NIGHTS)
        assert figures["issue_gets"] == 0, figures


def test_a_known_issue_that_lost_its_marker_or_label_is_looked_for_in_the_listing(
    gh: FakeGitHub, clock: FakeClock, con: duckdb.DuckDBPyConnection
) -> None:
    t = tracker(gh, clock)
    run(con, t, problems(2), run_id="r1")
    gh.update_issue(1, body="a person rewrote it")  # marker gone from the ledger's issue
    twin = gh.add_issue("copy", f"x\n\n{marker_for('health:f000')}\n", labels=["feedback-loop"])
    _, plan = run(con, t, problems(2), run_id="r2")
    assert plan["health:f000"].issue_ref == str(twin["number"])  # found by marker, no new one
    assert len(gh.issues) == 3 and len(gh.calls_to("POST", ISSUES)) == 2


def main() -> None:  # pragma: no cover - the figures for the report
    for by_ledger in (False, True):
        with tempfile.TemporaryDirectory() as tmp:
            con = duckdb.connect(str(Path(tmp) / "w.duckdb"))
            db.ensure_schema(con)
            figures = lookup_figures(con, by_ledger=by_ledger)  # 105 old issues, 100 per page
            con.close()
        label = "after (ledger refs)" if by_ledger else "before (listing per find)"
        print(f"{label}: {figures}", file=sys.stdout)


if __name__ == "__main__":  # pragma: no cover
    main()
