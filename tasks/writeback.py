"""Write suggestions back to a tracker: plan (create / update / reopen / skip ..., with reasons),
then apply.

Rules: one issue per feature problem (fingerprint `health:<feature>` for fix/investigate,
`adoption:<feature>` for improve), found again by ledger or marker (so a crash between the tracker
call and the ledger update heals instead of duplicating); a change of kind retitles the same issue
with one comment; update only when the content changed; an issue the loop closed as recovered is
reopened when its problem returns, one a person closed never is; cap new issues per run; a
suggestion whose input source failed a critical data-quality check is not written. Legacy per-kind
fingerprints (`fix:x`, `investigate:x`, `improve:x`) in the ledger and in markers are carried over
to the problem's, and two legacy issues of one problem are merged (one closed as duplicate).

Rate limits: trackers wait limits out within the write-back time budget
(`writeback.time_budget_seconds`); a wait that does not fit raises BudgetExhausted, and the
items left are planned/applied as not attempted — nothing sent, ledger untouched — so the next
run resumes them. `apply_plan` returns an ApplyResult: counts per outcome and a status.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb

from tasks.clients.http import (
    AuthError,
    ClientRequestError,
    InvalidResponseError,
    NotFoundError,
    PaginationLoopError,
    RetriesExhaustedError,
    UncertainWriteError,
)
from tasks.suggestion_text import (  # noqa: F401 (load_suggestions, scrub re-exported)
    TRIAGE_NOTE,
    load_suggestions,
    render_body,
    scrub,
)
from tasks.trackers.base import (
    RESPECTED_CLOSE_REASONS,
    Tracker,
    TrackerIssue,
    canonical_fingerprint,
    legacy_fingerprints,
    legacy_kind,
)
from tasks.trackers.limits import BudgetExhausted

log = logging.getLogger(__name__)

LABELS = ["feedback-loop"]
LOOP = "feedback-loop"  # ops.writeback_ledger.closed_by when the loop closed it as recovered


@dataclass
class PlanItem:
    fingerprint: str  # the problem's (canonical) fingerprint; a merge item: the duplicate's
    action: str  # create | update | adopt | reopen | comment | close | merge | migrate | skip
    reason: str
    title: str
    priority_rank: int | None
    priority_score: float | None
    kind: str | None = None
    issue_ref: str | None = None
    url: str | None = None
    content_hash: str | None = None
    issue_state: str | None = None
    state_reason: str | None = None
    body: str = ""
    comment: str | None = None  # posted with an update/reopen, or alone
    close_reason: str | None = None
    summary: dict[str, Any] | None = None  # what "material change" is judged against next run
    issue_fingerprint: str | None = None  # the marker the issue carries (legacy until migrated)
    migrate_from: str | None = None  # a legacy ledger row carried over to `fingerprint`
    merged_into: str | None = None  # merge: the problem this duplicate is folded into
    effort: float | None = None  # what the tracker says the team estimated
    effort_source: str | None = None
    found: bool = False  # an issue was looked at (its effort is recorded)
    forget_loop_close: bool = False  # a person closed it after the loop did: final from now on
    # Not looked up or not written because write-back stopped (time budget, rate limit, auth):
    # nothing was sent for it and its ledger row is untouched, so the next run picks it up.
    not_attempted: bool = False

    @classmethod
    def from_ledger(
        cls, fingerprint: str, row: dict[str, Any], action: str, reason: str, **more: Any
    ) -> PlanItem:
        """An item about an issue known only from its ledger row (not suggested tonight)."""
        fields: dict[str, Any] = {
            "issue_state": row["state"],
            "state_reason": row["state_reason"],
            **more,
        }
        return cls(
            fingerprint=fingerprint,
            action=action,
            reason=reason,
            title=row.get("title") or fingerprint,
            priority_rank=None,
            priority_score=None,
            issue_ref=row["issue_ref"],
            url=row["url"],
            **fields,
        )


@dataclass
class _Problem:
    """What the tracker and the ledger hold for one canonical fingerprint."""

    issue: TrackerIssue | None  # the issue kept for the problem
    known: dict[str, Any] | None  # its ledger row (canonical, or a legacy one to carry over)
    migrate_from: str | None
    merges: list[PlanItem]


def content_hash(title: str, body: str) -> str:
    return hashlib.sha256(f"{title}\n{body}".encode()).hexdigest()[:16]


def _ledger(con: duckdb.DuckDBPyConnection, tracker: str) -> dict[str, dict[str, Any]]:
    rel = con.execute("select * from ops.writeback_ledger where tracker = ?", [tracker])
    cols = [d[0] for d in rel.description]
    return {r[0]: dict(zip(cols, r, strict=True)) for r in rel.fetchall()}


def _by_problem(ledger: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Ledger rows grouped by canonical fingerprint; rows merged into another are history."""
    out: dict[str, list[dict[str, Any]]] = {}
    for fp, row in sorted(ledger.items()):
        if row["state"] != "merged":
            out.setdefault(canonical_fingerprint(fp), []).append(row)
    return out


