"""Sentry-shaped fake: organization issues with Link/cursor paging (results="false"), org detail."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from tests.fakes.server import FakeServer, Request, Response

ORG_PATH = r"/api/0/organizations/(?P<org>[^/]+)/"
ISSUES_PATH = r"/api/0/organizations/(?P<org>[^/]+)/issues/"
DEFAULT_QUERY = "is:unresolved"  # what Sentry applies when `query` is not sent
_PERIOD = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def ts(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _parse_search_date(text: str) -> datetime:
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)  # search dates are UTC


@dataclass
class SentryFake:
    srv: FakeServer
    org: str = "acme"
    token: str = "sntrys_TestToken1234567890"
    now: datetime = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    issues: list[dict[str, Any]] = field(default_factory=list)
    next_id: int = 4500000000
    queries: list[dict[str, list[str]]] = field(default_factory=list)

    def add_issue(
        self,
        last_seen: datetime,
        *,
        title: str = "TypeError: Cannot read properties of undefined (reading 'rows')",
        culprit: str = "GET /exports/{id}",
        status: str = "unresolved",
        level: str = "error",
        count: int = 120,
        users: int = 14,
        project: str = "web",
        first_seen: datetime | None = None,
    ) -> dict[str, Any]:
        self.next_id += 1
        iid = str(self.next_id)
        issue = {
            "id": iid,
            "shortId": f"{project.upper()}-{len(self.issues) + 1:X}",
            "title": title,
            "culprit": culprit,
            "permalink": f"https://{self.org}.sentry.io/issues/{iid}/",
            "logger": None,
            "level": level,
            "status": status,
            "substatus": "ongoing" if status == "unresolved" else None,
            "statusDetails": {},
            "isPublic": False,
            "platform": "javascript",
            "project": {"id": "2", "name": project, "slug": project, "platform": "javascript"},
            "type": "error",
            "metadata": {"type": title.split(":")[0], "value": title},
            "numComments": 0,
            "assignedTo": None,
            "isBookmarked": False,
            "isSubscribed": False,
            "hasSeen": False,
            "annotations": [],
            "issueType": "error",
            "issueCategory": "error",
            "isUnhandled": True,
            "count": str(count),  # a string in the API
            "userCount": users,
            "firstSeen": ts(first_seen or last_seen - timedelta(days=5)),
            "lastSeen": ts(last_seen),
        }
        self.issues.append(issue)
        return issue

    def _authorized(self, req: Request) -> bool:
        return req.headers.get("Authorization") == f"Bearer {self.token}"

    def organization(self, req: Request) -> Response:
        if not self._authorized(req):
            return Response.json({"detail": "Invalid token"}, 401)
        if req.groups["org"] != self.org:
            return Response.json({"detail": "The requested resource does not exist"}, 404)
        return Response.json(
            {"id": "1", "slug": self.org, "name": "Acme", "status": {"id": "active"}}
        )

    def _matcher(self, query: str, period: str | None) -> Any:
        tests = []
        for token in query.split():
            if m := re.fullmatch(r"is:(unresolved|resolved|ignored|archived)", token):
                wanted = "ignored" if m[1] == "archived" else m[1]
                tests.append(lambda i, w=wanted: i["status"] == w)
            elif m := re.fullmatch(r"lastSeen:(>=|<=|>|<)(.+)", token):
                bound = _parse_search_date(m[2])
                ops = {
                    ">=": lambda a, b: a >= b,
                    "<=": lambda a, b: a <= b,
                    ">": lambda a, b: a > b,
                    "<": lambda a, b: a < b,
                }
                tests.append(
                    lambda i, b=bound, op=ops[m[1]]: op(_parse_search_date(i["lastSeen"]), b)
                )
            else:
                raise ValueError(f"Invalid search: {token}")
        if period:
            m = _PERIOD.fullmatch(period)
            if not m:
                raise ValueError(f"Invalid statsPeriod: {period}")
            since = self.now - timedelta(**{_UNITS[m[2]]: int(m[1])})
            tests.append(lambda i: _parse_search_date(i["lastSeen"]) >= since)
        return lambda i: all(t(i) for t in tests)

    def list_issues(self, req: Request) -> Response:
        if not self._authorized(req):
            return Response.json({"detail": "Invalid token"}, 401)
        self.queries.append(req.query)
        query = req.arg("query")
        try:
            match = self._matcher(DEFAULT_QUERY if query is None else query, req.arg("statsPeriod"))
        except ValueError as exc:
            return Response.json({"detail": str(exc)}, 400)
        limit = min(int(req.arg("limit") or 100), 100)
        found = sorted(
            (i for i in self.issues if match(i)),
            key=lambda i: (i["lastSeen"], i["id"]),
            reverse=True,
        )
        cursor = req.arg("cursor") or "0:0:0"
        offset = int(cursor.split(":")[1])
        page = found[offset : offset + limit]
        base = f"{self.srv.url}{req.path}"
        params = {k: v for k, v in req.query.items() if k != "cursor"}

        def link(cur: str, rel: str, results: bool) -> str:
            qs = urlencode([(k, x) for k, vs in params.items() for x in vs] + [("cursor", cur)])
            flag = "true" if results else "false"
            return f'<{base}?{qs}>; rel="{rel}"; results="{flag}"; cursor="{cur}"'

        prev_cur = f"0:{max(offset - limit, 0)}:1"
        next_cur = f"0:{offset + limit}:0"
        header = ", ".join(
            [
                link(prev_cur, "previous", offset > 0),
                link(next_cur, "next", offset + limit < len(found)),
            ]
        )
        return Response.json(page, Link=header)


def sentry_api(srv: FakeServer, **kwargs: Any) -> SentryFake:
    """Install the Sentry routes on `srv` and return the fake's state."""
    fake = SentryFake(srv, **kwargs)
    srv.route("GET", ORG_PATH, fake.organization)
    srv.route("GET", ISSUES_PATH, fake.list_issues)
    return fake
