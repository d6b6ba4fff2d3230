"""Freshdesk-shaped fake API: GET /api/v2/tickets (updated_since, page cap, Link) and agents/me."""

from __future__ import annotations

import base64
import copy
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from tests.fakes.server import FakeServer, Request, Response

TICKETS_PATH = r"/api/v2/tickets"
ME_PATH = r"/api/v2/agents/me"
MAX_PER_PAGE = 100


def parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts)


def ticket(
    tid: int,
    updated: str,
    *,
    status: int = 2,
    priority: int = 2,
    source: int = 1,
    subject: str = "Export fails",
    description_text: str = "The export fails.",
    requester: dict[str, Any] | None = None,
    tags: list[str] | None = None,
    created: str = "2026-11-01T09:00:00Z",
    company_id: int | None = 55,
    **extra: Any,
) -> dict[str, Any]:
    """One ticket as the list endpoint returns it with include=requester,description."""
    req = requester or {"id": 7000 + tid, "name": None, "email": None}
    return {
        "cc_emails": [],
        "fwd_emails": [],
        "reply_cc_emails": [],
        "ticket_cc_emails": [],
        "fr_escalated": False,
        "spam": False,
        "email_config_id": None,
        "group_id": None,
        "priority": priority,
        "requester_id": req["id"],
        "responder_id": None,
        "source": source,
        "company_id": company_id,
        "status": status,
        "subject": subject,
        "support_email": None,
        "to_emails": None,
        "product_id": None,
        "id": tid,
        "type": "Incident",
        "due_by": "2026-12-01T09:00:00Z",
        "fr_due_by": "2026-11-30T09:00:00Z",
        "is_escalated": False,
        "custom_fields": {},
        "created_at": created,
        "updated_at": updated,
        "tags": tags if tags is not None else ["exports"],
        "description": f"<div>{description_text}</div>",
        "description_text": description_text,
        "requester": {"mobile": None, "phone": None, **req},
        **extra,
    }


@dataclass
class FreshdeskFake:
    """State of the fake helpdesk. Append/replace `tickets` between runs."""

    srv: FakeServer
    tickets: list[dict[str, Any]]
    page_size: int = MAX_PER_PAGE
    max_pages: int = 300
    api_key: str = "fd-test-key-123"
    now: datetime = datetime(2026, 11, 26, tzinfo=UTC)

    def _unauthorized(self, req: Request) -> Response | None:
        basic = base64.b64encode(f"{self.api_key}:X".encode()).decode()
        if req.headers.get("Authorization") != f"Basic {basic}":
            return Response.json(
                {"code": "invalid_credentials", "message": "You have to be logged in"},
                status=401,
            )
        return None

    def list_tickets(self, req: Request) -> Response:
        denied = self._unauthorized(req)
        if denied:
            return denied
        per_page = int(req.arg("per_page") or 30)
        page = int(req.arg("page") or 1)
        if per_page > MAX_PER_PAGE or page > self.max_pages:
            return Response.json(
                {
                    "description": "Validation failed",
                    "errors": [
                        {"field": "page", "message": "must be <= 300", "code": "invalid_value"}
                    ],
                },
                status=400,
            )
        per_page = min(per_page, self.page_size)
        since = req.arg("updated_since")
        if since:
            chosen = [t for t in self.tickets if parse(t["updated_at"]) >= parse(since)]
        else:  # the documented default: tickets created in the last 30 days only
            cutoff = self.now - timedelta(days=30)
            chosen = [t for t in self.tickets if parse(t["created_at"]) >= cutoff]
        order_by = req.arg("order_by") or "created_at"
        desc = (req.arg("order_type") or "desc") == "desc"
        chosen.sort(key=lambda t: (parse(t[order_by]), t["id"]), reverse=desc)
        items = chosen[(page - 1) * per_page : page * per_page]
        include = set((req.arg("include") or "").split(","))
        out = []
        for t in items:
            t = copy.deepcopy(t)
            if "requester" not in include:
                t.pop("requester", None)
            if "description" not in include:
                t.pop("description", None)
                t.pop("description_text", None)
            out.append(t)
        headers = {}
        if page * per_page < len(chosen) and page < self.max_pages:
            query = {k: v[0] for k, v in req.query.items()} | {"page": str(page + 1)}
            headers["Link"] = f'<{self.srv.url}/api/v2/tickets?{urlencode(query)}>; rel="next"'
        return Response(status=200, body=out, headers=headers)

    def me(self, req: Request) -> Response:
        return self._unauthorized(req) or Response.json(
            {"id": 101, "contact": {"name": "Agent", "email": "agent@acme.test"}}
        )


def freshdesk_api(
    srv: FakeServer,
    tickets: list[dict[str, Any]],
    page_size: int = MAX_PER_PAGE,
    max_pages: int = 300,
    **kwargs: Any,
) -> FreshdeskFake:
    """Install the ticket list and agents/me on `srv`: updated_since (inclusive) filter, ordering,
    page numbers refused past `max_pages`, Link rel="next" while more pages exist."""
    fake = FreshdeskFake(srv, tickets, page_size=page_size, max_pages=max_pages, **kwargs)
    srv.route("GET", TICKETS_PATH, fake.list_tickets)
    srv.route("GET", ME_PATH, fake.me)
    return fake