def plan_writeback(
    con: duckdb.DuckDBPyConnection,
    tracker: Tracker,
    suggestions: list[dict[str, Any]],
    max_new: int,
    *,
    on_recovery: str = "comment",
    allow_recovery: bool = False,
    as_of: str | None = None,
    backdated: str | None = None,
) -> list[PlanItem]:
    """The exact plan: one item per suggestion, one per recovered problem still open, one per
    legacy duplicate merged or legacy ledger row carried over.

    `backdated`: why this run's as-of day is older than the newest day scored (tasks/history.py),
    None when it is not. An older day's suggestions may still create and update issues, but they
    never change an issue's state: no recovery comment or close (a problem absent from an older
    day may not have started yet) and no reopen — those come from the newest day only."""
    if backdated is not None:
        held: str | None = backdated
    else:
        held = None if allow_recovery else "this run's data quality is degraded"
    ledger = _ledger(con, tracker.name)
    use_ledger = getattr(tracker, "use_ledger", None)
    if use_ledger is not None:  # look known issues up by their ref, list only for the rest
        use_ledger(ledger.values())
    problems = _by_problem(ledger)
    plan: list[PlanItem] = []
    n_new = 0
    seen: dict[str, str] = {}
    stopped: BudgetExhausted | None = None
    for s in suggestions:
        fp = canonical_fingerprint(s["fingerprint"])
        body = render_body(s, tracker.name)
        item = PlanItem(
            fingerprint=fp,
            action="skip",
            reason="",
            title=s["title"],
            priority_rank=s["priority_rank"],
            priority_score=s["priority_score"],
            kind=s.get("kind") or legacy_kind(s["fingerprint"]),
            content_hash=content_hash(s["title"], body),
            body=body,
            summary=_summary(s),
        )
        plan.append(item)
        if fp in seen:
            item.reason = f"same feature problem as {seen[fp]}, ranked higher; written once"
            continue
        seen[fp] = s["fingerprint"]
        if s["is_blocked"]:
            item.reason = f"blocked by a critical data-quality failure in {s['blocked_by']}"
            continue
        if stopped is not None:
            _defer(item, stopped)
            continue
        # The tracker is the truth: a pending ledger row (crash mid-create) heals by lookup.
        try:
            problem = _resolve(tracker, fp, problems.get(fp, []))
        except BudgetExhausted as exc:
            stopped = exc
            log.warning("write-back planning stopped: %s", exc)
            _defer(item, stopped)
            continue
        plan += problem.merges
        item.migrate_from, known = problem.migrate_from, problem.known
        if problem.issue is not None:
            _found(item, problem.issue)
            completed = known if known and known["state"] != "pending" else None
            _plan_existing(item, problem.issue, completed, s, as_of, backdated)
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
    for fp, rows in sorted(problems.items()):
        if fp in seen:
            continue
        if stopped is None or not _absent_needs_lookup(rows, on_recovery, held is None):
            try:
                plan += _plan_absent(tracker, fp, rows, on_recovery, held, as_of)
                continue
            except BudgetExhausted as exc:
                stopped = exc
                log.warning("write-back planning stopped: %s", exc)
        row = max(rows, key=lambda r: r["updated_at"])
        item = PlanItem.from_ledger(fp, row, "skip", "")
        _defer(item, stopped)
        plan.append(item)
    return plan


