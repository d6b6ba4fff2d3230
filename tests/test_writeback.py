"""Write-back to the Markdown tracker: create once, update on change, respect people, dry run."""

from __future__ import annotations

import json

import pytest

from tasks import writeback
from tasks.trackers.markdown import MarkdownTracker


def suggestion(
    fp="health:exports",
    rank=1,
    why="Weekly users fell 45%.",
    blocked=None,
    subject="Export fails for jane.doe@example.com, call +1 415 555 0134",
    kind=None,
):
    """A row of marts.backlog_suggestions: `fp` canonical (`health:x`, kind fix unless given) or,
    as the mart wrote before, per kind (`investigate:x`, the kind then taken from it)."""
    prefix, feature = fp.split(":")
    kind = kind or (prefix if prefix in ("fix", "investigate", "improve") else None)
    kind = kind or ("improve" if prefix == "adoption" else "fix")
    return {
        "fingerprint": fp,
        "kind": kind,
        "feature_key": feature,
        "title": f"{kind.title()}: {feature}",
        "why": why,
        "priority_rank": rank,
        "priority_score": 1000.0 / rank,
        "reach": 100,
        "impact": 2.0,
        "confidence": 1.0,
        "effort": 1.0,
        "health_score": 40.0,
        "health_rank": 1,
        "n_features": 8,
        "as_of_date": "2026-11-24",
        "formula_version": "health-v1",
        "explanation": "trend -18 pts",
        "confidence_reasons": None,
        "is_blocked": blocked is not None,
        "blocked_by": blocked,
        "components": [("trend", 10.0, 0.2, 2.0, "weekly users 50 vs baseline 100 (-50.0%)")],
        "evidence": {
            "n_users": 100,
            "n_accounts": 10,
            "usage_trend": -0.45,
            "recent_weekly_users": 50,
            "baseline_weekly_users": 100,
            "n_tickets_14d": 9,
            "n_tickets_prior_28d": 4,
            "ticket_spike_ratio": 4.5,
            "tickets_per_1k_users": 90.0,
            "n_open_bugs": 3,
            "n_open_high_sev_bugs": 2,
            "n_new_high_sev_bugs_14d": 2,
            "top_tickets": [
                {
                    "id": "zendesk:7",
                    "url": "https://acme-demo.zendesk.com/agent/tickets/7",
                    "subject": subject,
                    "priority": "high",
                    "status": "open",
                    "created_at": "2026-11-20",
                }
            ],
            "top_bugs": [
                {
                    "id": "github:I_1",
                    "url": "https://github.com/acme/analytics/issues/1",
                    "title": "CSV export times out",
                    "severity": "s1",
                    "state": "open",
                    "created_at": "2026-11-19",
                }
            ],
        },
    }


def run(con, tracker, suggestions, max_new=5, run_id="r1", dry_run=False):
    plan = writeback.plan_writeback(con, tracker, suggestions, max_new)
    if not dry_run:
        writeback.apply_plan(con, tracker, plan, run_id)
    return {p.fingerprint: (p.action, p.reason) for p in plan}


def ledger(con):
    return con.sql(
        "select fingerprint, state, issue_ref from ops.writeback_ledger order by fingerprint"
    ).fetchall()


def test_creates_once_then_skips_unchanged(con, tmp_path):
    tracker = MarkdownTracker(tmp_path / "tracker")
    first = run(con, tracker, [suggestion()])
    assert first["health:exports"][0] == "create"
    path = tmp_path / "tracker" / "health-exports.md"
    mtime = path.stat().st_mtime_ns
    second = run(con, tracker, [suggestion()], run_id="r2")
    assert second["health:exports"] == ("skip", "unchanged")
    assert path.stat().st_mtime_ns == mtime
    assert len(list((tmp_path / "tracker").glob("*.md"))) == 1
    assert ledger(con) == [("health:exports", "open", "health-exports.md")]


def test_changed_evidence_updates_in_place(con, tmp_path):
    tracker = MarkdownTracker(tmp_path / "tracker")
    run(con, tracker, [suggestion()])
    changed = run(con, tracker, [suggestion(why="Weekly users fell 60%.")], run_id="r2")
    assert changed["health:exports"][0] == "update"
    text = (tmp_path / "tracker" / "health-exports.md").read_text()
    assert "Weekly users fell 60%." in text and "45%" not in text.split("## Why")[1][:40]
    assert len(list((tmp_path / "tracker").glob("*.md"))) == 1


