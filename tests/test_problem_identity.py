"""One problem, one issue: the fingerprint names the feature problem (health:/adoption:), not the
suggestion kind. A kind change retitles the same issue with one comment; a problem the loop closed
as recovered is reopened when it returns, a person's close is final; legacy per-kind fingerprints
(in the ledger and in markers) are carried over without duplicates; the team's effort estimate is
read from the tracker and kept in the ledger.

Against the Markdown tracker and the stateful fakes of GitHub (requests checked against GitHub's
OpenAPI description), Jira and Linear on 127.0.0.1, with a real DuckDB warehouse.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tasks import db, writeback
from tasks.clients.http import RetryPolicy
from tasks.trackers.adf import adf_text
from tasks.trackers.base import (
    canonical_fingerprint,
    effort_from_labels,
    legacy_fingerprints,
    marker_for,
    problem_fingerprint,
)
from tasks.trackers.jira import JiraTracker, JiraTrackerSettings
from tasks.trackers.linear import LinearTracker, LinearTrackerSettings
from tasks.trackers.markdown import COMMENTS, MarkdownTracker
from tests.fakes.github import FakeGitHub
from tests.fakes.jira import STORY_POINTS, JiraFake, jira_api
from tests.fakes.linear import LinearFake, linear_api
from tests.fakes.server import FakeServer
from tests.test_github import FakeClock
from tests.test_github import tracker as github_tracker
from tests.test_writeback import suggestion

FAST = RetryPolicy(max_attempts=2, base_delay_s=0.01, max_delay_s=0.1, jitter=0.0)
FP = "health:exports"
ONE_ISSUE = r"/repos/acme/analytics/issues/\d+"


# --------------------------------------------------------------------------------------------
# Helpers: one write-back night, the ledger, and each tracker seen from the outside
# --------------------------------------------------------------------------------------------


def night(
    con: duckdb.DuckDBPyConnection,
    tracker: Any,
    suggestions: list[dict[str, Any]],
    run_id: str,
    *,
    as_of: str = "2026-11-24",
    on_recovery: str = "comment",
    dry_run: bool = False,
) -> dict[str, writeback.PlanItem]:
    plan = writeback.plan_writeback(
        con,
        tracker,
        suggestions,
        5,
        on_recovery=on_recovery,
        allow_recovery=True,
        as_of=as_of,
    )
    if not dry_run:
        writeback.apply_plan(con, tracker, plan, run_id)
    return {p.fingerprint: p for p in plan}


def ledger(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, Any]]:
    rel = con.execute("select * from ops.writeback_ledger order by fingerprint")
    cols = [d[0] for d in rel.description]
    return {r[0]: dict(zip(cols, r, strict=True)) for r in rel.fetchall()}


def legacy_ledger_row(
    con: duckdb.DuckDBPyConnection, tracker: str, fp: str, ref: str, url: str, title: str
) -> None:
    """A row as the previous version wrote it: per-kind fingerprint, none of the new columns."""
    con.execute(
        """insert into ops.writeback_ledger (fingerprint, tracker, issue_ref, url, state,
               state_reason, title, content_hash, created_at, updated_at, last_run_id)
           values (?, ?, ?, ?, 'open', null, ?, 'old-hash', now(), now(), 'old-run')""",
        [fp, tracker, ref, url, title],
    )


@dataclass
class World:
    """A tracker kind: a fresh tracker per night (as each nightly process builds one) and what
    a person would see in it."""

    name: str
    new_tracker: Callable[[], Any]
    n_issues: Callable[[], int]
    comments: Callable[[str], list[str]]  # issue ref -> comment texts, oldest first
    fake: Any = None


def markdown_world(tmp_path: Path) -> World:
    directory = tmp_path / "tracker"

    def comments(ref: str) -> list[str]:
        text = (directory / ref).read_text(encoding="utf-8")
        if COMMENTS not in text:
            return []
        return [c.strip() for c in text.split(COMMENTS, 1)[1].split("\n---\n")[1:]]

    return World(
        "markdown",
        lambda: MarkdownTracker(directory),
        lambda: len(list(directory.glob("*.md"))),
        comments,
    )


def github_world(gh: FakeGitHub) -> World:
    clock = FakeClock()
    return World(
        "github",
        lambda: github_tracker(gh, clock),
        lambda: len(gh.issues),
        lambda ref: [c["body"] for c in gh.comments[int(ref)]],
        gh,
    )


def jira_world(srv: FakeServer) -> World:
    fake = jira_api(srv)
    settings = JiraTrackerSettings(base_url=srv.url, project="ABC")
    return World(
        "jira",
        lambda: JiraTracker(settings, sleep=lambda s: None, retry=FAST),
        lambda: len(fake.issues),
        lambda ref: [adf_text(c["body"]) for c in fake.comments.get(ref, [])],
        fake,
    )


def linear_world(srv: FakeServer) -> World:
    fake = linear_api(srv)
    settings = LinearTrackerSettings(base_url=srv.url, team_key="ENG")
    return World(
        "linear",
        lambda: LinearTracker(settings, sleep=lambda s: None, retry=FAST),
        lambda: len(fake.issues),
        lambda ref: [c["body"] for c in fake.comments if c["issueId"] == ref],
        fake,
    )


@pytest.fixture
def creds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JIRA_EMAIL", "bot@acme.test")
    monkeypatch.setenv("JIRA_API_TOKEN", "jira-test-token-123")
    monkeypatch.setenv("LINEAR_API_KEY", "lin_api_TestKey1234567890")


@pytest.fixture
def gh() -> Iterator[FakeGitHub]:
    with FakeGitHub() as fake:
        yield fake
        fake.assert_clean()


@pytest.fixture
def srv() -> Iterator[FakeServer]:
    with FakeServer() as server:
        yield server
        server.assert_clean()


@pytest.fixture(params=["markdown", "github", "jira", "linear"])
def world(request: pytest.FixtureRequest, tmp_path: Path, creds: None) -> Iterator[World]:
    if request.param == "markdown":
        yield markdown_world(tmp_path)
    elif request.param == "github":
        with FakeGitHub() as fake:
            yield github_world(fake)
            fake.assert_clean()
    else:
        with FakeServer() as server:
            yield (jira_world if request.param == "jira" else linear_world)(server)
            server.assert_clean()


# --------------------------------------------------------------------------------------------
# The fingerprint
# --------------------------------------------------------------------------------------------


def test_fingerprint_names_the_feature_problem_and_maps_legacy_ones() -> None:
    assert problem_fingerprint("fix", "exports") == "health:exports"
    assert problem_fingerprint("investigate", "exports") == "health:exports"
    assert problem_fingerprint("improve", "exports") == "adoption:exports"
    with pytest.raises(ValueError, match="unknown suggestion kind"):
        problem_fingerprint("rewrite", "exports")
    assert canonical_fingerprint("fix:exports") == "health:exports"
    assert canonical_fingerprint("investigate:exports") == "health:exports"
    assert canonical_fingerprint("improve:exports") == "adoption:exports"
    assert canonical_fingerprint("health:exports") == "health:exports"
    assert canonical_fingerprint("adoption:a:b") == "adoption:a:b"
    assert canonical_fingerprint("fix:a:b") == "health:a:b"
    assert legacy_fingerprints("health:exports") == ["fix:exports", "investigate:exports"]
    assert legacy_fingerprints("adoption:exports") == ["improve:exports"]
    assert legacy_fingerprints("fix:exports") == []


def test_old_mart_output_plans_by_the_problem_fingerprint(con, tmp_path) -> None:
    """Rows still carrying `investigate:x` (the mart before the change) land on `health:x`."""
    tracker = MarkdownTracker(tmp_path / "tracker")
    plan = night(con, tracker, [suggestion("investigate:exports")], "r1")
    assert plan[FP].action == "create" and plan[FP].kind == "investigate"
    assert [p.name for p in (tmp_path / "tracker").glob("*.md")] == ["health-exports.md"]
    assert marker_for(FP) in (tmp_path / "tracker" / "health-exports.md").read_text()
    assert list(ledger(con)) == [FP]
    # The same problem under its new name and the same kind: nothing to do.
    again = night(con, tracker, [suggestion(FP, kind="investigate")], "r2")
    assert (again[FP].action, again[FP].reason) == ("skip", "unchanged")


# --------------------------------------------------------------------------------------------
# investigate -> fix: the same issue, retitled, one comment
# --------------------------------------------------------------------------------------------


def test_investigate_becoming_fix_retitles_the_same_markdown_issue_with_one_comment(
    con, tmp_path
) -> None:
    tracker = MarkdownTracker(tmp_path / "tracker")
    night(con, tracker, [suggestion(FP, kind="investigate")], "r1")
    assert ledger(con)[FP]["kind"] == "investigate"

    fix = suggestion(FP, kind="fix", why="Three s1 bugs opened this week.")
    plan = night(con, tracker, [fix], "r2")
    assert plan[FP].action == "update" and "now fix (was investigate)" in plan[FP].reason
    files = list((tmp_path / "tracker").glob("*.md"))
    assert [f.name for f in files] == ["health-exports.md"]
    text = files[0].read_text()
    assert "title: Fix: exports" in text and "Investigate: exports" not in text
    world = markdown_world(tmp_path)
    assert world.comments("health-exports.md") == [
        "feedback-loop: this problem is now **fix** (was investigate): "
        "Three s1 bugs opened this week."
    ]
    row = ledger(con)[FP]
    assert (row["kind"], row["title"], row["issue_ref"]) == ("fix", "Fix: exports", files[0].name)
    # Next night, same kind and data: no write, no second comment.
    assert night(con, tracker, [fix], "r3")[FP].action == "skip"
    assert len(world.comments("health-exports.md")) == 1


def test_investigate_becoming_fix_retitles_the_same_github_issue_with_one_comment(
    con, gh: FakeGitHub
) -> None:
    world = github_world(gh)
    night(con, world.new_tracker(), [suggestion(FP, kind="investigate")], "r1")
    [number] = gh.issues
    fix = suggestion(FP, kind="fix", why="Three s1 bugs opened this week.")
    assert night(con, world.new_tracker(), [fix], "r2")[FP].action == "update"
    assert night(con, world.new_tracker(), [fix], "r3")[FP].action == "skip"

    assert list(gh.issues) == [number] and len(gh.calls_to("POST", r".*/issues")) == 1
    assert gh.issues[number]["title"] == "Fix: exports"
    [patch] = gh.calls_to("PATCH", ONE_ISSUE)
    assert patch.body["title"] == "Fix: exports" and "state" not in patch.body
    assert world.comments(str(number)) == [
        "feedback-loop: this problem is now **fix** (was investigate): "
        "Three s1 bugs opened this week."
    ]
    assert ledger(con)[FP]["kind"] == "fix"


def test_kind_change_with_a_material_change_is_still_one_comment(con, tmp_path) -> None:
    tracker = MarkdownTracker(tmp_path / "tracker")
    night(con, tracker, [suggestion(FP, kind="investigate")], "r1")
    worse = suggestion(FP, kind="fix")
    worse["priority_score"] = 5000.0
    night(con, tracker, [worse], "r2")
    [comment] = markdown_world(tmp_path).comments("health-exports.md")
    assert "now **fix** (was investigate)" in comment and "material change" in comment


# --------------------------------------------------------------------------------------------
# Closed by the loop as recovered, then back: reopened, one comment, no second issue
# --------------------------------------------------------------------------------------------


def test_loop_closed_problem_that_returns_is_reopened_with_one_comment(con, world: World) -> None:
    s = suggestion(FP)
    created = night(con, world.new_tracker(), [s], "r1")[FP]
    assert created.action == "create"
    ref = created.issue_ref

    recovered = night(con, world.new_tracker(), [], "r2", as_of="2026-11-30", on_recovery="close")
    assert recovered[FP].action == "close"
    row = ledger(con)[FP]
    assert (row["state"], row["state_reason"], row["closed_by"]) == (
        "closed",
        "completed",
        "feedback-loop",
    )
    assert row["closed_at"] is not None
    closed_on = row["closed_at"].date().isoformat()
    assert world.new_tracker().find(FP).state == "closed"

    # Dry run first: the plan says reopen and why, and nothing is written.
    n_comments = len(world.comments(ref))
    dry = night(con, world.new_tracker(), [s], "r3", as_of="2026-12-05", dry_run=True)[FP]
    assert dry.action == "reopen" and f"closed it as recovered on {closed_on}" in dry.reason
    assert world.new_tracker().find(FP).state == "closed"
    assert ledger(con)[FP]["state"] == "closed" and len(world.comments(ref)) == n_comments

    back = night(con, world.new_tracker(), [s], "r3", as_of="2026-12-05")[FP]
    assert (back.action, back.issue_ref) == ("reopen", ref)
    issue = world.new_tracker().find(FP)
    assert (issue.ref, issue.state) == (ref, "open")
    assert world.n_issues() == 1
    comments = [c for c in world.comments(ref) if "the problem is back" in c]
    assert len(comments) == 1
    assert "as of 2026-12-05" in comments[0]
    assert f"closed as recovered on {closed_on}" in comments[0]
    row = ledger(con)[FP]
    assert (row["state"], row["closed_by"], row["closed_at"]) == ("open", None, None)

    # It stays: the next night is a plain skip, no second reopen or comment.
    again = night(con, world.new_tracker(), [s], "r4", as_of="2026-12-06")[FP]
    assert (again.action, again.reason) == ("skip", "unchanged")
    assert world.n_issues() == 1 and len(world.comments(ref)) == n_comments + 1


def test_reopen_does_not_count_against_the_cap_of_new_issues(con, tmp_path) -> None:
    tracker = MarkdownTracker(tmp_path / "tracker")
    night(con, tracker, [suggestion(FP)], "r1")
    night(con, tracker, [], "r2", on_recovery="close")
    plan = writeback.plan_writeback(
        con, tracker, [suggestion(FP), suggestion("health:search", rank=2)], 1, as_of="2026-12-05"
    )
    assert [(p.fingerprint, p.action) for p in plan] == [
        (FP, "reopen"),
        ("health:search", "create"),
    ]


def test_a_persons_completed_close_stays_closed_when_the_problem_recurs(con, tmp_path) -> None:
    tracker = MarkdownTracker(tmp_path / "tracker")
    night(con, tracker, [suggestion(FP)], "r1")
    path = tmp_path / "tracker" / "health-exports.md"
    text = path.read_text().replace("status: open", "status: closed")
    path.write_text(text.replace("state_reason: \n", "state_reason: completed\n"))
    closed = path.read_text()

    item = night(con, tracker, [suggestion(FP, why="Weekly users fell 80%.")], "r2")[FP]
    assert item.action == "skip" and "closed as completed in the tracker" in item.reason
    assert path.read_text() == closed
    assert len(list((tmp_path / "tracker").glob("*.md"))) == 1
    assert ledger(con)[FP]["closed_by"] is None


def test_github_issue_the_loop_closed_then_a_person_closed_again_is_not_reopened(
    con, gh: FakeGitHub
) -> None:
    """closed_at later than the close the loop recorded: a person's decision, final."""
    world = github_world(gh)
    night(con, world.new_tracker(), [suggestion(FP)], "r1")
    [number] = gh.issues
    night(con, world.new_tracker(), [], "r2", on_recovery="close")
    assert ledger(con)[FP]["closed_by"] == "feedback-loop"
    gh.reopen_as_person(number)  # between two nights: the loop never saw it open
    gh.close_as_person(number, "completed")
    n_calls = len(gh.calls)

    item = night(con, world.new_tracker(), [suggestion(FP)], "r3")[FP]
    assert (
        item.action == "skip" and "closed again at" in item.reason and "by a person" in item.reason
    )
    item = night(con, world.new_tracker(), [suggestion(FP)], "r4")[FP]  # final from now on
    assert (
        item.action == "skip" and "closed as completed in the tracker; not reopened" in item.reason
    )
    assert [c for c in gh.calls[n_calls:] if c.method != "GET"] == []
    assert gh.issues[number]["state"] == "closed" and len(gh.issues) == 1
    row = ledger(con)[FP]
    assert (row["state"], row["closed_by"]) == ("closed", None)


