"""PostHog usage through the HogQL query API.

mode "events": raw events, keyset pages on (timestamp, uuid), with lookback.
mode "daily_aggregates": PostHog's ClickHouse groups each UTC day into one row per
(event, distinct_id, $pathname, $groups.company) with an event count; a day is re-pulled whole
within the lookback and its rows replace the earlier pull's (merge on a key of day and group).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, NamedTuple

import duckdb
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from tasks.clients.base import ApiConnector, shared_budget
from tasks.clients.http import (
    CursorGuard,
    HttpClient,
    InvalidResponseError,
    PaginationLoopError,
)
from tasks.contracts import POSTHOG_EVENTS, LandedPage, SourceSpec
from tasks.secrets import resolve_secret
from tasks.sources import declare

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - Prefect installs it
    _orjson = None

log = logging.getLogger(__name__)

COLUMNS = ["uuid", "event", "distinct_id", "timestamp", "properties"]
# daily_aggregates: one row per UTC day x (event, distinct_id, $pathname, $groups.company) —
# exactly what the catalog maps on and the rollups count distinct users over.
DAILY_COLUMNS = [
    "day",
    "event",
    "distinct_id",
    "pathname",
    "company",
    "n_events",
    "first_at",
    "last_at",
    "pulled_at",
]
DAILY_KEY_PREFIX = "daily:"
# HogQL caps a query at 50k rows; beyond that PostHog silently truncates.
MAX_PAGE_SIZE = 50_000
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class PostHogSettings(BaseModel):
    """PostHog Cloud US by default; EU Cloud is https://eu.posthog.com, self-hosted its own URL."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["events", "daily_aggregates"] = Field(
        "events",
        description="events: every raw event; daily_aggregates: PostHog counts events per UTC "
        "day x user x event x path x company, so only those rows travel (README: Usage events).",
    )
    base_url: str = Field(
        "https://us.posthog.com",
        description="US Cloud; EU Cloud: https://eu.posthog.com; self-hosted: the instance URL.",
    )
    project_id: str = Field(..., min_length=1, description="Project id (Settings -> Project).")
    start_date: date | None = Field(
        None, description="First run starts here (UTC); None = window end minus initial_days."
    )
    initial_days: int = Field(30, ge=1, le=3650)
    lookback_days: float = Field(
        2.0,
        ge=0,
        le=30,
        description="Re-read this much before the watermark each run: `timestamp` is client "
        "time, so late events land behind it. daily_aggregates: this many whole days before "
        "the last day pulled (rounded up) are pulled again.",
    )
    slice_hours: int = Field(
        24, ge=1, le=24 * 31, description="Each query scans at most this span of timestamps."
    )
    page_size: int = Field(
        10_000, ge=1, le=MAX_PAGE_SIZE, description="Rows per query (events or daily groups)."
    )
    queries_per_hour: int = Field(120, ge=1, description="Query API limit per personal key.")
    api_key_env: str = Field(
        "POSTHOG_PERSONAL_API_KEY", description="Env var holding a personal API key (query:read)."
    )
    api_key_block: str | None = Field(None, description="Prefect Secret block, if no env var.")
    read_timeout_s: float = Field(180.0, gt=0)


# A HogQL result row (array in COLUMNS order) as a PostHog event-export line object. HogQL
# returns `properties` as a JSON string; `->>` also yields the text of an object, so both forms
# parse to the same JSON object.
RECORD_SQL = (
    "json_object('uuid', j ->> '$[0]', 'event', j ->> '$[1]', "
    "'distinct_id', j ->> '$[2]', 'timestamp', j ->> '$[3]', "
    "'properties', case when json_valid(j ->> '$[4]') then (j ->> '$[4]')::json end)"
)

# Same raw table, typed fields and key as the file exports, so API and file loads merge on the
# event uuid: the loader reshapes each result row with record_sql, then reads the fields.
# RECORD_FIELDS gives the same typed fields without building and re-parsing that object: one
# multi-path extract per row (a JSON null field of the object read back as the JSON value null).
RECORD_FIELDS = (
    "json_extract_string(j, ['$[0]', '$[1]', '$[2]', '$[3]', '$[4]'])",
    (
        "_r[1]",
        "_r[2]",
        "_r[3]",
        "coalesce(to_json(_r[4]), 'null')",
        "case when json_valid(_r[5]) then json(_r[5]) else 'null' end",
    ),
)
# Each result row read straight as text items (VARCHAR[]) is what RECORD_FIELDS' extract gives
# (a short row gives a shorter list, whose missing items read as NULL alike): pages are parsed
# once and land straight in raw; a row that is not an array fails the read and the batch takes
# the staging path.
POSTHOG_QUERY_EVENTS: SourceSpec = replace(
    POSTHOG_EVENTS,
    layout="$.results[*]",
    record_sql=RECORD_SQL,
    record_fields=RECORD_FIELDS,
    record_type="VARCHAR[]",
)

