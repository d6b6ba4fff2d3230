"""Linear issues: GraphQL `issues` pages (by updatedAt, archived too) in raw.linear__issues."""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from pydantic import BaseModel, ConfigDict, Field

from tasks.clients.http import (
    AuthError,
    ClientRequestError,
    CursorGuard,
    HttpClient,
    InvalidResponseError,
    RetriesExhaustedError,
    RetryPolicy,
)
from tasks.contracts import LandedPage, SourceSpec
from tasks.secrets import resolve_secret
from tasks.sources import declare

log = logging.getLogger(__name__)

GRAPHQL_PATH = "/graphql"

ISSUES_QUERY = """
query Issues($first: Int!, $after: String, $filter: IssueFilter) {
  issues(first: $first, after: $after, includeArchived: true, orderBy: updatedAt,
         filter: $filter) {
    nodes {
      id identifier title url priority priorityLabel
      createdAt updatedAt startedAt completedAt canceledAt archivedAt
      state { id name type }
      labels(first: 50) { nodes { name parent { name } } }
      team { id key }
      project { id name }
    }
    pageInfo { hasNextPage endCursor }
  }
}
"""
VIEWER_QUERY = "query Viewer { viewer { id } }"

LINEAR_ISSUES = SourceSpec(
    source="linear",
    stream="issues",
    raw_table="raw.linear__issues",
    key_column="issue_id",
    # The UUID, never the identifier (ENG-7): identifiers change when an issue changes team.
    key_expr="nullif(trim(j ->> 'id'), '')",
    cursor_expr="j ->> 'updatedAt'",
    layout="$.data.issues.nodes[*]",
)


