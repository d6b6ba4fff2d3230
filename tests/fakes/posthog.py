"""A PostHog-shaped fake: the HogQL query API filtering and keyset-paging a list of events, and
grouping them into daily aggregates (LIMIT/OFFSET pages) as ClickHouse would."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from tests.fakes.server import FakeServer, Request, Response

COLUMNS = ["uuid", "event", "distinct_id", "timestamp", "properties"]
TYPES = ["UUID", "String", "String", "DateTime64(6, 'UTC')", "String"]
PROJECT_PATH = r"/api/projects/(?P<pid>[^/]+)/"
QUERY_PATH = r"/api/projects/(?P<pid>[^/]+)/query/"

_TS = r"toDateTime64\('([^']+)', 6, 'UTC'\)"
_SELECT = re.compile(r"^select uuid, event, distinct_id, timestamp, properties from events where ")
_LO = re.compile(rf"timestamp >= {_TS}")
_HI = re.compile(rf"timestamp < {_TS}")
_AFTER = re.compile(
    rf"\(timestamp > {_TS} or \(timestamp = {_TS} and uuid > toUUID\('([0-9a-f-]+)'\)\)\)"
)
_TAIL = re.compile(r" order by timestamp, uuid limit (\d+)$")
DAILY_COLUMNS = [
    "day",
    "event",
    "distinct_id",
    "pathname",
    "company",
    "n_events",
    "first_at",
    "last_at",
    "pulled_at",
]
DAILY_TYPES = [
    "String",
    "String",
    "String",
    "Nullable(String)",
    "Nullable(String)",
    "UInt64",
    "DateTime64(6, 'UTC')",
    "DateTime64(6, 'UTC')",
    "String",
]
_GROUP = "event, distinct_id, pathname, company"
_DAILY = re.compile(
    r"^select '(\d{4}-\d{2}-\d{2})' as day, event, distinct_id, "
    r"properties\.\$pathname as pathname, properties\.\$groups\.company as company, "
    r"count\(\) as n_events, min\(timestamp\) as first_at, max\(timestamp\) as last_at, "
    rf"'([^']+)' as pulled_at from events where timestamp >= {_TS} and timestamp < {_TS} "
    rf"group by {_GROUP} order by {_GROUP} limit (\d+) offset (\d+)$"
)


def _ts(value: str) -> datetime:
    dt = datetime.fromisoformat(value)
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _prop_text(value: Any) -> str | None:
    """A property as HogQL's `properties.x` gives it: text as is, anything else as JSON text."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


def daily_groups(
    events: list[dict[str, Any]], lo: datetime, hi: datetime
) -> list[tuple[tuple, list[datetime]]]:
    """(event, distinct_id, pathname, company) -> timestamps of the events with lo <= ts < hi,
    in the query's order (ClickHouse sorts NULLs last)."""
    groups: dict[tuple, list[datetime]] = {}
    for e in events:
        ts = _ts(e["timestamp"])
        if not lo <= ts < hi:
            continue
        props = e.get("properties") or {}
        company = (props.get("$groups") or {}).get("company")
        key = (
            e.get("event"),
            e.get("distinct_id"),
            _prop_text(props.get("$pathname")),
            _prop_text(company),
        )
        groups.setdefault(key, []).append(ts)
    return sorted(groups.items(), key=lambda kv: [(v is None, v or "") for v in kv[0]])


def _pid(req: Request) -> str:
    # From the path itself: a scripted route in front of ours may have no named group.
    return req.path.split("/")[3]


def _unauthorized() -> Response:
    return Response.json(
        {
            "type": "authentication_error",
            "code": "authentication_failed",
            "detail": "Personal API key found in request Authorization header is invalid.",
            "attr": None,
        },
        status=401,
    )


def _invalid(detail: str) -> Response:
    return Response.json(
        {"type": "validation_error", "code": "invalid_input", "detail": detail, "attr": None},
        status=400,
    )


