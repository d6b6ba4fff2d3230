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
import re
from dataclasses import asdict, dataclass
from typing import Any

import duckdb

from tasks.trackers.base import RESPECTED_CLOSE_REASONS, Tracker, TrackerIssue

log = logging.getLogger(__name__)

LABELS = ["feedback-loop"]

# Last line of defence: evidence is redacted in staging already; nothing that looks like a
# contact detail may reach a tracker even if an upstream rule missed it.
_PII = [
    (re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"), "[email]"),
    (re.compile(r"\b\d(?:[ -]?\d){12,18}\b"), "[card]"),
    (
        re.compile(
            r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\b\d{2,4}[ .-])\d{3,4}[ .-]?\d{3,4}\b"
        ),
        "[phone]",
    ),
]


def scrub(text: str) -> str:
    for pattern, repl in _PII:
        text = pattern.sub(repl, text)
    return text


@dataclass
class PlanItem:
    fingerprint: str
    action: str  # create | update | skip
    reason: str
    title: str
    priority_rank: int
    priority_score: float
    issue_ref: str | None = None
    url: str | None = None
    content_hash: str | None = None
    issue_state: str | None = None
    state_reason: str | None = None
    body: str = ""


def content_hash(title: str, body: str) -> str:
    return hashlib.sha256(f"{title}\n{body}".encode()).hexdigest()[:16]


def load_suggestions(con: duckdb.DuckDBPyConnection, as_of: str) -> list[dict[str, Any]]:
    rel = con.execute(
        "select * from marts.backlog_suggestions where as_of_date = ?::date order by priority_rank",
        [as_of],
    )
    cols = [d[0] for d in rel.description]
    rows = [dict(zip(cols, r, strict=True)) for r in rel.fetchall()]
    comps = con.execute(
        """select feature_key, component, score, weight, contribution, detail
           from marts.feature_health_components where as_of_date = ?::date
           order by feature_key, component_order""",
        [as_of],
    ).fetchall()
    n_features = con.execute(
        "select count(*) from marts.feature_health where as_of_date = ?::date", [as_of]
    ).fetchall()[0][0]
    for row in rows:
        row["evidence"] = json.loads(row["evidence"]) if row["evidence"] else {}
        row["components"] = [c[1:] for c in comps if c[0] == row["feature_key"]]
        row["n_features"] = n_features
    return rows


def render_body(s: dict[str, Any]) -> str:
    """Readable Markdown: why, health components, key numbers, evidence links, priority."""
    ev = s["evidence"]
    lines = [
        "## Why",
        s["why"],
        "",
        f"**Health {s['health_score']:.0f}/100** — rank {s['health_rank']} of {s['n_features']} "
        f"features (1 = least healthy), as of {s['as_of_date']}, formula `{s['formula_version']}`, "
        f"confidence {s['confidence']:.2f}.",
    ]
    if s.get("explanation"):
        lines += ["", f"Biggest drags: {s['explanation']}."]
    if s.get("confidence_reasons"):
        lines += ["", f"Confidence lowered: {s['confidence_reasons']}."]
    lines += [
        "",
        "### Health components",
        "",
        "| component | score | weight | contribution | detail |",
        "|---|---:|---:|---:|---|",
    ]
    for component, score, weight, contribution, detail in s["components"]:
        lines.append(
            f"| {component} | {score:.0f} | {weight:.2f} | {contribution:.1f} | {detail} |"
        )
    trend = ev.get("usage_trend")
    lines += [
        "",
        "### Key numbers",
        "",
        f"- Users in the window: {ev.get('n_users', 0):,} ({ev.get('n_accounts', 0):,} accounts)",
        f"- Weekly users: {ev.get('recent_weekly_users', 0):,.0f} now vs "
        f"{ev.get('baseline_weekly_users', 0):,.0f} baseline"
        + (f" ({trend * 100:+.0f}%)" if trend is not None else ""),
        f"- Tickets: {ev.get('n_tickets_14d', 0)} in the last 14 days vs "
        f"{ev.get('n_tickets_prior_28d', 0)} in the 4 weeks before "
        f"({ev.get('ticket_spike_ratio', 0):.1f}x); "
        f"{ev.get('tickets_per_1k_users') or 0:.1f} weighted per 1k users",
        f"- Open bugs: {ev.get('n_open_bugs', 0)} ({ev.get('n_open_high_sev_bugs', 0)} s1/s2); "
        f"{ev.get('n_new_high_sev_bugs_14d', 0)} new s1/s2 in the last 14 days",
    ]
    if ev.get("top_tickets"):
        lines += ["", "### Recent tickets behind it", ""]
        for t in ev["top_tickets"]:
            label = t["id"]
            link = f"[{label}]({t['url']})" if t.get("url") else label
            lines.append(
                f"- {link} · {t.get('priority') or 'no priority'} · {t.get('status')} · "
                f"{t.get('created_at')} — {t.get('subject') or ''}"
            )
    if ev.get("top_bugs"):
        lines += ["", "### Open bugs behind it", ""]
        for b in ev["top_bugs"]:
            link = f"[{b.get('title') or b['id']}]({b['url']})" if b.get("url") else b["id"]
            lines.append(
                f"- {link} · {b.get('severity')} · {b.get('state')} · {b.get('created_at')}"
            )
    lines += [
        "",
        "### Priority",
        "",
        f"RICE: reach {s['reach']:,} users × impact {s['impact']:.2f} × confidence "
        f"{s['confidence']:.2f} ÷ effort {s['effort']:.0f} = **{s['priority_score']:,.1f}**",
        "",
        "_Written by feedback-loop. To triage, set `status: closed` and `state_reason: "
        "not_planned` (or `completed`) in the front matter; it will not be reopened._",
    ]
    return scrub("\n".join(lines))


