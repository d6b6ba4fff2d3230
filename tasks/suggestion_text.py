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


def load_suggestions(
    con: duckdb.DuckDBPyConnection, as_of: str, report_url: str | None = None
) -> list[dict[str, Any]]:
    """The as-of date's suggestions, ranked, with what their bodies need: health components,
    the feature count, the neighbours in the ranking and the link to the run's report."""
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
    for i, row in enumerate(rows):
        row["evidence"] = json.loads(row["evidence"]) if row["evidence"] else {}
        row["components"] = [c[1:] for c in comps if c[0] == row["feature_key"]]
        row["n_features"] = n_features
        row["n_suggestions"] = len(rows)
        above = rows[i - 1] if i > 0 else None
        row["ranked_above"] = (above["title"], above["priority_score"]) if above else None
        row["report_url"] = report_url
    return rows


def _num(value: Any, fmt: str = ",.0f") -> str:
    return "n/a" if value is None else format(value, fmt)


def _ranking(s: dict[str, Any]) -> str:
    weight = s.get("reach_weight") or 1.0
    reach = f"reach {s['reach']:,}" + (
        f" ({s.get('reach_users', s['reach']):,} users weighted ×{weight:.2f} by their "
        "accounts' ARR)"
        if abs(weight - 1.0) > 1e-9
        else " users"
    )
    effort = f"effort {s['effort']:g} ({s.get('effort_source') or 'none: 1 assumed'})"
    impact = f"impact {s['impact']:.2f}"
    if s.get("urgency") is not None:
        impact += (
            f" (urgency ×{s['urgency']:.1f} for `{s['kind']}` × health deficit "
            f"{100 - s['health_score']:.0f}/100)"
        )
    text = (
        f"Ranks **#{s['priority_rank']} of {s.get('n_suggestions', s['priority_rank'])}** "
        f"suggestions as of {s['as_of_date']}: priority **{s['priority_score']:,.1f}** = {reach} × "
        f"{impact} × confidence {s['confidence']:.2f} ÷ {effort}."
    )
    if s.get("ranked_above"):
        title, score = s["ranked_above"]
        text += f" Ranked above it: {title} ({score:,.1f})."
    return text


def render_body(s: dict[str, Any], tracker: str = "markdown") -> str:
    """Readable Markdown: what moved against what baseline since when, why it ranks where it
    ranks, the health components, and the tickets and bugs behind it (each list true to its
    heading). Aggregates and redacted excerpts only."""
    ev = s["evidence"]
    lines = ["## What happened", s["why"], "", "## Why it ranks here", _ranking(s)]
    lines += [
        "",
        f"**Health {s['health_score']:.0f}/100** — rank {s['health_rank']} of {s['n_features']} "
        f"features (1 = least healthy), formula `{s['formula_version']}`, "
        f"confidence {s['confidence']:.2f}.",
    ]
    if s.get("explanation"):
        lines += ["", f"Biggest drags: {s['explanation']}."]
    if s.get("confidence_reasons"):
        lines += ["", f"Confidence lowered: {s['confidence_reasons']}."]
    onset = ev.get("onset_date") or s.get("onset_date")
    lines += ["", "### Key numbers", ""]
    reach = f"- Users in the window: {_num(ev.get('n_users'))} ({_num(ev.get('n_accounts'))} "
    reach += "accounts"
    if ev.get("arr_at_risk") is not None:
        reach += f", ARR {_num(ev.get('arr_at_risk'))} at risk"
    lines.append(reach + ")")
    if ev.get("expected_daily_users_since_onset") is not None and s.get("problem") == "health":
        spread = ev.get("expected_spread_since_onset") or 0
        exp = ev["expected_daily_users_since_onset"]
        lines.append(
            f"- Daily users since {onset}: {_num(ev.get('avg_daily_users_since_onset'))} against "
            f"{_num(exp)} expected from the same weekdays of the 8 weeks before (normal range "
            f"{_num(max(0, exp - 2 * spread))}–{_num(exp + 2 * spread)})"
        )
    if ev.get("share_of_actives_7d") is not None:
        lines.append(
            f"- Share of daily active users (last 7 days): {ev['share_of_actives_7d']:.1%}"
            + (
                f" vs reference {ev['reference_share_7d']:.1%}"
                if ev.get("reference_share_7d") is not None
                else ""
            )
            + (
                f"; DAU/MAU {ev['stickiness']:.0%} vs {ev['reference_stickiness']:.0%}"
                if ev.get("stickiness") is not None and ev.get("reference_stickiness") is not None
                else ""
            )
        )
    if s.get("problem") == "health":
        lines.append(
            f"- Tickets since {onset}: {_num(ev.get('n_tickets_since_onset'))} against "
            f"{_num(ev.get('expected_tickets_since_onset'), ',.1f')} expected at the feature's "
            f"usual rate per user; {_num(ev.get('tickets_per_1k_users'), ',.1f')} weighted per "
            "1k users in the window"
        )
        lines.append(
            f"- Open bugs: {ev.get('n_open_bugs', 0)} ({ev.get('n_open_high_sev_bugs', 0)} s1/s2); "
            f"{ev.get('n_new_high_sev_bugs_since_onset', 0)} new s1/s2 since the week before "
            "the onset"
        )
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
    if ev.get("top_tickets"):
        since = min(
            str(onset or s["as_of_date"]), min(t.get("created_at") or "" for t in ev["top_tickets"])
        )
        lines += [
            "",
            f"### Tickets behind it (the most urgent of those created {since} to "
            f"{s['as_of_date']})",
            "",
        ]
        for t in ev["top_tickets"]:
            label = t["id"]
            link = f"[{label}]({t['url']})" if t.get("url") else label
            lines.append(
                f"- {link} · {t.get('priority') or 'no priority'} · {t.get('status')} · "
                f"{t.get('created_at')} — {t.get('subject') or ''}"
            )
    if ev.get("top_bugs"):
        lines += ["", f"### Bugs open as of {s['as_of_date']}", ""]
        for b in ev["top_bugs"]:
            link = f"[{b.get('title') or b['id']}]({b['url']})" if b.get("url") else b["id"]
            closed = f" (closed since, on {b['closed_since']})" if b.get("closed_since") else ""
            lines.append(f"- {link} · {b.get('severity')} · opened {b.get('created_at')}{closed}")
    if s.get("report_url"):
        lines += ["", f"Run report: [{s['as_of_date']}]({s['report_url']})"]
    lines += ["", TRIAGE_NOTE.get(tracker, TRIAGE_NOTE["default"])]
    return scrub("\n".join(lines))
