"""Zendesk tickets from the cursor-based incremental export, landed per page, redacted in SQL."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from requests.auth import HTTPBasicAuth

from tasks.clients.base import ApiConnector, shared_budget
from tasks.clients.http import (
    AuthError,
    CursorGuard,
    HttpClient,
    InvalidResponseError,
    RequestBudget,
    make_session,
)
from tasks.contracts import ZENDESK_TICKETS, LandedPage, SourceSpec
from tasks.db import transaction
from tasks.secrets import resolve_secret
from tasks.settings import ConfigError
from tasks.sources import declare

log = logging.getLogger(__name__)

SOURCE = "zendesk"
EXPORT_PATH = "/api/v2/incremental/tickets/cursor.json"
CHECK_PATH = "/api/v2/users/me.json"
# The API refuses a start_time within the last minute (it excludes the newest minute anyway).
_MIN_AGE = timedelta(minutes=1)


class ZendeskSettings(BaseModel):
    """Where and how to read Zendesk; secrets are named here and resolved at run time."""

    model_config = ConfigDict(extra="forbid")

    subdomain: str = Field("", description="'acme' for https://acme.zendesk.com.")
    base_url: str = Field("", description="Overrides subdomain (proxies, tests).")
    start_date: date | None = Field(None, description="First run reads from here (UTC).")
    lookback_days: int = Field(90, ge=1, description="First run without start_date: days back.")
    page_size: int = Field(1000, ge=1, le=1000, description="Tickets per export page.")
    requests_per_minute: int = Field(10, ge=1, description="Incremental export limit (10/min).")
    auth: Literal["api_token", "oauth"] = "api_token"
    email: str = Field("", description="Agent email for API-token auth; else read email_env.")
    email_env: str = "ZENDESK_EMAIL"
    api_token_env: str = "ZENDESK_API_TOKEN"
    api_token_block: str | None = Field(None, description="Prefect Secret block fallback.")
    oauth_token_env: str = "ZENDESK_OAUTH_TOKEN"
    oauth_token_block: str | None = None

    def api_url(self) -> str:
        if self.base_url:
            return self.base_url.rstrip("/")
        if self.subdomain:
            return f"https://{self.subdomain}.zendesk.com"
        raise ConfigError("zendesk: set base_url or subdomain")

    def auth_hint(self) -> str:
        if self.auth == "oauth":
            where = self.oauth_token_env + (
                f" (or Secret block {self.oauth_token_block!r})" if self.oauth_token_block else ""
            )
            return f"set {where} to a valid Zendesk OAuth access token"
        where = self.api_token_env + (
            f" (or Secret block {self.api_token_block!r})" if self.api_token_block else ""
        )
        return (
            f"set {where} to a valid Zendesk API token, and {self.email_env} (or email) "
            "to the agent's email"
        )


# --------------------------------------------------------------------------------------------
# Record shaping (SQL run by the loader; `j` = one ticket, `page` = the whole export page)
# --------------------------------------------------------------------------------------------

# The page sideloads `users` (include=users); `page.users` holds the ones this ticket refers to
# (requester, submitter, assignee, CCs, followers: see ZENDESK_TICKETS.sideload), NULL if none.
_PEOPLE = "coalesce(json_extract(page, '$.users[*]'), []::json[])"
_REQUESTER = f"list_filter({_PEOPLE}, lambda u: (u ->> 'id') = (j ->> 'requester_id'))[1]"
# Every side-loaded person's name, alias and e-mail are known terms for the ticket's text.
_KNOWN = (
    f"list_filter(flatten(list_transform({_PEOPLE}, "
    "lambda u: [u ->> 'name', u ->> 'alias', u ->> 'email'])), "
    "lambda t: coalesce(trim(t), '') <> '')"
)


def _redacted(path: str) -> str:
    return f"to_json(fl_redact(j ->> '{path}', known))"


def _redacted_values(name: str) -> str:
    """A patch for the list `name` of {id, value} objects: every text value redacted."""
    return f"""case when json_type(j, '$.{name}') = 'ARRAY'
        then json_object('{name}', to_json(list_transform(
            json_extract(j, '$.{name}[*]'),
            lambda f: case when json_type(f, '$.value') = 'VARCHAR'
                then json_merge_patch(f, json_object(
                    'value', to_json(fl_redact(f ->> 'value', known))))
                else f end)))
        else '{{}}'::json end"""


# Only the fields we keep are rewritten; anything that can hold a person's contact details and
# that staging does not use (email headers in via.source, the recipient) is dropped.
_PATCH = f"""json_merge_patch(
    j,
    json_object(
        'subject', {_redacted("$.subject")},
        'raw_subject', {_redacted("$.raw_subject")},
        'description', {_redacted("$.description")},
        'recipient', null,
        'requester', case when req is not null then json_object(
            'id', req -> 'id',
            'name_key', fl_person_key('zendesk', req ->> 'name'),
            'email_key', fl_person_key('zendesk', lower(trim(req ->> 'email')))
        ) end
    ),
    case when json_type(j, '$.via.source') = 'OBJECT'
        then '{{"via": {{"source": {{"from": null, "to": null}}}}}}'::json
        else '{{}}'::json end,
    case when json_type(j, '$.satisfaction_rating.comment') = 'VARCHAR'
        then json_object('satisfaction_rating', json_object(
            'comment', {_redacted("$.satisfaction_rating.comment")}))
        else '{{}}'::json end,
    {_redacted_values("custom_fields")},
    {_redacted_values("fields")}
)"""

# list_transform over a one-element list binds `req` / `known` once per ticket.
RECORD_SQL = (
    f"list_transform([{_REQUESTER}], lambda req: "
    f"list_transform([{_KNOWN}], lambda known: {_PATCH})[1])[1]"
)

# Same raw table, key and newest-version merge as the export-file loader; redaction added.
ZENDESK_TICKETS_SPEC: SourceSpec = dataclasses.replace(ZENDESK_TICKETS, record_sql=RECORD_SQL)

# The landing redaction raw.zendesk__tickets holds (ops.landing_redaction). 1: every row through
# RECORD_SQL; export files were once landed as they were and redacted by a regex pass in staging.
LANDING_REDACTION_VERSION = 1


# A stored ticket through RECORD_SQL without its page: the redactor's patterns only (the page's
# side-loaded names are gone; text redacted before stays as it is, the redactor is idempotent).
# RECORD_SQL would drop a `requester` it has no page user for: one landed with keys stays, one
# with a name or e-mail gets the keys landing gives.
_STORED_REQUESTER = """case
    when json_exists(j, '$.requester.name') or json_exists(j, '$.requester.email')
        then json_object(
            'id', j -> '$.requester.id',
            'name_key', fl_person_key('zendesk', j ->> '$.requester.name'),
            'email_key', fl_person_key('zendesk', lower(trim(j ->> '$.requester.email'))))
    else j -> '$.requester'