# daily_aggregates: a HogQL result row (array in DAILY_COLUMNS order) as an event-shaped record
# of the same raw table. Key: 'daily:<UTC day>:' || md5 of the group, so a re-pull of the day
# merges onto the same rows; the cursor is the pull time (newest pull wins). The count, the
# day, the last event time and the pull time ride in properties._daily; $pathname and
# $groups.company sit where the event staging reads them.
DAILY_RECORD_SQL = (
    "json_object('uuid', '" + DAILY_KEY_PREFIX + "' || (j ->> '$[0]') || ':' || "
    "md5(json_array(j -> '$[1]', j -> '$[2]', j -> '$[3]', j -> '$[4]')::varchar), "
    "'event', j ->> '$[1]', 'distinct_id', j ->> '$[2]', 'timestamp', j ->> '$[6]', "
    "'properties', json_object('$pathname', j ->> '$[3]', "
    "'$groups', json_object('company', j ->> '$[4]'), "
    "'_daily', json_object('day', j ->> '$[0]', 'n_events', j -> '$[5]', "
    "'last_at', j ->> '$[7]', 'pulled_at', j ->> '$[8]')))"
)
POSTHOG_QUERY_DAILY: SourceSpec = replace(
    POSTHOG_EVENTS,
    stream="event_days",
    layout="$.results[*]",
    record_sql=DAILY_RECORD_SQL,
    cursor_expr="properties ->> '$._daily.pulled_at'",
    repeats="newest",
)


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _parse_ts(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"timestamp {value!r} is not a string")
    return _utc(datetime.fromisoformat(value))


def _iso(dt: datetime) -> str:
    return _utc(dt).isoformat(timespec="microseconds")


def _hogql_ts(dt: datetime) -> str:
    return f"toDateTime64('{_utc(dt).strftime('%Y-%m-%d %H:%M:%S.%f')}', 6, 'UTC')"


def build_query(
    lo: datetime, hi: datetime, page_size: int, after: tuple[datetime, str] | None = None
) -> str:
    """HogQL for one keyset page of events with lo <= timestamp < hi, after `after`.

    The keyset `(timestamp, uuid) > (T, U)` is spelled out as an OR so it compares UUIDs as
    UUIDs (ClickHouse's UUID order is not string order) and keeps a plain `timestamp >=` bound
    for partition pruning.
    """
    where = [f"timestamp >= {_hogql_ts(lo if after is None else max(lo, after[0]))}"]
    where.append(f"timestamp < {_hogql_ts(hi)}")
    if after is not None:
        t, u = _hogql_ts(after[0]), after[1]
        where.append(f"(timestamp > {t} or (timestamp = {t} and uuid > toUUID('{u}')))")
    return (
        f"select {', '.join(COLUMNS)} from events where {' and '.join(where)} "
        f"order by timestamp, uuid limit {int(page_size)}"
    )


def build_daily_query(
    day: date, hi: datetime, pulled_at: datetime, page_size: int, offset: int = 0
) -> str:
    """HogQL for one page of a UTC day's groups: events with day 00:00 <= timestamp < hi.

    Ordered by the whole group key, so LIMIT/OFFSET pages are stable; a group that appears
    between two pages repeats (the merge absorbs it), and the day is pulled again next run.
    The day and the pull time come back as constant columns, so each row carries them.
    """
    lo = datetime.combine(day, datetime.min.time(), UTC)
    group = "event, distinct_id, pathname, company"
    return (
        f"select '{day.isoformat()}' as day, event, distinct_id, "
        "properties.$pathname as pathname, properties.$groups.company as company, "
        "count() as n_events, min(timestamp) as first_at, max(timestamp) as last_at, "
        f"'{_iso(pulled_at)}' as pulled_at from events "
        f"where timestamp >= {_hogql_ts(lo)} and timestamp < {_hogql_ts(hi)} "
        f"group by {group} order by {group} limit {int(page_size)} offset {int(offset)}"
    )