@pytest.mark.parametrize("reason", ["not_planned", "duplicate"])
def test_loop_closed_issue_a_person_reclosed_for_another_reason_is_final(
    con, tmp_path, reason: str
) -> None:
    tracker = MarkdownTracker(tmp_path / "tracker")
    night(con, tracker, [suggestion(FP)], "r1")
    night(con, tracker, [], "r2", on_recovery="close")
    path = tmp_path / "tracker" / "health-exports.md"
    path.write_text(path.read_text().replace("state_reason: completed", f"state_reason: {reason}"))
    item = night(con, tracker, [suggestion(FP)], "r3")[FP]
    assert item.action == "skip" and f"closed as {reason} by a person" in item.reason
    assert "\nstatus: closed\n" in path.read_text()


# --------------------------------------------------------------------------------------------
# Migration from per-kind fingerprints
# --------------------------------------------------------------------------------------------


def legacy_markdown_pair(con, tmp_path: Path) -> tuple[MarkdownTracker, Path, Path]:
    """What the previous version left: `fix:exports` (older) and `investigate:exports` (newer),
    both open, both in the ledger."""
    tracker = MarkdownTracker(tmp_path / "tracker")
    old_fix = suggestion("fix:exports")
    old_inv = suggestion("investigate:exports")
    paths = []
    for s, age in ((old_fix, 7200), (old_inv, 3600)):
        body = writeback.render_body(s, "markdown")
        issue = tracker.create(s["fingerprint"], s["title"], body, ["feedback-loop"])
        path = tmp_path / "tracker" / issue.ref
        t = path.stat().st_mtime - age
        os.utime(path, (t, t))
        legacy_ledger_row(con, "markdown", s["fingerprint"], issue.ref, issue.url, s["title"])
        paths.append(path)
    return tracker, paths[0], paths[1]


