"""Jira Cloud issues: JQL search pages (POST /rest/api/3/search/jql) landed in raw.jira__issues."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field

from tasks.clients.base import ApiConnector
from tasks.clients.http import CursorGuard, HttpClient, InvalidResponseError, RetryPolicy
from tasks.contracts import LandedPage, SourceSpec
from tasks.secrets import resolve_secret
from tasks.sources import declare

log = logging.getLogger(__name__)

SEARCH_PATH = "/rest/api/3/search/jql"
MYSELF_PATH = "/rest/api/3/myself"
# Explicit fields: the enhanced search returns only ids without them. statusCategory comes
# inside `status`; `resolution` tells "won't do" from "done" for the staging state_reason.
SEARCH_FIELDS = (
    "summary",
    "status",
    "priority",
    "labels",
    "components",
    "created",
    "updated",
    "resolutiondate",
    "resolution",
    "issuetype",
    "votes",
)
JQL_TIME_FORMAT = "%Y-%m-%d %H:%M"

JIRA_ISSUES = SourceSpec(
    source="jira",
    stream="issues",
    raw_table="raw.jira__issues",
    key_column="issue_id",
    # The numeric id, never the key (ABC-12): keys change when an issue moves project.
    key_expr="nullif(trim(j ->> 'id'), '')",
    cursor_expr="j -> 'fields' ->> 'updated'",
    layout="$.issues[*]",
)


class JiraSettings(BaseModel):
    """Jira Cloud as a bug source (read)."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(..., description="Site URL, e.g. https://acme.atlassian.net")
    project: str | None = Field(None, description="Project key to read, e.g. 'ABC'.")
    issue_types: list[str] = Field(default_factory=lambda: ["Bug"])
    jql: str | None = Field(None, description="Extra JQL ANDed to the filter (no ORDER BY).")
    email_env: str = "JIRA_EMAIL"
    token_env: str = "JIRA_API_TOKEN"
    email_block: str | None = Field(None, description="Prefect Secret block with the email.")
    token_block: str | None = Field(None, description="Prefect Secret block with the API token.")
    start_days: int = Field(90, ge=1, description="First run reads issues updated this far back.")
    overlap_minutes: int = Field(
        15, ge=10, description="Re-read window: JQL has minute precision and search lags."
    )
    page_size: int = Field(100, ge=1, le=100)


def jira_http(
    source: str,
    base_url: str,
    *,
    email_env: str,
    token_env: str,
    email_block: str | None = None,
    token_block: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
    retry: RetryPolicy | None = None,
) -> HttpClient:
    """An HttpClient with Atlassian basic auth (account email + API token)."""
    email = resolve_secret(email_env, email_block)
    token = resolve_secret(token_env, token_block)
    return HttpClient(
        source,
        base_url.rstrip("/"),
        auth=(email, token),
        headers={"Accept": "application/json"},
        retry=retry or RetryPolicy(),
        auth_hint=f"set {email_env} and {token_env} (an Atlassian API token of that account)",
        sleep=sleep,
    )


def jql_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _local_instants(text: str, tz: tzinfo) -> list[datetime]:
    """Every UTC instant a JQL wall-clock time can mean (two in a DST fall-back hour)."""
    naive = datetime.strptime(text, JQL_TIME_FORMAT)
    return [naive.replace(tzinfo=tz, fold=f).astimezone(UTC) for f in (0, 1)]


def jql_lower_bound(moment: datetime, tz: tzinfo) -> str:
    """`updated >= X` that is never after `moment` however Jira reads an ambiguous time."""
    text = moment.astimezone(tz).strftime(JQL_TIME_FORMAT)  # truncating = flooring
    if max(_local_instants(text, tz)) > moment:
        text = (moment - timedelta(hours=1)).astimezone(tz).strftime(JQL_TIME_FORMAT)
    return text


def jql_upper_bound(moment: datetime, tz: tzinfo) -> tuple[str, datetime]:
    """`updated <= X` and the earliest instant it can mean (what the next run starts from)."""
    text = moment.astimezone(tz).strftime(JQL_TIME_FORMAT)
    return text, min(_local_instants(text, tz))


