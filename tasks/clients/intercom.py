"""Intercom conversations from the search API (updated_at watermark + overlap), redacted in SQL."""

from __future__ import annotations

import json
import logging
from collections.abc import Generator, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tasks.clients.base import ApiConnector
from tasks.clients.http import (
    ClientRequestError,
    CursorGuard,
    HttpClient,
    InvalidResponseError,
)
from tasks.contracts import LandedPage, SourceSpec
from tasks.secrets import resolve_secret
from tasks.sources import declare

log = logging.getLogger(__name__)

SOURCE = "intercom"
SEARCH_PATH = "/conversations/search"
CHECK_PATH = "/me"


class IntercomSettings(BaseModel):
    """Where and how to read Intercom; the token is named here and resolved at run time."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(
        "https://api.intercom.io",
        description="Regional host: https://api.eu.intercom.io, https://api.au.intercom.io.",
    )
    api_version: str = Field("2.11", description="Pinned Intercom-Version header.")
    start_date: date | None = Field(None, description="First run reads from here (UTC).")
    lookback_days: int = Field(90, ge=1, description="First run without start_date: days back.")
    overlap_minutes: float = Field(
        5.0, ge=0, description="Re-read below the watermark: '>' is exclusive, search lags."
    )
    page_size: int = Field(150, ge=1, le=150, description="Conversations per search page.")
    access_token_env: str = "INTERCOM_ACCESS_TOKEN"
    access_token_block: str | None = Field(None, description="Prefect Secret block fallback.")

    def auth_hint(self) -> str:
        where = self.access_token_env + (
            f" (or Secret block {self.access_token_block!r})" if self.access_token_block else ""
        )
        return f"set {where} to a valid Intercom access token"


# --------------------------------------------------------------------------------------------
# Record shaping (SQL run by the loader; `j` = one conversation)
# --------------------------------------------------------------------------------------------


def strip_html_sql(expr: str) -> str:
    """SQL turning HTML into text: block ends become newlines, tags go, common entities decode
    (an e-mail written as `jane&#64;x.com` must reach the redactor as `jane@x.com`)."""
    out = f"regexp_replace({expr}, '<(br|/p|/div|/li|/h[1-6]|/tr)\\b[^>]*>', chr(10), 'gi')"
    out = f"regexp_replace({out}, '<[^>]*>', '', 'g')"
    for entity, char in (
        ("&nbsp;", "' '"),
        ("&#64;", "'@'"),
        ("&#x40;", "'@'"),
        ("&lt;", "'<'"),
        ("&gt;", "'>'"),
        ("&quot;", "'\"'"),
        ("&#39;", "''''"),
        ("&amp;", "'&'"),  # last: '&amp;lt;' is the text '&lt;', not '<'
    ):
        out = f"replace({out}, '{entity}', {char})"
    return f"trim({out}, ' ' || chr(9) || chr(10) || chr(13))"


def redact_object_strings_sql(path: str) -> str:
    """SQL giving the JSON object at `path` with every top-level string value redacted."""
    return (
        "to_json(map_from_entries(list_transform("
        f"map_entries(json_transform(j -> '{path}', '\"MAP(VARCHAR, JSON)\"')), "
        "lambda e: {'key': e.key, 'value': case when json_type(e.value) = 'VARCHAR' "
        "then to_json(fl_redact(e.value ->> '$', known)) else e.value end})))"
    )


# People objects a conversation can carry: the author, the contacts and the teammates (real
# search results give only ids for the last two, but a name or e-mail there is a known term too).
_PEOPLE_NAMES = (
    "flatten([[j ->> '$.source.author.name', j ->> '$.source.author.email'], "
    "coalesce(json_extract_string(j, '$.contacts.contacts[*].name'), []), "
    "coalesce(json_extract_string(j, '$.contacts.contacts[*].email'), []), "
    "coalesce(json_extract_string(j, '$.teammates.admins[*].name'), []), "
    "coalesce(json_extract_string(j, '$.teammates.admins[*].email'), [])])"
)
_KNOWN = f"list_filter({_PEOPLE_NAMES}, lambda t: coalesce(trim(t), '') <> '')"

# The author's name and e-mail become salted keys; free text is redacted with them as known
# terms. source.body is stored as redacted plain text: stripping HTML first lets the redactor
# see names and addresses that markup or entities would otherwise split.
_PATCH = f"""json_merge_patch(
    j,
    json_object('title', to_json(fl_redact(j ->> 'title', known))),
    case when json_type(j, '$.source') = 'OBJECT' then json_object('source', json_object(
        'subject', to_json(fl_redact(j ->> '$.source.subject', known)),
        'body', to_json(fl_redact({strip_html_sql("j ->> '$.source.body'")}, known)),
        'url', to_json(fl_redact(j ->> '$.source.url', known)),
        'author', case when json_type(j, '$.source.author') = 'OBJECT' then json_object(
            'name', null,
            'email', null,
            'name_key', fl_person_key('intercom', j ->> '$.source.author.name'),
            'email_key', fl_person_key('intercom', j ->> '$.source.author.email')
        ) end
    )) else '{{}}'::json end,
    case when json_type(j, '$.conversation_rating.remark') = 'VARCHAR'
        then json_object('conversation_rating', json_object(
            'remark', to_json(fl_redact(j ->> '$.conversation_rating.remark', known))))
        else '{{}}'::json end,
    case when json_type(j, '$.custom_attributes') = 'OBJECT'
        then json_object('custom_attributes', {redact_object_strings_sql("$.custom_attributes")})
        else '{{}}'::json end,
    case when json_type(j, '$.contacts.contacts') = 'ARRAY'
        then json_object('contacts', json_object('contacts', to_json(list_transform(
            json_extract(j, '$.contacts.contacts[*]'),
            lambda c: json_merge_patch(c, json_object(
                'external_id', fl_person_key('intercom', c ->> 'external_id'),
                'name', null, 'email', null))))))
        else '{{}}'::json end,
    case when json_type(j, '$.teammates.admins') = 'ARRAY'
        then json_object('teammates', json_object('admins', to_json(list_transform(
            json_extract(j, '$.teammates.admins[*]'),
            lambda a: json_merge_patch(a, '{{"name": null, "email": null}}'::json)))))
        else '{{}}'::json end
)"""

RECORD_SQL = f"list_transform([{_KNOWN}], lambda known: {_PATCH})[1]"


def _epoch_iso(expr: str) -> str:
    return f"strftime(make_timestamp(try_cast({expr} as bigint) * 1000000), '%Y-%m-%dT%H:%M:%SZ')"


INTERCOM_CONVERSATIONS = SourceSpec(
    source=SOURCE,
    stream="conversations",
    raw_table="raw.intercom__conversations",
    key_column="conversation_id",
    key_expr="nullif(trim(j ->> 'id'), '')",
    # updated_at is epoch seconds; the loader compares cursors as timestamps, so give it ISO.
    cursor_expr=_epoch_iso("j ->> 'updated_at'"),
    layout="$.conversations[*]",
    record_sql=RECORD_SQL,
)


# --------------------------------------------------------------------------------------------
# Requests and pages (pure)
# --------------------------------------------------------------------------------------------


def search_body(
    after: int, before: int, per_page: int, starting_after: str | None = None
) -> dict[str, Any]:
    """updated_at in (after, before): both operators are exclusive."""
    pagination: dict[str, Any] = {"per_page": per_page}
    if starting_after:
        pagination["starting_after"] = starting_after
    return {
        "query": {
            "operator": "AND",
            "value": [
                {"field": "updated_at", "operator": ">", "value": after},
                {"field": "updated_at", "operator": "<", "value": before},
            ],
        },
        "pagination": pagination,
        "sort": {"field": "updated_at", "order": "ascending"},
    }


def parse_search_page(body: bytes, url: str | None = None) -> tuple[list[Any], str | None]:
    """(conversations, next starting_after or None); InvalidResponseError on any other shape."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidResponseError(
            SOURCE, "search page is not valid JSON (truncated?)", url=url
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("conversations"), list):
        raise InvalidResponseError(SOURCE, "search page has no 'conversations' list", url=url)
    pages = doc.get("pages")
    if pages is None:
        return doc["conversations"], None
    if not isinstance(pages, dict):
        raise InvalidResponseError(SOURCE, "search page has a malformed 'pages' object", url=url)
    nxt = pages.get("next")
    if nxt is None:
        return doc["conversations"], None
    cursor = nxt.get("starting_after") if isinstance(nxt, dict) else None
    if not isinstance(cursor, str) or not cursor:
        raise InvalidResponseError(SOURCE, "pages.next has no starting_after cursor", url=url)
    return doc["conversations"], cursor


