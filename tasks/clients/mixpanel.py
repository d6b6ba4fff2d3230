"""Mixpanel events through the raw Export API: JSON lines per project day, trailing re-export."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tasks.clients.base import ApiConnector, shared_budget
from tasks.clients.http import HttpClient, InvalidResponseError
from tasks.contracts import LandedPage, SourceSpec
from tasks.secrets import resolve_secret
from tasks.sources import declare

log = logging.getLogger(__name__)

EXPORT_PATH = "/api/2.0/export"


class MixpanelSettings(BaseModel):
    """Mixpanel US by default; EU residency: https://data-eu.mixpanel.com, India: data-in."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(
        "https://data.mixpanel.com",
        description="Export host. EU: https://data-eu.mixpanel.com; India: "
        "https://data-in.mixpanel.com.",
    )
    project_id: str = Field(..., min_length=1)
    project_timezone: str = Field(
        "UTC",
        description="from_date/to_date are days in the project's timezone (Project Settings).",
    )
    start_date: date | None = Field(
        None, description="First run starts at this project day; None = initial_days back."
    )
    initial_days: int = Field(30, ge=1, le=3650)
    reexport_days: int = Field(
        7,
        ge=0,
        le=60,
        description="Days before the last exported day to export again each run: Mixpanel "
        "keeps ingesting late events and the export is not deduplicated.",
    )
    days_per_request: int = Field(1, ge=1, le=31)
    queries_per_hour: int = Field(60, ge=1, description="Export API limit per project.")
    username_env: str = Field(
        "MIXPANEL_SERVICE_ACCOUNT_USERNAME", description="Env var: service account username."
    )
    secret_env: str = Field(
        "MIXPANEL_SERVICE_ACCOUNT_SECRET", description="Env var: service account secret."
    )
    username_block: str | None = Field(None, description="Prefect Secret block, if no env var.")
    secret_block: str | None = Field(None, description="Prefect Secret block, if no env var.")
    read_timeout_s: float = Field(600.0, gt=0)

    @field_validator("project_timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        ZoneInfo(v)  # raises for an unknown zone name
        return v


_INSERT_ID = "json_extract_string(j, '$.properties.\"$insert_id\"')"

MIXPANEL_EVENTS = SourceSpec(
    source="mixpanel",
    stream="events",
    raw_table="raw.mixpanel__events",
    key_column="event_id",
    # Mixpanel's own dedupe key is (event, distinct_id, time, $insert_id); without an insert id
    # only a byte-identical re-export is the same event.
    key_expr=(
        f"md5(case when nullif(trim({_INSERT_ID}), '') is not null "
        "then json_array(j ->> 'event', json_extract_string(j, '$.properties.distinct_id'), "
        f"json_extract(j, '$.properties.time'), {_INSERT_ID})::varchar "
        "else j::varchar end)"
    ),
    # try(): an out-of-range epoch gives no cursor instead of failing the batch.
    cursor_expr=(
        "try(to_timestamp(try_cast(json_extract_string(j, '$.properties.time') as double)))"
        "::varchar"
    ),
    # The raw export is not deduplicated: repeats are expected deliveries, not bad records.
    repeats="newest",
    layout="lines",
)


def check_lines(body: bytes) -> int:
    """Line count of an export body, after checking its ends: a cut-off body fails the batch.

    Only the first and last lines are parsed here; the loader quarantines other bad lines.
    """
    text = body.strip()
    if not text:
        return 0
    first, _, _ = text.partition(b"\n")
    _, _, last = text.rpartition(b"\n")
    for where, line in (("first", first), ("last", last)):
        try:
            rec = json.loads(line)
        except ValueError:
            raise InvalidResponseError(
                "mixpanel", f"export body is truncated or not JSON lines ({where} line unreadable)"
            ) from None
        if not isinstance(rec, dict) or "properties" not in rec:
            raise InvalidResponseError("mixpanel", f"export {where} line is not an event object")
    return text.count(b"\n") + 1


class MixpanelConnector(ApiConnector):
    """Events of one Mixpanel project, one page per exported day range."""

    source = "mixpanel"
    stream = "events"
    kind = "usage"
    spec = MIXPANEL_EVENTS

    def make_http(self) -> HttpClient:
        s = self.settings
        user = resolve_secret(s.username_env, s.username_block)
        secret = resolve_secret(s.secret_env, s.secret_block)
        return self.new_http(
            s.base_url,
            auth=(user, secret),
            timeout=(10.0, s.read_timeout_s),
            # the export limit is per project
            budget=shared_budget(
                ("mixpanel", s.base_url.rstrip("/"), s.project_id), s.queries_per_hour, 3600.0
            ),
            auth_hint=f"set {s.username_env} and {s.secret_env} to a service account with "
            f"access to project {s.project_id} (and check that {s.base_url} is its region)",
        )

    def last_complete_day(self, window_end: datetime) -> date:
        """The day before window_end's day in the project timezone: today is still arriving."""
        end = window_end if window_end.tzinfo else window_end.replace(tzinfo=ZoneInfo("UTC"))
        return end.astimezone(ZoneInfo(self.settings.project_timezone)).date() - timedelta(days=1)

    def first_day(self, state: dict[str, Any] | None, window_end: datetime) -> date:
        s = self.settings
        last = self.last_complete_day(window_end)
        configured = s.start_date or last - timedelta(days=s.initial_days - 1)
        if not state or not state.get("last_day"):
            return configured
        done = date.fromisoformat(state["last_day"])
        return max(configured, done + timedelta(days=1) - timedelta(days=s.reexport_days))

    def _params(self, first: date, last: date, **extra: Any) -> dict[str, Any]:
        return {
            "from_date": first.isoformat(),
            "to_date": last.isoformat(),
            "project_id": self.settings.project_id,
            **extra,
        }

    def check(self) -> None:
        day = self.last_complete_day(datetime.now(ZoneInfo("UTC")))
        self.http.request(
            "GET", EXPORT_PATH, params=self._params(day, day, limit=1), expect=check_lines
        )

    def pages(self, state: dict[str, Any] | None, window_end: datetime) -> Iterator[LandedPage]:
        """One page per request (days_per_request days); the state is the last day landed.

        A day without events yields an empty page, so the state still moves past it.
        """
        s = self.settings
        last = self.last_complete_day(window_end)
        day = self.first_day(state, window_end)
        done = date.fromisoformat(state["last_day"]) if state and state.get("last_day") else None
        n_records = 0
        while day <= last:
            to = min(day + timedelta(days=s.days_per_request - 1), last)
            resp = self.http.request(
                "GET", EXPORT_PATH, params=self._params(day, to), expect=check_lines
            )
            n = resp.parsed
            # Re-exported days lie behind the stored day: never move the state backwards.
            done = to if done is None else max(done, to)
            n_records += n
            yield LandedPage(body=resp.content, state={"last_day": done.isoformat()}, n_records=n)
            day = to + timedelta(days=1)
        log.info("mixpanel: %d event line(s) up to %s", n_records, last.isoformat())


# This vendor's entry in the registry (tasks/sources.py declare): `make generated` writes its raw
# table, raw suite, docs, union CTE, connector type and .env.example lines from it.
DECLARATION = declare(
    MixpanelConnector,
    MixpanelSettings,
    title="Mixpanel",
    order=3,
    grain="grain: one row per Mixpanel event; key: event_id = md5 of (event, distinct_id, time, "
    "$insert_id), or of the whole record without $insert_id. Re-exported days merge onto the "
    "same rows.",
    column_docs={
        "event_id": "md5 of (event, distinct_id, time, $insert_id), or of the whole record "
        "without $insert_id; unique"
    },
    event_day_sql="timezone('UTC', epoch_ts(try_cast(json_extract(payload, '$.properties.time') "
    "as double)))::date",
    id_fields=("base_url", "project_id"),
    env_help="[connectors.mixpanel]: a service account's username and secret, with access to the "
    "project.",
)