def plan_held(suggestions: list[dict[str, Any]], reason: str) -> list[PlanItem]:
    """Every suggestion as a skip with `reason`, planned without asking the tracker anything: a
    run that may not write (a backdated one) still shows what it scored and why nothing was
    written, and cannot touch the tracker even by a read that fails."""
    return [
        PlanItem(
            fingerprint=canonical_fingerprint(s["fingerprint"]),
            action="skip",
            reason=reason,
            title=s["title"],
            priority_rank=s["priority_rank"],
            priority_score=s["priority_score"],
            kind=s.get("kind") or legacy_kind(s["fingerprint"]),
        )
        for s in suggestions
    ]


def _defer(item: PlanItem, why: BaseException) -> None:
    item.action, item.not_attempted = "skip", True
    item.reason = f"not looked up or written this run ({why}); the next run resumes here"


def _absent_needs_lookup(rows: list[dict[str, Any]], on_recovery: str, allow: bool) -> bool:
    """Would _plan_absent ask the tracker anything for this ledger-only problem?"""
    fp = canonical_fingerprint(rows[0]["fingerprint"])
    if all(r["fingerprint"] == fp for r in rows):
        return rows[0]["state"] == "open" and on_recovery != "none" and allow
    return True


def _found(item: PlanItem, issue: TrackerIssue) -> None:
    item.issue_ref, item.url = issue.ref, issue.url
    item.issue_state, item.state_reason = issue.state, issue.state_reason
    item.issue_fingerprint = issue.fingerprint
    item.effort, item.effort_source, item.found = issue.effort, issue.effort_source, True


def _resolve(tracker: Tracker, fp: str, rows: list[dict[str, Any]]) -> _Problem:
    """The issue to keep for problem `fp`, its ledger row, and the legacy duplicates to merge.

    find() looks for the canonical marker, then the legacy ones. Each legacy marker is looked up
    on its own only while something legacy is in sight (a legacy marker found, a legacy ledger
    row), so a migrated warehouse costs one lookup per problem.
    """
    issue = tracker.find(fp)
    canonical_row = next((r for r in rows if r["fingerprint"] == fp), None)
    legacy_rows = {r["fingerprint"]: r for r in rows if r["fingerprint"] != fp}
    candidates: dict[str, TrackerIssue] = {issue.ref: issue} if issue else {}
    if legacy_rows or (issue is not None and issue.fingerprint not in (None, fp)):
        for legacy in legacy_fingerprints(fp):
            if issue is not None and issue.fingerprint == legacy:
                continue
            other = tracker.find(legacy)
            if other is not None:
                candidates.setdefault(other.ref, other)
    # A canonical issue first (already migrated), then an open one, then the latest updated.
    keep = min(candidates.values(), key=lambda i: _keep_order(i, fp), default=None)

    def row_of(i: TrackerIssue) -> dict[str, Any] | None:
        by_ref = [r for r in legacy_rows.values() if r["issue_ref"] == i.ref]
        return by_ref[0] if by_ref else legacy_rows.get(i.fingerprint or "")

    known, migrate_from = canonical_row, None
    if known is None:
        known = row_of(keep) if keep is not None else None
        if known is None and keep is None and legacy_rows:
            known = max(legacy_rows.values(), key=lambda r: r["updated_at"])
        migrate_from = known["fingerprint"] if known else None
    merges: list[PlanItem] = []
    used = {known["fingerprint"]} if known else set()
    for dup in candidates.values():
        if keep is None or dup.ref == keep.ref:
            continue
        row = row_of(dup)
        dup_fp = row["fingerprint"] if row else dup.fingerprint
        if dup_fp is None or dup_fp == fp or dup_fp in used:
            continue
        used.add(dup_fp)
        merges.append(_plan_merge(fp, dup_fp, dup, keep))
    for legacy, row in sorted(legacy_rows.items()):
        if legacy not in used:  # the ledger row becomes history
            same = keep is not None and row["issue_ref"] == keep.ref
            where = "the same issue" if same else "not in the tracker (left alone)"
            merges.append(
                PlanItem.from_ledger(
                    legacy,
                    row,
                    "merge",
                    f"legacy ledger row folded into {fp}; its issue {row['issue_ref']} is {where}",
                    merged_into=fp,
                )
            )
    return _Problem(keep, known, migrate_from, merges)


def _keep_order(issue: TrackerIssue, fp: str) -> tuple[bool, bool, float]:
    updated = issue.updated_at.timestamp() if issue.updated_at else 0.0
    return (issue.fingerprint not in (None, fp), issue.state != "open", -updated)


def _plan_merge(fp: str, dup_fp: str, dup: TrackerIssue, keep: TrackerIssue) -> PlanItem:
    item = PlanItem(
        fingerprint=dup_fp,
        action="merge",
        reason="",
        title=dup.title,
        priority_rank=None,
        priority_score=None,
        merged_into=fp,
    )
    _found(item, dup)
    if dup.state != "open":
        item.reason = (
            f"same problem as {keep.url} ({fp}); already closed as "
            f"{dup.state_reason or 'completed'}: left alone, ledger row kept as merged"
        )
    elif dup.locked:
        item.reason = f"same problem as {keep.url} ({fp}); locked, not closed: ledger row merged"
    else:
        item.close_reason = "duplicate"
        item.comment = (
            f"feedback-loop: one issue per feature problem now — this is a duplicate of "
            f"{keep.url}, which carries on for `{fp}`. Closing this one as a duplicate."
        )
        item.reason = f"same problem as {keep.url} ({fp}): closing as duplicate with a link"
    return item


def _plan_absent(
    tracker: Tracker,
    fp: str,
    rows: list[dict[str, Any]],
    on_recovery: str,
    held: str | None,
    as_of: str | None,
) -> list[PlanItem]:
    """A problem in the ledger that is not suggested today: recovery (unless `held` says why
    not), and legacy migration."""
    if all(r["fingerprint"] == fp for r in rows):
        row = rows[0]
        if row["state"] != "open":
            return []
        return [_plan_recovery(lambda: tracker.find(fp), fp, row, on_recovery, held, as_of)]
    problem = _resolve(tracker, fp, rows)
    known = problem.known
    if known is not None and known["state"] == "open":
        item = _plan_recovery(lambda: problem.issue, fp, known, on_recovery, held, as_of)
    elif problem.migrate_from is not None and known is not None:
        item = PlanItem.from_ledger(
            fp,
            known,
            "migrate",
            f"legacy ledger row {problem.migrate_from} carried over to {fp} "
            f"({known['state']}; not suggested today, nothing to do in the tracker)",
        )
    else:
        return problem.merges
    item.migrate_from = problem.migrate_from
    return [item, *problem.merges]


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
    lookup: Callable[[], TrackerIssue | None],
    fp: str,
    row: dict[str, Any],
    on_recovery: str,
    held: str | None,
    as_of: str | None,
) -> PlanItem:
    """`held`: why this run may not act on an absence (degraded data, a backdated run), or None."""
    item = PlanItem.from_ledger(fp, row, "skip", "", issue_state="open", state_reason=None)
    if on_recovery == "none":
        item.reason = "no longer suggested; on_recovery = none"
        return item
    if held is not None:
        item.reason = f"no longer suggested, but {held}: left alone"
        return item
    issue = lookup()
    if issue is not None:
        _found(item, issue)
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
        item.comment = text + " Closing as completed; reopened here if it comes back."
        item.reason = "recovered: closing as completed (on_recovery = close)"
    else:
        item.action, item.comment = "comment", text
        item.reason = "recovered: commenting once (on_recovery = comment)"
    return item