end"""
_STORED_RECORD_SQL = (
    f"json_merge_patch({RECORD_SQL}, json_object('requester', {_STORED_REQUESTER}))"
)


def redact_landed_rows(con: Any) -> int:
    """Bring raw.zendesk__tickets to LANDING_REDACTION_VERSION once: every stored ticket
    through the landing redaction (_STORED_RECORD_SQL), in one transaction with its
    ops.landing_redaction row. Needs fl_redact and fl_person_key
    (tasks.redact.register_duckdb). Returns the rows rewritten."""
    table = ZENDESK_TICKETS.raw_table
    done = con.execute(
        "select version from ops.landing_redaction where table_name = ?", [table]
    ).fetchall()
    if done and done[0][0] >= LANDING_REDACTION_VERSION:
        return 0
    with transaction(con):
        changed = con.execute(
            f"""
            update {table} as t set payload = r.payload
            from (
                select ticket_id, ({_STORED_RECORD_SQL}) as payload
                from (select ticket_id, payload as j, null::json as page from {table})
            ) as r
            where t.ticket_id = r.ticket_id and t.payload is distinct from r.payload
            """
        ).fetchall()[0][0]
        con.execute(
            "insert or replace into ops.landing_redaction values (?, ?, ?, now())",
            [table, LANDING_REDACTION_VERSION, changed],
        )
    if changed:
        log.info(
            "zendesk: %d ticket(s) landed before the landing redaction redacted in place", changed
        )
    return changed


# --------------------------------------------------------------------------------------------
# Page parsing (pure)
# --------------------------------------------------------------------------------------------


def parse_export_page(body: bytes, url: str | None = None) -> dict[str, Any]:
    """The export page as a dict, or InvalidResponseError when it is not the documented shape."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidResponseError(
            SOURCE, "export page is not valid JSON (truncated?)", url=url
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("tickets"), list):
        raise InvalidResponseError(SOURCE, "export page has no 'tickets' list", url=url)
    if not isinstance(doc.get("end_of_stream"), bool):
        raise InvalidResponseError(SOURCE, "export page has no 'end_of_stream' flag", url=url)
    cursor = doc.get("after_cursor")
    if cursor is not None and not isinstance(cursor, str):
        raise InvalidResponseError(SOURCE, "export page has a non-string after_cursor", url=url)
    if not doc["end_of_stream"] and not cursor:
        raise InvalidResponseError(
            SOURCE, "export page has no after_cursor before the end of the stream", url=url
        )
    return doc


def _export_page(body: bytes) -> dict[str, Any]:
    return parse_export_page(body, EXPORT_PATH)


def _newest_ts(tickets: list[Any]) -> float | None:
    """Newest change on the page: generated_timestamp (epoch), else updated_at."""
    newest: float | None = None
    for t in tickets:
        if not isinstance(t, dict):
            continue
        ts = t.get("generated_timestamp")
        if not isinstance(ts, int | float):
            try:
                ts = datetime.fromisoformat(str(t.get("updated_at"))).timestamp()
            except ValueError:
                continue
        newest = ts if newest is None else max(newest, ts)
    return newest


# --------------------------------------------------------------------------------------------
# Connector
# --------------------------------------------------------------------------------------------


