"""Write suggestions back to a tracker: plan (create / update / skip, with reasons), then apply.

Rules: one issue per fingerprint, found again by ledger or marker (so a crash between the tracker
call and the ledger update heals instead of duplicating); update only when the content changed;
never reopen or rewrite what a person closed; cap new issues per run; a suggestion whose input
source failed a critical data-quality check is not written.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from typing import Any

import duckdb

from tasks.suggestion_text import (  # noqa: F401 (load_suggestions, scrub re-exported)
    TRIAGE_NOTE,
    load_suggestions,
    render_body,
    scrub,
)
from tasks.trackers.base import RESPECTED_CLOSE_REASONS, Tracker, TrackerIssue

log = logging.getLogger(__name__)

LABELS = ["feedback-loop"]


@dataclass
class PlanItem:
    fingerprint: str
    action: str  # create | update | adopt | comment | close | skip
    reason: str
    title: str
    priority_rank: int | None
    priority_score: float | None
    issue_ref: str | None = None
    url: str | None = None
    content_hash: str | None = None
    issue_state: str | None = None
    state_reason: str | None = None
    body: str = ""
    comment: str | None = None  # posted with an update on a material change, or alone
    close_reason: str | None = None
    summary: dict[str, Any] | None = None  # what "material change" is judged against next run


def content_hash(title: str, body: str) -> str:
    return hashlib.sha256(f"{title}\n{body}".encode()).hexdigest()[:16]


def _ledger(con: duckdb.DuckDBPyConnection, tracker: str) -> dict[str, dict[str, Any]]:
    rel = con.execute("select * from ops.writeback_ledger where tracker = ?", [tracker])
    cols = [d[0] for d in rel.description]
    return {r[0]: dict(zip(cols, r, strict=True)) for r in rel.fetchall()}


def plan_writeback(
    con: duckdb.DuckDBPyConnection,
    tracker: Tracker,
    suggestions: list[dict[str, Any]],
    max_new: int,
    *,
    on_recovery: str = "comment",
    allow_recovery: bool = False,
    as_of: str | None = None,
) -> list[PlanItem]:
    """The exact plan: one item per suggestion, plus one per recovered problem still open."""
    ledger = _ledger(con, tracker.name)
    plan: list[PlanItem] = []
    n_new = 0
    for s in suggestions:
        body = render_body(s, tracker.name)
        item = PlanItem(
            fingerprint=s["fingerprint"],
            action="skip",
            reason="",
            title=s["title"],
            priority_rank=s["priority_rank"],
            priority_score=s["priority_score"],
            content_hash=content_hash(s["title"], body),
            body=body,
            summary=_summary(s),
        )
        plan.append(item)
        if s["is_blocked"]:
            item.reason = f"blocked by a critical data-quality failure in {s['blocked_by']}"
            continue
        # The tracker is the truth: a pending ledger row (crash mid-create) heals by lookup.
        existing = tracker.find(s["fingerprint"])
        known = ledger.get(s["fingerprint"])
        if existing is not None:
            item.issue_ref, item.url = existing.ref, existing.url
            completed = known if known and known["state"] != "pending" else None
            _plan_existing(item, existing, completed)
            continue
        if known is not None and known["state"] != "pending":
            item.reason = (
                f"ledger says {known['state']} as {known['issue_ref']} but it is gone from the "
                "tracker (deleted by a person?); not recreated"
            )
            continue
        if n_new >= max_new:
            item.reason = f"over the cap of {max_new} new issue(s) per run; reported, not written"
            continue
        n_new += 1
        item.action, item.reason = "create", "new problem, no issue carries this fingerprint yet"
    current = {s["fingerprint"] for s in suggestions}
    for fp, row in sorted(ledger.items()):
        if fp in current or row["state"] != "open":
            continue
        plan.append(_plan_recovery(tracker, fp, row, on_recovery, allow_recovery, as_of))
    return plan


def _summary(s: dict[str, Any]) -> dict[str, Any]:
    ev = s.get("evidence") or {}
    return {
        "priority": s.get("priority_score"),
        "bug_ids": sorted(b["id"] for b in ev.get("top_bugs", [])),
        "n_tickets_14d": ev.get("n_tickets_14d", 0),
    }


def _material_change(item: PlanItem, known: dict[str, Any] | None) -> str | None:
    """Why this change deserves a comment (people watch comments, not body edits), or None."""
    if not known or not known.get("summary") or not item.summary:
        return None
    before = known["summary"]
    before = json.loads(before) if isinstance(before, str) else before
    now = item.summary
    reasons = []
    if before.get("priority") and now["priority"] and now["priority"] >= 1.5 * before["priority"]:
        reasons.append(f"priority rose from {before['priority']:,.0f} to {now['priority']:,.0f}")
    new_bugs = sorted(set(now["bug_ids"]) - set(before.get("bug_ids", [])))
    if new_bugs:
        reasons.append(f"new bug(s) behind it: {', '.join(new_bugs)}")
    if now["n_tickets_14d"] >= max(2 * before.get("n_tickets_14d", 0), 5):
        reasons.append(
            f"tickets in 14 days went from {before.get('n_tickets_14d', 0)} "
            f"to {now['n_tickets_14d']}"
        )
    return "; ".join(reasons) or None


def _plan_recovery(
    tracker: Tracker,
    fp: str,
    row: dict[str, Any],
    on_recovery: str,
    allow: bool,
    as_of: str | None,
) -> PlanItem:
    item = PlanItem(
        fingerprint=fp,
        action="skip",
        reason="",
        title=row.get("title") or fp,
        priority_rank=None,
        priority_score=None,
        issue_ref=row["issue_ref"],
        url=row["url"],
        issue_state="open",
    )
    if on_recovery == "none":
        item.reason = "no longer suggested; on_recovery = none"
        return item
    if not allow:
        item.reason = "no longer suggested, but this run's data quality is degraded: left alone"
        return item
    issue = tracker.find(fp)
    if issue is None or issue.state != "open":
        item.reason = "no longer suggested; the issue is not open any more"
        item.issue_state = issue.state if issue else row["state"]
        return item
    if issue.locked:
        item.reason = "no longer suggested; the issue is locked, not commented"
        return item
    text = (
        f"feedback-loop: this problem no longer meets its suggestion rule as of {as_of} "
        "(the feature recovered, or its evidence fell below the thresholds)."
    )
    if on_recovery == "close":
        item.action, item.close_reason = "close", "completed"
        item.comment = text + " Closing as completed; a new issue follows if it comes back."
        item.reason = "recovered: closing as completed (on_recovery = close)"
    else:
        item.action, item.comment = "comment", text
        item.reason = "recovered: commenting once (on_recovery = comment)"
    return item


def _plan_existing(item: PlanItem, issue: TrackerIssue, known: dict[str, Any] | None) -> None:
    item.issue_state, item.state_reason = issue.state, issue.state_reason
    if issue.state == "closed":
        why = issue.state_reason or "completed"
        note = "a person decided" if why in RESPECTED_CLOSE_REASONS else "closed issues are not"
        item.reason = f"closed as {why} in the tracker; not reopened ({note})"
        return
    if issue.locked:
        item.reason = "locked by a person; not edited or commented"
        return
    if content_hash(issue.title, issue.body) == item.content_hash:
        item.reason = "unchanged" if known else "already in the tracker, unchanged (ledger healed)"
        item.action = "skip" if known else "adopt"
        return
    item.action = "update"
    item.reason = "evidence or score changed since the last write"
    why = _material_change(item, known)
    if why:
        item.comment = f"feedback-loop: material change — {why}."
        item.reason += f"; commenting: {why}"


def apply_plan(
    con: duckdb.DuckDBPyConnection, tracker: Tracker, plan: list[PlanItem], run_id: str
) -> dict[str, int]:
    """Carry out the plan. The ledger row is written pending before each create, completed after.

    A write whose outcome is unknown (the tracker may have applied it) stops that item only: its
    ledger row stays pending and the next run finds the issue by its marker instead of creating
    it again.
    """
    from tasks.clients.http import UncertainWriteError

    counts: dict[str, int] = {}
    for item in plan:
        try:
            _apply_item(con, tracker, item, run_id)
        except UncertainWriteError as exc:
            log.warning("%s: %s; the next run adopts whatever landed", item.fingerprint, exc)
            item.reason += " (outcome uncertain: re-checked next run)"
            counts["uncertain"] = counts.get("uncertain", 0) + 1
            continue
        counts[item.action] = counts.get(item.action, 0) + 1
    return counts


def _apply_item(
    con: duckdb.DuckDBPyConnection, tracker: Tracker, item: PlanItem, run_id: str
) -> None:
    if item.action == "skip":
        if item.issue_ref:  # record what the tracker says (e.g. closed by a person)
            _ledger_upsert(
                con, tracker.name, item, run_id, state=item.issue_state or "open", written=False
            )
        return
    if item.action == "create":
        _ledger_upsert(con, tracker.name, item, run_id, state="pending")
        issue = tracker.create(item.fingerprint, item.title, item.body, LABELS)
    else:
        current = tracker.find(item.fingerprint)
        if current is None:
            raise RuntimeError(f"{item.fingerprint}: issue vanished between plan and apply")
        issue = current
        if item.action == "update":
            issue = tracker.update(current, item.fingerprint, item.title, item.body, LABELS)
        elif item.action == "close":
            if item.comment:
                tracker.comment(current, item.comment)
            issue = tracker.close(current, item.close_reason or "completed")
        if item.comment and item.action in ("update", "comment"):
            tracker.comment(issue, item.comment)
    item.issue_ref, item.url = issue.ref, issue.url
    item.issue_state, item.state_reason = issue.state, issue.state_reason
    state = "recovered" if item.action == "comment" else issue.state
    written = item.action in ("create", "update", "adopt")
    _ledger_upsert(con, tracker.name, item, run_id, state=state, written=written)
    log.info("%s %s -> %s", item.action, item.fingerprint, issue.url)


def _ledger_upsert(
    con: duckdb.DuckDBPyConnection,
    tracker: str,
    item: PlanItem,
    run_id: str,
    state: str,
    written: bool = True,
) -> None:
    """Insert or update the ledger row; content_hash only moves when content was written."""
    params = [
        item.fingerprint,
        tracker,
        item.issue_ref,
        item.url,
        state,
        item.state_reason,
        item.title,
        item.content_hash if written else None,
        run_id,
        json.dumps(item.summary) if written and item.summary else None,
    ]
    con.execute(
        """
        insert into ops.writeback_ledger
            (fingerprint, tracker, issue_ref, url, state, state_reason, title, content_hash,
             created_at, updated_at, last_run_id, summary)
        select $1, $2, $3, $4, $5, $6, $7, $8, now(), now(), $9, $10::json
        where not exists (
            select 1 from ops.writeback_ledger where fingerprint = $1 and tracker = $2
        )
        """,
        params,
    )
    con.execute(
        """
        update ops.writeback_ledger
        set issue_ref = coalesce($3, issue_ref), url = coalesce($4, url), state = $5,
            state_reason = $6, title = $7, content_hash = coalesce($8, content_hash),
            updated_at = now(), last_run_id = $9, summary = coalesce($10::json, summary)
        where fingerprint = $1 and tracker = $2
        """,
        params,
    )


def plan_as_rows(plan: list[PlanItem]) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in asdict(p).items() if k not in ("body", "content_hash", "summary")}
        for p in plan
    ]