def _plan_existing(
    item: PlanItem,
    issue: TrackerIssue,
    known: dict[str, Any] | None,
    s: dict[str, Any],
    as_of: str | None,
    backdated: str | None = None,
) -> None:
    before = _previous_kind(known, issue)
    kind_changed = bool(before and item.kind and before != item.kind)
    if issue.state == "closed":
        _plan_closed(item, issue, known, s, as_of, before if kind_changed else None, backdated)
        return
    if issue.locked:
        item.reason = "locked by a person; not edited or commented"
        return
    legacy = issue.fingerprint is not None and issue.fingerprint != item.fingerprint
    unchanged = content_hash(issue.title, issue.body) == item.content_hash
    if unchanged and not legacy and not kind_changed:
        item.reason = "unchanged" if known else "already in the tracker, unchanged (ledger healed)"
        item.action = "skip" if known else "adopt"
        return
    reasons = []
    if unchanged and not known:
        item.action = "adopt"
        reasons.append("already in the tracker, unchanged (ledger healed)")
    else:
        item.action = "update"
        if not unchanged:
            reasons.append("evidence or score changed since the last write")
    if legacy:
        reasons.append(f"legacy fingerprint {issue.fingerprint} rewritten as {item.fingerprint}")
    comments = []
    if kind_changed:
        comments.append(f"this problem is now **{item.kind}** (was {before}): {s['why']}")
        reasons.append(f"retitled: now {item.kind} (was {before}); commenting once")
    why = _material_change(item, known)
    if why:
        comments.append(f"material change — {why}.")
        reasons.append(f"commenting: {why}")
    if comments:
        item.comment = "feedback-loop: " + "\n\nAlso a ".join(comments)
    item.reason = "; ".join(reasons)


def _previous_kind(known: dict[str, Any] | None, issue: TrackerIssue) -> str | None:
    """The kind last written: the ledger's, else what a legacy fingerprint names."""
    if known and known.get("kind"):
        return known["kind"]
    if known and legacy_kind(known["fingerprint"]):
        return legacy_kind(known["fingerprint"])
    return legacy_kind(issue.fingerprint or "")


def _plan_closed(
    item: PlanItem,
    issue: TrackerIssue,
    known: dict[str, Any] | None,
    s: dict[str, Any],
    as_of: str | None,
    kind_was: str | None,
    backdated: str | None = None,
) -> None:
    """Closed: reopened only when feedback-loop itself closed it as recovered, and only by a
    run of the newest day (`backdated` None)."""
    why = issue.state_reason or "completed"
    if known and known.get("closed_by") == LOOP:
        person = _closed_by_a_person(issue, known)
        if person is None and backdated is not None:
            item.reason = f"closed as recovered by feedback-loop; not reopened: {backdated}"
            return
        if person is None:
            closed_on = known["closed_at"].date().isoformat() if known["closed_at"] else "?"
            back = as_of or str(s.get("as_of_date") or "today")
            text = (
                f"feedback-loop: the problem is back as of {back}: {s['why']} This issue was "
                f"closed as recovered on {closed_on}; reopening it"
            )
            if kind_was:
                text += f" — it is now **{item.kind}** (was {kind_was})"
            item.action, item.comment = "reopen", text + "."
            item.reason = (
                f"the problem is back; feedback-loop closed it as recovered on {closed_on}: "
                "reopening with one comment"
            )
            return
        item.forget_loop_close = True
        item.reason = f"{person} after feedback-loop had closed it; not reopened (a person decided)"
        return
    note = "a person decided" if why in RESPECTED_CLOSE_REASONS else "not closed by feedback-loop"
    item.reason = f"closed as {why} in the tracker; not reopened ({note})"


def _closed_by_a_person(issue: TrackerIssue, known: dict[str, Any]) -> str | None:
    """Why this close is a person's, not the one feedback-loop recorded; None if it is ours."""
    if issue.state_reason not in (None, "completed"):
        return f"closed as {issue.state_reason} by a person"
    ours = known.get("closed_at")
    if issue.closed_at is not None and ours is not None and issue.closed_at > ours:
        return f"closed again at {issue.closed_at:%Y-%m-%d %H:%M} by a person"
    return None


# What each planned action counts as once it is done.
OUTCOME_OF_ACTION = {
    "create": "created",
    "update": "updated",
    "adopt": "adopted",
    "reopen": "reopened",
    "comment": "commented",
    "close": "closed",
    "merge": "merged",
    "migrate": "migrated",
    "skip": "skipped",
}
OUTCOMES = (*OUTCOME_OF_ACTION.values(), "not_attempted", "uncertain", "failed")
# The tracker definitely did not apply a create that ended with one of these (nothing was sent,
# or the API refused it), so its fresh pending ledger row is removed again.
_NOT_APPLIED = (
    BudgetExhausted,
    AuthError,
    ClientRequestError,
    NotFoundError,
    RetriesExhaustedError,
    PaginationLoopError,
)


