"""GitHub issues: counts and titles per feature, labels, the planted bugs."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from tasks.demo_data.common import _DAY_S, _F, _GH_REPO, _S_GITHUB, FEATURES, DemoConfig, _rng
from tasks.demo_data.posthog import _Population
from tasks.demo_data.zendesk import _zts

# --------------------------------------------------------------------------------------------
# GitHub
# --------------------------------------------------------------------------------------------

_SEVERITIES = ("critical", "high", "medium", "low")
_LABEL_COLORS = {
    "bug": "d73a4a",
    "enhancement": "a2eeef",
    "documentation": "0075ca",
    "question": "d876e3",
    "chore": "ededed",
    "dependencies": "0366d6",
    "severity:critical": "b60205",
    "severity:high": "d93f0b",
    "severity:medium": "fbca04",
    "severity:low": "0e8a16",
}
_AREA = {f: f"area:{f}" for f in FEATURES if f != "ai_assistant"}
_AREA["ai_assistant"] = "area:assistant"
# Issues per feature over 90 days at the default size (bugs + enhancements).
_ISSUE_COUNTS = {
    "dashboards": 44,
    "exports": 19,
    "alerts": 23,
    "sharing": 18,
    "search": 23,
    "integrations": 26,
    "billing": 15,
    "ai_assistant": 11,
    "area:auth": 9,
    "area:api": 8,
    None: 13,
}
_BUG_TITLES = {
    "dashboards": (
        "Dashboard tile overflows on small screens",
        "Chart legend overlaps axis",
        "Widget totals ignore timezone",
        "Dashboard filter resets on tab switch",
        "Drag and drop of tiles jitters in Safari",
    ),
    "exports": (
        "Excel export loses leading zeros",
        "Export file name contains spaces",
        "Export progress bar stuck after completion",
    ),
    "alerts": (
        "Alert fires twice on threshold crossing",
        "Alert email footer broken",
        "Muted alerts still notify Slack",
    ),
    "sharing": ("Share link expiry not respected", "Invite resend button does nothing"),
    "search": ("Search ignores quoted phrases", "Search results paginate incorrectly"),
    "integrations": ("Slack sync retries forever on 429", "Salesforce custom fields not synced"),
    "billing": ("Invoice PDF shows wrong VAT id", "Plan page shows stale price"),
    "ai_assistant": ("Assistant answer cites wrong dashboard", "Assistant ignores date filter"),
    "area:auth": ("SSO redirect loop with Okta", "Session expires too early"),
    "area:api": ("API returns 500 on empty body", "Rate limit header missing"),
    None: ("Update contributor guide", "Bump dependencies", "Clarify retention docs"),
}
_PLANTED_BUGS = (
    ("CSV export times out for tables over 100k rows", "critical"),
    ("Export worker crashes with OOM since streaming writer change", "critical"),
    ("Scheduled exports silently dropped after retry", "high"),
    ("export_failed: internal error on xlsx exports with >50 columns", "high"),
)
_LOGINS = (
    "mara-dev",
    "tkowalski",
    "jchen-acme",
    "priya-eng",
    "lucas-sre",
    "okafor",
    "nhaddad",
    "ebot",
    "sofia-qa",
    "kenji-t",
)


def b62(n: int, width: int = 6) -> str:
    """n in base 62, zero-padded to `width` digits (GitHub-like node ids)."""
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    chars = []
    for _ in range(width):
        n, rem = divmod(n, 62)
        chars.append(alphabet[rem])
    return "".join(reversed(chars))


def _label(name: str) -> dict[str, Any]:
    lid = 5_000_000_000 + sum(ord(c) * 31**i for i, c in enumerate(name)) % 900_000_000
    color = _LABEL_COLORS.get(name, "c5def5")
    return {
        "id": lid,
        "node_id": f"LA_kwDOH7qZ{b62(lid, 8)}",
        "url": f"https://api.github.com/repos/{_GH_REPO}/labels/{name.replace(':', '%3A')}",
        "name": name,
        "color": color,
        "default": name in ("bug", "enhancement"),
        "description": None,
    }


def _issue_item(
    rng: np.random.Generator,
    created: Any,
    closed: Any,
    labels: list[str],
    title: str,
    feature: str | None,
) -> dict[str, Any]:
    """An unplanted bug or feature request of the history and of an appended day alike (one
    draw of `rng`, for the report count in its body)."""
    return {
        "created": created,
        "closed": closed,
        "labels": labels,
        "title": title,
        "pr": False,
        "feature": feature,
        "planted": False,
        "body": f"{title}.\n\n### Steps to reproduce\n1. Open the page\n"
        f"2. Repeat the action\n\n### Expected\nIt works.\n\n"
        f"### Actual\nIt does not ({int(rng.integers(1, 6))} reports).",
    }


def _gh_obj(
    rng: np.random.Generator, n: int, it: dict[str, Any], start_ts: int, end_ts: int
) -> dict[str, Any]:
    """The GitHub issue (or pull request) object numbered n for item `it`, drawing from rng in
    a fixed order."""
    created, closed = it["created"], it["closed"]
    lo = max(created, start_ts)
    if closed is not None:
        updated = min(closed + int(rng.integers(0, 7200)), end_ts)
    else:
        updated = min(lo + int(rng.integers(0, max(1, end_ts - lo))), end_ts)
    updated = max(updated, created)
    state = "closed" if closed is not None else "open"
    reason = None
    if state == "closed":
        reason = "completed" if it["pr"] or rng.random() < 0.85 else "not_planned"
    elif not it["pr"] and rng.random() < 0.08:
        reason = "reopened"
    plus = int(rng.integers(5, 25)) if it["planted"] else int(rng.poisson(1.5))
    kind = "pull" if it["pr"] else "issues"
    obj: dict[str, Any] = {
        "url": f"https://api.github.com/repos/{_GH_REPO}/issues/{n}",
        "repository_url": f"https://api.github.com/repos/{_GH_REPO}",
        "html_url": f"https://github.com/{_GH_REPO}/{kind}/{n}",
        "id": 2_400_000_000 + n * 7919,
        "node_id": f"{'PR' if it['pr'] else 'I'}_kwDOH7qZ{b62(n * 7919 + 1_000_003)}",
        "number": n,
        "title": it["title"],
        "user": {
            "login": _LOGINS[int(rng.integers(len(_LOGINS)))],
            "id": 70_000_000 + int(rng.integers(0, 9_999_999)),
            "type": "User",
        },
        "labels": [_label(name) for name in it["labels"]],
        "state": state,
        "locked": False,
        "assignee": None,
        "assignees": [],
        "milestone": None,
        "comments": int(rng.poisson(6 if it["planted"] else 2)),
        "created_at": _zts(created),
        "updated_at": _zts(updated),
        "closed_at": _zts(closed) if closed is not None else None,
        "author_association": "MEMBER",
        "active_lock_reason": None,
        "body": it["body"],
        "reactions": {
            "url": f"https://api.github.com/repos/{_GH_REPO}/issues/{n}/reactions",
            "total_count": plus,
            "+1": plus,
            "-1": 0,
            "laugh": 0,
            "hooray": 0,
            "confused": 0,
            "heart": 0,
            "rocket": 0,
            "eyes": 0,
        },
        "state_reason": reason,
    }
    if it["pr"]:
        obj["draft"] = False
        obj["pull_request"] = {
            "url": f"https://api.github.com/repos/{_GH_REPO}/pulls/{n}",
            "html_url": f"https://github.com/{_GH_REPO}/pull/{n}",
            "diff_url": f"https://github.com/{_GH_REPO}/pull/{n}.diff",
            "patch_url": f"https://github.com/{_GH_REPO}/pull/{n}.patch",
            "merged_at": _zts(closed) if closed is not None else None,
        }
    return obj


def _github(
    cfg: DemoConfig, pop: _Population, out: Path
) -> tuple[int, int, int, list[int], list[dict[str, Any]]]:
    """Write issue pages; returns (pages, items, pull requests, planted bug numbers, malformed)."""
    rng = _rng(cfg.seed, _S_GITHUB)
    scale = max(1.0, (pop.n_users / 5000) ** 0.5) * cfg.days / 90
    start_ts = int(datetime.combine(pop.start, datetime.min.time(), UTC).timestamp())
    end_ts = start_ts + cfg.days * _DAY_S - 1
    reg_ts = start_ts + pop.reg_start * _DAY_S
    items: list[dict[str, Any]] = []

    def sev_for(feature: str | None, created: int) -> str:
        if feature == "dashboards":
            return str(rng.choice(["medium", "low"], p=[0.5, 0.5]))
        sev = str(rng.choice(_SEVERITIES, p=[0.08, 0.22, 0.45, 0.25]))
        if created >= reg_ts - 2 * _DAY_S and sev in ("critical", "high"):
            sev = "medium"  # keep fresh high-severity bugs unique to the planted regression
        return sev

    for key, base_count in _ISSUE_COUNTS.items():
        feature = key if key in _F else None
        for _ in range(max(1, round(base_count * scale))):
            created = int(rng.integers(start_ts - 45 * _DAY_S, end_ts - 3600))
            is_bug = key is not None and rng.random() < 0.8
            labels: list[str] = []
            if key is None:
                labels.append(str(rng.choice(["documentation", "chore", "question"])))
            elif feature is not None:
                labels.append(_AREA[feature])
            else:
                labels.append(key)
            sev = None
            if is_bug:
                sev = sev_for(feature, created)
                labels = ["bug", *labels, f"severity:{sev}"]
            elif key is not None:
                labels.insert(0, "enhancement")
            age = end_ts - created
            p_closed = 0.9 if age > 30 * _DAY_S else 0.6 if age > 14 * _DAY_S else 0.3
            # Open high-severity or export bugs would blur the planted signal: always closed.
            forced = feature == "exports" or (sev in ("critical", "high") and feature is not None)
            if forced:
                p_closed = 1.0
            if feature == "dashboards":
                p_closed = max(p_closed, 0.8)
            closed_at: int | None = None
            if rng.random() < p_closed:
                closed_at = created + 3600 + int(rng.exponential(8 * _DAY_S))
                closed_at = max(closed_at, start_ts + int(rng.integers(0, 3 * _DAY_S)))
                if closed_at > end_ts:
                    closed_at = end_ts - int(rng.integers(600, 6 * 3600)) if forced else None
                if closed_at is not None:
                    closed_at = max(closed_at, created + 600)
            titles = _BUG_TITLES[key]
            title = titles[int(rng.integers(len(titles)))]
            if not is_bug and key is not None:
                title = f"Feature request: {title[0].lower()}{title[1:]}"
            items.append(_issue_item(rng, created, closed_at, labels, title, feature))
    n_prs = round(len(items) * 0.18)
    for _ in range(n_prs):
        src = items[int(rng.integers(len(items)))]
        created = min((src["closed"] or end_ts) - 1800, end_ts - 3600)
        created = max(created, start_ts - 30 * _DAY_S)
        merged = created + int(rng.integers(600, 2 * _DAY_S))
        closed = merged if merged <= end_ts and rng.random() < 0.85 else None
        items.append(
            {
                "created": created,
                "closed": closed,
                "labels": [x for x in src["labels"] if x.startswith("area:")],
                "title": f"Fix: {src['title'][0].lower()}{src['title'][1:]}",
                "pr": True,
                "feature": src["feature"],
                "planted": False,
                "body": "Fixes the issue described in the linked ticket.\n\n- [x] tests",
            }
        )
    n_planted = 4
    for k in range(n_planted):
        title, sev = _PLANTED_BUGS[k % len(_PLANTED_BUGS)]
        lo = reg_ts + _DAY_S
        created = int(rng.integers(lo, max(lo + 1, end_ts - 2 * _DAY_S)))
        items.append(
            {
                "created": created,
                "closed": None,
                "pr": False,
                "feature": "exports",
                "labels": ["bug", "area:exports", f"severity:{sev}"],
                "title": title,
                "planted": True,
                "body": "Since the streaming writer change, exports of large tables fail."
                "\n\nCustomer reports are piling up in support.",
            }
        )

    items.sort(key=lambda it: (it["created"], it["title"]))
    objs: list[dict[str, Any]] = []
    planted_numbers: list[int] = []
    for n, it in enumerate(items, start=1200):
        obj = _gh_obj(rng, n, it, start_ts, end_ts)
        if it["planted"]:
            planted_numbers.append(n)
        objs.append(obj)

    # Plant on closed, older issues of minor features so no health signal depends on them.
    pool = [
        o
        for o, it in zip(objs, items, strict=True)
        if not it["pr"]
        and o["state"] == "closed"
        and it["feature"] in ("alerts", "search", "sharing", "integrations")
        and it["created"] < reg_ts - 7 * _DAY_S
    ]
    no_node = pool[len(pool) // 3]
    archived = pool[(2 * len(pool)) // 3]
    del no_node["node_id"]
    archived["state"] = "archived"

    objs.sort(key=lambda o: (o["updated_at"], o["number"]))
    (out / "github").mkdir(parents=True, exist_ok=True)
    pages = [objs[i : i + 100] for i in range(0, len(objs), 100)] or [[]]
    malformed: list[dict[str, Any]] = []
    for p, page in enumerate(pages, start=1):
        rel = f"github/issues-page-{p:03d}.json"
        (out / rel).write_text(json.dumps(page, ensure_ascii=False) + "\n", encoding="utf-8")
        for i, o in enumerate(page):
            if o is no_node:
                malformed.append(
                    {
                        "source": "github",
                        "file": rel,
                        "index": i,
                        "kind": "missing_id",
                        "record_id": None,
                        "field": "node_id",
                        "number": o["number"],
                    }
                )
            elif o is archived:
                malformed.append(
                    {
                        "source": "github",
                        "file": rel,
                        "index": i,
                        "kind": "unknown_enum",
                        "record_id": o["node_id"],
                        "field": "state",
                        "value": "archived",
                        "number": o["number"],
                    }
                )
    return len(pages), len(objs), sum(1 for it in items if it["pr"]), planted_numbers, malformed