def test_migration_merges_two_legacy_issues_of_one_problem_in_markdown(con, tmp_path) -> None:
    tracker, fix_path, inv_path = legacy_markdown_pair(con, tmp_path)
    assert (fix_path.name, inv_path.name) == ("fix-exports.md", "investigate-exports.md")
    before = {p: p.read_text() for p in (fix_path, inv_path)}
    s = suggestion(FP, kind="fix")

    # Dry run: the plan shows the migration; tracker and ledger are untouched.
    dry = night(con, tracker, [s], "dry", dry_run=True)
    assert dry[FP].action == "update" and dry[FP].migrate_from == "investigate:exports"
    assert "legacy fingerprint investigate:exports rewritten as health:exports" in dry[FP].reason
    assert dry["fix:exports"].action == "merge" and dry["fix:exports"].merged_into == FP
    assert "closing as duplicate" in dry["fix:exports"].reason
    assert {p: p.read_text() for p in before} == before
    assert set(ledger(con)) == {"fix:exports", "investigate:exports"}

    plan = night(con, tracker, [s], "r1")
    assert [p.action for p in plan.values()] == ["update", "merge"]
    assert len(list((tmp_path / "tracker").glob("*.md"))) == 2  # no create
    kept = inv_path.read_text()  # the more recently updated of the two open ones
    assert marker_for(FP) in kept and "fingerprint=investigate:" not in kept
    assert "title: Fix: exports" in kept and "\nstatus: open\n" in kept
    dup = fix_path.read_text()
    assert "\nstatus: closed\n" in dup and "\nstate_reason: duplicate\n" in dup
    world = markdown_world(tmp_path)
    [link] = world.comments(fix_path.name)
    assert "duplicate of " + inv_path.resolve().as_uri() in link
    assert world.comments(inv_path.name) == [
        "feedback-loop: this problem is now **fix** (was investigate): Weekly users fell 45%."
    ]
    rows = ledger(con)
    assert set(rows) == {FP, "fix:exports"}
    assert (rows[FP]["issue_ref"], rows[FP]["state"], rows[FP]["kind"]) == (
        inv_path.name,
        "open",
        "fix",
    )
    assert (rows["fix:exports"]["state"], rows["fix:exports"]["merged_into"]) == ("merged", FP)
    assert rows["fix:exports"]["issue_ref"] == fix_path.name

    after = {p: p.read_text() for p in (fix_path, inv_path)}
    second = night(con, tracker, [s], "r2")
    assert [(fp, p.action) for fp, p in second.items()] == [(FP, "skip")]
    assert {p: p.read_text() for p in after} == after
    assert ledger(con)[FP]["last_run_id"] == "r2"