class ApplyResult(dict[str, Any]):
    """apply_plan's answer: a dict of counts per outcome (every key of OUTCOMES, zeros too) and
    `status`:

    - 'ok': everything planned was done;
    - 'partial': some items were not attempted (time budget, a stop), failed or uncertain, while
      others were written;
    - 'uncertain': every write attempted ended with an unknown outcome (re-checked next run);
    - 'failed': writes were attempted and none succeeded (some failed).

    `fingerprints[outcome]` lists the problems per outcome; `stop_reason` says why write-back
    stopped early (None when it did not)."""

    def __init__(self) -> None:
        super().__init__({name: 0 for name in OUTCOMES})
        self["status"] = "ok"
        self.fingerprints: dict[str, list[str]] = {name: [] for name in OUTCOMES}
        self.stop_reason: str | None = None
        self.written = 0  # items whose tracker writes all succeeded

    def add(self, outcome: str, fingerprint: str) -> None:
        self[outcome] += 1
        self.fingerprints[outcome].append(fingerprint)

    @property
    def status(self) -> str:
        return str(self["status"])

    def finish(self) -> ApplyResult:
        done = self.written
        if done == 0 and self["uncertain"] and not self["failed"]:
            status = "uncertain"
        elif done == 0 and self["failed"]:
            status = "failed"
        elif self["not_attempted"] or self["failed"] or self["uncertain"]:
            status = "partial"
        else:
            status = "ok"
        self["status"] = status
        return self


def _needs_tracker(item: PlanItem) -> bool:
    if item.action == "merge":
        return bool(item.close_reason)
    return item.action not in ("skip", "migrate")


def apply_plan(
    con: duckdb.DuckDBPyConnection, tracker: Tracker, plan: list[PlanItem], run_id: str
) -> ApplyResult:
    """Carry out the plan. The ledger row is written pending before each create, completed after.

    Returns an ApplyResult (counts per outcome and a status). The ledger only ever records what
    the tracker really did:
    - a write whose outcome is unknown (the tracker may have applied it: UncertainWriteError, an
      unreadable 2xx answer) stops that item only, as `uncertain`: a create's ledger row stays
      pending and the next run finds the issue by its marker instead of creating it again;
    - when write-back must stop — a rate-limit wait that does not fit the time budget, a
      credential refused, a limit that never lifted — no further request is sent: the items left
      are `not_attempted` (ledger untouched; ledger-only bookkeeping still runs), so the next
      run resumes without duplicates;
    - any other HTTP, tracker-workflow or file error fails that item only (`failed`, with the
      reason) and the run goes on; a programming error (TypeError, ...) or a DuckDB error still
      raises.
    """
    result = ApplyResult()
    for item in plan:
        if item.not_attempted or (result.stop_reason is not None and _needs_tracker(item)):
            if not item.not_attempted:
                item.not_attempted = True
                item.reason += f" (not attempted: write-back stopped — {result.stop_reason})"
            result.add("not_attempted", item.fingerprint)
            continue
        sent: list[str] = []
        try:
            _apply_item(con, tracker, item, run_id, sent)
        except duckdb.Error:
            raise
        except (BudgetExhausted, AuthError, RetriesExhaustedError) as exc:
            result.stop_reason = str(exc)
            log.warning("write-back stopped at %s: %s", item.fingerprint, exc)
            if sent:
                item.reason += f" (stopped after {', '.join(sent)}: {exc})"
                result.add("failed", item.fingerprint)
            elif isinstance(exc, BudgetExhausted):
                item.not_attempted = True
                item.reason += f" (not attempted: {exc})"
                result.add("not_attempted", item.fingerprint)
            else:
                item.reason += f" (failed: {exc})"
                result.add("failed", item.fingerprint)
        except (RuntimeError, OSError) as exc:  # HTTP errors, tracker workflow errors, files
            if _uncertain(exc, item, sent):
                log.warning("%s: %s; the next run adopts whatever landed", item.fingerprint, exc)
                item.reason += " (outcome uncertain: re-checked next run)"
                result.add("uncertain", item.fingerprint)
            else:
                log.error("%s: %s failed: %s", item.fingerprint, item.action, exc)
                item.reason += f" (failed: {exc})"
                result.add("failed", item.fingerprint)
        else:
            result.add(OUTCOME_OF_ACTION[item.action], item.fingerprint)
            if _needs_tracker(item):
                result.written += 1
    return result.finish()