def posthog_api(
    srv: FakeServer,
    events: list[dict[str, Any]],
    page_limit: int | None = None,
    *,
    project_id: str = "1",
    api_key: str = "phx_test_key",
    utc_offset_hours: int = 0,
) -> Callable[[Request], Response]:
    """Serve `events` (PostHog export-line dicts; `events` may grow between runs) through
    `GET /api/projects/<id>/` and `POST /api/projects/<id>/query/`.

    The query is parsed and really applied: the `timestamp` bounds, the `(timestamp, uuid)`
    keyset and the LIMIT (capped at `page_limit` if given, like a server-side row cap); rows are
    answered as HogQL does — arrays in column order, `properties` as a JSON string, timestamps
    in the project's timezone (`utc_offset_hours`). A query of any other shape answers 400.
    Returns the query handler, for `srv.script(..., then=handler)` fault injection.
    """
    tz = timezone(timedelta(hours=utc_offset_hours))

    def authorized(req: Request) -> bool:
        return req.headers.get("Authorization") == f"Bearer {api_key}"

    def project(req: Request) -> Response:
        if not authorized(req):
            return _unauthorized()
        if _pid(req) != project_id:
            return Response.json({"type": "invalid_request", "detail": "Not found."}, status=404)
        return Response.json({"id": int(project_id), "name": "Demo", "timezone": "UTC"})

    def query(req: Request) -> Response:
        if not authorized(req):
            return _unauthorized()
        if _pid(req) != project_id:
            return Response.json({"type": "invalid_request", "detail": "Not found."}, status=404)
        body = req.json()
        q = body.get("query", {})
        if q.get("kind") != "HogQLQuery" or not isinstance(q.get("query"), str):
            return _invalid("expected a HogQLQuery")
        text = q["query"]
        daily = _DAILY.match(text)
        if daily:
            return _daily_answer(daily, text)
        lo, hi, tail = _LO.search(text), _HI.search(text), _TAIL.search(text)
        if not (_SELECT.match(text) and lo and hi and tail):
            return _invalid(f"fake PostHog does not understand: {text}")
        after = _AFTER.search(text)
        if after and after[1] != after[2]:
            return _invalid("keyset timestamps differ")
        limit = int(tail[1])
        n = min(limit, page_limit) if page_limit else limit
        key_lo, key_hi = _ts(lo[1]), _ts(hi[1])
        key_after = (_ts(after[1]), after[3]) if after else None
        rows = sorted(
            (
                (_ts(e["timestamp"]), e["uuid"], e)
                for e in events
                if key_lo <= _ts(e["timestamp"]) < key_hi
            ),
            key=lambda r: (r[0], r[1]),
        )
        if key_after:
            rows = [r for r in rows if (r[0], r[1]) > key_after]
        results = [
            [
                e["uuid"],
                e.get("event"),
                e.get("distinct_id"),
                ts.astimezone(tz).isoformat(timespec="microseconds"),
                json.dumps(e.get("properties") or {}),
            ]
            for ts, _, e in rows[:n]
        ]
        return Response.json(
            {
                "cache_key": None,
                "clickhouse": "SELECT ... (omitted by the fake)",
                "columns": COLUMNS,
                "types": TYPES,
                "hasMore": len(rows) > n,
                "hogql": text,
                "limit": n,
                "offset": 0,
                "results": results,
                "timings": [],
            }
        )

    def _daily_answer(m: re.Match[str], text: str) -> Response:
        day, pulled_at, lo, hi = m[1], m[2], _ts(m[3]), _ts(m[4])
        limit, offset = int(m[5]), int(m[6])
        n = min(limit, page_limit) if page_limit else limit
        groups = daily_groups(events, lo, hi)
        results = [
            [
                day,
                *key,
                len(stamps),
                min(stamps).astimezone(tz).isoformat(timespec="microseconds"),
                max(stamps).astimezone(tz).isoformat(timespec="microseconds"),
                pulled_at,
            ]
            for key, stamps in groups[offset : offset + n]
        ]
        return Response.json(
            {
                "cache_key": None,
                "clickhouse": "SELECT ... (omitted by the fake)",
                "columns": DAILY_COLUMNS,
                "types": DAILY_TYPES,
                "hasMore": len(groups) > offset + n,
                "hogql": text,
                "limit": n,
                "offset": offset,
                "results": results,
                "timings": [],
            }
        )

    srv.route("GET", PROJECT_PATH, project)
    srv.route("POST", QUERY_PATH, query)
    return query


def query_text(req: Request) -> str:
    """The HogQL text of a recorded query request."""
    return req.json()["query"]["query"]