def _parse_ts(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def _state_since(state: dict[str, Any] | None) -> datetime | None:
    if not state:
        return None
    since = _parse_ts(state.get("updated_since"))
    if since is None:
        log.warning("jira: stored state %r is not understood; starting from the configured start")
    return since


class JiraConnector(ApiConnector):
    """Issues updated in (state, window_end], oldest first, one landed page per search page."""

    source = "jira"
    stream = "issues"
    kind = "bugs"
    spec = JIRA_ISSUES

    def __init__(self, settings: JiraSettings, **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        self._tz: tzinfo | None = None

    def make_http(self) -> HttpClient:
        s = self.settings
        return jira_http(
            self.source,
            s.base_url,
            email_env=s.email_env,
            token_env=s.token_env,
            email_block=s.email_block,
            token_block=s.token_block,
            sleep=self.sleep,
            retry=self.retry,
        )

    def check(self) -> None:
        self._myself()

    def _myself(self) -> dict[str, Any]:
        me = self.http.get_json(MYSELF_PATH)
        if not isinstance(me, dict):
            raise InvalidResponseError("jira", "GET /myself did not return an object")
        return me

    def time_zone(self) -> tzinfo:
        """JQL dates are read in the API user's time zone, so the window is written in it."""
        if self._tz is None:
            name = self._myself().get("timeZone")
            try:
                self._tz = ZoneInfo(name) if isinstance(name, str) and name else UTC
            except (ZoneInfoNotFoundError, ValueError):
                log.warning("jira: unknown user time zone %r; writing JQL dates in UTC", name)
                self._tz = UTC
        return self._tz

    def base_jql(self) -> str:
        s = self.settings
        parts = []
        if s.project:
            parts.append(f"project = {jql_quote(s.project)}")
        if s.issue_types:
            parts.append(f"issuetype in ({', '.join(jql_quote(t) for t in s.issue_types)})")
        if s.jql:
            parts.append(f"({s.jql})")
        return " AND ".join(parts)

    def window_jql(self, since: datetime, window_end: datetime) -> tuple[str, datetime]:
        """The JQL for one window and the instant the window is complete up to."""
        tz = self.time_zone()
        overlap = timedelta(minutes=self.settings.overlap_minutes)
        lower = jql_lower_bound(since - overlap, tz)
        upper, upper_at = jql_upper_bound(window_end, tz)
        where = f'updated >= "{lower}" AND updated <= "{upper}"'
        clauses = [c for c in (self.base_jql(), where) if c]
        return " AND ".join(clauses) + " ORDER BY updated ASC", upper_at

    def pages(self, state: dict[str, Any] | None, window_end: datetime) -> Iterator[LandedPage]:
        since = _state_since(state) or (window_end - timedelta(days=self.settings.start_days))
        jql, complete_at = self.window_jql(since, window_end)
        log.info("jira: searching %s", jql)
        guard = CursorGuard("jira")
        token: str | None = None
        watermark = since
        while True:
            body: dict[str, Any] = {
                "jql": jql,
                "fields": list(SEARCH_FIELDS),
                "maxResults": self.settings.page_size,
            }
            if token:
                body["nextPageToken"] = token
            resp = self.http.request(
                "POST", SEARCH_PATH, json=body, read=True, expect=_parse_search_page
            )
            issues, token, is_last = resp.parsed
            # Pages come oldest first, so everything up to this page's newest `updated` is
            # landed once the page commits: a crash resumes from there (minus the overlap).
            for issue in issues:
                updated = _parse_ts((issue.get("fields") or {}).get("updated"))
                if updated is not None and updated > watermark:
                    watermark = min(updated, complete_at)
            done = is_last or not token
            state_at = complete_at if done else watermark
            yield LandedPage(resp.content, {"updated_since": state_at.isoformat()}, len(issues))
            if done:
                return
            guard.check(token)


def _parse_search_page(content: bytes) -> tuple[list[dict[str, Any]], str | None, bool]:
    try:
        doc = json.loads(content)
    except ValueError:
        raise InvalidResponseError("jira", "search page is not valid JSON (truncated?)") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("issues"), list):
        raise InvalidResponseError("jira", "search page has no 'issues' list")
    if not all(isinstance(i, dict) for i in doc["issues"]):
        raise InvalidResponseError("jira", "search page holds issues that are not objects")
    token = doc.get("nextPageToken")
    if token is not None and not isinstance(token, str):
        raise InvalidResponseError("jira", "nextPageToken is not a string")
    is_last = doc.get("isLast")
    # The last page comes without a token (JRACLOUD-92184); a page that says more follow but
    # gives no way to get them is broken, and the cursor must not move past it.
    if is_last is False and not token:
        raise InvalidResponseError("jira", "page says isLast=false but has no nextPageToken")
    return doc["issues"], token or None, bool(is_last)


# This vendor's entry in the registry (tasks/sources.py declare): `make generated` writes its raw
# table, raw suite, docs, union CTE, connector type and .env.example lines from it.
DECLARATION = declare(
    JiraConnector,
    JiraSettings,
    title="Jira",
    order=2,
    grain="grain: one row per Jira issue; key: issue_id (numeric id as text, stable across "
    "project moves, unlike the issue key). Merged on issue_id, latest fields.updated wins.",
    column_docs={"issue_id": "Jira issue id (stable, unlike the issue key); unique"},
    id_fields=("base_url", "project"),
    env_help="[connectors.jira] and [writeback.jira]: the Atlassian account's email and an API "
    "token of it.",
)
