"""What a suggestion says: the rows the write-back reads and the Markdown body it writes."""

from __future__ import annotations

import json
from typing import Any

import duckdb

from tasks.redact import redact_text

TRIAGE_NOTE = {
    "markdown": "_Written by feedback-loop. To triage, set `status: closed` and `state_reason: "
    "not_planned` (or `completed`) in the front matter; it will not be reopened._",
    "default": "_Written by feedback-loop, updated in place each night while the problem lasts. "
    "Close it as not planned to stop it: it will not be reopened or filed again._",
}


def scrub(text: str) -> str:
    """Last line of defence: evidence is redacted at landing already; nothing that looks like a
    contact detail, card number or secret may reach a tracker even if an upstream rule missed it."""
    return redact_text(text) or ""


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


def render_body(s: dict[str, Any], tracker: str = "markdown") -> str:
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
        TRIAGE_NOTE.get(tracker, TRIAGE_NOTE["default"]),
    ]
    return scrub("\n".join(lines))
