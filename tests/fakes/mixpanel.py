"""A Mixpanel-shaped fake: the raw Export API answering JSON lines for a range of project days."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from tests.fakes.server import FakeServer, Request, Response

EXPORT_PATH = r"/api/2\.0/export"


def mixpanel_event(
    insert_id: str | None,
    event: str = "export_started",
    distinct_id: str = "user-1",
    time: int | str = 1_795_168_800,  # 2026-11-20T10:00:00Z
    url: str | None = "https://app.example.com/exports?tab=1",
    company_id: str | None = "acct-1",
) -> dict[str, Any]:
    """One event as the raw export writes it: `time` is epoch seconds."""
    props: dict[str, Any] = {
        "time": time,
        "distinct_id": distinct_id,
        "$browser": "Firefox",
        "mp_lib": "web",
    }
    if insert_id is not None:
        props["$insert_id"] = insert_id
    if url is not None:
        props["$current_url"] = url
    if company_id is not None:
        props["company_id"] = company_id
    return {"event": event, "properties": props}


def epoch(iso: str) -> int:
    dt = datetime.fromisoformat(iso)
    return int((dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp())


def mixpanel_api(
    srv: FakeServer,
    events: list[dict[str, Any]],
    *,
    username: str = "sa.user",
    secret: str = "sa_secret",
    project_id: str = "42",
    project_timezone: str = "UTC",
) -> Callable[[Request], Response]:
    """Serve `events` (may grow between runs) through `GET /api/2.0/export`: events whose
    `time` falls on a project day in [from_date, to_date] (inclusive), in stored order, cut at
    `limit`; an empty 200 body when none. Returns the handler for fault injection."""
    token = base64.b64encode(f"{username}:{secret}".encode()).decode()
    tz = ZoneInfo(project_timezone)

    def export(req: Request) -> Response:
        if req.headers.get("Authorization") != f"Basic {token}":
            return Response.json({"error": "Invalid credentials", "status": "error"}, status=401)
        if req.arg("project_id") != project_id:
            return Response.json(
                {"error": "project_id is required for service accounts", "status": "error"},
                status=400,
            )
        try:
            first = date.fromisoformat(req.arg("from_date") or "")
            last = date.fromisoformat(req.arg("to_date") or "")
        except ValueError:
            return Response.json({"error": "bad from_date/to_date", "status": "error"}, 400)
        chosen = [
            e
            for e in events
            if first <= datetime.fromtimestamp(int(e["properties"]["time"]), tz).date() <= last
        ]
        limit = req.arg("limit")
        if limit is not None:
            chosen = chosen[: int(limit)]
        body = "".join(json.dumps(e) + "\n" for e in chosen)
        return Response(200, body, headers={"Content-Type": "application/x-ndjson"})

    srv.route("GET", EXPORT_PATH, export)
    return export
