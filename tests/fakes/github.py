"""A stateful fake GitHub REST API (issues, comments, labels) that validates every request
against GitHub's own OpenAPI description, trimmed in tests/fakes/github_openapi/."""

from __future__ import annotations

import copy
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jsonschema
import referencing
import referencing.jsonschema

from tests.fakes.server import FakeServer, Request, Response

SPEC_PATH = Path(__file__).parent / "github_openapi" / "api.github.com.trimmed.json"
SPEC_URI = "urn:github-openapi"
DOCS = "https://docs.github.com/rest"
SECONDARY_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. "
    "If you reach out to GitHub Support for help, please include the request ID."
)
_ANNOTATIONS = ("example", "examples")
_REPO_URL_NAMES = [
    "archive",
    "assignees",
    "blobs",
    "branches",
    "collaborators",
    "comments",
    "commits",
    "compare",
    "contents",
    "contributors",
    "deployments",
    "downloads",
    "events",
    "forks",
    "git_commits",
    "git_refs",
    "git_tags",
    "hooks",
    "issue_comment",
    "issue_events",
    "issues",
    "keys",
    "labels",
    "languages",
    "merges",
    "milestones",
    "notifications",
    "pulls",
    "releases",
    "stargazers",
    "statuses",
    "subscribers",
    "subscription",
    "tags",
    "teams",
    "trees",
]


# ---------------------------------------------------------------------------------------------
# OpenAPI validation