class Parsed(NamedTuple):
    """What the connector needs of a query response: the keyset reads only its ends."""

    n: int  # result rows
    first: list[Any] | None  # the first result row (None: no rows)
    last: list[Any] | None  # the last result row
    more: bool | None  # hasMore, when the response says
    strict: bool  # the loader's JSON reader found `results` a list (LandedPage.shape_checked)


def parse_page(body: bytes) -> Parsed:
    """The ends, row count and `hasMore` of an events query response; anything else is invalid."""
    return _parse(body, COLUMNS)


def parse_daily_page(body: bytes) -> Parsed:
    """The same of a daily-aggregate query response."""
    return _parse(body, DAILY_COLUMNS)


def _check_daily_rows(parsed: Parsed, day: date) -> Parsed:
    """The first and last rows must be the queried day's: a server that ignored the bounds
    would otherwise land another day's counts under this day's keys (invalid: retried)."""
    for row in (parsed.first, parsed.last):
        if row is not None and row[0] != day.isoformat():
            raise InvalidResponseError(
                "posthog", f"daily row for {row[0]!r} in the answer for {day.isoformat()}"
            )
    return parsed


# A page is read first by DuckDB's JSON reader, the one the loader lands it with: it runs
# without the GIL (next to the batch DuckDB is landing) and builds no Python object per row —
# about half of what parsing a 50k-row page into Python objects costs. One in-memory database
# for the process; each read takes its own cursor, so fetch threads do not share one.
_READER: duckdb.DuckDBPyConnection | None = None
_READER_LOCK = threading.Lock()
_SUMMARY_SQL = """
    select json_type(j, ['$', '$.results']),
           json_array_length(j, '$.results'),
           json_extract(j, ['$.hasMore', '$.columns', '$.results[0]', '$.results[#-1]'])
    from page
"""


def _summary(body: bytes) -> dict[str, Any] | None:
    """The response's `hasMore`, `columns`, row count (`n`) and end rows, read by DuckDB; None
    when DuckDB does not read it as a JSON object with a `results` list (the caller then parses
    it in Python, which names the problem)."""
    global _READER
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return None
    with _READER_LOCK:
        if _READER is None:
            _READER = duckdb.connect(config={"threads": 1})
        cur = _READER.cursor()
    try:
        cur.register("page", pa.table({"j": pa.array([text], pa.large_string())}))
        row = cur.execute(_SUMMARY_SQL).fetchone()
    except duckdb.Error:
        return None
    finally:
        cur.close()
    (top, results), n, parts = row
    if top != "OBJECT" or results != "ARRAY":
        return None
    try:
        more, columns, first, last = (None if p is None else json.loads(p) for p in parts)
    except ValueError:
        return None
    doc = {"hasMore": more, "n": n, "first": first, "last": last}
    if columns is not None:
        doc["columns"] = columns
    return doc


def _loads(body: bytes) -> Any:
    """json.loads, through orjson when it is installed (a dependency of Prefect's). orjson is
    stricter (no BOM, NaN, lone surrogates, huge integers, only UTF-8); what it refuses,
    json.loads decides, so the same bodies pass or fail."""
    if _orjson is not None:
        try:
            return _orjson.loads(body)
        except _orjson.JSONDecodeError:
            pass
    return json.loads(body)


def _parse(body: bytes, columns: list[str]) -> Parsed:
    doc = _summary(body)
    strict = doc is not None
    if doc is None:
        # Not what DuckDB reads as a page: parsed in Python, which says what is wrong with it
        # (a body it accepts still lands through the loader's own page check).
        try:
            full = _loads(body)
        except ValueError as exc:  # JSONDecodeError, or UnicodeDecodeError: not UTF-8
            where = (
                (exc.msg, exc.pos)
                if isinstance(exc, json.JSONDecodeError)
                else ("not UTF-8", getattr(exc, "start", 0))
            )
            raise InvalidResponseError(
                "posthog", f"query response is not valid JSON ({where[0]} at byte {where[1]})"
            ) from None
        if not isinstance(full, dict) or not isinstance(full.get("results"), list):
            raise InvalidResponseError("posthog", "query response has no `results` list")
        rows = full["results"]
        doc = {k: full[k] for k in ("hasMore", "columns") if k in full}
        doc.update(n=len(rows), first=rows[0] if rows else None, last=rows[-1] if rows else None)
    if "columns" in doc and doc["columns"] != columns:
        raise InvalidResponseError("posthog", f"unexpected result columns {doc['columns']!r}")
    n = doc["n"]
    # The loader checks every row; here only the ones the keyset depends on.
    ends = [doc["first"], doc["last"]] if n else []
    for row in ends:
        if not isinstance(row, list) or len(row) != len(columns):
            raise InvalidResponseError(
                "posthog", f"query result row is not a {len(columns)}-column array"
            )
    more = doc.get("hasMore")
    first, last = (doc["first"], doc["last"]) if n else (None, None)
    return Parsed(n, first, last, more if isinstance(more, bool) else None, strict)