def test_migration_merges_two_legacy_issues_of_one_problem_in_github(con, gh: FakeGitHub) -> None:
    world = github_world(gh)
    t = world.new_tracker()
    old = {}
    for fp in ("investigate:exports", "fix:exports"):
        s = suggestion(fp)
        issue = t.create(fp, s["title"], writeback.render_body(s, "github"), ["feedback-loop"])
        legacy_ledger_row(con, "github", fp, issue.ref, issue.url, s["title"])
        old[fp] = int(issue.ref)
    gh.update_issue(old["fix:exports"], assignees=[])  # a person touched it last
    n_calls = len(gh.calls)
    s = suggestion(FP, kind="fix")

    plan = night(con, world.new_tracker(), [s], "r1")
    assert (plan[FP].action, plan[FP].issue_ref) == ("update", str(old["fix:exports"]))
    assert plan["investigate:exports"].action == "merge"

    writes = [c for c in gh.calls[n_calls:] if c.method != "GET"]
    assert not [c for c in writes if c.method == "POST" and c.path.endswith("/issues")]
    kept, dup = gh.issues[old["fix:exports"]], gh.issues[old["investigate:exports"]]
    assert marker_for(FP) in kept["body"] and marker_for("fix:exports") not in kept["body"]
    assert kept["state"] == "open" and kept["title"] == "Fix: exports"
    assert (dup["state"], dup["state_reason"]) == ("closed", "duplicate")
    [link] = world.comments(str(dup["number"]))
    assert kept["html_url"] in link
    assert world.comments(str(kept["number"])) == []  # it was a fix already: no kind comment
    rows = ledger(con)
    assert rows[FP]["issue_ref"] == str(kept["number"])
    assert rows["investigate:exports"]["state"] == "merged"

    n_calls = len(gh.calls)
    second = night(con, world.new_tracker(), [s], "r2")
    assert [(fp, p.action) for fp, p in second.items()] == [(FP, "skip")]
    assert [c for c in gh.calls[n_calls:] if c.method != "GET"] == []
    assert len(gh.issues) == 2