class LinearSettings(BaseModel):
    """Linear as a bug source (read)."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = "https://api.linear.app"
    team_key: str | None = Field(None, description="Only this team's issues, e.g. 'ENG'.")
    label: str | None = Field(None, description="Only issues with this label, e.g. 'Bug'.")
    api_key_env: str = "LINEAR_API_KEY"
    api_key_block: str | None = Field(None, description="Prefect Secret block with the API key.")
    start_days: int = Field(90, ge=1, description="First run reads issues updated this far back.")
    overlap_minutes: int = Field(5, ge=0, description="Re-read window before the last cursor.")
    page_size: int = Field(100, ge=1, le=250)
    max_rate_limit_waits: int = Field(5, ge=1, description="Waits on RATELIMITED before failing.")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_ts(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def _error_kind(error: Any) -> str:
    ext = error.get("extensions") if isinstance(error, dict) else None
    if not isinstance(ext, dict):
        return ""
    return f"{ext.get('code') or ''} {ext.get('type') or ''}".lower()


class LinearGraphQL:
    """POST /graphql with Linear's rate-limit quirk: besides HTTP 429 (the HTTP layer waits those
    out), a limit can arrive as a GraphQL error `RATELIMITED` on a 200 or 400 — waited out here
    per the `x-ratelimit-*-reset` headers (epoch ms), else with exponential backoff."""

    def __init__(
        self,
        http: HttpClient,
        *,
        auth_hint: str,
        max_waits: int = 5,
        base_delay_s: float = 2.0,
        max_delay_s: float = 300.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ):
        self.http = http
        self.auth_hint = auth_hint
        self.max_waits = max_waits
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.sleep = sleep
        self.clock = clock
        self.n_rate_limited = 0

    def execute(
        self,
        query: str,
        variables: Mapping[str, Any] | None = None,
        *,
        idempotent: bool = True,
    ) -> tuple[dict[str, Any], requests.Response]:
        """The `data` object and the raw response; raises on GraphQL errors.

        `idempotent=False` for mutations that create something each time they run (comments):
        the HTTP layer then does not repeat them after an answer that may hide a success."""
        body = {"query": query, "variables": dict(variables or {})}
        # A query is a read: a cut or garbled 200 is retried (InvalidBodyError when it stays
        # broken); after a mutation it means the outcome is unknown (UncertainWriteError).
        is_read = not query.lstrip().startswith("mutation")
        for attempt in range(1, self.max_waits + 2):
            resp = self.http.request(
                "POST",
                GRAPHQL_PATH,
                json=body,
                ok_statuses=(200, 400),
                idempotent=idempotent,
                read=is_read,
                expect=json.loads,
            )
            try:
                doc = resp.parsed if resp.status_code == 200 else json.loads(resp.content)
            except ValueError:
                raise InvalidResponseError(
                    "linear", f"HTTP {resp.status_code} answer is not valid JSON (truncated?)"
                ) from None
            if not isinstance(doc, dict):
                raise InvalidResponseError("linear", "GraphQL answer is not an object")
            errors = doc.get("errors") or []
            if any("ratelimited" in _error_kind(e) for e in errors):
                self.n_rate_limited += 1
                if attempt > self.max_waits:
                    raise RetriesExhaustedError(
                        "linear",
                        f"still rate limited after {self.max_waits} waits",
                        status=resp.status_code,
                        hint="lower the request rate or page size (complexity)",
                    )
                delay = self._delay(resp.headers, attempt)
                log.warning("linear: rate limited (GraphQL RATELIMITED); waiting %.1fs", delay)
                self.sleep(delay)
                continue
            if errors:
                self._raise(errors, resp.status_code)
            if resp.status_code != 200:
                raise ClientRequestError("linear", f"HTTP {resp.status_code}", status=400)
            data = doc.get("data")
            if not isinstance(data, dict):
                raise InvalidResponseError("linear", "GraphQL answer has no 'data' object")
            return data, resp
        raise AssertionError("unreachable")

    def _raise(self, errors: list[Any], status: int) -> None:
        messages = "; ".join(
            str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors
        )[:500]
        kinds = " ".join(_error_kind(e) for e in errors)
        if "authentication" in kinds or "forbidden" in kinds:
            raise AuthError("linear", messages, status=status, hint=self.auth_hint)
        raise ClientRequestError("linear", f"GraphQL error: {messages}", status=status)

    def _delay(self, headers: Mapping[str, str], attempt: int) -> float:
        resets = []
        for budget in ("requests", "complexity"):
            remaining = headers.get(f"x-ratelimit-{budget}-remaining")
            reset = headers.get(f"x-ratelimit-{budget}-reset")
            if reset is None or (remaining is not None and remaining.strip() not in ("0", "")):
                continue
            try:
                value = float(reset)
            except ValueError:
                continue
            value = value / 1000 if value > 1e11 else value  # documented as epoch milliseconds
            resets.append(value - self.clock())
        if resets:
            return min(max(max(resets), 0.0) + 0.5, self.max_delay_s)
        backoff = self.base_delay_s * 2 ** (attempt - 1)
        return min(backoff * random.uniform(0.75, 1.25), self.max_delay_s)


def linear_graphql(
    base_url: str,
    *,
    api_key_env: str,
    api_key_block: str | None = None,
    max_waits: int = 5,
    sleep: Callable[[float], None] = time.sleep,
    retry: RetryPolicy | None = None,
    clock: Callable[[], float] = time.time,
) -> LinearGraphQL:
    """A GraphQL client with the personal API key in `Authorization` — without "Bearer"."""
    key = resolve_secret(api_key_env, api_key_block)
    hint = f"set {api_key_env} (a Linear personal API key)"
    http = HttpClient(
        "linear",
        base_url.rstrip("/"),
        headers={"Authorization": str(key), "Content-Type": "application/json"},
        retry=retry or RetryPolicy(),
        auth_hint=hint,
        sleep=sleep,
    )
    return LinearGraphQL(http, auth_hint=hint, max_waits=max_waits, sleep=sleep, clock=clock)


class LinearConnector:
    """Issues updated in (since - overlap, window_end], archived ones included.

    The state is the server cursor inside a window (with the window's exact bounds, so a resume
    asks the same question), and the window end once the window is done.
    """

    source = "linear"
    stream = "issues"
    kind = "bugs"
    spec = LINEAR_ISSUES

    def __init__(
        self,
        settings: LinearSettings,
        *,
        gql: LinearGraphQL | None = None,
        sleep: Callable[[float], None] = time.sleep,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.settings = settings
        self.gql = gql or linear_graphql(
            settings.base_url,
            api_key_env=settings.api_key_env,
            api_key_block=settings.api_key_block,
            max_waits=settings.max_rate_limit_waits,
            sleep=sleep,
            retry=retry,
            clock=clock,
        )

    def check(self) -> None:
        data, _ = self.gql.execute(VIEWER_QUERY)
        if not isinstance(data.get("viewer"), dict):
            raise InvalidResponseError("linear", "viewer query returned no viewer")

    def _filter(self, gt: str, lte: str) -> dict[str, Any]:
        f: dict[str, Any] = {"updatedAt": {"gt": gt, "lte": lte}}
        if self.settings.team_key:
            f["team"] = {"key": {"eq": self.settings.team_key}}
        if self.settings.label:
            f["labels"] = {"some": {"name": {"eqIgnoreCase": self.settings.label}}}
        return f

    def pages(self, state: dict[str, Any] | None, window_end: datetime) -> Iterator[LandedPage]:
        state = state or {}
        end = _iso(window_end)
        windows: list[tuple[str, str, str | None]] = []
        if state.get("after") and state.get("window_gt") and state.get("window_lte"):
            # Resume the interrupted window with the same bounds, then go on to window_end.
            windows.append((state["window_gt"], state["window_lte"], state["after"]))
            since = _parse_ts(state["window_lte"])
        else:
            since = _parse_ts(state.get("updated_since"))
            if state and since is None:
                log.warning("linear: stored state %r is not understood; using the start", state)
        since = since or window_end - timedelta(days=self.settings.start_days)
        if since < window_end or not windows:
            gt = _iso(since - timedelta(minutes=self.settings.overlap_minutes))
            windows.append((gt, end, None))
        for gt, lte, after in windows:
            yield from self._window(gt, lte, after)

    def _window(self, gt: str, lte: str, after: str | None) -> Iterator[LandedPage]:
        guard = CursorGuard("linear")
        while True:
            variables = {
                "first": self.settings.page_size,
                "after": after,
                "filter": self._filter(gt, lte),
            }
            data, resp = self.gql.execute(ISSUES_QUERY, variables)
            nodes, has_next, cursor = _parse_issues(data)
            if has_next:
                guard.check(cursor)
                state = {"window_gt": gt, "window_lte": lte, "after": cursor}
            else:
                state = {"updated_since": lte}
            yield LandedPage(resp.content, state, len(nodes))
            if not has_next:
                return
            after = cursor


def _parse_issues(data: dict[str, Any]) -> tuple[list[Any], bool, str | None]:
    conn = data.get("issues")
    if not isinstance(conn, dict) or not isinstance(conn.get("nodes"), list):
        raise InvalidResponseError("linear", "issues page has no 'nodes' list")
    info = conn.get("pageInfo")
    if not isinstance(info, dict) or not isinstance(info.get("hasNextPage"), bool):
        raise InvalidResponseError("linear", "issues page has no pageInfo.hasNextPage")
    cursor = info.get("endCursor")
    if info["hasNextPage"] and not isinstance(cursor, str):
        raise InvalidResponseError("linear", "hasNextPage is true but endCursor is missing")
    if not all(isinstance(n, dict) for n in conn["nodes"]):
        raise InvalidResponseError("linear", "issues page holds nodes that are not objects")
    return conn["nodes"], info["hasNextPage"], cursor


# This vendor's entry in the registry (tasks/sources.py declare): `make generated` writes its raw
# table, raw suite, docs, union CTE, connector type and .env.example lines from it.
DECLARATION = declare(
    LinearConnector,
    LinearSettings,
    title="Linear",
    order=3,
    grain="grain: one row per Linear issue (archived included); key: issue_id (UUID, stable "
    "across team moves, unlike the identifier). Merged on issue_id, latest updatedAt wins.",
    column_docs={"issue_id": "Linear issue id (uuid); unique"},
    id_fields=("base_url", "team_key"),
    env_help="[connectors.linear] and [writeback.linear]: a Linear personal API key (sent without "
    '"Bearer").',
)
