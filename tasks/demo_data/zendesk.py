"""Zendesk tickets: rates per feature, the regression's spike, side-loaded people, bad pages."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from tasks.demo_data.common import _DAY_S, _F, _S_ZENDESK, _ZENDESK_HOST, FEATURES, DemoConfig, _rng
from tasks.demo_data.posthog import _Population

# --------------------------------------------------------------------------------------------
# Zendesk
# --------------------------------------------------------------------------------------------

# Daily ticket rates at the default size. Dashboards: most tickets overall, steady.
_TICKET_RATE = {
    "dashboards": 5.0,
    "exports": 1.3,
    "alerts": 1.6,
    "sharing": 1.3,
    "search": 1.4,
    "integrations": 1.8,
    "billing": 1.7,
    "ai_assistant": 0.25,
    None: 1.75,
}
_TICKET_SPIKE = 5.0  # exports ticket rate multiplier during the regression
_TAGS = {
    "dashboards": (["dashboards"],),
    "exports": (["exports"], ["csv"], ["exports", "csv"]),
    "alerts": (["alerts"], ["notifications"], ["alerts", "notifications"]),
    "sharing": (["sharing"], ["invites"]),
    "search": (["search"],),
    "integrations": (["integrations"], ["integrations", "slack"], ["salesforce"]),
    "billing": (["billing"], ["billing", "invoices"]),
    "ai_assistant": (["ai-assistant"],),
    None: (["login"], ["sso"], ["account"], ["2fa", "login"], []),
}
_EXTRA_TAGS = ("enterprise", "pro_plan", "starter_plan", "vip", "first_reply_sla", "eu_region")
# Subjects contain only their own feature's catalog keywords (substring-safe), so an untagged
# ticket maps by keyword to the intended feature and an unmapped one matches nothing.
_SUBJECTS: dict[str | None, tuple[str, ...]] = {
    "dashboards": (
        "Dashboard loads slowly with many tiles",
        "Chart colors reset after refresh",
        "Widget shows wrong totals",
        "Cannot resize a widget on the dashboard",
        "Dashboard filters are not applied",
        "Line chart missing last week",
        "How do I duplicate a dashboard?",
        "Pie chart labels overlap",
    ),
    "exports": (
        "CSV export stuck at 0%",
        "Export fails with a timeout error",
        "CSV download is empty",
        "Scheduled export did not arrive",
        "Export to Excel cuts off rows",
        "Export button greyed out",
    ),
    "alerts": (
        "Alert fired twice for the same threshold",
        "Not receiving alert emails",
        "Notification settings keep resetting",
        "How to mute an alert for the weekend?",
        "Alert threshold ignores decimals",
        "Too many notification emails",
    ),
    "sharing": (
        "Share link asks for login",
        "Invite email never arrived",
        "Cannot change permission for a teammate",
        "Invite link expired",
        "Can we share with external guests?",
        "Permission denied on a team folder",
    ),
    "search": (
        "Search returns no results for exact names",
        "Search is slow",
        "Search misses recent items",
        "How to search by owner?",
        "Search ignores quotes",
    ),
    "integrations": (
        "Slack integration disconnected",
        "Salesforce sync missing fields",
        "Sync stuck for two days",
        "Integration token expired",
        "Slack messages arrive late",
        "Salesforce integration shows 403",
    ),
    "billing": (
        "Invoice shows wrong VAT number",
        "Refund for duplicate charge",
        "Billing address update",
        "Unexpected charge this month",
        "Need a copy of last invoice",
        "Question about billing cycle",
    ),
    "ai_assistant": (
        "Assistant gives wrong numbers",
        "AI answer ignores my filters",
        "Assistant not available on our plan",
        "Assistant is very slow to respond",
    ),
    None: (
        "Cannot log in",
        "SSO question",
        "Password reset link not working",
        "Two-factor code not accepted",
        "Please delete my account data",
        "Change account owner",
        "Locked out after SSO migration",
        "Question about data retention",
        "API rate limit question",
        "Feature request: dark mode",
    ),
}
_SPIKE_SUBJECTS = (
    "Export failing since the last release",
    "CSV export times out for large tables",
    "Export returns a 500 error",
    "Every export fails now",
    "CSV download corrupted",
    "Export stuck in queued state",
)
_PROBLEMS: dict[str | None, tuple[str, ...]] = {
    "dashboards": (
        "Our main revenue dashboard takes almost a minute to load since we added more tiles.",
        "One of the widgets shows totals that do not match the underlying report.",
        "The chart colors go back to the default palette every time the page is refreshed.",
    ),
    "exports": (
        "The CSV export of our orders table never finishes; the progress bar stays at 0%.",
        "Our scheduled weekly export did not arrive this Monday.",
        "Exported files are missing the last few hundred rows.",
    ),
    "alerts": (
        "We got the same alert twice within a minute for a single threshold breach.",
        "Alert emails stopped arriving for our on-call channel.",
    ),
    "sharing": (
        "Colleagues who open a shared link are asked to log in again.",
        "The invite email never reached our new analyst.",
    ),
    "search": (
        "Searching for an exact report name returns nothing although the report exists.",
        "Search takes several seconds to return results.",
    ),
    "integrations": (
        "The Slack connection dropped overnight and reports are no longer posted.",
        "Salesforce sync stopped importing custom fields.",
    ),
    "billing": (
        "This month's invoice lists the wrong VAT number for our company.",
        "We were charged twice for the annual plan and need a refund.",
    ),
    "ai_assistant": (
        "The assistant answered with numbers that do not match our dashboards.",
        "The assistant ignores the filters I mention in my question.",
    ),
    None: (
        "I cannot log in since this morning, the page just reloads.",
        "We are moving to Okta and have questions about the SSO setup.",
        "The password reset link says it has expired immediately.",
    ),
}
_SPIKE_PROBLEMS = (
    "Since the last release every CSV export of our larger tables fails after a few minutes "
    "with 'Export failed: timeout'. Smaller exports still work.",
    "Exports that worked for months now fail with an internal error. Our finance team depends "
    "on the daily CSV file.",
    "The export job stays queued and then fails. We retried five times today.",
)
_FIRST = (
    "Jane",
    "John",
    "Maria",
    "Ahmed",
    "Wei",
    "Priya",
    "Lucas",
    "Sofia",
    "Noah",
    "Emma",
    "Liam",
    "Olivia",
    "Mateo",
    "Aisha",
    "Kenji",
    "Chloe",
    "Daniel",
    "Fatima",
    "Oliver",
    "Hannah",
)
_LAST = (
    "Cooper",
    "Smith",
    "Garcia",
    "Khan",
    "Chen",
    "Patel",
    "Silva",
    "Rossi",
    "Johnson",
    "Nguyen",
    "Kowalski",
    "Okafor",
    "Tanaka",
    "Dubois",
    "Andersen",
    "Novak",
    "Haddad",
    "Murphy",
    "Schmidt",
    "Larsen",
)
_COMPANY_A = (
    "Northwind",
    "Bluebird",
    "Redwood",
    "Silverline",
    "Greenfield",
    "Brightpath",
    "Ironbridge",
    "Clearwater",
    "Summit",
    "Harbor",
)
_COMPANY_B = (
    "Logistics",
    "Health",
    "Retail",
    "Capital",
    "Foods",
    "Media",
    "Energy",
    "Labs",
    "Travel",
    "Insurance",
)
_REQUESTER_BASE = 9_100_000_000  # requester_id = base + user number (user-00042 -> ...042)


def _sideloaded_users(page: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Zendesk's `include=users` side-load for the requesters on one export page."""
    ids = sorted({v["requester_id"] for v in page if isinstance(v.get("requester_id"), int)})
    users = []
    for rid in ids:
        user = rid - _REQUESTER_BASE - 1
        first = _FIRST[(user * 7 + 3) % len(_FIRST)]
        last = _LAST[(user * 13 + 5) % len(_LAST)]
        users.append(
            {
                "id": rid,
                "name": f"{first} {last}",
                "email": f"{first.lower()}.{last.lower()}@example.com",
                "role": "end-user",
            }
        )
    return users


