"""The entry points: a whole demo window (generate_demo_data) and one more day (append_day)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from tasks.demo_data.accounts import ACCOUNTS_FILE, _accounts
from tasks.demo_data.common import (
    _DAY_S,
    _F,
    _S_GITHUB,
    _S_ZENDESK,
    _ZENDESK_HOST,
    GENERATOR_VERSION,
    REGRESSION_DAYS,
    ROLES,
    DemoConfig,
    _rng,
    logger,
)
from tasks.demo_data.github import (
    _AREA,
    _BUG_TITLES,
    _ISSUE_COUNTS,
    _gh_obj,
    _github,
    _issue_item,
)
from tasks.demo_data.posthog import (
    _calibrate,
    _KindTable,
    _plant_posthog,
    _Population,
    _posthog_day,
)
from tasks.demo_data.zendesk import (
    _ORG_BASE,
    _REQUESTER_BASE,
    _TICKET_HOURS,
    _TICKET_RATE,
    _TICKET_SPIKE,
    _cursor,
    _sideloaded_users,
    _ticket_candidates,
    _ticket_chain,
    _zendesk,
)

# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def generate_demo_data(
    cfg: DemoConfig, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Write the demo data set under cfg.out_dir and return its manifest (also _manifest.json)."""
    if cfg.days < REGRESSION_DAYS + 28:
        raise ValueError(f"days must be >= {REGRESSION_DAYS + 28} to hold the planted regression")
    say = progress or (lambda msg: logger.info(msg))
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_users = max(cfg.users, cfg.events // 150) if cfg.events else cfg.users
    n_accounts = max(cfg.accounts, n_users // 10) if cfg.events else cfg.accounts
    pop = _Population(cfg, n_users, n_accounts)
    s, r = _calibrate(pop, cfg.events)
    kinds = _KindTable()
    (out / "posthog").mkdir(parents=True, exist_ok=True)
    plant_day = cfg.days // 2
    n_lines = 0
    malformed: list[dict[str, Any]] = []
    for day in range(cfg.days):
        d = pop.start + timedelta(days=day)
        rel = f"posthog/events-{d.isoformat()}.jsonl"
        lines = _posthog_day(pop, kinds, cfg.seed, day, s, r)
        if day == plant_day:
            planted, rows = _plant_posthog(lines.to_list(), rel)
            malformed.extend(rows)
            (out / rel).write_text("\n".join(planted) + "\n", encoding="utf-8")
            n_lines += len(planted)
        else:
            pl.DataFrame({"line": lines}).write_csv(
                out / rel, include_header=False, quote_style="never"
            )
            n_lines += len(lines)
        say(f"posthog {d.isoformat()}: {len(lines)} events")
    z_pages, z_versions, z_tickets, z_bad = _zendesk(cfg, pop, out)
    say(f"zendesk: {z_versions} ticket versions on {z_pages} pages")
    g_pages, g_items, g_prs, planted_bugs, g_bad = _github(cfg, pop, out)
    say(f"github: {g_items} items on {g_pages} pages")
    # Not in the manifest, whose bytes (like every other file's) stay as they were.
    say(f"accounts: {_accounts(cfg, pop, out)} accounts in {ACCOUNTS_FILE}")
    manifest: dict[str, Any] = {
        "generator": "feedback-loop demo_data",
        "generator_version": GENERATOR_VERSION,
        "params": {
            "seed": cfg.seed,
            "end_date": cfg.end_date.isoformat(),
            "start_date": pop.start.isoformat(),
            "days": cfg.days,
            "users_requested": cfg.users,
            "accounts_requested": cfg.accounts,
            "events_target": cfg.events,
            "users": n_users,
            "accounts": n_accounts,
            "event_scale": round(s, 6),
            "activity_scale": round(r, 6),
        },
        "files": {"posthog": cfg.days, "zendesk": z_pages, "github": g_pages},
        "rows": {
            "posthog_lines": n_lines,
            "zendesk_ticket_versions": z_versions,
            "zendesk_tickets": z_tickets,
            "github_items": g_items,
            "github_pull_requests": g_prs,
            "github_issues": g_items - g_prs,
        },
        "planted": {
            **ROLES,
            "regression_start": (pop.start + timedelta(days=pop.reg_start)).isoformat(),
            "regression_bug_numbers": planted_bugs,
        },
        "id_mapping": {
            "zendesk_requester_id": f"{_REQUESTER_BASE} + user number (user-00042 -> "
            f"{_REQUESTER_BASE + 42})",
            "zendesk_organization_id": f"{_ORG_BASE} + account number (acct-0007 -> "
            f"{_ORG_BASE + 7})",
        },
        "malformed": malformed + z_bad + g_bad,
    }
    (out / "_manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


# --------------------------------------------------------------------------------------------
# One more day after the window (a night with new data, for benchmarks and tests)
# --------------------------------------------------------------------------------------------

# Ids of appended records come from their own ranges (per day), so appending days in any order
# or skipping one never collides with the window's records or with another appended day.
_APPEND_TICKET_BASE = 50_000_000  # ticket id = base + day index * 10_000 + k
_APPEND_ISSUE_BASE = 100_000  # issue number = base + day index * 100 + k


def _config_from_manifest(out: Path) -> tuple[DemoConfig, dict[str, Any]]:
    path = out / "_manifest.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: generate the demo data set first")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("generator_version") != GENERATOR_VERSION:
        raise ValueError(
            f"{path} was written by generator version {manifest.get('generator_version')}, "
            f"this is version {GENERATOR_VERSION}: regenerate the data set"
        )
    p = manifest["params"]
    cfg = DemoConfig(
        out_dir=out,
        end_date=date.fromisoformat(p["end_date"]),
        days=p["days"],
        users=p["users_requested"],
        accounts=p["accounts_requested"],
        events=p["events_target"],
        seed=p["seed"],
    )
    return cfg, p


def append_day(
    out_dir: Path, day: date, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Add the data of one day after the window of the data set in out_dir, in the same formats,
    as new files only (events-<day>.jsonl, zendesk/tickets-<day>-page-NNNN.json,
    github/issues-<day>.json, _appended-<day>.json); no existing file is touched.

    The same users, accounts and event scale as the window (read from _manifest.json), the
    regression still on; new tickets and new bug-tracker issues created that day (no updates of
    older ones). Deterministic: the day's bytes depend only on the data set's parameters and the
    day, so any order of appended days gives the same files. Returns the day's manifest."""
    say = progress or (lambda msg: logger.info(msg))
    out = Path(out_dir)
    cfg, params = _config_from_manifest(out)
    if day <= cfg.end_date:
        raise ValueError(f"{day} is inside the window (last day {cfg.end_date}); append later days")
    iso = day.isoformat()
    marker = out / f"_appended-{iso}.json"
    ev_rel = f"posthog/events-{iso}.jsonl"
    if marker.exists() or (out / ev_rel).exists():
        raise FileExistsError(f"{iso} is already in {out}")
    pop = _Population(cfg, params["users"], params["accounts"])
    s, r = _calibrate(pop, cfg.events)
    idx = (day - pop.start).days
    pop.extend(cfg.seed, idx + 1)
    day_start = int(datetime.combine(day, datetime.min.time(), UTC).timestamp())
    day_end = day_start + _DAY_S - 1

    lines = _posthog_day(pop, _KindTable(), cfg.seed, idx, s, r)
    pl.DataFrame({"line": lines}).write_csv(out / ev_rel, include_header=False, quote_style="never")
    say(f"posthog {iso}: {len(lines)} events")

    # Tickets created that day, at the window's rates (the regression's spike included).
    rng = _rng(cfg.seed, _S_ZENDESK, idx)
    scale = max(1.0, pop.n_users / 5000)
    wk = 1.2 if day.weekday() < 5 else 0.5
    raw: list[dict[str, Any]] = []
    for feature, base in _TICKET_RATE.items():
        spike = feature == "exports" and idx >= pop.reg_start
        for _ in range(int(rng.poisson(base * scale * wk * (_TICKET_SPIKE if spike else 1.0)))):
            created = (
                day_start + int(rng.choice(24, p=_TICKET_HOURS)) * 3600 + int(rng.integers(0, 3600))
            )
            raw.append({"feature": feature, "spike": spike, "created": created})
    raw.sort(key=lambda t: (t["created"], str(t["feature"])))
    if len(raw) >= 10_000:
        raise ValueError(f"{len(raw)} tickets on {iso}: more than an appended day's id range")
    candidates = _ticket_candidates(pop)
    versions: list[dict[str, Any]] = []
    for k, t in enumerate(raw):
        ticket_id = _APPEND_TICKET_BASE + idx * 10_000 + k
        versions.extend(_ticket_chain(rng, pop, candidates, t, ticket_id, day_end))
    versions.sort(key=lambda v: (v["generated_timestamp"], v["id"]))
    pages = [versions[i : i + 100] for i in range(0, len(versions), 100)] or [[]]
    files = [ev_rel]
    prev: str | None = None
    for n, page in enumerate(pages, start=1):
        rel = f"zendesk/tickets-{iso}-page-{n:04d}.json"
        last = page[-1] if page else {"generated_timestamp": day_start, "id": 0}
        after = _cursor(last["generated_timestamp"], last["id"])
        url = f"{_ZENDESK_HOST}/api/v2/incremental/tickets/cursor.json?cursor="
        doc = {
            "tickets": page,
            "users": _sideloaded_users(page),
            "after_cursor": after,
            "before_cursor": prev,
            "after_url": url + after,
            "before_url": url + prev if prev else None,
            "end_of_stream": n == len(pages),
        }
        prev = after
        (out / rel).write_text(json.dumps(doc, ensure_ascii=False) + "\n", encoding="utf-8")
        files.append(rel)
    say(f"zendesk {iso}: {len(raw)} new tickets, {len(versions)} versions")

    # Bug-tracker issues opened that day: the window's mix of areas, still open at its end.
    rng = _rng(cfg.seed, _S_GITHUB, idx)
    keys = list(_ISSUE_COUNTS)
    counts = np.array([_ISSUE_COUNTS[k] for k in keys], dtype=float)
    rate = counts.sum() * max(1.0, (pop.n_users / 5000) ** 0.5) / 90
    n_issues = min(int(rng.poisson(rate)), 99)
    objs: list[dict[str, Any]] = []
    for k in range(n_issues):
        key = keys[int(rng.choice(len(keys), p=counts / counts.sum()))]
        feature = key if key in _F else None
        created = day_start + int(rng.integers(0, _DAY_S - 3600))
        is_bug = key is not None and rng.random() < 0.8
        labels = [
            str(rng.choice(["documentation", "chore", "question"]))
            if key is None
            else _AREA[feature]
            if feature is not None
            else key
        ]
        if is_bug:
            # fresh critical/high bugs stay unique to the planted regression, as in the window
            sev = "low" if feature == "dashboards" else str(rng.choice(["medium", "low"]))
            labels = ["bug", *labels, f"severity:{sev}"]
        elif key is not None:
            labels.insert(0, "enhancement")
        titles = _BUG_TITLES[key]
        title = titles[int(rng.integers(len(titles)))]
        if not is_bug and key is not None:
            title = f"Feature request: {title[0].lower()}{title[1:]}"
        item = _issue_item(rng, created, None, labels, title, feature)
        number = _APPEND_ISSUE_BASE + idx * 100 + k
        objs.append(_gh_obj(rng, number, item, day_start, day_end))
    objs.sort(key=lambda o: (o["updated_at"], o["number"]))
    gh_rel = f"github/issues-{iso}.json"
    (out / gh_rel).write_text(json.dumps(objs, ensure_ascii=False) + "\n", encoding="utf-8")
    files.append(gh_rel)
    say(f"github {iso}: {len(objs)} new issues")

    manifest: dict[str, Any] = {
        "generator": "feedback-loop demo_data append_day",
        "generator_version": GENERATOR_VERSION,
        "day": iso,
        "day_index": idx,
        "files": files,
        "rows": {
            "posthog_lines": len(lines),
            "zendesk_ticket_versions": len(versions),
            "zendesk_tickets": len(raw),
            "github_issues": len(objs),
        },
    }
    marker.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest
