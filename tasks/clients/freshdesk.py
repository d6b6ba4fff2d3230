"""Freshdesk tickets by updated_since watermark, restarting at the 300-page cap; SQL redaction."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from requests.auth import HTTPBasicAuth

from tasks.clients.base import ApiConnector
from tasks.clients.http import (
    HttpClient,
    InvalidResponseError,
    PaginationLoopError,
    parse_link_header,
)
from tasks.clients.intercom import redact_object_strings_sql, strip_html_sql
from tasks.contracts import LandedPage, SourceSpec
from tasks.secrets import resolve_secret
from tasks.settings import ConfigError
from tasks.sources import declare

log = logging.getLogger(__name__)

SOURCE = "freshdesk"
TICKETS_PATH = "/api/v2/tickets"
CHECK_PATH = "/api/v2/agents/me"
MAX_PAGES = 300  # Freshdesk refuses page numbers above this


class FreshdeskSettings(BaseModel):
    """Where and how to read Freshdesk; the API key is named here and resolved at run time."""

    model_config = ConfigDict(extra="forbid")

    domain: str = Field("", description="'acme' for https://acme.freshdesk.com.")
    base_url: str = Field("", description="Overrides domain (proxies, tests).")
    start_date: date | None = Field(None, description="First run reads from here (UTC).")
    lookback_days: int = Field(90, ge=1, description="First run without start_date: days back.")
    overlap_minutes: float = Field(5.0, ge=0, description="Re-read below the watermark.")
    page_size: int = Field(100, ge=1, le=100, description="Tickets per page (max 100).")
    max_pages: int = Field(MAX_PAGES, ge=1, le=MAX_PAGES, description="Restart before this page.")
    api_key_env: str = "FRESHDESK_API_KEY"
    api_key_block: str | None = Field(None, description="Prefect Secret block fallback.")

    def api_url(self) -> str:
        if self.base_url:
            return self.base_url.rstrip("/")
        if self.domain:
            return f"https://{self.domain}.freshdesk.com"
        raise ConfigError("freshdesk: set base_url or domain")

    def auth_hint(self) -> str:
        where = self.api_key_env + (
            f" (or Secret block {self.api_key_block!r})" if self.api_key_block else ""
        )
        return f"set {where} to a valid Freshdesk API key"


# --------------------------------------------------------------------------------------------
# Record shaping (SQL run by the loader; `j` = one ticket with include=requester,description)
# --------------------------------------------------------------------------------------------

_KNOWN = (
    "list_filter([j ->> '$.requester.name', j ->> '$.requester.email', "
    "j ->> '$.requester.phone', j ->> '$.requester.mobile'], "
    "lambda t: coalesce(trim(t), '') <> '')"
)
_EMAIL_LISTS = ("cc_emails", "fwd_emails", "reply_cc_emails", "ticket_cc_emails", "to_emails")


def _hashed_list(field: str) -> str:
    return (
        f"case when json_type(j, '$.{field}') = 'ARRAY' then json_object('{field}', "
        f"to_json(list_transform(json_extract_string(j, '$.{field}[*]'), "
        "lambda e: fl_person_key('freshdesk', e)))) else '{}'::json end"
    )


_PATCH = f"""json_merge_patch(
    j,
    json_object(
        'subject', to_json(fl_redact(j ->> 'subject', known)),
        'description', to_json(fl_redact({strip_html_sql("j ->> 'description'")}, known)),
        'description_text', to_json(fl_redact(j ->> 'description_text', known))
    ),
    case when json_type(j, '$.requester') = 'OBJECT' then json_object('requester', json_object(
        'name', null,
        'email', null,
        'phone', null,
        'mobile', null,
        'name_key', fl_person_key('freshdesk', j ->> '$.requester.name'),
        'email_key', fl_person_key('freshdesk', j ->> '$.requester.email')
    )) else '{{}}'::json end,
    case when json_type(j, '$.custom_fields') = 'OBJECT'
        then json_object('custom_fields', {redact_object_strings_sql("$.custom_fields")})
        else '{{}}'::json end,
    {", ".join(_hashed_list(f) for f in _EMAIL_LISTS)}
)"""

# Requester contact details become salted keys; free text is redacted with them as known terms;
# the cc/to address lists become keys too. description is stored as redacted plain text.
RECORD_SQL = f"list_transform([{_KNOWN}], lambda known: {_PATCH})[1]"

FRESHDESK_TICKETS = SourceSpec(
    source=SOURCE,
    stream="tickets",
    raw_table="raw.freshdesk__tickets",
    key_column="ticket_id",
    key_expr=(
        "case when json_type(j, '$.id') in ('UBIGINT', 'BIGINT') then (j ->> 'id')::bigint end"
    ),
    cursor_expr="j ->> 'updated_at'",
    layout="$[*]",
    # Deleted and spam tickets (filter=deleted) carry "deleted": true / "spam": true; both are
    # tombstones (staging marks them is_deleted) and win a tie on updated_at (_VERSION_ORDER).
    deleted_expr=(
        "coalesce(try_cast(j ->> 'deleted' as boolean), false) "
        "or coalesce(try_cast(j ->> 'spam' as boolean), false)"
    ),
    record_sql=RECORD_SQL,
)


# --------------------------------------------------------------------------------------------
# Pages (pure)
# --------------------------------------------------------------------------------------------


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def parse_ticket_page(body: bytes, url: str | None = None) -> list[Any]:
    """The page's ticket list; InvalidResponseError when it is not a JSON array."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidResponseError(
            SOURCE, "ticket page is not valid JSON (truncated?)", url=url
        ) from None
    if not isinstance(doc, list):
        raise InvalidResponseError(SOURCE, "ticket page is not a JSON array", url=url)
    return doc


def _ticket_page(body: bytes) -> list[Any]:
    return parse_ticket_page(body, TICKETS_PATH)


def _newest(tickets: list[Any]) -> datetime | None:
    stamps = [
        ts for t in tickets if isinstance(t, dict) and (ts := parse_time(t.get("updated_at")))
    ]
    return max(stamps) if stamps else None


# --------------------------------------------------------------------------------------------
# Connector
# --------------------------------------------------------------------------------------------


class FreshdeskTickets(ApiConnector):
    """Connector: tickets with updated_at >= watermark - overlap, ascending, page by page.

    State: {"updated_since": <ISO>} — the newest updated_at committed. Page numbers are not
    state: ascending order makes the watermark the resume point, and the merge on id absorbs
    the overlap.
    """

    source = SOURCE
    stream = "tickets"
    kind = "tickets"
    spec = FRESHDESK_TICKETS

    def make_http(self) -> HttpClient:
        s = self.settings
        key = resolve_secret(s.api_key_env, s.api_key_block)
        return self.new_http(
            s.api_url(), auth=HTTPBasicAuth(str(key), "X"), auth_hint=s.auth_hint()
        )

    def check(self) -> None:
        me = self.http.get_json(CHECK_PATH)
        if not isinstance(me, dict) or me.get("id") is None:
            raise InvalidResponseError(
                SOURCE, "GET /agents/me returned no agent id", url=CHECK_PATH
            )
        log.info("freshdesk: authenticated as agent %s", me.get("id"))

    def start(self, window_end: datetime) -> datetime:
        s = self.settings
        if s.start_date is not None:
            return datetime.combine(s.start_date, datetime.min.time(), UTC)
        return window_end - timedelta(days=s.lookback_days)

    def pages(self, state: dict[str, Any] | None, window_end: datetime) -> Iterator[LandedPage]:
        """updated_since is always sent: without it Freshdesk returns only the last 30 days.
        The list has no upper bound, so paging stops once a page passes window_end."""
        s = self.settings
        watermark = parse_time((state or {}).get("updated_since"))
        if watermark is None:
            since = self.start(window_end)
        else:
            since = watermark - timedelta(minutes=s.overlap_minutes)
        client = self.http
        page = 1
        while True:
            params = {
                "updated_since": iso(since),
                "order_by": "updated_at",
                "order_type": "asc",
                "per_page": s.page_size,
                "page": page,
                "include": "requester,description",
            }
            resp = client.request("GET", TICKETS_PATH, params=params, expect=_ticket_page)
            tickets = resp.parsed
            newest = _newest(tickets)
            if newest is not None and (watermark is None or newest > watermark):
                watermark = newest
            resume = iso(watermark) if watermark is not None else iso(since)
            yield LandedPage(resp.content, {"updated_since": resume}, len(tickets))
            full = len(tickets) >= s.page_size
            if "link" in resp.headers:
                more = "next" in parse_link_header(resp.headers["link"])
            else:
                more = full
            # At the cap the next-page link may be missing although more tickets exist.
            if page >= s.max_pages:
                more = more or full
            if not more or (newest is not None and newest >= window_end):
                return
            if page < s.max_pages:
                page += 1
                continue
            # The cap: start over at page 1 from the newest updated_at seen (inclusive, so
            # tickets sharing that second are read again, not skipped).
            if newest is None or newest <= since:
                raise PaginationLoopError(
                    SOURCE,
                    f"more than {s.max_pages * s.page_size} tickets share updated_at "
                    f"{iso(since)}; cannot page past them",
                    url=TICKETS_PATH,
                )
            log.info("freshdesk: page cap %d reached; restarting from %s", s.max_pages, iso(newest))
            since, page = newest, 1


# This vendor's entry in the registry (tasks/sources.py declare): `make generated` writes its raw
# table, raw suite, docs, union CTE, connector type and .env.example lines from it.
DECLARATION = declare(
    FreshdeskTickets,
    FreshdeskSettings,
    title="Freshdesk",
    order=3,
    grain="grain: one row per Freshdesk ticket; key: ticket_id. Merged on ticket_id, latest "
    "updated_at wins. Text redacted and requester contact details replaced by salted keys at "
    "landing.",
    column_docs={"ticket_id": "Freshdesk ticket id; unique"},
    key_type="bigint",
    id_fields=("domain", "base_url"),
    env_help="[connectors.freshdesk]: an agent's API key (Profile settings -> View API key).",
)
