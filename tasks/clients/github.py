"""GitHub issues reader: incremental pages of `GET /repos/{o}/{r}/issues` with a safe `since`."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tasks.clients.base import shared_budget
from tasks.clients.http import (
    ClientRequestError,
    HttpClient,
    InvalidResponseError,
    NotFoundError,
    RequestBudget,
    expect_json,
    iter_link_pages,
    parse_link_header,
)
from tasks.contracts import GITHUB_ISSUES, LandedPage, SourceSpec
from tasks.secrets import resolve_secret
from tasks.sources import declare

log = logging.getLogger(__name__)

SOURCE = "github"
# GitHub's redirect target for a moved issue (or a renamed repository): the ids, not names.
_REDIRECT = re.compile(r"/repositories/(\d+)/issues/(\d+)")
API_VERSION = "2022-11-28"
# Primary limit of an authenticated token; the HTTP layer also honours the rate-limit headers.
READ_LIMIT_PER_HOUR = 5000


class GitHubSettings(BaseModel):
    """One repository on github.com or GitHub Enterprise Server, read and written by one token."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(
        "https://api.github.com",
        description="API root; GitHub Enterprise Server: https://<host>/api/v3",
    )
    owner: str = Field(min_length=1, description="Account or organisation owning the repository.")
    repo: str = Field(min_length=1, description="Repository name without .git.")
    token_env: str = Field("GITHUB_TOKEN", description="Environment variable holding the token.")
    token_block: str | None = Field(
        None, description="Prefect Secret block holding the token, used when the env var is unset."
    )
    label: str = Field(
        "feedback-loop",
        min_length=1,
        description="Label on every issue feedback-loop writes; find() lists issues by it.",
    )
    read_since: datetime | None = Field(
        None, description="First run reads issues updated since then; None reads the whole history."
    )
    overlap_minutes: int = Field(
        10,
        ge=0,
        le=7 * 24 * 60,
        description="Re-read this much before the stored watermark (ties, clock skew).",
    )
    per_page: int = Field(100, ge=1, le=100)
    api_version: str = API_VERSION

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        return v.rstrip("/")

    @field_validator("owner", "repo")
    @classmethod
    def _one_segment(cls, v: str) -> str:
        if "/" in v or v != v.strip():
            raise ValueError("must be a single name without '/' or spaces")
        return v

    @property
    def repo_path(self) -> str:
        return f"/repos/{self.owner}/{self.repo}"

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.repo}"

    def auth_hint(self, access: str) -> str:
        where = f"set {self.token_env}"
        if self.token_block:
            where += f" (or the Prefect Secret block {self.token_block!r})"
        return f"{where} to a token with {access} access to {self.full_name}"


def make_client(
    settings: GitHubSettings,
    *,
    access: str = "Issues read",
    token: str | None = None,
    budget: RequestBudget | None = None,
    session: requests.Session | None = None,
    sleep: Callable[[float], None] = time.sleep,
    **http_options: Any,
) -> HttpClient:
    """The HTTP client for one GitHub API root; the token comes from env or a Secret block.
    `http_options` go to HttpClient as they are (retry policy, wall_clock, rng)."""
    secret = token or resolve_secret(settings.token_env, settings.token_block)
    return HttpClient(
        SOURCE,
        settings.base_url,
        headers={
            "Authorization": f"Bearer {secret}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": settings.api_version,
            "User-Agent": "feedback-loop",
        },
        # one budget per API host: every client of that host shares the token's hour
        budget=budget
        if budget is not None
        else shared_budget(("github", settings.base_url), READ_LIMIT_PER_HOUR, 3600.0),
        session=session,
        auth_hint=settings.auth_hint(access),
        sleep=sleep,
        **http_options,
    )


