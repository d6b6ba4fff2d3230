"""Linear-shaped fake GraphQL API: issues pages, viewer, teams, labels, issues, attachments."""

from __future__ import annotations

import base64
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.fakes.server import FakeServer, Request, Response

GRAPHQL_PATH = r"/graphql"
TEAM_ID = "team-eng-0001"

STATES = [
    {"id": "st-backlog", "name": "Backlog", "type": "backlog", "position": 0},
    {"id": "st-todo", "name": "Todo", "type": "unstarted", "position": 1},
    {"id": "st-progress", "name": "In Progress", "type": "started", "position": 2},
    {"id": "st-done", "name": "Done", "type": "completed", "position": 3},
    {"id": "st-duplicate", "name": "Duplicate", "type": "canceled", "position": 4},
    {"id": "st-canceled", "name": "Canceled", "type": "canceled", "position": 5},
]


def ts(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def gql_error(message: str, code: str, type_: str, status: int = 200, **headers: str) -> Response:
    """A GraphQL error answer the way Linear shapes them."""
    return Response.json(
        {
            "errors": [
                {
                    "message": message,
                    "extensions": {
                        "code": code,
                        "type": type_,
                        "userPresentableMessage": message,
                    },
                }
            ]
        },
        status,
        **headers,
    )


def ratelimited(status: int = 200, reset_ms: int | None = None) -> Response:
    headers = {
        "x-ratelimit-requests-limit": "1500",
        "x-ratelimit-requests-remaining": "0",
    }
    if reset_ms is not None:
        headers["x-ratelimit-requests-reset"] = str(reset_ms)
    return gql_error("Rate limit exceeded", "RATELIMITED", "ratelimited", status, **headers)


def normalise_markdown(text: str) -> str:
    """Linear stores Markdown re-serialised by its editor; this mimics that it is not verbatim:
    table delimiter rows lose their alignment colons and trailing spaces go."""
    lines = []
    for line in text.split("\n"):
        if re.fullmatch(r"\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*", line):
            n = line.strip().strip("|").count("|") + 1
            line = "|" + " --- |" * n
        lines.append(line.rstrip())
    return "\n".join(lines).strip("\n")


@dataclass
class LinearFake:
    srv: FakeServer
    api_key: str = "lin_api_TestKey1234567890"
    team_key: str = "ENG"
    now: datetime = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    issues: dict[str, dict[str, Any]] = field(default_factory=dict)
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)
    attachments: list[dict[str, Any]] = field(default_factory=list)
    comments: list[dict[str, Any]] = field(default_factory=list)
    queries: list[dict[str, Any]] = field(default_factory=list)  # {"op": ..., "variables": ...}
    next_number: int = 1
    drop_create_answer: int = 0  # create the issue, then answer 502 this many times

    # -- helpers -----------------------------------------------------------------------------
    def add_issue(
        self,
        updated: datetime,
        *,
        title: str = "Export fails",
        priority: int = 2,
        state: str = "Todo",
        labels: list[str] | list[tuple[str, str]] | None = None,
        archived: bool = False,
        description: str = "",
        issue_id: str | None = None,
        estimate: float | None = None,
    ) -> dict[str, Any]:
        number = self.next_number
        self.next_number += 1
        st = next(s for s in STATES if s["name"] == state)
        label_nodes = []
        for item in labels or []:
            name, parent = (item, None) if isinstance(item, str) else item
            label_nodes.append(
                {"id": f"lbl-{name}", "name": name, "parent": {"name": parent} if parent else None}
            )
        ident = f"{self.team_key}-{number}"
        issue = {
            "id": issue_id or str(uuid.uuid4()),
            "identifier": ident,
            "title": title,
            "url": f"https://linear.app/acme/issue/{ident.lower()}/export-fails",
            "priority": priority,
            "priorityLabel": ["No priority", "Urgent", "High", "Medium", "Low"][priority],
            "description": normalise_markdown(description),
            "createdAt": ts(updated - timedelta(days=3)),
            "updatedAt": ts(updated),
            "startedAt": None,
            "completedAt": ts(updated) if st["type"] == "completed" else None,
            "canceledAt": ts(updated) if st["type"] == "canceled" else None,
            "archivedAt": ts(updated) if archived else None,
            "estimate": estimate,
            "state": {"id": st["id"], "name": st["name"], "type": st["type"]},
            "labels": {"nodes": label_nodes},
            "team": {"id": TEAM_ID, "key": self.team_key},
            "project": None,
        }
        self.issues[issue["id"]] = issue
        return issue

    def ops(self, name: str) -> list[dict[str, Any]]:
        return [q for q in self.queries if q["op"] == name]

    def _with_team_states(self, issue: dict[str, Any], filt: dict[str, Any] | None) -> dict:
        types = ((filt or {}).get("type") or {}).get("in")
        states = [s for s in STATES if not types or s["type"] in types]
        return {**issue, "team": {**issue["team"], "states": {"nodes": states}}}

    def _attachment_view(self, att: dict[str, Any]) -> dict[str, Any]:
        return {**att, "issue": self.issues.get(att["issueId"])}

    # -- dispatch ----------------------------------------------------------------------------
    def handle(self, req: Request) -> Response:
        if req.headers.get("Authorization") != self.api_key:
            # Linear answers a missing/invalid key (and "Bearer <personal key>") like this.
            return gql_error(
                "Authentication required, not authenticated",
                "AUTHENTICATION_ERROR",
                "authentication error",
                401,
            )
        body = req.json()
        query, variables = body.get("query", ""), body.get("variables") or {}
        op = self._operation(query)
        self.queries.append({"op": op, "variables": variables, "query": query})
        handler = getattr(self, f"_op_{op}", None)
        if handler is None:
            return gql_error(
                f"Cannot query field in {query[:40]!r}",
                "GRAPHQL_VALIDATION_FAILED",
                "graphql error",
                400,
            )
        return handler(query, variables)

    @staticmethod
    def _operation(query: str) -> str:
        for name in (
            "issueCreate",
            "issueUpdate",
            "commentCreate",
            "attachmentCreate",
            "issueLabelCreate",
            "attachmentsForURL",
            "issueLabels",
            "issues",
            "teams",
            "viewer",
            "issue",
        ):
            if re.search(rf"\b{name}\s*[({{]", query):
                return name
        return "unknown"

    # -- queries -----------------------------------------------------------------------------
    def _op_viewer(self, query: str, v: dict[str, Any]) -> Response:
        return Response.json({"data": {"viewer": {"id": "user-1", "name": "Bot"}}})

    def _op_issues(self, query: str, v: dict[str, Any]) -> Response:
        include_archived = "includeArchived: true" in query
        filt = v.get("filter") or {}
        upd = filt.get("updatedAt") or {}
        out = []
        for issue in self.issues.values():
            at = parse_ts(issue["updatedAt"])
            if "gt" in upd and not at > parse_ts(upd["gt"]):
                continue
            if "lte" in upd and not at <= parse_ts(upd["lte"]):
                continue
            if issue["archivedAt"] and not include_archived:
                continue
            team_key = ((filt.get("team") or {}).get("key") or {}).get("eq")
            if team_key and issue["team"]["key"] != team_key:
                continue
            out.append(issue)
        # orderBy: updatedAt — newest first; the cursor is a keyset on (updatedAt, id).
        out.sort(key=lambda i: (i["updatedAt"], i["id"]), reverse=True)
        if v.get("after"):
            key = tuple(json.loads(base64.b64decode(v["after"])))
            out = [i for i in out if (i["updatedAt"], i["id"]) < key]
        first = min(int(v.get("first") or 50), 250)
        page = out[:first]
        has_next = len(out) > first
        end = (
            base64.b64encode(json.dumps([page[-1]["updatedAt"], page[-1]["id"]]).encode()).decode()
            if page
            else None
        )
        return Response.json(
            {
                "data": {
                    "issues": {
                        "nodes": page,
                        "pageInfo": {"hasNextPage": has_next, "endCursor": end},
                    }
                }
            },
            **{
                "x-ratelimit-requests-limit": "1500",
                "x-ratelimit-requests-remaining": "1499",
                "x-complexity": "520",
            },
        )

    def _op_teams(self, query: str, v: dict[str, Any]) -> Response:
        nodes = [{"id": TEAM_ID, "key": self.team_key}] if v.get("key") == self.team_key else []
        return Response.json({"data": {"teams": {"nodes": nodes}}})

    def _op_issueLabels(self, query: str, v: dict[str, Any]) -> Response:  # noqa: N802
        names = set(v.get("names") or [])
        nodes = [lbl for lbl in self.labels.values() if lbl["name"] in names]
        return Response.json({"data": {"issueLabels": {"nodes": nodes}}})

    def _op_attachmentsForURL(self, query: str, v: dict[str, Any]) -> Response:  # noqa: N802
        nodes = [self._attachment_view(a) for a in self.attachments if a["url"] == v.get("url")]
        return Response.json({"data": {"attachmentsForURL": {"nodes": nodes}}})

    def _op_issue(self, query: str, v: dict[str, Any]) -> Response:
        issue = self.issues.get(v.get("id"))
        if issue is None:
            return Response.json(
                {
                    "data": None,
                    "errors": [
                        {
                            "message": "Entity not found: Issue",
                            "extensions": {"code": "INVALID_INPUT", "type": "invalid input"},
                        }
                    ],
                }
            )
        if "states" in query:
            m = re.search(r"states\(filter:\s*\{type:\s*\{in:\s*\[([^\]]*)\]", query)
            types = re.findall(r'"(\w+)"', m[1]) if m else []
            issue = self._with_team_states(issue, {"type": {"in": types}} if types else None)
        return Response.json({"data": {"issue": issue}})

    # -- mutations ---------------------------------------------------------------------------
    def _label_nodes(self, ids: list[str]) -> list[dict[str, Any]]:
        return [
            {"id": i, "name": self.labels[i]["name"], "parent": None}
            for i in ids
            if i in self.labels
        ]

    def _op_issueLabelCreate(self, query: str, v: dict[str, Any]) -> Response:  # noqa: N802
        name = v["input"]["name"]
        if any(lbl["name"].lower() == name.lower() for lbl in self.labels.values()):
            return gql_error("Duplicate label name", "INVALID_INPUT", "invalid input", 400)
        lid = f"lbl-{len(self.labels) + 1}"
        self.labels[lid] = {"id": lid, "name": name, "team": {"id": v["input"].get("teamId")}}
        return Response.json(
            {"data": {"issueLabelCreate": {"success": True, "issueLabel": self.labels[lid]}}}
        )

    def _op_issueCreate(self, query: str, v: dict[str, Any]) -> Response:  # noqa: N802
        inp = v["input"]
        if inp.get("teamId") != TEAM_ID:
            return gql_error("Team not found", "INVALID_INPUT", "invalid input", 400)
        if inp.get("id") in self.issues:
            return gql_error(
                "Argument Validation Error: id already exists",
                "INVALID_INPUT",
                "invalid input",
                400,
            )
        issue = self.add_issue(
            self.now,
            title=inp["title"],
            priority=0,
            state="Todo",
            description=inp.get("description") or "",
            issue_id=inp.get("id"),
        )
        issue["labels"] = {"nodes": self._label_nodes(inp.get("labelIds") or [])}
        if self.drop_create_answer:
            self.drop_create_answer -= 1
            return Response(502, "Bad Gateway")
        return Response.json({"data": {"issueCreate": {"success": True, "issue": issue}}})

    def _op_issueUpdate(self, query: str, v: dict[str, Any]) -> Response:  # noqa: N802
        issue = self.issues.get(v["id"])
        if issue is None:
            return gql_error("Entity not found: Issue", "INVALID_INPUT", "invalid input", 400)
        inp = v["input"]
        if "title" in inp:
            issue["title"] = inp["title"]
        if "description" in inp:
            issue["description"] = normalise_markdown(inp["description"])
        if "labelIds" in inp:
            issue["labels"] = {"nodes": self._label_nodes(inp["labelIds"])}
        for lid in inp.get("addedLabelIds") or []:
            if lid not in [n["id"] for n in issue["labels"]["nodes"]]:
                issue["labels"]["nodes"] += self._label_nodes([lid])
        if "stateId" in inp:
            st = next((s for s in STATES if s["id"] == inp["stateId"]), None)
            if st is None:
                return gql_error("Workflow state not found", "INVALID_INPUT", "invalid input", 400)
            issue["state"] = {"id": st["id"], "name": st["name"], "type": st["type"]}
            issue["completedAt"] = ts(self.now) if st["type"] == "completed" else None
            issue["canceledAt"] = ts(self.now) if st["type"] == "canceled" else None
        issue["updatedAt"] = ts(self.now)
        return Response.json({"data": {"issueUpdate": {"success": True, "issue": issue}}})

    def _op_attachmentCreate(self, query: str, v: dict[str, Any]) -> Response:  # noqa: N802
        inp = v["input"]
        if inp.get("issueId") not in self.issues:
            return gql_error("Entity not found: Issue", "INVALID_INPUT", "invalid input", 400)
        # Same URL on the same issue: the attachment is updated in place (documented).
        for att in self.attachments:
            if att["issueId"] == inp["issueId"] and att["url"] == inp["url"]:
                att.update({k: inp[k] for k in ("title", "subtitle", "metadata") if k in inp})
                break
        else:
            att = {
                "id": f"att-{len(self.attachments) + 1}",
                "createdAt": ts(self.now + timedelta(seconds=len(self.attachments))),
                "issueId": inp["issueId"],
                "url": inp["url"],
                "title": inp.get("title"),
                "subtitle": inp.get("subtitle"),
                "metadata": inp.get("metadata") or {},
            }
            self.attachments.append(att)
        out = {"id": att["id"], "url": att["url"]}
        return Response.json({"data": {"attachmentCreate": {"success": True, "attachment": out}}})

    def _op_commentCreate(self, query: str, v: dict[str, Any]) -> Response:  # noqa: N802
        inp = v["input"]
        if inp.get("issueId") not in self.issues:
            return gql_error("Entity not found: Issue", "INVALID_INPUT", "invalid input", 400)
        self.comments.append(inp)
        comment = {"id": f"cmt-{len(self.comments)}"}
        return Response.json({"data": {"commentCreate": {"success": True, "comment": comment}}})


def linear_api(srv: FakeServer, **kwargs: Any) -> LinearFake:
    """Install the GraphQL endpoint on `srv` and return the fake's state."""
    fake = LinearFake(srv, **kwargs)
    srv.route("POST", GRAPHQL_PATH, fake.handle)
    return fake