def _uncertain(exc: BaseException, item: PlanItem, sent: list[str]) -> bool:
    """Did the tracker perhaps apply the write that raised `exc`?"""
    if isinstance(exc, UncertainWriteError):
        return True
    # An unreadable answer to a create that was sent: the issue may well exist.
    return (
        item.action == "create" and "create" not in sent and isinstance(exc, InvalidResponseError)
    )


def _refind(tracker: Tracker, item: PlanItem) -> TrackerIssue:
    """The issue the plan decided on, fresh; by the marker it carries (maybe a legacy one)."""
    current = tracker.find(item.issue_fingerprint or item.fingerprint)
    if current is None or (item.issue_ref and current.ref != item.issue_ref):
        raise RuntimeError(f"{item.fingerprint}: issue vanished between plan and apply")
    return current


def _apply_item(
    con: duckdb.DuckDBPyConnection,
    tracker: Tracker,
    item: PlanItem,
    run_id: str,
    sent: list[str] | None = None,
) -> None:
    """Carry out one item; `sent` collects the tracker writes that succeeded, in order."""
    sent = [] if sent is None else sent
    if item.migrate_from:
        _ledger_carry_over(con, tracker.name, item.migrate_from, item.fingerprint)
    if item.action == "migrate":
        return
    if item.action == "skip":
        if item.issue_ref:  # record what the tracker says (e.g. closed by a person)
            loop_close = "clear" if item.forget_loop_close or item.issue_state == "open" else "keep"
            _ledger_upsert(
                con,
                tracker.name,
                item,
                run_id,
                state=item.issue_state or "open",
                written=False,
                loop_close=loop_close,
            )
        return
    if item.action == "merge":
        if item.close_reason:
            current = _refind(tracker, item)
            if current.state == "open":
                if item.comment:
                    tracker.comment(current, item.comment)
                    sent.append("comment")
                closed = tracker.close(current, item.close_reason)
                sent.append("close")
                item.issue_state, item.state_reason = closed.state, closed.state_reason
        _ledger_upsert(con, tracker.name, item, run_id, state="merged", written=False)
        log.info("merge %s into %s", item.fingerprint, item.merged_into)
        return
    if item.action == "create":
        fresh = not _ledger_has(con, tracker.name, item.fingerprint)
        _ledger_upsert(con, tracker.name, item, run_id, state="pending")
        try:
            issue = tracker.create(item.fingerprint, item.title, item.body, LABELS)
        except Exception as exc:
            one_request = getattr(tracker, "create_is_one_request", False)
            if fresh and one_request and isinstance(exc, _NOT_APPLIED):
                # Definitely not created (the one request was refused or never sent): the
                # ledger keeps only what the tracker really did. A tracker whose create makes
                # more requests (Jira's remote link, Linear's attachment) keeps the pending row:
                # the issue may exist, and the next run finds it.
                _ledger_delete(con, tracker.name, item.fingerprint)
            raise
        sent.append("create")
        item.found = True
        item.effort, item.effort_source = issue.effort, issue.effort_source
    else:
        current = _refind(tracker, item)
        issue = current
        if item.action == "reopen":
            issue = tracker.reopen(current)
            sent.append("reopen")
            issue = tracker.update(issue, item.fingerprint, item.title, item.body, LABELS)
            sent.append("update")
        elif item.action in ("update", "adopt"):
            # adopt: also rewrites a legacy marker; otherwise nothing differs, nothing is sent
            issue = tracker.update(current, item.fingerprint, item.title, item.body, LABELS)
            sent.append("update")
        elif item.action == "close":
            if item.comment:
                tracker.comment(current, item.comment)
                sent.append("comment")
            issue = tracker.close(current, item.close_reason or "completed")
            sent.append("close")
        if item.comment and item.action in ("update", "adopt", "comment", "reopen"):
            tracker.comment(issue, item.comment)
            sent.append("comment")
    item.issue_ref, item.url = issue.ref, issue.url
    item.issue_state, item.state_reason = issue.state, issue.state_reason
    state = "recovered" if item.action == "comment" else issue.state
    written = item.action in ("create", "update", "adopt", "reopen")
    loop_close = "set" if item.action == "close" else "clear" if issue.state == "open" else "keep"
    _ledger_upsert(
        con,
        tracker.name,
        item,
        run_id,
        state=state,
        written=written,
        loop_close=loop_close,
        closed_at=issue.closed_at,
    )
    log.info("%s %s -> %s", item.action, item.fingerprint, issue.url)