def _search_page(body: bytes) -> tuple[list[Any], str | None]:
    return parse_search_page(body, SEARCH_PATH)


def _newest(conversations: list[Any]) -> int | None:
    stamps = [
        c["updated_at"]
        for c in conversations
        if isinstance(c, dict) and isinstance(c.get("updated_at"), int)
    ]
    return max(stamps) if stamps else None


# --------------------------------------------------------------------------------------------
# Connector
# --------------------------------------------------------------------------------------------


class IntercomConversations(ApiConnector):
    """Connector: conversations with updated_at in (watermark - overlap, window_end), ascending.

    State: {"updated_at": W} — W is the newest updated_at of a completed query (epoch seconds).
    Mid-query it also holds the paging cursor with the bounds of the query it belongs to and the
    newest updated_at seen so far ({"starting_after", "query_after", "query_before",
    "seen_max"}), so a crashed run resumes that query, and W only moves once it completes.
    """

    source = SOURCE
    stream = "conversations"
    kind = "tickets"
    spec = INTERCOM_CONVERSATIONS

    def make_http(self) -> HttpClient:
        s = self.settings
        token = resolve_secret(s.access_token_env, s.access_token_block)
        headers = {
            "Authorization": f"Bearer {token}",
            "Intercom-Version": s.api_version,
            "Accept": "application/json",
        }
        return self.new_http(s.base_url, headers=headers, auth_hint=s.auth_hint())

    def check(self) -> None:
        me = self.http.get_json(CHECK_PATH)
        if not isinstance(me, dict) or me.get("id") is None:
            raise InvalidResponseError(SOURCE, "GET /me returned no admin id", url=CHECK_PATH)
        log.info("intercom: authenticated as admin %s", me.get("id"))

    def start_epoch(self, window_end: datetime) -> int:
        s = self.settings
        if s.start_date is not None:
            start = datetime.combine(s.start_date, datetime.min.time(), UTC)
        else:
            start = window_end - timedelta(days=s.lookback_days)
        return int(start.timestamp())

    def pages(self, state: dict[str, Any] | None, window_end: datetime) -> Iterator[LandedPage]:
        state = state or {}
        before = int(window_end.timestamp())
        watermark: int = int(state.get("updated_at") or self.start_epoch(window_end))
        if state.get("starting_after"):
            try:
                watermark = yield from self._search(
                    int(state["query_after"]),
                    int(state["query_before"]),
                    watermark,
                    seen=int(state.get("seen_max") or watermark),
                    starting_after=str(state["starting_after"]),
                )
            except ClientRequestError as exc:
                # An expired cursor: the watermark query below re-reads what it would have given.
                log.warning("intercom: stored cursor rejected (%s); restarting from watermark", exc)
        overlap = int(self.settings.overlap_minutes * 60)
        yield from self._search(max(watermark - overlap, 0), before, watermark, seen=watermark)

    def _search(
        self,
        after: int,
        before: int,
        watermark: int,
        *,
        seen: int,
        starting_after: str | None = None,
    ) -> Generator[LandedPage, None, int]:
        """Page through one query; returns the watermark once its last page is landed.

        Mid-query the watermark stays where the query started (the newest seen so far is kept
        apart): if the stored cursor is ever rejected, the rerun from the watermark cannot skip
        a conversation the interrupted query had not reached, whatever order the API used.
        """
        client = self.http
        guard = CursorGuard(SOURCE)
        cursor = starting_after
        while True:
            if cursor:
                guard.check(cursor)
            body = search_body(after, before, self.settings.page_size, cursor)
            # The search is a read: a cut or garbled page is retried like a 5xx.
            resp = client.request("POST", SEARCH_PATH, json=body, read=True, expect=_search_page)
            conversations, cursor = resp.parsed
            seen = max(seen, _newest(conversations) or seen)
            if cursor:
                state: dict[str, Any] = {
                    "updated_at": watermark,
                    "seen_max": seen,
                    "starting_after": cursor,
                    "query_after": after,
                    "query_before": before,
                }
            else:
                state = {"updated_at": max(watermark, seen)}
            yield LandedPage(body=resp.content, state=state, n_records=len(conversations))
            if not cursor:
                return max(watermark, seen)


# This vendor's entry in the registry (tasks/sources.py declare): `make generated` writes its raw
# table, raw suite, docs, union CTE, connector type and .env.example lines from it.
DECLARATION = declare(
    IntercomConversations,
    IntercomSettings,
    title="Intercom",
    order=2,
    grain="grain: one row per Intercom conversation; key: conversation_id. Merged on "
    "conversation_id, latest updated_at wins. Text redacted and author replaced by salted keys "
    "at landing.",
    column_docs={"conversation_id": "Intercom conversation id; unique"},
    env_help="[connectors.intercom]: the access token of a private app in your workspace "
    "(Developer Hub).",
)
