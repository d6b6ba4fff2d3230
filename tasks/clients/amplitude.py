"""Amplitude events through the Export API: hourly zips of gzipped JSON lines, by upload hour."""

from __future__ import annotations

import functools
import gzip
import io
import logging
import re
import zipfile
import zlib
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tasks.clients.base import ApiConnector
from tasks.clients.http import (
    HttpClient,
    InvalidResponseError,
)
from tasks.contracts import LandedPage, SourceSpec
from tasks.secrets import resolve_secret
from tasks.sources import declare

log = logging.getLogger(__name__)

EXPORT_PATH = "/api/2/export"
HOUR_FORMAT = "%Y%m%dT%H"
# Export members are named <project>/<project>_<YYYY-MM-DD>_<H>#<part>.json.gz (upload hour, UTC).
_MEMBER = re.compile(r"_(\d{4}-\d{2}-\d{2})_(\d{1,2})#(\d+)\.json(\.gz)?$")


class AmplitudeSettings(BaseModel):
    """Amplitude US by default; EU residency projects use https://analytics.eu.amplitude.com."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(
        "https://amplitude.com", description="US; EU data residency: analytics.eu.amplitude.com."
    )
    start_date: date | None = Field(
        None, description="First run starts at this UTC day; None = window end minus initial_days."
    )
    initial_days: int = Field(30, ge=1, le=3650)
    hours_per_request: int = Field(
        24, ge=1, le=24 * 7, description="Hours per export call (an export may not exceed 4 GB)."
    )
    availability_lag_hours: int = Field(
        2, ge=0, le=48, description="An upload hour is complete this long after it ends."
    )
    api_key_env: str = "AMPLITUDE_API_KEY"
    secret_key_env: str = "AMPLITUDE_SECRET_KEY"
    api_key_block: str | None = Field(None, description="Prefect Secret block, if no env var.")
    secret_key_block: str | None = Field(None, description="Prefect Secret block, if no env var.")
    read_timeout_s: float = Field(600.0, gt=0)


AMPLITUDE_EVENTS = SourceSpec(
    source="amplitude",
    stream="events",
    raw_table="raw.amplitude__events",
    key_column="event_id",
    # `uuid` is Amplitude's event id; `$insert_id` (the sender's dedupe id) only when it is absent.
    key_expr=(
        "coalesce(nullif(trim(j ->> 'uuid'), ''), "
        "'insert_id:' || nullif(trim(json_extract_string(j, '$.\"$insert_id\"')), ''))"
    ),
    # Export times are UTC without an offset; make that explicit for the timestamptz casts.
    cursor_expr="timezone('UTC', try_cast(j ->> 'server_upload_time' as timestamp))::varchar",
    repeats="first",
    layout="lines",
)


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _floor_hour(dt: datetime) -> datetime:
    return _utc(dt).replace(minute=0, second=0, microsecond=0)


def _fmt(hour: datetime) -> str:
    return hour.strftime(HOUR_FORMAT)


def _parse_hour(value: str) -> datetime:
    return datetime.strptime(value, HOUR_FORMAT).replace(tzinfo=UTC)


def ndjson_by_hour(archive: bytes, fallback_hour: datetime) -> list[tuple[datetime, bytes, int]]:
    """(upload hour, NDJSON bytes, line count) per hour in an export zip, oldest first.

    Unzip and gunzip only: records stay bytes. Members with an unknown name go last, under
    `fallback_hour` (the request's last hour). Broken zips/gzips raise InvalidResponseError.
    """
    if not archive:
        return []
    try:
        with zipfile.ZipFile(io.BytesIO(archive)) as zf:
            keyed = []
            for info in zf.infolist():
                if info.is_dir():
                    continue
                m = _MEMBER.search(info.filename)
                if m:
                    hour = datetime.fromisoformat(m[1]).replace(hour=int(m[2]), tzinfo=UTC)
                    keyed.append(((hour, int(m[3]), info.filename), info, bool(m[4])))
                else:
                    gz = info.filename.endswith(".gz")
                    keyed.append(((fallback_hour, 1 << 30, info.filename), info, gz))
            keyed.sort(key=lambda k: k[0])
            out: list[tuple[datetime, bytes, int]] = []
            parts: list[bytes] = []
            current: datetime | None = None
            for (hour, _, _), info, gz in keyed:
                if current is not None and hour != current:
                    out.append(_joined(current, parts))
                    parts = []
                current = hour
                data = zf.read(info)  # checks the member CRC
                data = gzip.decompress(data) if gz else data
                if data and not data.endswith(b"\n"):
                    data += b"\n"
                parts.append(data)
            if current is not None:
                out.append(_joined(current, parts))
    except (zipfile.BadZipFile, gzip.BadGzipFile, EOFError, zlib.error, ValueError) as exc:
        raise InvalidResponseError(
            "amplitude", f"export archive is corrupt or truncated ({type(exc).__name__}: {exc})"
        ) from None
    return [g for g in out if g[2] > 0]


def _joined(hour: datetime, parts: list[bytes]) -> tuple[datetime, bytes, int]:
    body = b"".join(parts)
    return hour, body, body.count(b"\n")


class AmplitudeConnector(ApiConnector):
    """Events of one Amplitude project (the key pair selects it), by upload hour."""

    source = "amplitude"
    stream = "events"
    kind = "usage"
    spec = AMPLITUDE_EVENTS

    def make_http(self) -> HttpClient:
        s = self.settings
        key = resolve_secret(s.api_key_env, s.api_key_block)
        secret = resolve_secret(s.secret_key_env, s.secret_key_block)
        return self.new_http(
            s.base_url,
            auth=(key, secret),
            timeout=(10.0, s.read_timeout_s),
            auth_hint=f"set {s.api_key_env} and {s.secret_key_env} to the project's API "
            f"key and secret key (and check that {s.base_url} is the project's region)",
        )

    def last_complete_hour(self, window_end: datetime) -> datetime:
        """Hour H is complete once H + 1h + lag has passed; never ask for anything newer."""
        lag = timedelta(hours=self.settings.availability_lag_hours)
        return _floor_hour(_utc(window_end) - lag) - timedelta(hours=1)

    def first_hour(self, state: dict[str, Any] | None, window_end: datetime) -> datetime:
        if state and state.get("last_hour"):
            return _parse_hour(state["last_hour"]) + timedelta(hours=1)
        s = self.settings
        if s.start_date is not None:
            return datetime(s.start_date.year, s.start_date.month, s.start_date.day, tzinfo=UTC)
        return _floor_hour(_utc(window_end) - timedelta(days=s.initial_days))

    def check(self) -> None:
        # One hour that is surely complete; 404 (no data) still proves the keys. Not downloaded.
        hour = _fmt(self.last_complete_hour(datetime.now(UTC)))
        resp = self.http.request(
            "GET",
            EXPORT_PATH,
            params={"start": hour, "end": hour},
            ok_statuses=(200, 404),
            stream=True,
        )
        resp.close()

    def pages(self, state: dict[str, Any] | None, window_end: datetime) -> Iterator[LandedPage]:
        """One page per upload hour with data; the state is the last hour fully landed.

        A request range without data yields one empty page, so the state moves past it.
        """
        hour = self.first_hour(state, window_end)
        last = self.last_complete_hour(window_end)
        step = timedelta(hours=self.settings.hours_per_request)
        n_records = 0
        while hour <= last:
            chunk_last = min(hour + step - timedelta(hours=1), last)
            resp = self.http.request(
                "GET",
                EXPORT_PATH,
                params={"start": _fmt(hour), "end": _fmt(chunk_last)},
                ok_statuses=(200, 404),  # 404 = no data in the range
                # a cut or corrupt zip is retried, then fails loudly (InvalidBodyError)
                expect=functools.partial(ndjson_by_hour, fallback_hour=chunk_last),
            )
            groups = [] if resp.status_code == 404 else resp.parsed
            if not groups:
                log.info("amplitude: no events uploaded %s..%s", _fmt(hour), _fmt(chunk_last))
                yield LandedPage(body=b"", state={"last_hour": _fmt(chunk_last)}, n_records=0)
            for i, (group_hour, body, n) in enumerate(groups):
                # Members are sorted by hour, so every hour up to this one is complete here;
                # the last group completes the whole requested range.
                done = chunk_last if i == len(groups) - 1 else min(group_hour, chunk_last)
                n_records += n
                yield LandedPage(body=body, state={"last_hour": _fmt(done)}, n_records=n)
            hour = chunk_last + timedelta(hours=1)
        log.info("amplitude: %d event line(s) up to upload hour %s", n_records, _fmt(last))


# This vendor's entry in the registry (tasks/sources.py declare): `make generated` writes its raw
# table, raw suite, docs, union CTE, connector type and .env.example lines from it.
DECLARATION = declare(
    AmplitudeConnector,
    AmplitudeSettings,
    title="Amplitude",
    order=2,
    grain="grain: one row per Amplitude event; key: event_id (uuid, else 'insert_id:' || "
    "$insert_id). Merged on event_id; cursor_at is the upload time.",
    column_docs={"event_id": "Amplitude event uuid, else 'insert_id:' || $insert_id; unique"},
    # event_time carries no offset (UTC); one that does is read with it
    event_day_sql=r"""(case
            when regexp_matches(payload ->> 'event_time', '(Z|[+-]\d{2}(:?\d{2})?)$')
                then timezone('UTC', try_cast(payload ->> 'event_time' as timestamptz))
            else try_cast(payload ->> 'event_time' as timestamp)
        end)::date""",
    env_help="[connectors.amplitude]: the project's API key and secret key (Basic auth for the "
    "Export API).",
)