def _ledger(con: duckdb.DuckDBPyConnection, tracker: str) -> dict[str, dict[str, Any]]:
    rel = con.execute("select * from ops.writeback_ledger where tracker = ?", [tracker])
    cols = [d[0] for d in rel.description]
    return {r[0]: dict(zip(cols, r, strict=True)) for r in rel.fetchall()}


def plan_writeback(
    con: duckdb.DuckDBPyConnection,
    tracker: Tracker,
    suggestions: list[dict[str, Any]],
    max_new: int,
) -> list[PlanItem]:
    ledger = _ledger(con, tracker.name)
    plan: list[PlanItem] = []
    n_new = 0
    for s in suggestions:
        body = render_body(s)
        item = PlanItem(
            fingerprint=s["fingerprint"],
            action="skip",
            reason="",
            title=s["title"],
            priority_rank=s["priority_rank"],
            priority_score=s["priority_score"],
            content_hash=content_hash(s["title"], body),
            body=body,
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
    return plan


def _plan_existing(item: PlanItem, issue: TrackerIssue, known: dict[str, Any] | None) -> None:
    item.issue_state, item.state_reason = issue.state, issue.state_reason
    if issue.state == "closed":
        why = issue.state_reason or "completed"
        note = "a person decided" if why in RESPECTED_CLOSE_REASONS else "closed issues are not"
        item.reason = f"closed as {why} in the tracker; not reopened ({note})"
        return
    if content_hash(issue.title, issue.body) == item.content_hash:
        item.reason = "unchanged" if known else "already in the tracker, unchanged (ledger healed)"
        item.action = "skip" if known else "adopt"
        return
    item.action = "update"
    item.reason = "evidence or score changed since the last write"


def apply_plan(
    con: duckdb.DuckDBPyConnection, tracker: Tracker, plan: list[PlanItem], run_id: str
) -> dict[str, int]:
    """Carry out the plan. The ledger row is written pending before each create, completed after."""
    counts: dict[str, int] = {}
    for item in plan:
        counts[item.action] = counts.get(item.action, 0) + 1
        if item.action == "skip":
            if item.issue_ref:  # record what the tracker says (e.g. closed by a person)
                _ledger_upsert(
                    con, tracker.name, item, run_id, state=item.issue_state or "open", written=False
                )
            continue
        if item.action == "create":
            _ledger_upsert(con, tracker.name, item, run_id, state="pending")
            issue = tracker.create(item.fingerprint, item.title, item.body, LABELS)
        elif item.action in ("update", "adopt"):
            current = tracker.find(item.fingerprint)
            if current is None:
                raise RuntimeError(f"{item.fingerprint}: issue vanished between plan and apply")
            issue = (
                tracker.update(current, item.fingerprint, item.title, item.body, LABELS)
                if item.action == "update"
                else current
            )
        else:
            raise ValueError(f"unknown action {item.action}")
        item.issue_ref, item.url = issue.ref, issue.url
        item.issue_state, item.state_reason = issue.state, issue.state_reason
        _ledger_upsert(con, tracker.name, item, run_id, state=issue.state)
        log.info("%s %s -> %s", item.action, item.fingerprint, issue.url)
    return counts


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
    ]
    con.execute(
        """
        insert into ops.writeback_ledger
            (fingerprint, tracker, issue_ref, url, state, state_reason, title, content_hash,
             created_at, updated_at, last_run_id)
        select $1, $2, $3, $4, $5, $6, $7, $8, now(), now(), $9
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
            updated_at = now(), last_run_id = $9
        where fingerprint = $1 and tracker = $2
        """,
        params,
    )


def plan_as_rows(plan: list[PlanItem]) -> list[dict[str, Any]]:
    return [{k: v for k, v in asdict(p).items() if k not in ("body", "content_hash")} for p in plan]
