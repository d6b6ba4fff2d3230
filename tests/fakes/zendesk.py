"""Zendesk-shaped fake API: the cursor-based incremental ticket export (with users) and users/me."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tests.fakes.server import FakeServer, Request, Response

EXPORT_PATH = r"/api/v2/incremental/tickets/cursor\.json"
ME_PATH = r"/api/v2/users/me\.json"
MAX_PER_PAGE = 1000


def epoch(ts: str) -> int:
    return int(datetime.fromisoformat(ts).timestamp())


def iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ticket(
    tid: int,
    updated: str,
    *,
    status: str = "open",
    requester_id: int | None = None,
    subject: str = "Export fails",
    description: str = "The export fails.",
    priority: str | None = "normal",
    tags: list[str] | None = None,
    created: str = "2026-11-01T09:00:00Z",
    channel: str = "email",
    org_id: int | None = 77,
    **extra: Any,
) -> dict[str, Any]:
    """One ticket version as the incremental export shows it."""
    rid = requester_id if requester_id is not None else 9000 + tid
    return {
        "url": f"https://acme.zendesk.com/api/v2/tickets/{tid}.json",
        "id": tid,
        "external_id": None,
        "via": {"channel": channel, "source": {"from": {}, "to": {}, "rel": None}},
        "created_at": created,
        "updated_at": updated,
        "generated_timestamp": epoch(updated),
        "type": "incident",
        "subject": subject,
        "raw_subject": subject,
        "description": description,
        "priority": priority,
        "status": status,
        "recipient": "support@acme.test",
        "requester_id": rid,
        "submitter_id": rid,
        "assignee_id": None,
        "organization_id": org_id,
        "tags": tags if tags is not None else ["exports"],
        "custom_fields": [],
        "satisfaction_rating": None,
        **extra,
    }


def user(uid: int, name: str, email: str, **extra: Any) -> dict[str, Any]:
    return {"id": uid, "name": name, "email": email, "role": "end-user", **extra}


def encode_cursor(ts: int, tid: int) -> str:
    return base64.urlsafe_b64encode(f"{ts}.{tid}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int] | None:
    try:
        ts, tid = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().split(".")
        return int(ts), int(tid)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None


def _position(t: dict[str, Any]) -> tuple[int, int]:
    ts = t.get("generated_timestamp")
    if not isinstance(ts, int):
        ts = epoch(t["updated_at"])
    tid = t.get("id")
    if not isinstance(tid, int):  # a malformed ticket without id still has its url
        tid = int(str(t["url"]).rsplit("/", 1)[1].split(".")[0])
    return ts, tid


@dataclass
class ZendeskFake:
    """State of the fake account. Append to `tickets` (new versions) between runs."""

    srv: FakeServer
    tickets: list[dict[str, Any]]
    users: dict[int, dict[str, Any]]
    page_size: int = MAX_PER_PAGE
    email: str = "agent@acme.test"
    token: str = "zd-test-token-123"
    oauth_token: str | None = None
    me_id: int | None = 424242
    pages_served: int = 0

    def authorized(self, req: Request) -> bool:
        sent = req.headers.get("Authorization", "")
        basic = base64.b64encode(f"{self.email}/token:{self.token}".encode()).decode()
        if sent == f"Basic {basic}":
            return True
        return self.oauth_token is not None and sent == f"Bearer {self.oauth_token}"

    def export(self, req: Request) -> Response:
        if not self.authorized(req):
            return Response.json({"error": "Couldn't authenticate you"}, status=401)
        per_page = min(int(req.arg("per_page") or MAX_PER_PAGE), self.page_size)
        ordered = sorted(self.tickets, key=_position)
        cursor, start = req.arg("cursor"), req.arg("start_time")
        if cursor is not None:
            pos = decode_cursor(cursor)
            if pos is None:
                return Response.json({"error": "InvalidCursor"}, status=400)
            remaining = [t for t in ordered if _position(t) > pos]
            empty_cursor = cursor
        elif start is not None and start.isdigit():
            remaining = [t for t in ordered if _position(t)[0] >= int(start)]
            empty_cursor = encode_cursor(int(start) - 1, 0)
        else:
            return Response.json(
                {"error": "InvalidValue", "description": "start_time or cursor is required"},
                status=400,
            )
        page = remaining[:per_page]
        after = encode_cursor(*_position(page[-1])) if page else empty_cursor
        base = f"{self.srv.url}/api/v2/incremental/tickets/cursor.json"
        doc: dict[str, Any] = {
            "tickets": page,
            "after_url": f"{base}?cursor={after}",
            "after_cursor": after,
            "before_url": f"{base}?cursor={cursor}" if cursor else None,
            "before_cursor": cursor,
            "end_of_stream": len(remaining) <= per_page,
        }
        if "users" in (req.arg("include") or "").split(","):
            ids = {
                t.get(k)
                for t in page
                for k in ("requester_id", "submitter_id", "assignee_id")
                if t.get(k) is not None
            }
            doc["users"] = [self.users[i] for i in sorted(ids) if i in self.users]
        self.pages_served += 1
        return Response.json(doc)

    def me(self, req: Request) -> Response:
        if not req.headers.get("Authorization"):
            # Zendesk answers anonymous callers 200 with an anonymous user.
            return Response.json({"user": {"id": None, "role": "anonymous"}})
        if not self.authorized(req):
            return Response.json({"error": "Couldn't authenticate you"}, status=401)
        return Response.json({"user": {"id": self.me_id, "role": "admin", "email": self.email}})


def zendesk_api(
    srv: FakeServer,
    tickets: list[dict[str, Any]],
    page_size: int = MAX_PER_PAGE,
    users: list[dict[str, Any]] | None = None,
    **kwargs: Any,
) -> ZendeskFake:
    """Install the export and users/me routes on `srv`; the export really pages by cursor
    (position = (generated_timestamp, id)) and honours start_time."""
    fake = ZendeskFake(
        srv, tickets, {u["id"]: u for u in (users or [])}, page_size=page_size, **kwargs
    )
    srv.route("GET", EXPORT_PATH, fake.export)
    srv.route("GET", ME_PATH, fake.me)
    return fake