def _ledger_has(con: duckdb.DuckDBPyConnection, tracker: str, fingerprint: str) -> bool:
    return bool(
        con.execute(
            "select count(*) from ops.writeback_ledger where fingerprint = ? and tracker = ?",
            [fingerprint, tracker],
        ).fetchall()[0][0]
    )


def _ledger_delete(con: duckdb.DuckDBPyConnection, tracker: str, fingerprint: str) -> None:
    con.execute(
        "delete from ops.writeback_ledger where fingerprint = ? and tracker = ? "
        "and state = 'pending'",
        [fingerprint, tracker],
    )


def _ledger_carry_over(con: duckdb.DuckDBPyConnection, tracker: str, legacy: str, fp: str) -> None:
    """A legacy (per-kind) ledger row becomes the problem's; its kind is remembered."""
    taken = con.execute(
        "select count(*) from ops.writeback_ledger where fingerprint = ? and tracker = ?",
        [fp, tracker],
    ).fetchall()[0][0]
    if taken:  # the problem has its row already: the legacy one is history
        con.execute(
            """update ops.writeback_ledger set state = 'merged', merged_into = $3,
               updated_at = now() where fingerprint = $1 and tracker = $2""",
            [legacy, tracker, fp],
        )
        return
    con.execute(
        """update ops.writeback_ledger
           set fingerprint = $3, kind = coalesce(kind, $4), updated_at = now()
           where fingerprint = $1 and tracker = $2""",
        [legacy, tracker, fp, legacy_kind(legacy)],
    )


def _ledger_upsert(
    con: duckdb.DuckDBPyConnection,
    tracker: str,
    item: PlanItem,
    run_id: str,
    state: str,
    written: bool = True,
    loop_close: str = "keep",
    closed_at: datetime | None = None,
) -> None:
    """Insert or update the ledger row; content_hash and kind only move when content was
    written; effort whenever the issue was looked at; closed_by/closed_at are set when the loop
    closes the issue ('set'), cleared once it is open again or a person closed it ('clear')."""
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
        item.kind if written else None,
        loop_close,
        closed_at or datetime.now(UTC),
        item.merged_into,
        item.found,
        item.effort,
        item.effort_source,
    ]
    con.execute(
        """
        insert into ops.writeback_ledger
            (fingerprint, tracker, issue_ref, url, state, state_reason, title, content_hash,
             created_at, updated_at, last_run_id, summary, kind, closed_by, closed_at,
             merged_into, effort, effort_source)
        select $1, $2, $3, $4, $5, $6, $7, $8, now(), now(), $9, $10::json, $11,
            case when $12 = 'set' then 'feedback-loop' end,
            case when $12 = 'set' then $13::timestamptz end,
            $14, case when $15 then $16::double end, case when $15 then $17 end
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
            updated_at = now(), last_run_id = $9, summary = coalesce($10::json, summary),
            kind = coalesce($11, kind),
            closed_by = case $12 when 'set' then 'feedback-loop' when 'clear' then null
                else closed_by end,
            closed_at = case $12 when 'set' then $13::timestamptz when 'clear' then null
                else closed_at end,
            merged_into = coalesce($14, merged_into),
            effort = case when $15 then $16::double else effort end,
            effort_source = case when $15 then $17 else effort_source end
        where fingerprint = $1 and tracker = $2
        """,
        params,
    )


def plan_as_rows(plan: list[PlanItem]) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in asdict(p).items() if k not in ("body", "content_hash", "summary")}
        for p in plan
    ]
