"""Intercom-shaped fake API: POST /conversations/search (updated_at filters, cursors) and /me."""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.server import FakeServer, Request, Response

SEARCH_PATH = r"/conversations/search"
ME_PATH = r"/me"
MAX_PER_PAGE = 150


def conversation(
    cid: str,
    updated_at: int,
    *,
    created_at: int | None = None,
    state: str = "open",
    priority: str = "not_priority",
    title: str | None = None,
    subject: str = "",
    body: str = "<p>The export fails.</p>",
    author: dict[str, Any] | None = None,
    tags: list[str] | None = None,
    source_type: str = "conversation",
    **extra: Any,
) -> dict[str, Any]:
    """One conversation as the search API returns it (v2.11 shape, no conversation_parts)."""
    return {
        "type": "conversation",
        "id": cid,
        "title": title,
        "created_at": created_at if created_at is not None else updated_at - 3600,
        "updated_at": updated_at,
        "waiting_since": None,
        "snoozed_until": None,
        "open": state != "closed",
        "state": state,
        "read": True,
        "priority": priority,
        "admin_assignee_id": None,
        "team_assignee_id": None,
        "tags": {
            "type": "tag.list",
            "tags": [{"type": "tag", "id": str(i), "name": n} for i, n in enumerate(tags or [])],
        },
        "conversation_rating": None,
        "source": {
            "type": source_type,
            "id": f"src-{cid}",
            "delivered_as": "customer_initiated",
            "subject": subject,
            "body": body,
            "author": author or {"type": "user", "id": f"user-{cid}", "name": None, "email": None},
            "attachments": [],
            "url": None,
            "redacted": False,
        },
        "contacts": {
            "type": "contact.list",
            "contacts": [{"type": "contact", "id": f"contact-{cid}", "external_id": None}],
        },
        "custom_attributes": {},
        "statistics": None,
        **extra,
    }


def _encode(pos: tuple[int, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(pos)).encode()).decode()


def _decode(cursor: str) -> tuple[int, str] | None:
    try:
        ts, cid = json.loads(base64.urlsafe_b64decode(cursor))
        return int(ts), str(cid)
    except (ValueError, TypeError, binascii.Error):
        return None


_OPS = {
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}


def _matches(conv: dict[str, Any], query: dict[str, Any]) -> bool:
    op = query.get("operator")
    if op in ("AND", "OR"):
        parts = [_matches(conv, q) for q in query.get("value", [])]
        return all(parts) if op == "AND" else any(parts)
    if query.get("field") != "updated_at" or op not in _OPS:
        raise ValueError(f"unsupported query {query!r}")
    return _OPS[op](conv["updated_at"], int(query["value"]))


@dataclass
class IntercomFake:
    """State of the fake workspace. `hidden` ids are not yet in the search index (it lags)."""

    srv: FakeServer
    conversations: list[dict[str, Any]]
    page_size: int = MAX_PER_PAGE
    token: str = "ic-test-token-123"
    hidden: set[str] = field(default_factory=set)
    versions_seen: list[str | None] = field(default_factory=list)

    def _unauthorized(self, req: Request) -> Response | None:
        if req.headers.get("Authorization") != f"Bearer {self.token}":
            return Response.json(
                {
                    "type": "error.list",
                    "request_id": "req-1",
                    "errors": [{"code": "unauthorized", "message": "Access Token Invalid"}],
                },
                status=401,
            )
        return None

    def search(self, req: Request) -> Response:
        denied = self._unauthorized(req)
        if denied:
            return denied
        self.versions_seen.append(req.headers.get("Intercom-Version"))
        body = req.json()
        try:
            matches = [
                c
                for c in self.conversations
                if c["id"] not in self.hidden and _matches(c, body["query"])
            ]
        except (KeyError, ValueError) as exc:
            return Response.json(
                {
                    "type": "error.list",
                    "errors": [{"code": "parameter_invalid", "message": str(exc)}],
                },
                status=400,
            )
        matches.sort(key=lambda c: (c["updated_at"], c["id"]))
        pagination = body.get("pagination") or {}
        per_page = min(int(pagination.get("per_page", 20)), self.page_size)
        start = 0
        if pagination.get("starting_after"):
            pos = _decode(pagination["starting_after"])
            if pos is None:
                return Response.json(
                    {
                        "type": "error.list",
                        "errors": [{"code": "parameter_invalid", "message": "bad cursor"}],
                    },
                    status=400,
                )
            start = sum(1 for c in matches if (c["updated_at"], c["id"]) <= pos)
        page = matches[start : start + per_page]
        pages: dict[str, Any] = {
            "type": "pages",
            "page": start // per_page + 1,
            "per_page": per_page,
            "total_pages": max(1, math.ceil(len(matches) / per_page)),
        }
        if start + per_page < len(matches):
            pages["next"] = {
                "page": start // per_page + 2,
                "starting_after": _encode((page[-1]["updated_at"], page[-1]["id"])),
            }
        return Response.json(
            {
                "type": "conversation.list",
                "pages": pages,
                "total_count": len(matches),
                "conversations": page,
            }
        )

    def me(self, req: Request) -> Response:
        return self._unauthorized(req) or Response.json(
            {"type": "admin", "id": "991", "name": "Agent", "email": "agent@acme.test"}
        )


def intercom_api(
    srv: FakeServer,
    conversations: list[dict[str, Any]],
    page_size: int = MAX_PER_PAGE,
    **kwargs: Any,
) -> IntercomFake:
    """Install search and /me on `srv`: the search filters on updated_at (>, <, AND), sorts
    ascending and pages with opaque starting_after cursors."""
    fake = IntercomFake(srv, conversations, page_size=page_size, **kwargs)
    srv.route("POST", SEARCH_PATH, fake.search)
    srv.route("GET", ME_PATH, fake.me)
    return fake