def test_legacy_ledger_rows_of_problems_not_suggested_today_are_carried_over(con, tmp_path) -> None:
    tracker = MarkdownTracker(tmp_path / "tracker")
    s = suggestion("improve:search")
    issue = tracker.create("improve:search", s["title"], "body", ["feedback-loop"])
    legacy_ledger_row(con, "markdown", "improve:search", issue.ref, issue.url, s["title"])
    con.execute("update ops.writeback_ledger set state = 'recovered'")

    dry = night(con, tracker, [], "dry", dry_run=True)
    assert dry["adoption:search"].action == "migrate"
    assert set(ledger(con)) == {"improve:search"}

    night(con, tracker, [], "r1")
    row = ledger(con)["adoption:search"]
    assert (row["state"], row["kind"], row["issue_ref"]) == ("recovered", "improve", issue.ref)
    assert set(ledger(con)) == {"adoption:search"}
    assert night(con, tracker, [], "r2") == {}


def test_legacy_marker_issue_without_a_ledger_row_is_adopted_not_duplicated(
    con, gh: FakeGitHub
) -> None:
    """An issue the old version created (marker fix:exports) whose ledger row never landed."""
    world = github_world(gh)
    s = suggestion(FP, kind="fix")
    body = writeback.render_body(s, "github")
    gh.add_issue(s["title"], f"{body}\n\n{marker_for('fix:exports')}\n", labels=["feedback-loop"])
    [number] = gh.issues

    plan = night(con, world.new_tracker(), [s], "r1")
    assert plan[FP].action == "adopt" and plan[FP].issue_ref == str(number)
    assert "legacy fingerprint fix:exports rewritten" in plan[FP].reason
    assert gh.calls_to("POST", r".*/issues") == []
    [patch] = gh.calls_to("PATCH", ONE_ISSUE)
    assert set(patch.body) == {"body"} and marker_for(FP) in patch.body["body"]
    assert world.comments(str(number)) == []
    assert ledger(con)[FP]["issue_ref"] == str(number)
    assert night(con, world.new_tracker(), [s], "r2")[FP].action == "skip"
    assert len(gh.issues) == 1


