"""Sentry issues (error signal): organization issue pages landed in raw.sentry__issues."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tasks.clients.base import ApiConnector
from tasks.clients.http import (
    CursorGuard,
    HttpClient,
    InvalidResponseError,
    parse_link_header,
)
from tasks.contracts import LandedPage, SourceSpec
from tasks.secrets import resolve_secret
from tasks.sources import declare

log = logging.getLogger(__name__)

SENTRY_ISSUES = SourceSpec(
    source="sentry",
    stream="issues",
    raw_table="raw.sentry__issues",
    key_column="issue_id",
    key_expr="nullif(trim(j ->> 'id'), '')",
    # lastSeen does not move on status changes; a same-cursor record with a new payload still
    # replaces the stored one (the merge compares payloads), so a re-read status lands.
    cursor_expr="j ->> 'lastSeen'",
    layout="$[*]",
)


class SentrySettings(BaseModel):
    """Sentry as the error signal (read)."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = "https://sentry.io"
    org: str = Field(..., description="Organization slug.")
    projects: list[int] = Field(default_factory=list, description="Project ids; empty = all.")
    environments: list[str] = Field(default_factory=list)
    # Always sent: without `query=` Sentry applies `is:unresolved`, hiding resolved/ignored
    # issues — and with them the status changes the staging model needs.
    query: str = Field("", description="Base issue search, e.g. 'is:unresolved'; '' = all.")
    stats_period: str = Field(
        "14d", description="Window for count/userCount and for which issues are listed."
    )
    token_env: str = "SENTRY_AUTH_TOKEN"
    token_block: str | None = Field(None, description="Prefect Secret block with the token.")
    start_days: int = Field(14, ge=1, description="First run: issues last seen this far back.")
    overlap_minutes: int = Field(10, ge=0)
    page_size: int = Field(100, ge=1, le=100)


def _search_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")  # search dates are UTC


def _parse_ts(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


class SentryConnector(ApiConnector):
    """Issues whose lastSeen falls in (since - overlap, window_end]: those with new events.

    The state advances only when a window is complete (pages come newest first, so no page
    boundary is a safe watermark); a crash re-reads the window, the merge on id absorbs it.
    Status changes without new events do not move lastSeen: start from `state=None` now and
    then for a full re-read of the stats period.
    """

    source = "sentry"
    stream = "issues"
    kind = "errors"
    spec = SENTRY_ISSUES

    def make_http(self) -> HttpClient:
        s = self.settings
        token = resolve_secret(s.token_env, s.token_block)
        return self.new_http(
            s.base_url,
            headers={"Authorization": f"Bearer {token}"},
            auth_hint=f"set {s.token_env} (an auth token with org:read, event:read)",
        )

    @property
    def _org_path(self) -> str:
        return f"/api/0/organizations/{self.settings.org}"

    def check(self) -> None:
        doc = self.http.get_json(f"{self._org_path}/")
        if not isinstance(doc, dict):
            raise InvalidResponseError("sentry", "organization answer is not an object")

    def params(self, since: datetime, window_end: datetime) -> dict[str, Any]:
        s = self.settings
        lower = since - timedelta(minutes=s.overlap_minutes)
        window = f"lastSeen:>={_search_time(lower)} lastSeen:<={_search_time(window_end)}"
        params: dict[str, Any] = {
            "query": f"{s.query.strip()} {window}".strip(),
            "limit": s.page_size,
            "statsPeriod": s.stats_period,
            "sort": "date",
        }
        if s.projects:
            params["project"] = [str(p) for p in s.projects]
        if s.environments:
            params["environment"] = list(s.environments)
        return params

    def pages(self, state: dict[str, Any] | None, window_end: datetime) -> Iterator[LandedPage]:
        since = _parse_ts((state or {}).get("last_seen_since"))
        if state and since is None:
            log.warning("sentry: stored state %r is not understood; using the start", state)
        since = since or window_end - timedelta(days=self.settings.start_days)
        unchanged = {"last_seen_since": since.isoformat()}
        guard = CursorGuard("sentry")
        url: str = f"{self._org_path}/issues/"
        params: dict[str, Any] | None = self.params(since, window_end)
        while True:
            resp = self.http.request("GET", url, params=params, expect=_count_issues)
            n = resp.parsed
            links = parse_link_header(resp.headers.get("Link"))
            # Sentry always sends a next link; results="false" says it leads nowhere.
            next_url = links.get("next") if links.get("next:results") == "true" else None
            state_after = unchanged if next_url else {"last_seen_since": window_end.isoformat()}
            yield LandedPage(resp.content, state_after, n)
            if not next_url:
                return
            guard.check(next_url)
            url, params = next_url, None  # the next link carries the query: follow it verbatim


def _count_issues(content: bytes) -> int:
    try:
        doc = json.loads(content)
    except ValueError:
        raise InvalidResponseError("sentry", "issues page is not valid JSON (truncated?)") from None
    if not isinstance(doc, list) or not all(isinstance(i, dict) for i in doc):
        raise InvalidResponseError("sentry", "issues page is not a list of issue objects")
    return len(doc)


# This vendor's entry in the registry (tasks/sources.py declare): `make generated` writes its raw
# table, raw suite, docs, union CTE, connector type and .env.example lines from it.
DECLARATION = declare(
    SentryConnector,
    SentrySettings,
    title="Sentry",
    order=1,
    grain="grain: one row per Sentry issue (error group); key: issue_id. Merged on issue_id; the "
    "latest read wins (lastSeen, then payload), so counts are as of _loaded_at.",
    column_docs={"issue_id": "Sentry issue id; unique"},
    id_fields=("base_url", "org"),
    env_help="[connectors.sentry]: an auth token with the org:read and event:read scopes.",
)