class ZendeskTickets(ApiConnector):
    """Connector: the incremental ticket export with sideloaded users, one LandedPage per page.

    State: {"cursor": <after_cursor>} — the server cursor, resumable after any committed page;
    before the first cursor exists, {"start_time": <epoch>}.
    """

    source = SOURCE
    stream = "tickets"
    kind = "tickets"
    spec = ZENDESK_TICKETS_SPEC

    def __init__(self, settings: ZendeskSettings, **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        self._export: HttpClient | None = None

    def _credentials(self) -> tuple[Any, dict[str, str]]:
        s = self.settings
        if s.auth == "oauth":
            token = resolve_secret(s.oauth_token_env, s.oauth_token_block)
            return None, {"Authorization": f"Bearer {token}"}
        token = resolve_secret(s.api_token_env, s.api_token_block)
        email = s.email or resolve_secret(s.email_env)
        return HTTPBasicAuth(f"{email}/token", str(token)), {}

    def _make(self, budget: RequestBudget | None) -> HttpClient:
        s = self.settings
        auth, headers = self._credentials()
        if self.session is None:  # one session for both clients
            self.session = make_session()
        return HttpClient(
            SOURCE,
            s.api_url(),
            headers=headers,
            auth=auth,
            retry=self.retry,
            budget=budget,
            session=self.session,
            auth_hint=s.auth_hint(),
            sleep=self.sleep,
        )

    def make_http(self) -> HttpClient:
        """For calls other than the export (check): they do not spend the export budget."""
        return self._make(None)

    @property
    def export_http(self) -> HttpClient:
        """Export calls share the 10/min budget (the one given, else the per-account one)."""
        if self._export is None:
            s = self.settings
            self._export = self._make(
                # the export limit (10/min) is per account
                self.budget or shared_budget(("zendesk", s.api_url()), s.requests_per_minute, 60.0)
            )
        return self._export

    def clients(self) -> list[HttpClient]:
        return super().clients() + ([self._export] if self._export is not None else [])

    def check(self) -> None:
        doc = self.http.get_json(CHECK_PATH)
        user = doc.get("user") if isinstance(doc, dict) else None
        # Without valid credentials Zendesk answers 200 with an anonymous user (id null).
        if not isinstance(user, dict) or user.get("id") is None:
            raise AuthError(SOURCE, "credentials were not accepted", hint=self.settings.auth_hint())
        log.info("zendesk: authenticated as user %s (role %s)", user.get("id"), user.get("role"))

    def start_time(self, window_end: datetime) -> int:
        s = self.settings
        if s.start_date is not None:
            start = datetime.combine(s.start_date, datetime.min.time(), UTC)
        else:
            start = window_end - timedelta(days=s.lookback_days)
        return int(min(start, window_end - _MIN_AGE).timestamp())

    def pages(self, state: dict[str, Any] | None, window_end: datetime) -> Iterator[LandedPage]:
        """Follow after_cursor until end_of_stream (or until a page reaches window_end: the
        export has no upper bound, so the rest is left for the next run to resume from)."""
        common = {"include": "users", "per_page": self.settings.page_size}
        guard = CursorGuard(SOURCE)
        cursor = (state or {}).get("cursor")
        if cursor:
            guard.check(cursor)
            params: dict[str, Any] = {"cursor": cursor, **common}
            resume: dict[str, Any] = {"cursor": cursor}
        else:
            start = (state or {}).get("start_time") or self.start_time(window_end)
            params = {"start_time": int(start), **common}
            resume = {"start_time": int(start)}
        client = self.export_http
        end_ts = window_end.timestamp()
        while True:
            resp = client.request("GET", EXPORT_PATH, params=params, expect=_export_page)
            doc = resp.parsed
            if doc.get("after_cursor"):
                resume = {"cursor": doc["after_cursor"]}
            tickets = doc["tickets"]
            yield LandedPage(body=resp.content, state=dict(resume), n_records=len(tickets))
            newest = _newest_ts(tickets)
            if doc["end_of_stream"] or (newest is not None and newest >= end_ts):
                return
            guard.check(doc["after_cursor"])
            params = {"cursor": doc["after_cursor"], **common}


# This vendor's entry in the registry (tasks/sources.py declare): `make generated` writes its raw
# table, raw suite, docs, union CTE, connector type and .env.example lines from it.
DECLARATION = declare(
    ZendeskTickets,
    ZendeskSettings,
    title="Zendesk",
    order=1,
    grain="grain: one row per Zendesk ticket; key: ticket_id. Merged on ticket_id, latest "
    "updated_at wins.",
    column_docs={"ticket_id": "Zendesk ticket id; unique"},
    key_type="bigint",
    id_fields=("subdomain", "base_url"),
    env_help='[connectors.zendesk]: with auth = "api_token" (default) an admin\'s email and an API '
    'token (ZENDESK_EMAIL, ZENDESK_API_TOKEN); with auth = "oauth" an OAuth access token with the '
    "read scope (ZENDESK_OAUTH_TOKEN).",
)