def openapi30_to_jsonschema(node: Any) -> Any:
    """OpenAPI 3.0 `nullable: true` is not JSON Schema: allow null in `type` and `enum`
    (API_NOTES: GitHub's nullable enums such as state_reason need null added), and wrap
    composite schemas in anyOf [..., null]."""
    if isinstance(node, list):
        return [openapi30_to_jsonschema(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {
        k: (v if k in _ANNOTATIONS else openapi30_to_jsonschema(v))
        for k, v in node.items()
        if k != "nullable"
    }
    if node.get("nullable") is not True:
        return out
    if "enum" in out and None not in out["enum"]:
        out["enum"] = [*out["enum"], None]
    if "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*types, "null"] if "null" not in types else types
    elif any(k in out for k in ("oneOf", "anyOf", "allOf", "$ref")):
        return {"anyOf": [out, {"type": "null"}]}
    return out


@dataclass(frozen=True)
class Operation:
    path: str  # the OpenAPI path template
    method: str
    op: dict[str, Any]


class OpenApiValidator:
    """Checks requests (path/query parameters, JSON body) and answers against the spec."""

    def __init__(self, spec: dict[str, Any]):
        self.raw = spec
        self.spec = openapi30_to_jsonschema(spec)
        resource = referencing.Resource.from_contents(
            self.spec, default_specification=referencing.jsonschema.DRAFT4
        )
        self.registry = referencing.Registry().with_resource(SPEC_URI, resource)
        self.version = spec["info"]["version"]

    @classmethod
    @cache
    def load(cls) -> OpenApiValidator:
        return cls(json.loads(SPEC_PATH.read_text(encoding="utf-8")))

    def operation(self, path: str, method: str) -> Operation:
        return Operation(path, method, self.spec["paths"][path][method])

    def _pointer(self, *parts: str) -> str:
        return "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)

    def _errors(self, pointer: str, instance: Any) -> list[str]:
        validator = jsonschema.Draft4Validator({"$ref": SPEC_URI + pointer}, registry=self.registry)
        return [
            f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
        ]

    def _resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            target: Any = self.spec
            for part in node["$ref"][2:].split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            node = target
        return node

    def check_request(
        self,
        op: Operation,
        path_params: dict[str, str],
        query: dict[str, list[str]],
        body: bytes,
        content_type: str,
    ) -> list[str]:
        errors: list[str] = []
        declared = {}
        for i, param in enumerate(op.op.get("parameters", [])):
            resolved = self._resolve(param)
            declared[(resolved["in"], resolved["name"])] = (i, resolved)
        for name in query:
            if ("query", name) not in declared:
                errors.append(f"query parameter {name!r} is not defined for {op.op['operationId']}")
        for (where, name), (i, param) in declared.items():
            if where == "path":
                values = [path_params[name]] if name in path_params else []
            elif where == "query":
                values = query.get(name, [])
            else:
                continue
            if not values:
                if param.get("required"):
                    errors.append(f"{where} parameter {name!r} is required")
                continue
            if len(values) > 1:
                errors.append(f"{where} parameter {name!r} given {len(values)} times")
                continue
            schema = param.get("schema", {})
            value, problem = _coerce(values[0], schema)
            if problem:
                errors.append(f"{where} parameter {name!r}: {problem}")
                continue
            pointer = self._pointer("paths", op.path, op.method, "parameters", str(i))
            if "$ref" in op.op["parameters"][i]:
                pointer = "#" + op.op["parameters"][i]["$ref"][1:]
            errors += [
                f"{where} parameter {name!r}: {e}" for e in self._errors(pointer + "/schema", value)
            ]
        request_body = op.op.get("requestBody")
        if request_body is None:
            if body:
                errors.append(f"{op.op['operationId']} takes no request body")
            return errors
        if not body:
            if request_body.get("required"):
                errors.append("request body is required")
            return errors
        if not content_type.lower().startswith("application/json"):
            errors.append(f"Content-Type must be application/json, not {content_type!r}")
            return errors
        try:
            payload = json.loads(body)
        except ValueError as exc:
            return [*errors, f"request body is not JSON: {exc}"]
        pointer = self._pointer(
            "paths", op.path, op.method, "requestBody", "content", "application/json", "schema"
        )
        return errors + [f"body {e}" for e in self._errors(pointer, payload)]

    def check_response(self, op: Operation, status: int, payload: Any) -> list[str]:
        response = op.op["responses"].get(str(status))
        if response is None:
            return [f"{op.op['operationId']} does not document status {status}"]
        pointer = self._pointer("paths", op.path, op.method, "responses", str(status))
        if "$ref" in response:
            pointer = "#" + response["$ref"][1:]
            response = self._resolve(response)
        if "application/json" not in response.get("content", {}):
            return []
        return self._errors(pointer + "/content/application~1json/schema", payload)


def _coerce(text: str, schema: dict[str, Any]) -> tuple[Any, str | None]:
    """A query/path string as the type the parameter schema declares."""
    kind = schema.get("type")
    if kind == "integer":
        if not re.fullmatch(r"-?\d+", text):
            return None, f"{text!r} is not an integer"
        return int(text), None
    if kind == "boolean":
        if text not in ("true", "false"):
            return None, f"{text!r} is not a boolean"
        return text == "true", None
    if schema.get("format") == "date-time":
        # GitHub documents YYYY-MM-DDTHH:MM:SSZ; anything datetime cannot read is wrong.
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None, f"{text!r} is not an ISO 8601 timestamp"
        if parsed.tzinfo is None:
            return None, f"{text!r} has no time zone"
    return text, None


# ---------------------------------------------------------------------------------------------
# The fake

# (kind, method) -> (OpenAPI path, handler); kind: "" repo, i issues, n one issue, c comments.
_OPERATIONS: dict[tuple[str, str], tuple[str, str]] = {
    ("", "GET"): ("/repos/{owner}/{repo}", "_get_repo"),
    ("i", "GET"): ("/repos/{owner}/{repo}/issues", "_list"),
    ("i", "POST"): ("/repos/{owner}/{repo}/issues", "_create"),
    ("n", "GET"): ("/repos/{owner}/{repo}/issues/{issue_number}", "_get"),
    ("n", "PATCH"): ("/repos/{owner}/{repo}/issues/{issue_number}", "_update"),
    ("c", "POST"): ("/repos/{owner}/{repo}/issues/{issue_number}/comments", "_comment"),
}


def ts(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Fault:
    """A rate-limit answer for the next matching request(s); the request is not applied."""

    status: int  # 403 or 429
    retry_after: int | None = None
    primary: bool = False  # primary limit: x-ratelimit-remaining 0 + reset, else secondary
    method: str | None = None
    times: int = 1
    # Apply the request, then answer `status` anyway (a gateway error after the write landed).
    after_apply: bool = False


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    status: int = 0
    # When the fake received it (time.monotonic, the same clock as the client's pacer).
    at: float = field(default_factory=time.monotonic)


@dataclass
class FakeGitHub:
    """`with FakeGitHub() as gh:` — `gh.url` is the API root (like https://api.github.com)."""

    owner: str = "acme"
    repo: str = "analytics"
    token: str = "ghp_fakeToken123456"
    repo_id: int = 4242
    # What GET /repos reports and what GitHub then does with labels: None = no permissions
    # object (GitHub App tokens); can_label False = labels silently dropped.
    permissions: dict[str, bool] | None = field(
        default_factory=lambda: {
            "admin": False,
            "maintain": False,
            "push": True,
            "triage": True,
            "pull": True,
        }
    )
    can_label: bool = True
    has_issues: bool = True
    login: str = "feedback-bot"
    prefix: str = ""  # API root path, e.g. "/api/v3" like GitHub Enterprise Server
    renamed_from: str | None = None  # "old-owner/old-name": answered with redirects by id
    now: datetime = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)

    def __post_init__(self) -> None:
        self.validator = OpenApiValidator.load()
        self.server = FakeServer()
        self.issues: dict[int, dict[str, Any]] = {}
        self.comments: dict[int, list[dict[str, Any]]] = {}
        self.labels: dict[str, dict[str, Any]] = {}
        self.moved: dict[int, tuple[int, int]] = {}  # number -> (other repo id, new number)
        self.elsewhere: dict[tuple[int, int], dict[str, Any]] = {}
        self.deleted: set[int] = set()
        self.calls: list[Call] = []
        self.invalid: list[str] = []
        self.response_errors: list[str] = []
        self.unexpected: list[str] = []
        self.faults: list[Fault] = []
        self.corrupt: list[str] = []  # "truncated" | "object": the next list answers
        self.hooks: list[Callable[[FakeGitHub, Call], None]] = []
        self._next_number = 1
        self._lock = threading.RLock()

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> FakeGitHub:
        self.server.start()
        self.server.route("*", r"/.*", self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()

    @property
    def url(self) -> str:
        return self.server.url + self.prefix

    def assert_clean(self) -> None:
        """Every request was valid per the OpenAPI description, planned, and answered as
        GitHub documents."""
        assert not self.invalid, self.invalid
        assert not self.unexpected, self.unexpected
        assert not self.response_errors, self.response_errors
        self.server.assert_clean()

    # -- state helpers for tests -------------------------------------------------------------
    def tick(self, seconds: int = 1) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now

    def add_issue(
        self,
        title: str = "An issue",
        body: str | None = "",
        *,
        labels: tuple[str, ...] | list[str] = (),
        state: str = "open",
        state_reason: str | None = None,
        locked: bool = False,
        pr: bool = False,
        updated_at: datetime | None = None,
        user: str | None = None,
    ) -> dict[str, Any]:
        with self._lock:
            number = self._next_number
            self._next_number += 1
            created = self.tick()
            issue = self._issue_object(number, title, body, user or "octocat", created)
            issue["labels"] = [self._label(name) for name in labels]
            issue["locked"] = locked
            if locked:
                issue["active_lock_reason"] = "resolved"
            if state == "closed":
                issue.update(state="closed", state_reason=state_reason or "completed")
                issue["closed_at"] = ts(created)
            if pr:
                base = f"{self._html_root()}/pull/{number}"
                issue["pull_request"] = {
                    "url": f"{self._api_root()}/pulls/{number}",
                    "html_url": base,
                    "diff_url": base + ".diff",
                    "patch_url": base + ".patch",
                    "merged_at": None,
                }
            if updated_at is not None:
                issue["updated_at"] = ts(updated_at)
            self.issues[number] = issue
            self.comments[number] = []
            return issue

    def close_as_person(self, number: int, reason: str = "completed") -> dict[str, Any]:
        """A person closes the issue in the browser (closed_at and closed_by are theirs)."""
        return self.update_issue(
            number,
            state="closed",
            state_reason=reason,
            closed_at=ts(self.tick()),
            closed_by=self._user("octocat"),
        )

    def reopen_as_person(self, number: int) -> dict[str, Any]:
        return self.update_issue(
            number, state="open", state_reason="reopened", closed_at=None, closed_by=None
        )

    def update_issue(self, number: int, **fields: Any) -> dict[str, Any]:
        """A change made by someone else (in the browser): bumps updated_at."""
        with self._lock:
            issue = self.issues[number]
            if "labels" in fields:
                fields["labels"] = [self._label(_name(x)) for x in fields["labels"]]
            issue.update(fields)
            issue["updated_at"] = ts(self.tick())
            return issue

    def transfer(self, number: int, to_repo_id: int = 9999, new_number: int = 1) -> None:
        with self._lock:
            issue = self.issues.pop(number)
            moved = dict(issue, number=new_number)
            moved["repository_url"] = f"{self.url}/repos/other/elsewhere"
            moved["url"] = f"{self.url}/repos/other/elsewhere/issues/{new_number}"
            self.elsewhere[(to_repo_id, new_number)] = moved
            self.moved[number] = (to_repo_id, new_number)

    def delete(self, number: int) -> None:
        with self._lock:
            self.issues.pop(number)
            self.deleted.add(number)

    def fail_next(
        self,
        status: int,
        *,
        retry_after: int | None = None,
        primary: bool = False,
        method: str | None = None,
        times: int = 1,
        after_apply: bool = False,
    ) -> None:
        self.faults.append(Fault(status, retry_after, primary, method, times, after_apply))

    def on_request(self, hook: Callable[[FakeGitHub, Call], None]) -> None:
        """hook(fake, call) runs before each request is answered (e.g. edit an issue mid-run)."""
        self.hooks.append(hook)

    def calls_to(self, method: str, pattern: str) -> list[Call]:
        return [c for c in self.calls if c.method == method and re.fullmatch(pattern, c.path)]

    # -- objects -----------------------------------------------------------------------------
    def _api_root(self) -> str:
        return f"{self.url}/repos/{self.owner}/{self.repo}"

    def _html_root(self) -> str:
        return f"https://github.example/{self.owner}/{self.repo}"

    def _user(self, login: str) -> dict[str, Any]:
        api = f"{self.url}/users/{login}"
        return {
            "login": login,
            "id": 500 + len(login),
            "node_id": f"U_fake{login}",
            "avatar_url": f"https://avatars.example/{login}",
            "gravatar_id": "",
            "url": api,
            "html_url": f"https://github.example/{login}",
            "followers_url": f"{api}/followers",
            "following_url": f"{api}/following{{/other_user}}",
            "gists_url": f"{api}/gists{{/gist_id}}",
            "starred_url": f"{api}/starred{{/owner}}{{/repo}}",
            "subscriptions_url": f"{api}/subscriptions",
            "organizations_url": f"{api}/orgs",
            "repos_url": f"{api}/repos",
            "events_url": f"{api}/events{{/privacy}}",
            "received_events_url": f"{api}/received_events",
            "type": "User" if login != self.login else "Bot",
            "site_admin": False,
        }

    def _label(self, name: str) -> dict[str, Any]:
        key = name.lower()
        if key not in self.labels:
            self.labels[key] = {
                "id": 7000 + len(self.labels),
                "node_id": f"LA_fake{len(self.labels)}",
                "url": f"{self._api_root()}/labels/{name}",
                "name": name,
                "description": None,
                "color": "ededed",
                "default": False,
            }
        return self.labels[key]

    def _issue_object(
        self, number: int, title: str, body: str | None, login: str, created: datetime
    ) -> dict[str, Any]:
        api = f"{self._api_root()}/issues/{number}"
        return {
            "id": 100_000 + number,
            "node_id": f"I_kwDOFAKE{number:06d}",
            "url": api,
            "repository_url": self._api_root(),
            "labels_url": f"{api}/labels{{/name}}",
            "comments_url": f"{api}/comments",
            "events_url": f"{api}/events",
            "html_url": f"{self._html_root()}/issues/{number}",
            "number": number,
            "state": "open",
            "state_reason": None,
            "title": title,
            "body": body,
            "user": self._user(login),
            "labels": [],
            "assignee": None,
            "assignees": [],
            "milestone": None,
            "locked": False,
            "active_lock_reason": None,
            "comments": 0,
            "closed_at": None,
            "created_at": ts(created),
            "updated_at": ts(created),
            "closed_by": None,
            "author_association": "OWNER" if login != self.login else "NONE",
            "reactions": {
                "url": f"{api}/reactions",
                "total_count": 0,
                "+1": 0,
                "-1": 0,
                "laugh": 0,
                "confused": 0,
                "heart": 0,
                "hooray": 0,
                "eyes": 0,
                "rocket": 0,
            },
            "timeline_url": f"{api}/timeline",
        }

    def _repository(self) -> dict[str, Any]:
        api = self._api_root()
        urls = {f"{name}_url": f"{api}/{name}" for name in _REPO_URL_NAMES}
        repo: dict[str, Any] = {
            **urls,
            "id": self.repo_id,
            "node_id": "R_kgDOFAKE",
            "name": self.repo,
            "full_name": f"{self.owner}/{self.repo}",
            "owner": self._user(self.owner),
            "private": True,
            "html_url": self._html_root(),
            "description": "fake repository",
            "fork": False,
            "url": api,
            "clone_url": f"{self._html_root()}.git",
            "git_url": f"git://github.example/{self.owner}/{self.repo}.git",
            "ssh_url": f"git@github.example:{self.owner}/{self.repo}.git",
            "svn_url": self._html_root(),
            "mirror_url": None,
            "homepage": None,
            "language": "Python",
            "default_branch": "main",
            "forks": 0,
            "forks_count": 0,
            "stargazers_count": 0,
            "watchers": 0,
            "watchers_count": 0,
            "size": 1,
            "open_issues": 0,
            "open_issues_count": 0,
            "has_issues": self.has_issues,
            "has_projects": False,
            "has_wiki": False,
            "has_pages": False,
            "has_discussions": False,
            "archived": False,
            "disabled": False,
            "license": None,
            "pushed_at": ts(self.now),
            "created_at": "2024-01-01T00:00:00Z",
            "updated_at": ts(self.now),
            "network_count": 0,
            "subscribers_count": 1,
        }
        if self.permissions is not None:
            repo["permissions"] = dict(self.permissions)
        return repo

    # -- request handling --------------------------------------------------------------------
    def _handle(self, req: Request) -> Response:
        with self._lock:
            return self._handle_locked(req)

    def _handle_locked(self, req: Request) -> Response:
        try:
            body = json.loads(req.body) if req.body else None
        except ValueError:
            body = req.body.decode("utf-8", "replace")
        call = Call(req.method, req.path, {k: v[-1] for k, v in req.query.items()}, body)
        self.calls.append(call)
        for hook in list(self.hooks):
            hook(self, call)
        resp = self._answer(req, call)
        call.status = resp.status
        return resp

    def _answer(self, req: Request, call: Call) -> Response:
        auth = req.headers.get("Authorization", "")
        if auth not in (f"Bearer {self.token}", f"token {self.token}"):
            return _error(401, "Bad credentials")
        late: Fault | None = None
        for fault in self.faults:
            if fault.times > 0 and fault.method in (None, req.method):
                fault.times -= 1
                if not fault.after_apply:
                    return self._rate_limited(fault)
                late = fault
                break
        if self.renamed_from:
            m = re.fullmatch(
                re.escape(f"{self.prefix}/repos/{self.renamed_from}") + r"(/.*)?", req.path, re.I
            )
            if m:
                location = f"{self.url}/repositories/{self.repo_id}{m[1] or ''}"
                if "?" in req.target:
                    location += "?" + req.target.split("?", 1)[1]
                status = 301 if req.method == "GET" else 307
                return Response.json(
                    {"message": "Moved Permanently", "url": location, "documentation_url": DOCS},
                    status=status,
                    Location=location,
                )
        route = self._route(req)
        if route is None:
            self.unexpected.append(f"{req.method} {req.target}")
            return _error(404, "Not Found")
        template, params, handler = route
        if template is None:  # a path GitHub has, but for another repository
            return _error(404, "Not Found")
        op = self.validator.operation(template, req.method.lower())
        problems = self.validator.check_request(
            op, params, req.query, req.body, req.headers.get("Content-Type", "")
        )
        if problems:
            self.invalid += [f"{req.method} {req.target}: {p}" for p in problems]
            return _error(422, "Invalid request.\n\n" + "\n".join(problems))
        n_corrupt = len(self.corrupt)
        resp = handler(req, params, call.body)
        if late is not None:
            return _error(late.status, "Server Error")
        deliberate = len(self.corrupt) < n_corrupt  # a broken answer the test asked for
        if 200 <= resp.status < 300 and isinstance(resp.body, dict | list) and not deliberate:
            errors = self.validator.check_response(op, resp.status, resp.body)
            self.response_errors += [f"{req.method} {req.target} -> {e}" for e in errors]
        return resp

    def _rate_limited(self, fault: Fault) -> Response:
        # The reset header is the primary window's; for a secondary limit it may be seconds
        # away, and GitHub still says to wait at least a minute when Retry-After is missing.
        reset = int(self.now.timestamp()) + (60 if fault.primary else 15)
        headers = {
            "x-ratelimit-limit": "5000",
            "x-ratelimit-remaining": "0" if fault.primary else "4999",
            "x-ratelimit-reset": str(reset),
            "x-ratelimit-resource": "core",
        }
        if fault.retry_after is not None:
            headers["Retry-After"] = str(fault.retry_after)
        message = "API rate limit exceeded for user ID 1." if fault.primary else SECONDARY_MESSAGE
        return Response.json(
            {"message": message, "documentation_url": DOCS}, status=fault.status, **headers
        )

    def _route(self, req: Request) -> tuple[str | None, dict[str, str], Any] | None:
        if not req.path.startswith(self.prefix + "/"):
            return None
        m = re.fullmatch(
            r"/(?:repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)|repositories/(?P<id>\d+))"
            r"(?P<rest>/issues(?:/(?P<n>[^/]+)(?P<comments>/comments)?)?)?",
            req.path[len(self.prefix) :],
        )
        if not m:
            return None
        kind = "c" if m["comments"] else "n" if m["n"] else "i" if m["rest"] else ""
        entry = _OPERATIONS.get((kind, req.method))
        if entry is None:
            return None
        template, handler_name = entry
        params = {"owner": m["owner"] or self.owner, "repo": m["repo"] or self.repo}
        if m["n"] is not None:
            params["issue_number"] = m["n"]
        if m["id"] is not None:
            # GitHub's Link and redirect URLs name the repository by id: same operations.
            repo_id = int(m["id"])
            if repo_id != self.repo_id:
                there = kind == "n" and req.method == "GET" and m["n"].isdigit()
                if there and (repo_id, int(m["n"])) in self.elsewhere:
                    return template, params, self._get_elsewhere(repo_id)
                return None, params, None
            return template, params, getattr(self, handler_name)
        ours = f"{m['owner']}/{m['repo']}".lower() == f"{self.owner}/{self.repo}".lower()
        return (template if ours else None), params, getattr(self, handler_name)

    def _get_repo(self, req: Request, params: dict[str, str], body: Any) -> Response:
        return Response.json(self._repository())

    def _list(self, req: Request, params: dict[str, str], body: Any) -> Response:
        q = {k: v[-1] for k, v in req.query.items()}
        state = q.get("state", "open")
        wanted = [x.strip().lower() for x in q.get("labels", "").split(",") if x.strip()]
        since = datetime.fromisoformat(q["since"].replace("Z", "+00:00")) if "since" in q else None
        sort = {"created": "created_at", "updated": "updated_at", "comments": "comments"}[
            q.get("sort", "created")
        ]
        per_page = max(1, min(100, int(q.get("per_page", 30))))
        page = max(1, int(q.get("page", 1)))
        items = []
        for issue in self.issues.values():
            names = {label["name"].lower() for label in issue["labels"]}
            if state != "all" and issue["state"] != state:
                continue
            if any(w not in names for w in wanted):
                continue
            if (
                since is not None
                and datetime.fromisoformat(issue["updated_at"].replace("Z", "+00:00")) < since
            ):
                continue
            items.append(issue)
        items.sort(key=lambda i: (i[sort], i["number"]), reverse=q.get("direction") != "asc")
        n_pages = max(1, -(-len(items) // per_page))
        chunk = copy.deepcopy(items[(page - 1) * per_page : page * per_page])
        links = self._links(q, page, n_pages)
        headers = {"Link": links} if links else {}
        if self.corrupt:
            mode = self.corrupt.pop(0)
            raw = json.dumps(chunk).encode()
            if mode == "truncated":  # whole HTTP message, half a JSON document
                return Response(200, raw[: len(raw) // 2], {"Content-Type": "application/json"})
            return Response.json({"message": "not a list", "documentation_url": DOCS}, **headers)
        return Response.json(chunk, **headers)

    def _links(self, q: dict[str, str], page: int, n_pages: int) -> str:
        def link(p: int, rel: str) -> str:
            query = urlencode({**{k: v for k, v in q.items() if k != "page"}, "page": p})
            return f'<{self.url}/repositories/{self.repo_id}/issues?{query}>; rel="{rel}"'

        out = []
        if page > 1:
            out.append(link(page - 1, "prev"))
        if page < n_pages:
            out += [link(page + 1, "next"), link(n_pages, "last")]
        if page > 1:
            out.append(link(1, "first"))
        return ", ".join(out)

    def _create(self, req: Request, params: dict[str, str], body: Any) -> Response:
        issue = self.add_issue(str(body["title"]), body.get("body"), labels=(), user=self.login)
        if self.can_label:
            issue["labels"] = [self._label(_name(x)) for x in body.get("labels", [])]
        issue["updated_at"] = ts(self.now)
        return Response.json(copy.deepcopy(issue), status=201, Location=issue["url"])

    def _issue_or_error(self, params: dict[str, str]) -> dict[str, Any] | Response:
        number = int(params["issue_number"])
        if number in self.moved:
            repo_id, new_number = self.moved[number]
            location = f"{self.url}/repositories/{repo_id}/issues/{new_number}"
            return Response.json(
                {"message": "Moved Permanently", "url": location, "documentation_url": DOCS},
                status=301,
                Location=location,
            )
        if number in self.deleted:
            return _error(410, "This issue was deleted")
        if number not in self.issues:
            return _error(404, "Not Found")
        return self.issues[number]

    def _get(self, req: Request, params: dict[str, str], body: Any) -> Response:
        issue = self._issue_or_error(params)
        if isinstance(issue, Response):
            return issue
        # GitHub answers conditional requests: an unchanged issue is a 304 with no body (and,
        # per its docs, does not count against the primary rate limit).
        etag = 'W/"' + hashlib.sha1(json.dumps(issue, sort_keys=True).encode()).hexdigest() + '"'
        if req.headers.get("If-None-Match") == etag:
            return Response(304, b"", {"ETag": etag})
        return Response.json(copy.deepcopy(issue), ETag=etag)

    def _get_elsewhere(self, repo_id: int) -> Callable[[Request, dict[str, str], Any], Response]:
        def handler(req: Request, params: dict[str, str], body: Any) -> Response:
            moved = self.elsewhere[(repo_id, int(params["issue_number"]))]
            return Response.json(copy.deepcopy(moved))

        return handler

    def _update(self, req: Request, params: dict[str, str], body: Any) -> Response:
        issue = self._issue_or_error(params)
        if isinstance(issue, Response):
            return issue
        # What GitHub refuses although the schema allows it: a reason that contradicts the state.
        reason, new_state = body.get("state_reason"), body.get("state")
        if new_state == "open" and reason not in (None, "reopened"):
            return _error(422, f"state_reason {reason!r} is not valid for an open issue")
        if new_state == "closed" and reason == "reopened":
            return _error(422, "state_reason 'reopened' is not valid for a closed issue")
        now = ts(self.tick())
        if "title" in body:
            issue["title"] = str(body["title"])
        if "body" in body:
            issue["body"] = body["body"]
        if "labels" in body and self.can_label:
            issue["labels"] = [self._label(_name(x)) for x in body["labels"]]
        new_state = body.get("state")
        if new_state and new_state != issue["state"]:
            # state_reason is "ignored unless state is changed" (OpenAPI description).
            if new_state == "closed":
                issue["state_reason"] = body.get("state_reason") or "completed"
                issue["closed_at"] = now
                issue["closed_by"] = self._user(self.login)
            else:
                issue["state_reason"] = "reopened"
                issue["closed_at"] = None
                issue["closed_by"] = None
            issue["state"] = new_state
        issue["updated_at"] = now
        return Response.json(copy.deepcopy(issue))

    def _comment(self, req: Request, params: dict[str, str], body: Any) -> Response:
        issue = self._issue_or_error(params)
        if isinstance(issue, Response):
            return issue
        if issue["locked"] and not (self.permissions or {}).get("push"):
            return _error(403, "Unable to create comment because issue is locked.")
        number = issue["number"]
        now = ts(self.tick())
        cid = 900_000 + sum(len(c) for c in self.comments.values())
        comment = {
            "id": cid,
            "node_id": f"IC_fake{cid}",
            "url": f"{self._api_root()}/issues/comments/{cid}",
            "html_url": f"{issue['html_url']}#issuecomment-{cid}",
            "issue_url": issue["url"],
            "body": body["body"],
            "user": self._user(self.login),
            "created_at": now,
            "updated_at": now,
            "author_association": "NONE",
        }
        self.comments[number].append(comment)
        issue["comments"] += 1
        issue["updated_at"] = now
        return Response.json(copy.deepcopy(comment), status=201)


def _name(label: Any) -> str:
    return label["name"] if isinstance(label, dict) else str(label)


def _error(status: int, message: str) -> Response:
    return Response.json(
        {"message": message, "documentation_url": DOCS, "status": str(status)}, status=status
    )