@pytest.mark.parametrize("reason", ["not_planned", "duplicate", "completed"])
def test_closed_by_a_person_is_never_reopened_or_recreated(con, tmp_path, reason):
    tracker = MarkdownTracker(tmp_path / "tracker")
    run(con, tracker, [suggestion()])
    path = tmp_path / "tracker" / "health-exports.md"
    text = (
        path.read_text()
        .replace("status: open", "status: closed")
        .replace("state_reason: \n", f"state_reason: {reason}\n")
    )
    path.write_text(text)
    plan = run(con, tracker, [suggestion(why="Weekly users fell 70%.")], run_id="r2")
    assert plan["health:exports"][0] == "skip"
    assert f"closed as {reason}" in plan["health:exports"][1]
    assert path.read_text() == text
    assert ledger(con) == [("health:exports", "closed", "health-exports.md")]


def test_crash_between_create_and_ledger_update_heals_without_duplicate(con, tmp_path):
    class KilledAfterCreate(MarkdownTracker):
        def create(self, *args, **kwargs):
            super().create(*args, **kwargs)
            raise KeyboardInterrupt("process killed after the tracker call")

    with pytest.raises(KeyboardInterrupt):
        run(con, KilledAfterCreate(tmp_path / "tracker"), [suggestion()])
    # The issue exists in the tracker, the ledger row was left pending.
    assert ledger(con) == [("health:exports", "pending", None)]
    assert len(list((tmp_path / "tracker").glob("*.md"))) == 1

    tracker = MarkdownTracker(tmp_path / "tracker")
    plan = run(con, tracker, [suggestion()], run_id="r2")
    assert plan["health:exports"][0] == "adopt"
    assert len(list((tmp_path / "tracker").glob("*.md"))) == 1
    assert ledger(con) == [("health:exports", "open", "health-exports.md")]
    assert run(con, tracker, [suggestion()], run_id="r3")["health:exports"] == ("skip", "unchanged")


def test_cap_on_new_issues_reports_overflow(con, tmp_path):
    tracker = MarkdownTracker(tmp_path / "tracker")
    many = [suggestion(f"health:f{i}", rank=i + 1) for i in range(4)]
    plan = run(con, tracker, many, max_new=2)
    actions = [plan[f"health:f{i}"][0] for i in range(4)]
    assert actions == ["create", "create", "skip", "skip"]
    assert "cap of 2" in plan["health:f3"][1]
    assert len(list((tmp_path / "tracker").glob("*.md"))) == 2


def test_blocked_suggestion_is_not_written(con, tmp_path):
    tracker = MarkdownTracker(tmp_path / "tracker")
    plan = run(con, tracker, [suggestion(blocked="tickets (critical: missing rows)")])
    assert plan["health:exports"][0] == "skip"
    assert "blocked" in plan["health:exports"][1]
    assert not (tmp_path / "tracker").exists()


def test_dry_run_writes_nothing(con, tmp_path):
    tracker = MarkdownTracker(tmp_path / "tracker")
    plan = run(con, tracker, [suggestion()], dry_run=True)
    assert plan["health:exports"][0] == "create"
    assert not (tmp_path / "tracker").exists()
    assert ledger(con) == []


def test_body_is_readable_and_free_of_contact_details(con, tmp_path):
    tracker = MarkdownTracker(tmp_path / "tracker")
    run(con, tracker, [suggestion()])
    text = (tmp_path / "tracker" / "health-exports.md").read_text()
    assert "<!-- feedback-loop:fingerprint=health:exports -->" in text
    for part in (
        "## Why",
        "### Health components",
        "[zendesk:7](https://acme-demo.zendesk.com",
        "CSV export times out",
        "reach 100",
    ):
        assert part in text
    assert "jane.doe@example.com" not in text and "415 555 0134" not in text
    assert "[email]" in text and "[phone]" in text
    json.dumps(writeback.plan_as_rows(writeback.plan_writeback(con, tracker, [suggestion()], 5)))