def test_legacy_marker_markdown_file_without_a_ledger_row_is_adopted(con, tmp_path) -> None:
    tracker = MarkdownTracker(tmp_path / "tracker")
    s = suggestion(FP, kind="investigate")
    tracker.create("investigate:exports", s["title"], writeback.render_body(s), ["feedback-loop"])

    plan = night(con, tracker, [s], "r1")
    assert plan[FP].action == "adopt"
    [path] = (tmp_path / "tracker").glob("*.md")
    assert path.name == "investigate-exports.md" and marker_for(FP) in path.read_text()
    assert ledger(con)[FP]["kind"] == "investigate"
    assert night(con, tracker, [s], "r2")[FP].action == "skip"


def test_existing_warehouse_ledger_gains_the_new_columns(tmp_path) -> None:
    """ensure_schema on a warehouse of the previous version keeps its rows."""
    path = tmp_path / "old.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("create schema ops")
        con.execute(
            """create table ops.writeback_ledger (fingerprint varchar not null,
               tracker varchar not null, issue_ref varchar, url varchar, state varchar not null,
               state_reason varchar, title varchar, content_hash varchar,
               created_at timestamptz not null, updated_at timestamptz not null,
               last_run_id varchar not null)"""
        )
        legacy_ledger_row(con, "markdown", "fix:exports", "fix-exports.md", "file:///x", "Fix")
    with duckdb.connect(str(path)) as con:
        db.ensure_schema(con)
        db.ensure_schema(con)  # idempotent
        cols = {r[0] for r in con.execute("describe ops.writeback_ledger").fetchall()}
        assert {"kind", "closed_by", "closed_at", "merged_into", "effort", "effort_source"} <= cols
        assert con.execute("select fingerprint from ops.writeback_ledger").fetchall() == [
            ("fix:exports",)
        ]


