"""Jira Cloud-shaped fake: enhanced JQL search, myself, issues, comments, transitions, links."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tests.fakes.server import FakeServer, Request, Response

SEARCH_PATH = r"/rest/api/3/search/jql"
MYSELF_PATH = r"/rest/api/3/myself"
ISSUE_PATH = r"/rest/api/3/issue"
ONE_ISSUE = r"/rest/api/3/issue/(?P<ref>[^/]+)"
MAX_RESULTS = 100

STATUSES = {
    "To Do": "new",
    "In Progress": "indeterminate",
    "Done": "done",
    "Won't Do": "done",
    "Released": "done",
}
RESOLUTIONS = [
    {"id": "1", "name": "Done"},
    {"id": "2", "name": "Won't Do"},
    {"id": "3", "name": "Duplicate"},
]


DONE_STATUSES = [name for name, key in STATUSES.items() if key == "done"]
STORY_POINTS = "customfield_10016"  # Jira Cloud's usual story-point estimate field


def default_workflow() -> list[dict[str, Any]]:
    """A done transition with a resolution screen; "Reopen" (clears the resolution, as Jira's
    reopen post-function does) only from a done status; the others from every status."""
    return [
        {"id": "11", "name": "Start progress", "to": "In Progress"},
        {"id": "31", "name": "Done", "to": "Done", "resolution_screen": True},
        {"id": "41", "name": "Reopen", "to": "To Do", "from": DONE_STATUSES},
    ]


def custom_workflow() -> list[dict[str, Any]]:
    """A workflow with other names and no resolution screen (the status says it all)."""
    return [
        {"id": "21", "name": "Back to triage", "to": "To Do"},
        {"id": "51", "name": "Ship it", "to": "Released"},
        {"id": "61", "name": "Decline", "to": "Won't Do"},
    ]


def jira_ts(moment: datetime, tz: str = "Europe/Berlin") -> str:
    """Jira's timestamp format: local offset without a colon, milliseconds."""
    local = moment.astimezone(ZoneInfo(tz))
    return (
        local.strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{local.microsecond // 1000:03d}"
        + (local.strftime("%z"))
    )


def parse_jira_ts(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _status(name: str) -> dict[str, Any]:
    key = STATUSES[name]
    return {"name": name, "statusCategory": {"key": key, "name": key.title(), "id": 1}}


@dataclass
class JiraFake:
    """State of the fake site. `search_lag` hides new issues from JQL until `settle()`."""

    srv: FakeServer
    email: str = "bot@acme.test"
    token: str = "jira-test-token-123"
    time_zone: str = "Europe/Berlin"
    project: str = "ABC"
    max_results: int = MAX_RESULTS
    workflow: list[dict[str, Any]] = field(default_factory=default_workflow)
    search_lag: bool = False
    now: datetime = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    issues: dict[str, dict[str, Any]] = field(default_factory=dict)
    properties: dict[str, dict[str, Any]] = field(default_factory=dict)
    comments: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    links: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    hidden: set[str] = field(default_factory=set)
    jqls: list[str] = field(default_factory=list)
    search_bodies: list[dict[str, Any]] = field(default_factory=list)
    next_id: int = 10000

    # -- test helpers ------------------------------------------------------------------------
    def add_issue(
        self,
        updated: datetime,
        *,
        summary: str = "Export fails",
        status: str = "To Do",
        priority: str | None = "High",
        labels: list[str] | None = None,
        components: list[str] | None = None,
        issue_type: str = "Bug",
        votes: int = 0,
        resolution: str | None = None,
        created: datetime | None = None,
        description: Any = None,
        key: str | None = None,
        story_points: float | None = None,
        original_estimate_s: int | None = None,
    ) -> dict[str, Any]:
        self.next_id += 1
        iid = str(self.next_id)
        key = key or f"{self.project}-{self.next_id - 10000}"
        closed = STATUSES[status] == "done"
        issue = {
            "expand": "renderedFields,names,schema,operations",
            "id": iid,
            "key": key,
            "self": f"{self.srv.url}/rest/api/3/issue/{iid}",
            "fields": {
                "summary": summary,
                "status": _status(status),
                "priority": {"name": priority, "id": "2"} if priority else None,
                "labels": list(labels or []),
                "components": [{"id": str(i), "name": c} for i, c in enumerate(components or [])],
                "created": jira_ts(created or updated - timedelta(days=2), self.time_zone),
                "updated": jira_ts(updated, self.time_zone),
                "resolutiondate": jira_ts(updated, self.time_zone) if closed else None,
                "resolution": {"name": resolution or "Done"} if closed else None,
                "issuetype": {"name": issue_type, "subtask": False},
                "votes": {"self": "", "votes": votes, "hasVoted": False},
                "description": description,
                STORY_POINTS: story_points,
                "timeoriginalestimate": original_estimate_s,
            },
        }
        self.issues[iid] = issue
        return issue

    def settle(self) -> None:
        """The search index caught up."""
        self.hidden.clear()

    def by_label(self, label: str) -> list[dict[str, Any]]:
        return [i for i in self.issues.values() if label in i["fields"]["labels"]]

    # -- auth --------------------------------------------------------------------------------
    def _authorized(self, req: Request) -> bool:
        basic = base64.b64encode(f"{self.email}:{self.token}".encode()).decode()
        return req.headers.get("Authorization") == f"Basic {basic}"

    def _guard(self, req: Request) -> Response | None:
        if not self._authorized(req):
            return Response.json(
                {"errorMessages": ["You are not authenticated. Authentication required."]}, 401
            )
        return None

    def _find(self, ref: str) -> dict[str, Any] | None:
        if ref in self.issues:
            return self.issues[ref]
        return next((i for i in self.issues.values() if i["key"] == ref), None)

    # -- JQL ---------------------------------------------------------------------------------
    def _local(self, text: str) -> datetime:
        naive = datetime.strptime(text, "%Y-%m-%d %H:%M")
        return naive.replace(tzinfo=ZoneInfo(self.time_zone)).astimezone(UTC)

    def _matcher(self, jql: str) -> tuple[Any, str]:
        where, _, order = jql.partition(" ORDER BY ")
        clauses = [c.strip() for c in re.split(r"\s+AND\s+", where) if c.strip()]
        tests = []
        for clause in clauses:
            if clause.startswith("(") and clause.endswith(")"):
                clause = clause[1:-1].strip()
            if m := re.fullmatch(r'labels = "([^"]+)"', clause):
                tests.append(lambda i, v=m[1]: v in i["fields"]["labels"])
            elif m := re.fullmatch(r'project = "([^"]+)"', clause):
                tests.append(lambda i, v=m[1]: i["key"].startswith(v + "-"))
            elif m := re.fullmatch(r"issuetype in \((.+)\)", clause):
                names = re.findall(r'"([^"]+)"', m[1])
                tests.append(lambda i, v=names: i["fields"]["issuetype"]["name"] in v)
            elif m := re.fullmatch(r'updated (>=|<=) "(\d{4}-\d\d-\d\d \d\d:\d\d)"', clause):
                bound = self._local(m[2])
                if m[1] == ">=":
                    tests.append(lambda i, b=bound: parse_jira_ts(i["fields"]["updated"]) >= b)
                else:
                    tests.append(lambda i, b=bound: parse_jira_ts(i["fields"]["updated"]) <= b)
            else:
                raise ValueError(f"the fake does not understand JQL clause {clause!r}")
        if not tests:
            raise ValueError("Unbounded JQL queries are not allowed here.")
        return (lambda i: all(t(i) for t in tests)), order.strip()

    def search(self, req: Request) -> Response:
        if denied := self._guard(req):
            return denied
        body = req.json()
        self.search_bodies.append(body)
        jql = body.get("jql", "")
        self.jqls.append(jql)
        try:
            match, order = self._matcher(jql)
        except ValueError as exc:
            return Response.json({"errorMessages": [str(exc)], "errors": {}}, 400)
        found = [i for i in self.issues.values() if i["id"] not in self.hidden and match(i)]
        if order.startswith("updated"):
            found.sort(key=lambda i: (parse_jira_ts(i["fields"]["updated"]), int(i["id"])))
        else:
            found.sort(key=lambda i: int(i["id"]))
        offset = 0
        if body.get("nextPageToken"):
            offset = json.loads(base64.b64decode(body["nextPageToken"]))["offset"]
        size = min(int(body.get("maxResults") or 50), self.max_results)
        page = found[offset : offset + size]
        wanted = body.get("fields") or []
        props = body.get("properties") or []
        doc: dict[str, Any] = {"issues": [self._shape(i, wanted, props) for i in page]}
        if offset + size < len(found):
            token = base64.b64encode(json.dumps({"offset": offset + size}).encode()).decode()
            doc["nextPageToken"] = token
            doc["isLast"] = False
        else:
            doc["isLast"] = True  # and, as on the real site, no nextPageToken key at all
        return Response.json(doc)

    def _shape(self, issue: dict[str, Any], fields: list[str], props: list[str]) -> dict[str, Any]:
        out = {k: v for k, v in issue.items() if k != "fields"}
        if fields:
            out["fields"] = {k: v for k, v in issue["fields"].items() if k in fields}
        stored = self.properties.get(issue["id"], {})
        if props:
            out["properties"] = {k: stored[k] for k in props if k in stored}
        return out

    # -- reads -------------------------------------------------------------------------------
    def myself(self, req: Request) -> Response:
        if denied := self._guard(req):
            return denied
        return Response.json(
            {
                "accountId": "5b10ac8d82e05b22cc7d4ef5",
                "emailAddress": self.email,
                "displayName": "feedback-loop bot",
                "active": True,
                "timeZone": self.time_zone,
            }
        )

    def get_issue(self, req: Request) -> Response:
        if denied := self._guard(req):
            return denied
        issue = self._find(req.groups["ref"])
        if issue is None:
            return Response.json(
                {"errorMessages": ["Issue does not exist or you do not have permission."]}, 404
            )
        fields = (req.arg("fields") or "").split(",") if req.arg("fields") else []
        props = (req.arg("properties") or "").split(",") if req.arg("properties") else []
        return Response.json(self._shape(issue, fields or list(issue["fields"]), props))

    # -- writes ------------------------------------------------------------------------------
    def create_issue(self, req: Request) -> Response:
        if denied := self._guard(req):
            return denied
        body = req.json()
        fields = body.get("fields") or {}
        errors = {}
        if fields.get("project", {}).get("key") != self.project:
            errors["project"] = "valid project is required"
        if not fields.get("summary"):
            errors["summary"] = "You must specify a summary of the issue."
        desc = fields.get("description")
        if desc is not None and not (
            isinstance(desc, dict) and desc.get("type") == "doc" and desc.get("version") == 1
        ):
            errors["description"] = "Operation value must be an Atlassian Document."
        if any(" " in x for x in fields.get("labels") or []):
            errors["labels"] = "The label 'x y' contains spaces which is invalid."
        if errors:
            return Response.json({"errorMessages": [], "errors": errors}, 400)
        issue = self.add_issue(
            self.now,
            summary=fields["summary"],
            status="To Do",
            priority="Medium",
            labels=fields.get("labels"),
            issue_type=fields.get("issuetype", {}).get("name", "Task"),
            description=desc,
            created=self.now,
        )
        for prop in body.get("properties") or []:
            self.properties.setdefault(issue["id"], {})[prop["key"]] = prop["value"]
        if self.search_lag:
            self.hidden.add(issue["id"])
        return Response.json(
            {"id": issue["id"], "key": issue["key"], "self": issue["self"]}, status=201
        )

    def edit_issue(self, req: Request) -> Response:
        if denied := self._guard(req):
            return denied
        issue = self._find(req.groups["ref"])
        if issue is None:
            return Response.json({"errorMessages": ["Issue does not exist"]}, 404)
        body = req.json()
        f = issue["fields"]
        for name, value in (body.get("fields") or {}).items():
            if name not in ("summary", "description", "labels"):
                return Response.json({"errorMessages": [], "errors": {name: "not on screen"}}, 400)
            f[name] = value
        for op in (body.get("update") or {}).get("labels", []):
            if "add" in op and op["add"] not in f["labels"]:
                f["labels"].append(op["add"])
            if "remove" in op and op["remove"] in f["labels"]:
                f["labels"].remove(op["remove"])
        for prop in body.get("properties") or []:
            self.properties.setdefault(issue["id"], {})[prop["key"]] = prop["value"]
        f["updated"] = jira_ts(self.now, self.time_zone)
        return Response(204)

    def add_comment(self, req: Request) -> Response:
        if denied := self._guard(req):
            return denied
        issue = self._find(req.groups["ref"])
        if issue is None:
            return Response.json({"errorMessages": ["Issue does not exist"]}, 404)
        body = req.json().get("body")
        if not (isinstance(body, dict) and body.get("type") == "doc"):
            return Response.json({"errorMessages": ["Comment body is not valid ADF"]}, 400)
        items = self.comments.setdefault(issue["id"], [])
        items.append({"id": str(len(items) + 1), "body": body})
        return Response.json(items[-1], status=201)

    def _offered(self, issue: dict[str, Any]) -> list[dict[str, Any]]:
        """The transitions available from the issue's current status."""
        status = issue["fields"]["status"]["name"]
        return [t for t in self.workflow if status in t.get("from", [status])]

    def _transitions(self, issue: dict[str, Any], expand: bool) -> list[dict[str, Any]]:
        out = []
        for t in self._offered(issue):
            item: dict[str, Any] = {"id": t["id"], "name": t["name"], "to": _status(t["to"])}
            if expand:
                item["fields"] = {}
                if t.get("resolution_screen"):
                    item["fields"]["resolution"] = {
                        "required": True,
                        "name": "Resolution",
                        "allowedValues": RESOLUTIONS,
                    }
            out.append(item)
        return out

    def get_transitions(self, req: Request) -> Response:
        if denied := self._guard(req):
            return denied
        issue = self._find(req.groups["ref"])
        if issue is None:
            return Response.json({"errorMessages": ["Issue does not exist"]}, 404)
        expand = "transitions.fields" in (req.arg("expand") or "")
        doc = {"expand": "transitions", "transitions": self._transitions(issue, expand)}
        return Response.json(doc)

    def do_transition(self, req: Request) -> Response:
        if denied := self._guard(req):
            return denied
        issue = self._find(req.groups["ref"])
        if issue is None:
            return Response.json({"errorMessages": ["Issue does not exist"]}, 404)
        body = req.json()
        tid = (body.get("transition") or {}).get("id")
        t = next((t for t in self._offered(issue) if t["id"] == tid), None)
        if t is None:
            return Response.json({"errorMessages": [f"Transition id '{tid}' is not valid"]}, 400)
        resolution = (body.get("fields") or {}).get("resolution")
        if resolution is not None and not t.get("resolution_screen"):
            return Response.json(
                {"errorMessages": [], "errors": {"resolution": "Field 'resolution' cannot be set"}},
                400,
            )
        if t.get("resolution_screen") and resolution is None:
            return Response.json({"errors": {"resolution": "Resolution is required."}}, 400)
        f = issue["fields"]
        f["status"] = _status(t["to"])
        if STATUSES[t["to"]] == "done":
            f["resolution"] = {"name": resolution["name"]} if resolution else {"name": t["to"]}
            f["resolutiondate"] = jira_ts(self.now, self.time_zone)
        else:
            f["resolution"], f["resolutiondate"] = None, None
        f["updated"] = jira_ts(self.now, self.time_zone)
        return Response(204)

    def remote_link(self, req: Request) -> Response:
        if denied := self._guard(req):
            return denied
        issue = self._find(req.groups["ref"])
        if issue is None:
            return Response.json({"errorMessages": ["Issue does not exist"]}, 404)
        links = self.links.setdefault(issue["id"], {})
        if req.method == "GET":
            return Response.json(list(links.values()))
        body = req.json()
        gid = body.get("globalId")
        if not (body.get("object") or {}).get("url"):
            return Response.json({"errors": {"object": "url is required"}}, 400)
        existing = links.get(gid) if gid else None
        link_id = existing["id"] if existing else sum(len(v) for v in self.links.values()) + 1
        links[gid or str(link_id)] = {"id": link_id, **body}
        self_url = f"{self.srv.url}/rest/api/3/issue/{issue['id']}/remotelink/{link_id}"
        return Response.json({"id": link_id, "self": self_url}, status=200 if existing else 201)


def jira_api(srv: FakeServer, **kwargs: Any) -> JiraFake:
    """Install the Jira routes on `srv` and return the fake's state."""
    fake = JiraFake(srv, **kwargs)
    srv.route("POST", SEARCH_PATH, fake.search)
    srv.route("GET", MYSELF_PATH, fake.myself)
    srv.route("POST", ISSUE_PATH, fake.create_issue)
    srv.route("GET", ONE_ISSUE, fake.get_issue)
    srv.route("PUT", ONE_ISSUE, fake.edit_issue)
    srv.route("POST", ONE_ISSUE + "/comment", fake.add_comment)
    srv.route("GET", ONE_ISSUE + "/transitions", fake.get_transitions)
    srv.route("POST", ONE_ISSUE + "/transitions", fake.do_transition)
    srv.route("*", ONE_ISSUE + "/remotelink", fake.remote_link)
    return fake