_ORG_BASE = 9_200_000_000  # organization_id = base + account number (acct-0007 -> ...007)
_AGENTS = (9_000_000_101, 9_000_000_102, 9_000_000_103, 9_000_000_104)
_GROUPS = (9_000_000_201, 9_000_000_202)


def _zts(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _phone(rng: np.random.Generator) -> str:
    form = int(rng.integers(0, 3))
    area = int(rng.choice([212, 312, 415, 617, 646, 720]))
    tail = int(rng.integers(100, 200))
    if form == 0:
        return f"+1 {area} 555 0{tail}"
    if form == 1:
        return f"({area}) 555-0{tail}"
    return f"+44 20 7946 0{int(rng.integers(100, 1000))}"


def _description(
    rng: np.random.Generator,
    feature: str | None,
    spike: bool,
    first: str,
    last: str,
    company: str,
) -> str:
    problems = _SPIKE_PROBLEMS if spike else _PROBLEMS[feature]
    parts = []
    named = rng.random() < 0.7
    parts.append(f"Hi, this is {first} {last} from {company}." if named else "Hello team,")
    parts.append(problems[int(rng.integers(len(problems)))])
    card = rng.random() < (0.12 if feature == "billing" else 0.01)
    if card:
        parts.append("We tried updating the card 4111 1111 1111 1111 but the form rejected it.")
    email = f"{first.lower()}.{last.lower()}@example.com"
    contact = rng.random()
    if contact < 0.35:
        parts.append(f"You can reach me at {email}.")
    elif contact < 0.55:
        parts.append(f"Please call me on {_phone(rng)} if that is easier.")
    elif contact < 0.7:
        parts.append(f"Reach me at {email} or {_phone(rng)}.")
    parts.append(f"Thanks,\n{first}" if named else "Thanks")
    return "\n\n".join(parts)


def _cursor(ts: int, ticket_id: int) -> str:
    return base64.urlsafe_b64encode(f"{ts}.{ticket_id}".encode()).decode().rstrip("=")


_TICKET_HOURS = np.array(
    [0.2, 0.2, 0.2, 0.2, 0.3, 0.5, 1, 2, 4, 6, 7, 7, 7, 8, 9, 9, 8, 7, 5, 3, 2, 1, 0.5, 0.3]
)
_TICKET_HOURS /= _TICKET_HOURS.sum()  # UTC hour-of-day weights of ticket creation


def _ticket_candidates(pop: _Population) -> dict[str | None, tuple[np.ndarray, np.ndarray]]:
    """Per ticket topic (feature, None = unmapped, "spike" = the regression): the users who may
    file it and their cumulative weights (active users write more tickets)."""
    weights = pop.p_base
    candidates: dict[str | None, tuple[np.ndarray, np.ndarray]] = {}
    for key in (*FEATURES, None, "spike"):
        if key is None:
            mask = np.ones(pop.n_users, dtype=bool)
        elif key == "spike":
            mask = pop.regressed
        else:
            mask = pop.q[:, _F[key]] > 0
        if not mask.any():
            mask = np.ones(pop.n_users, dtype=bool)
        idx = np.flatnonzero(mask)
        candidates[key] = (idx, np.cumsum(weights[idx]))
    return candidates


def _ticket_chain(
    rng: np.random.Generator,
    pop: _Population,
    candidates: dict[str | None, tuple[np.ndarray, np.ndarray]],
    t: dict[str, Any],
    ticket_id: int,
    end_ts: int,
) -> list[dict[str, Any]]:
    """The versions of one ticket created at t["created"] (one, or two when it changed again
    before end_ts), drawing from rng in a fixed order."""
    feature, spike = t["feature"], t["spike"]
    idx, cum = candidates["spike" if spike else feature]
    user = int(idx[min(np.searchsorted(cum, rng.random() * cum[-1]), len(idx) - 1)])
    acct = int(pop.account[user])
    first = _FIRST[(user * 7 + 3) % len(_FIRST)]
    last = _LAST[(user * 13 + 5) % len(_LAST)]
    company = (
        f"{_COMPANY_A[acct % len(_COMPANY_A)]} "
        f"{_COMPANY_B[(acct // len(_COMPANY_A)) % len(_COMPANY_B)]}"
    )
    if feature is None:
        tags = list(_TAGS[None][int(rng.integers(len(_TAGS[None])))])
    elif rng.random() < (0.9 if spike else 0.78):
        opts = _TAGS[feature]
        tags = list(opts[int(rng.integers(len(opts)))])
    else:
        tags = []
    if rng.random() < 0.4:
        tags.append(_EXTRA_TAGS[int(rng.integers(len(_EXTRA_TAGS)))])
    subjects = _SPIKE_SUBJECTS if spike else _SUBJECTS[feature]
    subject = subjects[int(rng.integers(len(subjects)))]
    pr = rng.random()
    if spike:
        priority: str | None = "urgent" if pr < 0.25 else "high" if pr < 0.75 else "normal"
    else:
        priority = (
            "urgent"
            if pr < 0.04
            else "high"
            if pr < 0.22
            else "normal"
            if pr < 0.68
            else "low"
            if pr < 0.85
            else None
        )
    ch = rng.random()
    channel = "email" if ch < 0.5 else "web" if ch < 0.8 else "chat" if ch < 0.92 else "api"
    ty = rng.random()
    ttype = (
        "question"
        if ty < 0.4
        else "incident"
        if ty < 0.65
        else "problem"
        if ty < 0.8
        else "task"
        if ty < 0.85
        else None
    )
    created = t["created"]
    second = rng.random() < 0.30
    deleted = rng.random() < 0.02
    gap2 = 3600 + int(rng.exponential(2.0 * _DAY_S))
    age = end_ts - created
    base: dict[str, Any] = {
        "url": f"{_ZENDESK_HOST}/api/v2/tickets/{ticket_id}.json",
        "id": ticket_id,
        "external_id": None,
        "via": {"channel": channel, "source": {"from": {}, "to": {}, "rel": None}},
        "created_at": _zts(created),
        "updated_at": None,
        "generated_timestamp": None,
        "type": ttype,
        "subject": subject,
        "raw_subject": subject,
        "description": _description(rng, feature, spike, first, last, company),
        "priority": priority,
        "status": None,
        "recipient": None,
        "requester_id": _REQUESTER_BASE + user + 1,
        "submitter_id": _REQUESTER_BASE + user + 1,
        "assignee_id": None,
        "organization_id": _ORG_BASE + acct + 1,
        "group_id": _GROUPS[int(rng.integers(len(_GROUPS)))],
        "collaborator_ids": [],
        "follower_ids": [],
        "has_incidents": False,
        "is_public": True,
        "due_at": None,
        "tags": tags,
        "custom_fields": [],
        "satisfaction_rating": None,
    }
    agent = _AGENTS[int(rng.integers(len(_AGENTS)))]
    st = rng.random()
    has_v2 = second and created + gap2 + 900 <= end_ts
    if has_v2 or age < 5 * _DAY_S:
        status1 = "new" if st < 0.4 else "open" if st < 0.85 else "pending" if st < 0.95 else "hold"
        upd1 = created + int(rng.integers(0, 900))
    else:
        status1 = (
            "solved"
            if st < 0.55
            else "closed"
            if st < 0.85
            else "pending"
            if st < 0.9
            else "open"
            if st < 0.97
            else "hold"
        )
        upd1 = min(created + int(rng.exponential(1.5 * _DAY_S)), end_ts)
    v1 = dict(
        base,
        updated_at=_zts(upd1),
        generated_timestamp=upd1,
        status=status1,
        assignee_id=None if status1 == "new" else agent,
    )
    chain = [v1]
    if has_v2:
        upd2 = upd1 + gap2
        st2 = rng.random()
        status2 = (
            "solved"
            if st2 < 0.5
            else "closed"
            if st2 < 0.65
            else "pending"
            if st2 < 0.8
            else "open"
            if st2 < 0.95
            else "hold"
        )
        if status2 == status1:
            status2 = "solved"  # a repeated version always carries a change
        prio2 = "high" if priority == "normal" and rng.random() < 0.1 else priority
        chain.append(
            dict(
                base,
                updated_at=_zts(upd2),
                generated_timestamp=upd2,
                status=status2,
                priority=prio2,
                assignee_id=agent,
            )
        )
    if deleted:
        chain[-1]["status"] = "deleted"
    return chain


def _zendesk(
    cfg: DemoConfig, pop: _Population, out: Path
) -> tuple[int, int, int, list[dict[str, Any]]]:
    """Write ticket pages; returns (pages, versions, tickets, malformed rows)."""
    rng = _rng(cfg.seed, _S_ZENDESK)
    scale = max(1.0, pop.n_users / 5000)
    start_ts = int(datetime.combine(pop.start, datetime.min.time(), UTC).timestamp())
    end_ts = start_ts + cfg.days * _DAY_S - 1
    candidates = _ticket_candidates(pop)
    hours = _TICKET_HOURS

    raw: list[dict[str, Any]] = []
    for day in range(cfg.days):
        wd = (pop.start + timedelta(days=day)).weekday()
        wk = 1.2 if wd < 5 else 0.5
        for feature, base in _TICKET_RATE.items():
            spike = feature == "exports" and day >= pop.reg_start
            lam = base * scale * wk * (_TICKET_SPIKE if spike else 1.0)
            for _ in range(int(rng.poisson(lam))):
                created = (
                    start_ts
                    + day * _DAY_S
                    + int(rng.choice(24, p=hours)) * 3600
                    + int(rng.integers(0, 3600))
                )
                raw.append(
                    {
                        "feature": feature,
                        "spike": spike,
                        "created": created,
                        "u": float(rng.random()),
                    }
                )
    raw.sort(key=lambda t: (t["created"], t["u"]))

    versions: list[dict[str, Any]] = []
    tickets: list[list[dict[str, Any]]] = []
    for n, t in enumerate(raw):
        chain = _ticket_chain(rng, pop, candidates, t, 18_001 + n, end_ts)
        tickets.append(chain)
        versions.extend(chain)

    _plant_zendesk(tickets, pop, start_ts)
    versions.sort(key=lambda v: (v["generated_timestamp"], v.get("id") or 0, v["subject"]))
    (out / "zendesk").mkdir(parents=True, exist_ok=True)
    pages = [versions[i : i + 100] for i in range(0, len(versions), 100)] or [[]]
    rows: list[dict[str, Any]] = []
    prev_cursor: str | None = None
    for p, page in enumerate(pages, start=1):
        rel = f"zendesk/tickets-page-{p:04d}.json"
        for i, v in enumerate(page):
            if "_planted" in v:
                rows.append({"source": "zendesk", "file": rel, "index": i, **v.pop("_planted")})
        last = page[-1] if page else {"generated_timestamp": start_ts, "url": "/0.json"}
        # the planted ticket without "id" may end a page, so take the id from its url
        last_id = int(last["url"].rsplit("/", 1)[1].split(".")[0])
        after = _cursor(last["generated_timestamp"], last_id)
        doc = {
            "tickets": page,
            # include=users: the requesters' names and emails, which redaction needs to know
            "users": _sideloaded_users(page),
            "after_cursor": after,
            "before_cursor": prev_cursor,
            "after_url": f"{_ZENDESK_HOST}/api/v2/incremental/tickets/cursor.json?cursor={after}",
            "before_url": (
                f"{_ZENDESK_HOST}/api/v2/incremental/tickets/cursor.json?cursor={prev_cursor}"
                if prev_cursor
                else None
            ),
            "end_of_stream": p == len(pages),
        }
        prev_cursor = after
        (out / rel).write_text(json.dumps(doc, ensure_ascii=False) + "\n", encoding="utf-8")
    return len(pages), len(versions), len(tickets), rows


def _plant_zendesk(tickets: list[list[dict[str, Any]]], pop: _Population, start_ts: int) -> None:
    """Corrupt three single-version tickets of minor features in the middle of the window."""
    lo = start_ts + (pop.days // 3) * _DAY_S
    hi = start_ts + (pop.reg_start - 3) * _DAY_S
    pool = [
        c[0]
        for c in tickets
        if len(c) == 1
        and c[0]["status"] != "deleted"
        and any(
            s == c[0]["subject"]
            for f in ("alerts", "search", "sharing", "integrations")
            for s in _SUBJECTS[f]
        )
        and lo <= c[0]["generated_timestamp"] <= hi
    ]
    if len(pool) < 3:
        pool = [c[0] for c in tickets if len(c) == 1][: max(3, len(pool))]
    step = max(1, len(pool) // 4)
    a, b, c = pool[step], pool[2 * step], pool[min(3 * step, len(pool) - 1)]
    a["_planted"] = {"kind": "missing_id", "record_id": None, "field": "id"}
    del a["id"]
    b["_planted"] = {
        "kind": "unknown_enum",
        "record_id": b["id"],
        "field": "priority",
        "value": "critical",
    }
    b["priority"] = "critical"
    c["_planted"] = {
        "kind": "wrong_type",
        "record_id": c["id"],
        "field": "created_at",
        "value": "yesterday",
    }
    c["created_at"] = "yesterday"