def test_material_change_updates_and_comments_once(con, tmp_path):
    tracker = MarkdownTracker(tmp_path / "tracker")
    run(con, tracker, [suggestion()])
    bigger = suggestion(why="Weekly users fell 70%.")
    bigger["priority_score"] = 5000.0
    bigger["evidence"]["top_bugs"].append(
        {
            "id": "github:I_9",
            "url": "https://github.com/acme/analytics/issues/9",
            "title": "Exports corrupt",
            "severity": "s1",
            "state": "open",
            "created_at": "2026-11-23",
        }
    )
    plan = run(con, tracker, [bigger], run_id="r2")
    assert plan["health:exports"][0] == "update"
    assert (
        "priority rose" in plan["health:exports"][1] and "github:I_9" in plan["health:exports"][1]
    )
    text = (tmp_path / "tracker" / "health-exports.md").read_text()
    assert text.count("feedback-loop: material change") == 1
    # The comment thread is not part of the body: the same data next night changes nothing.
    assert run(con, tracker, [bigger], run_id="r3")["health:exports"] == ("skip", "unchanged")


@pytest.mark.parametrize("on_recovery", ["comment", "close"])
def test_recovered_problem_is_commented_or_closed_once(con, tmp_path, on_recovery):
    tracker = MarkdownTracker(tmp_path / "tracker")
    run(con, tracker, [suggestion()])
    path = tmp_path / "tracker" / "health-exports.md"

    def recover(run_id, allow=True):
        plan = writeback.plan_writeback(
            con, tracker, [], 5, on_recovery=on_recovery, allow_recovery=allow, as_of="2026-11-30"
        )
        writeback.apply_plan(con, tracker, plan, run_id)
        return {p.fingerprint: (p.action, p.reason) for p in plan}

    held = recover("r2", allow=False)  # degraded data: never act on an absence
    assert held["health:exports"][0] == "skip" and "degraded" in held["health:exports"][1]
    assert "no longer meets" not in path.read_text()
    plan = recover("r3")
    assert plan["health:exports"][0] == on_recovery
    text = path.read_text()
    assert text.count("no longer meets its suggestion rule") == 1
    is_closed = "\nstatus: closed\n" in text.split("<!--")[0]
    assert is_closed is (on_recovery == "close")
    assert "health:exports" not in recover("r4")  # recovered/closed: not acted on again
    assert path.read_text().count("no longer meets its suggestion rule") == 1


def test_backdated_plan_creates_and_updates_but_never_changes_issue_states(con, tmp_path):
    """A backdated run (allowed to write) never comments or closes a recovery and never reopens:
    an older day's absence is no recovery, its presence no relapse. The newest day's run does."""
    tracker = MarkdownTracker(tmp_path / "tracker")
    run(con, tracker, [suggestion(), suggestion("health:billing", rank=2)])
    billing = tmp_path / "tracker" / "health-billing.md"
    closed = writeback.plan_writeback(
        con,
        tracker,
        [suggestion()],
        5,
        on_recovery="close",
        allow_recovery=True,
        as_of="2026-11-30",
    )
    writeback.apply_plan(con, tracker, closed, "r2")
    assert "\nstatus: closed\n" in billing.read_text()  # closed as recovered by the loop
    exports = tmp_path / "tracker" / "health-exports.md"
    text_before = exports.read_text()

    def plan(suggestions, backdated):
        items = writeback.plan_writeback(
            con,
            tracker,
            suggestions,
            5,
            on_recovery="close",
            allow_recovery=True,
            as_of="2026-11-20",
            backdated=backdated,
        )
        return {p.fingerprint: (p.action, p.reason) for p in items}

    why = "this run is backdated (as_of 2026-11-20 < newest scored day 2026-11-30)"
    # exports absent on the older day: not closed; billing back on it: not reopened; new: created
    old = plan([suggestion("health:billing"), suggestion("health:search", rank=3)], why)
    assert old["health:exports"][0] == "skip" and why in old["health:exports"][1]
    assert old["health:billing"][0] == "skip" and "not reopened" in old["health:billing"][1]
    assert old["health:search"][0] == "create"
    changed = plan([suggestion(why="Weekly users fell 60%.")], why)
    assert changed["health:exports"][0] == "update"
    assert exports.read_text() == text_before
    newest = plan([suggestion("health:billing")], None)
    assert newest["health:exports"][0] == "close" and newest["health:billing"][0] == "reopen"