# --------------------------------------------------------------------------------------------
# Effort from the tracker
# --------------------------------------------------------------------------------------------


def effort(con: duckdb.DuckDBPyConnection) -> tuple[float | None, str | None]:
    row = ledger(con)[FP]
    return row["effort"], row["effort_source"]


def test_effort_label_parsing() -> None:
    assert effort_from_labels(["feedback-loop", "effort:3"]) == 3.0
    assert effort_from_labels(["Effort: 1.5"]) == 1.5
    assert effort_from_labels(["effort=2"]) == 2.0
    assert effort_from_labels(["effort:0", "effort:abc", "efforts:4", "effort:-1"]) is None


def test_effort_from_markdown_front_matter_and_label_is_stored(con, tmp_path) -> None:
    tracker = MarkdownTracker(tmp_path / "tracker")
    night(con, tracker, [suggestion(FP)], "r1")
    assert effort(con) == (None, None)
    path = tmp_path / "tracker" / "health-exports.md"
    path.write_text(path.read_text().replace("labels: [feedback-loop]", "labels: [effort:5]"))
    night(con, tracker, [suggestion(FP)], "r2")
    assert effort(con) == (5.0, "label")

    path.write_text(path.read_text().replace("\n---\n<!--", "\neffort: 3\n---\n<!--", 1))
    night(con, tracker, [suggestion(FP, why="Weekly users fell 60%.")], "r3")  # an update
    assert effort(con) == (3.0, "front_matter")
    text = path.read_text()  # the rewrite kept what the person added
    assert "\neffort: 3\n" in text and "effort:5" in text and "fell 60%" in text


def test_effort_from_a_github_label_is_stored(con, gh: FakeGitHub) -> None:
    world = github_world(gh)
    night(con, world.new_tracker(), [suggestion(FP)], "r1")
    [number] = gh.issues
    gh.update_issue(number, labels=["feedback-loop", "effort:2"])
    night(con, world.new_tracker(), [suggestion(FP)], "r2")
    assert effort(con) == (2.0, "label")
    gh.update_issue(number, labels=["feedback-loop"])  # the estimate was taken off again
    night(con, world.new_tracker(), [suggestion(FP)], "r3")
    assert effort(con) == (None, None)


def test_effort_from_jira_story_points_or_original_estimate_is_stored(
    con, srv: FakeServer, creds: None
) -> None:
    world = jira_world(srv)
    fake: JiraFake = world.fake
    night(con, world.new_tracker(), [suggestion(FP)], "r1")
    [issue] = fake.issues.values()
    issue["fields"]["timeoriginalestimate"] = 4 * 3600
    night(con, world.new_tracker(), [suggestion(FP)], "r2")
    assert effort(con) == (4.0, "original_estimate_hours")
    issue["fields"][STORY_POINTS] = 8
    night(con, world.new_tracker(), [suggestion(FP)], "r3")
    assert effort(con) == (8.0, "story_points")

    # Another site keeps story points in another custom field.
    issue["fields"]["customfield_10028"] = 13
    settings = JiraTrackerSettings(
        base_url=srv.url, project="ABC", story_points_field="customfield_10028"
    )
    night(con, JiraTracker(settings, sleep=lambda s: None, retry=FAST), [suggestion(FP)], "r4")
    assert effort(con) == (13.0, "story_points")


def test_effort_from_a_linear_estimate_is_stored(con, srv: FakeServer, creds: None) -> None:
    world = linear_world(srv)
    fake: LinearFake = world.fake
    night(con, world.new_tracker(), [suggestion(FP)], "r1")
    [issue] = fake.issues.values()
    issue["estimate"] = 3
    night(con, world.new_tracker(), [suggestion(FP)], "r2")
    assert effort(con) == (3.0, "linear_estimate")