class PostHogConnector(ApiConnector):
    """Events of one PostHog project, landed as query-API response bodies."""

    source = "posthog"
    stream = "events"
    kind = "usage"
    spec = POSTHOG_QUERY_EVENTS

    def __init__(self, settings: PostHogSettings, **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        # Each mode keeps its own cursor (ops.sync_state stream); both land in raw.posthog__events.
        if settings.mode == "daily_aggregates":
            self.stream, self.spec = "event_days", POSTHOG_QUERY_DAILY

    def make_http(self) -> HttpClient:
        s = self.settings
        key = resolve_secret(s.api_key_env, s.api_key_block)
        hint = f"set {s.api_key_env}" + (
            f" (or the Prefect Secret block {s.api_key_block!r})" if s.api_key_block else ""
        )
        return self.new_http(
            s.base_url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=(10.0, s.read_timeout_s),
            # the query limit is per personal key
            budget=shared_budget(
                ("posthog", s.base_url.rstrip("/"), s.api_key_env), s.queries_per_hour, 3600.0
            ),
            auth_hint=f"{hint} to a personal API key with query:read access to project "
            f"{s.project_id}",
        )

    def check(self) -> None:
        self.http.get_json(f"/api/projects/{self.settings.project_id}/")

    def start_at(self, state: dict[str, Any] | None, window_end: datetime) -> datetime:
        """max(watermark - lookback, configured start): late events behind the watermark."""
        s = self.settings
        end = _utc(window_end)
        if s.start_date is not None:
            configured = datetime.combine(s.start_date, datetime.min.time(), UTC)
        else:
            configured = end - timedelta(days=s.initial_days)
        mark = (state or {}).get("watermark") or (state or {}).get("timestamp")
        if not mark:
            return configured
        return max(_parse_ts(mark) - timedelta(days=s.lookback_days), configured)

    def pages(self, state: dict[str, Any] | None, window_end: datetime) -> Iterator[LandedPage]:
        if self.settings.mode == "daily_aggregates":
            yield from self._daily_pages(state, window_end)
            return
        s = self.settings
        end = _utc(window_end)
        lo = self.start_at(state, end)
        mark = (state or {}).get("watermark") or (state or {}).get("timestamp")
        watermark = _parse_ts(mark) if mark else None
        path = f"/api/projects/{s.project_id}/query/"
        guard = CursorGuard(self.source)
        n_pages = n_rows = 0
        while lo < end:
            hi = min(lo + timedelta(hours=s.slice_hours), end)
            after: tuple[datetime, str] | None = None
            while True:
                query = build_query(lo, hi, s.page_size, after)
                # No `refresh` mode: every query text is unique (exact bounds), so never cached.
                resp = self.http.request(
                    "POST",
                    path,
                    json={"query": {"kind": "HogQLQuery", "query": query}},
                    read=True,
                    expect=parse_page,
                )
                n, _, last, more, strict = resp.parsed
                if not n:
                    break
                ts, uuid = self._keyset(last, lo, hi, after)
                guard.check((ts, uuid))
                watermark = ts if watermark is None else max(watermark, ts)
                state_out = {"timestamp": _iso(ts), "uuid": uuid, "watermark": _iso(watermark)}
                n_pages, n_rows = n_pages + 1, n_rows + n
                yield LandedPage(
                    body=resp.content, state=state_out, n_records=n, shape_checked=strict
                )
                if not (more if more is not None else n >= s.page_size):
                    break
                after = (ts, uuid)
            lo = hi
        log.info("posthog: %d page(s), %d event row(s) up to %s", n_pages, n_rows, _iso(end))

    def _keyset(
        self,
        row: list[Any],
        lo: datetime,
        hi: datetime,
        after: tuple[datetime, str] | None,
    ) -> tuple[datetime, str]:
        uuid, raw_ts = row[0], row[3]
        try:
            ts = _parse_ts(raw_ts)
        except ValueError:
            raise InvalidResponseError(
                self.source, f"last row has an unreadable timestamp {raw_ts!r}"
            ) from None
        # The uuid goes back into the next query's text: accept only a real UUID.
        if not isinstance(uuid, str) or not _UUID.match(uuid):
            raise InvalidResponseError(self.source, f"last row has an invalid uuid {uuid!r}")
        if not lo <= ts < hi:
            raise InvalidResponseError(
                self.source, f"row at {raw_ts} is outside the queried window [{lo}, {hi})"
            )
        if after is not None and ts < after[0]:
            raise PaginationLoopError(self.source, f"keyset went backwards to {raw_ts}")
        return ts, uuid

    # -- daily_aggregates ----------------------------------------------------------------------

    def first_day(self, state: dict[str, Any] | None, window_end: datetime) -> tuple[date, int]:
        """(day, offset) to start from: an interrupted day resumes at its next page; otherwise
        the last day pulled minus ceil(lookback_days) whole days, never before the configured
        start. The last day is always pulled again: it was pulled while still going on."""
        s = self.settings
        end = _utc(window_end)
        if s.start_date is not None:
            configured = s.start_date
        else:
            configured = (end - timedelta(days=s.initial_days)).date()
        last = (state or {}).get("day")
        if not last:
            return configured, 0
        try:
            last_day = date.fromisoformat(last)
        except (TypeError, ValueError):
            return configured, 0
        offset = (state or {}).get("offset")
        if isinstance(offset, int) and offset > 0:
            return max(last_day, configured), offset if last_day >= configured else 0
        back = int(-(-s.lookback_days // 1))  # ceil
        return max(last_day - timedelta(days=back), configured), 0

    def _daily_pages(
        self, state: dict[str, Any] | None, window_end: datetime
    ) -> Iterator[LandedPage]:
        """One query per UTC day (more when a day has over page_size groups), every day up to
        window_end; the state after each page is the day and the offset of its next page
        (None once the day is complete). Empty days yield an empty page, so the cursor moves."""
        s = self.settings
        end = _utc(window_end)
        day, offset = self.first_day(state, end)
        path = f"/api/projects/{s.project_id}/query/"
        n_pages = n_rows = 0
        while datetime.combine(day, datetime.min.time(), UTC) < end:
            hi = min(datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC), end)
            while True:
                query = build_daily_query(day, hi, end, s.page_size, offset)
                resp = self.http.request(
                    "POST",
                    path,
                    json={"query": {"kind": "HogQLQuery", "query": query}},
                    read=True,
                    expect=lambda body, day=day: _check_daily_rows(parse_daily_page(body), day),
                )
                n, _, _, more, strict = resp.parsed
                more = more if more is not None else n >= s.page_size
                more = more and n > 0
                offset += n
                state_out = {"day": day.isoformat(), "offset": offset if more else None}
                n_pages, n_rows = n_pages + 1, n_rows + n
                yield LandedPage(
                    body=resp.content, state=state_out, n_records=n, shape_checked=strict
                )
                if not more:
                    break
            day, offset = day + timedelta(days=1), 0
        log.info("posthog: %d daily page(s), %d group row(s) up to %s", n_pages, n_rows, _iso(end))


# This vendor's entry in the registry (tasks/sources.py declare): `make generated` writes its raw
# table, raw suite, docs, union CTE, connector type and .env.example lines from it.
DECLARATION = declare(
    PostHogConnector,
    PostHogSettings,
    title="PostHog",
    order=1,
    grain="grain: one row per PostHog event; key: event_id (uuid). The record's top-level fields "
    "as typed columns (the high-volume path); merged on event_id, a changed record wins.",
    column_docs={
        "event_id": "PostHog event uuid; unique",
        "event": "event name as sent",
        "distinct_id": "PostHog distinct_id of the user, as sent",
        "event_time": "event timestamp as delivered (JSON: text, else a wrong type kept for the "
        "suite)",
        "properties": "event properties as JSON",
    },
    event_day_sql="timezone('UTC', try_cast(event_time ->> '$' as timestamptz))::date",
    id_fields=("base_url", "project_id"),
    env_help="[connectors.posthog]: a personal API key (phx_...) with the query:read and "
    "project:read scopes.",
)