def github_ts(value: datetime) -> str:
    """GitHub's ISO 8601 form: UTC, whole seconds, 'Z'."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_ts(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def parse_page(resp: requests.Response, what: str) -> list[Any]:
    """The JSON array GitHub documents for list endpoints; anything else fails the batch."""
    try:
        items = json.loads(resp.content)
    except ValueError as exc:
        raise InvalidResponseError(
            SOURCE,
            f"{what}: page is not valid JSON ({len(resp.content)} bytes; truncated?): {exc}",
            status=resp.status_code,
            url=resp.url,
        ) from None
    if not isinstance(items, list):
        raise InvalidResponseError(
            SOURCE,
            f"{what}: expected a JSON array, got {type(items).__name__}",
            status=resp.status_code,
            url=resp.url,
        )
    return items


def check_repository(client: HttpClient, settings: GitHubSettings) -> dict[str, Any]:
    """`GET /repos/{o}/{r}`: the repository, with `permissions` when GitHub tells them."""
    resp = client.request(
        "GET", settings.repo_path, ok_statuses=(200, 404), expect=expect_json(dict)
    )
    if resp.status_code == 404:
        # GitHub answers 404, not 403, for private repositories the token cannot see.
        raise NotFoundError(
            SOURCE,
            f"repository {settings.full_name} not found or token lacks access",
            status=404,
            hint=settings.auth_hint("Issues")
            + f"; check owner/repo and base_url {settings.base_url}",
            url=resp.url,
        )
    try:
        repo = json.loads(resp.content)
    except ValueError:
        raise InvalidResponseError(
            SOURCE, f"GET {settings.repo_path}: invalid JSON", status=200, url=resp.url
        ) from None
    if not isinstance(repo, dict):
        raise InvalidResponseError(SOURCE, f"GET {settings.repo_path}: not an object", url=resp.url)
    if repo.get("has_issues") is False:
        raise ClientRequestError(
            SOURCE,
            f"issues are disabled in {settings.full_name}",
            hint="enable Issues in the repository settings or point owner/repo elsewhere",
        )
    return repo


class _Watermark:
    """Where the next run may start so that nothing is missed.

    The list is paged by page number over a live, updated-ascending set: an issue we already read
    that changes mid-run jumps to the end, every later issue shifts one slot left, and the issue
    at the next page boundary is never served. Such a move shows up as the same id twice in one
    run; the skipped issue sorts after everything read up to the mover's first page, so the next
    run starts at that page's max `updated_at` (minus overlap) instead of the run's max.
    """

    def __init__(self) -> None:
        self.max_seen: datetime | None = None
        self.floor: datetime | None = None
        self.moved: list[Any] = []
        self._first_page: dict[Any, int] = {}
        self._page_max: list[datetime | None] = []

    def add(self, items: Iterable[Any]) -> None:
        page = len(self._page_max)
        for item in items:
            if not isinstance(item, dict):
                continue  # the loader quarantines it; it cannot move the watermark
            key = item.get("node_id") or item.get("id")
            if key is not None:
                first = self._first_page.setdefault(key, page)
                if first != page:
                    bound = self._page_max[first]
                    self.moved.append(key)
                    if bound is not None and (self.floor is None or bound < self.floor):
                        self.floor = bound
            ts = parse_ts(item.get("updated_at"))
            if ts is not None and (self.max_seen is None or ts > self.max_seen):
                self.max_seen = ts
        self._page_max.append(self.max_seen)

    def next_since(
        self, since: datetime | None, window_end: datetime, overlap: timedelta
    ) -> datetime | None:
        candidates = [t for t in (self.max_seen, self.floor, window_end) if t is not None]
        if self.max_seen is None:
            return since  # nothing read: stay where this run started
        nxt = min(candidates) - overlap
        return max(nxt, since) if since is not None else nxt


@dataclass(frozen=True)
class IssueCheck:
    """What `GET /repos/{o}/{r}/issues/{n}` says about an issue we hold."""

    number: int
    status: str  # present | moved (301: transferred) | deleted (410) | not_found (404)
    node_id: str | None = None
    moved_to: str | None = None  # where a transferred issue lives now (API URL)

    @property
    def is_gone(self) -> bool:
        """No longer an issue of this repository: mark its raw row is_deleted."""
        return self.status != "present"


# --------------------------------------------------------------------------------------------
# Record shaping (SQL run by the loader; `j` = one issue): customers write issue titles and
# bodies, so they are redacted at landing with the people on the issue as known terms, and the
# people objects keep no name or e-mail (ids and logins stay).
# --------------------------------------------------------------------------------------------
_PEOPLE = ("user", "assignee", "closed_by")
_KNOWN = (
    "list_filter(flatten(["
    + ", ".join(f"[j ->> '$.{p}.login', j ->> '$.{p}.name', j ->> '$.{p}.email']" for p in _PEOPLE)
    + ", coalesce(json_extract_string(j, '$.assignees[*].login'), [])"
    + ", coalesce(json_extract_string(j, '$.assignees[*].name'), [])"
    + "]), lambda t: coalesce(trim(t), '') <> '')"
)
_NO_NAME = """'{"name": null, "email": null}'::json"""


def _person_patch(p: str) -> str:
    return (
        f"case when json_type(j, '$.{p}') = 'OBJECT' then json_object('{p}', {_NO_NAME}) "
        "else '{}'::json end"
    )


_PATCH = f"""json_merge_patch(
    j,
    json_object(
        'title', to_json(fl_redact(j ->> 'title', known)),
        'body', to_json(fl_redact(j ->> 'body', known))
    ),
    {", ".join(_person_patch(p) for p in _PEOPLE)},
    case when json_type(j, '$.assignees') = 'ARRAY'
        then json_object('assignees', to_json(list_transform(
            json_extract(j, '$.assignees[*]'),
            lambda a: case when json_type(a) = 'OBJECT'
                then json_merge_patch(a, {_NO_NAME}) else a end)))
        else '{{}}'::json end
)"""
RECORD_SQL = f"list_transform([{_KNOWN}], lambda known: {_PATCH})[1]"
# Same raw table, key and drops as the export-file loader; redaction added (needs fl_redact:
# tasks.redact.register_duckdb).
GITHUB_ISSUES_SPEC: SourceSpec = dataclasses.replace(GITHUB_ISSUES, record_sql=RECORD_SQL)


class GitHubIssuesConnector:
    """Issues (and pull requests, which the loader drops) of one repository, oldest update first."""

    source = SOURCE
    stream = "issues"
    kind = "bugs"
    spec: SourceSpec = GITHUB_ISSUES_SPEC

    def __init__(self, settings: GitHubSettings, *, client: HttpClient | None = None) -> None:
        self.settings = settings
        self.client = client or make_client(settings)
        self._repo_id: int | None = None

    def check(self) -> None:
        self._repo_id = int(check_repository(self.client, self.settings)["id"])

    def pages(self, state: dict[str, Any] | None, window_end: datetime) -> Iterator[LandedPage]:
        """Every page from the stored `since` on. Each page's state keeps this run's `since`
        (a crash re-reads the run); only the last page moves it, see `_Watermark`."""
        s = self.settings
        if window_end.tzinfo is None:
            window_end = window_end.replace(tzinfo=UTC)
        if state is not None and "since" in state:
            since = parse_ts(state["since"])  # None: the last run read the whole history
        elif s.read_since is not None:
            since = s.read_since if s.read_since.tzinfo else s.read_since.replace(tzinfo=UTC)
        else:
            since = None
        params: dict[str, Any] = {
            "state": "all",
            "sort": "updated",
            "direction": "asc",
            "per_page": s.per_page,
        }
        if since is not None:
            params["since"] = github_ts(since)
        log.info("github: reading %s issues updated since %s", s.full_name, params.get("since"))
        mark = _Watermark()
        run_since = github_ts(since) if since is not None else None
        # A cut or garbled page is retried (InvalidBodyError when it stays broken).
        pages = iter_link_pages(
            self.client, f"{s.repo_path}/issues", params, expect=expect_json(list)
        )
        for resp in pages:
            items = resp.parsed
            mark.add(items)
            last = "next" not in parse_link_header(resp.headers.get("Link"))
            page_state: dict[str, Any] = {"since": run_since}
            if last:
                nxt = mark.next_since(since, window_end, timedelta(minutes=s.overlap_minutes))
                page_state = {"since": github_ts(nxt) if nxt is not None else None}
                if mark.moved:
                    log.warning(
                        "github: %d issue(s) changed while paging (%s); the next run re-reads "
                        "from %s so an issue the shift skipped is not lost",
                        len(mark.moved),
                        ", ".join(map(str, mark.moved[:5])),
                        page_state["since"],
                    )
            page_state["max_updated_at"] = (
                github_ts(mark.max_seen) if mark.max_seen is not None else None
            )
            yield LandedPage(body=resp.content, state=page_state, n_records=len(items))

    def check_issue(self, number: int) -> IssueCheck:
        """301 = transferred to another repository, 410 = deleted, 404 = gone or hidden."""
        path = f"{self.settings.repo_path}/issues/{int(number)}"
        resp = self.client.request(
            "GET", path, ok_statuses=(200, 301, 404, 410), expect=expect_json(dict)
        )
        redirect = next((r for r in (*resp.history, resp) if r.status_code in (301, 308)), None)
        if redirect is not None:
            location = redirect.headers.get("Location") or ""
            m = _REDIRECT.search(location)
            if not (m and int(m[1]) == self.repository_id() and int(m[2]) == int(number)):
                return IssueCheck(number, "moved", moved_to=location or None)
            # Same repository id and number: the repository was renamed, not the issue moved.
            log.warning(
                "github: %s redirects to %s (repository renamed or transferred?); "
                "update owner/repo in the settings",
                self.settings.full_name,
                location,
            )
            if resp.status_code in (301, 308):
                resp = self.client.request(
                    "GET", location, ok_statuses=(200, 404, 410), expect=expect_json(dict)
                )
        if resp.status_code == 410:
            return IssueCheck(number, "deleted")
        if resp.status_code == 404:
            return IssueCheck(number, "not_found")
        try:
            item = json.loads(resp.content)
        except ValueError:
            raise InvalidResponseError(SOURCE, f"GET {path}: invalid JSON", url=resp.url) from None
        return IssueCheck(
            number, "present", item.get("node_id") if isinstance(item, dict) else None
        )

    def repository_id(self) -> int:
        if self._repo_id is None:
            self._repo_id = int(check_repository(self.client, self.settings)["id"])
        return self._repo_id

    def check_issues(self, numbers: Iterable[int]) -> list[IssueCheck]:
        """One GET per issue (5,000/h budget): for a periodic sweep of the open issues we hold."""
        return [self.check_issue(n) for n in numbers]


# This vendor's entry in the registry (tasks/sources.py declare): `make generated` writes its raw
# table, raw suite, docs, union CTE, connector type and .env.example lines from it.
DECLARATION = declare(
    GitHubIssuesConnector,
    GitHubSettings,
    title="GitHub",
    order=1,
    grain="grain: one row per GitHub issue (pull requests dropped); key: node_id. Latest "
    "updated_at wins.",
    column_docs={
        "node_id": "GitHub node_id (stable across transfers, unlike the issue number); unique"
    },
    id_fields=("base_url", "owner", "repo"),
    env_help="[connectors.github] (read: Issues read, Metadata read) and [writeback.github] "
    "(write: Issues read and write; the account needs triage or write access to the repository "
    "for labels).",
)
