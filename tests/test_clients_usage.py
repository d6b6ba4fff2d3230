"""Usage connectors (PostHog, Amplitude, Mixpanel) against vendor-shaped local fakes."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from tasks import db, load
from tasks.clients.amplitude import AmplitudeConnector, AmplitudeSettings
from tasks.clients.http import (
    AuthError,
    InvalidBodyError,
    InvalidResponseError,
    RequestBudget,
    RetryPolicy,
)
from tasks.clients.mixpanel import MixpanelConnector, MixpanelSettings
from tasks.clients.posthog import PostHogConnector, PostHogSettings
from tasks.contracts import LandedPage
from tests.conftest import posthog_event
from tests.fakes.amplitude import amplitude_api, amplitude_event, export_zip
from tests.fakes.mixpanel import epoch, mixpanel_api, mixpanel_event
from tests.fakes.posthog import posthog_api, query_text
from tests.fakes.server import FakeServer, Response

WINDOW_END = datetime(2026, 11, 21, 2, 30, tzinfo=UTC)
CANONICAL = [
    ("event_id", "VARCHAR"),
    ("source", "VARCHAR"),
    ("occurred_at", "TIMESTAMP WITH TIME ZONE"),
    ("ingested_at", "TIMESTAMP WITH TIME ZONE"),
    ("user_key", "VARCHAR"),
    ("account_key", "VARCHAR"),
    ("event_name", "VARCHAR"),
    ("url_path", "VARCHAR"),
    ("properties", "JSON"),
]
FAST_RETRY = RetryPolicy(max_attempts=3, base_delay_s=0.25, jitter=0)


def uid(i: int) -> str:
    return str(UUID(int=i))


# -- vendor cases ---------------------------------------------------------------------------


def ph_events(n: int, day: str = "2026-11-20", first: int = 1) -> list[dict]:
    """n events from `day` 00:00, 7 minutes apart, uuids uid(first)..."""
    start = datetime.fromisoformat(f"{day}T00:00:00+00:00")
    return [
        posthog_event(
            uid(first + i), ts=(start + timedelta(minutes=7 * i)).isoformat(), user=f"u{i}"
        )
        for i in range(n)
    ]


def amp_events(n: int) -> list[dict]:
    """n events spread over upload hours 01..n/4 of 2026-11-20."""
    return [
        amplitude_event(
            uid(i + 1),
            user_id=f"u{i}",
            event_time=f"2026-11-20 {1 + i // 4:02d}:{i % 4 * 10:02d}:00.000000",
            upload_time=f"2026-11-20 {1 + i // 4:02d}:{i % 4 * 10 + 1:02d}:00.000000",
            company=["acct-1"] if i % 2 else "acct-1",  # both shapes occur in exports
        )
        for i in range(n)
    ]


def mp_events(n: int) -> list[dict]:
    """n events over 2026-11-18..20 (UTC), one insert id each."""
    return [
        mixpanel_event(
            f"ins-{i}",
            distinct_id=f"u{i}",
            time=epoch(f"2026-11-{18 + i % 3}T{i % 24:02d}:15:00+00:00"),
        )
        for i in range(n)
    ]


@dataclass
class Case:
    name: str
    method: str
    path: str
    env: dict[str, str]
    install: Callable[[FakeServer, list], Callable]
    connector: Callable[..., Any]
    events: Callable[[int], list[dict]]
    ddl: str | None
    staging: str
    settings: dict[str, Any] = field(default_factory=dict)

    def make(self, srv: FakeServer, sleeps: list[float], **overrides: Any) -> Any:
        return self.connector(srv.url, sleeps, **(self.settings | overrides))


class FakeTime:
    """A clock that only moves when something sleeps: budgets and retries wait instantly."""

    def __init__(self, sleeps: list[float]) -> None:
        self.now, self.sleeps = 0.0, sleeps

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def budget(self, per_hour: int) -> RequestBudget:
        return RequestBudget(per_hour, 3600.0, clock=self.clock, sleep=self.sleep)


def _posthog(url: str, sleeps: list[float], **kw: Any) -> PostHogConnector:
    s = PostHogSettings(base_url=url, project_id="1", **kw)
    t = FakeTime(sleeps)
    return PostHogConnector(s, retry=FAST_RETRY, sleep=t.sleep, budget=t.budget(s.queries_per_hour))


def _amplitude(url: str, sleeps: list[float], **kw: Any) -> AmplitudeConnector:
    t = FakeTime(sleeps)
    return AmplitudeConnector(
        AmplitudeSettings(base_url=url, **kw), retry=FAST_RETRY, sleep=t.sleep
    )


def _mixpanel(url: str, sleeps: list[float], **kw: Any) -> MixpanelConnector:
    s = MixpanelSettings(base_url=url, project_id="42", **kw)
    t = FakeTime(sleeps)
    return MixpanelConnector(
        s, retry=FAST_RETRY, sleep=t.sleep, budget=t.budget(s.queries_per_hour)
    )


CASES = {
    "posthog": Case(
        "posthog",
        "POST",
        r"/api/projects/1/query/",
        {"POSTHOG_PERSONAL_API_KEY": "phx_test_key"},
        posthog_api,
        _posthog,
        ph_events,
        None,
        "staging/posthog/stg_posthog__events.sql",
        {"start_date": date(2026, 11, 20), "page_size": 10, "slice_hours": 48},
    ),
    "amplitude": Case(
        "amplitude",
        "GET",
        r"/api/2/export",
        {"AMPLITUDE_API_KEY": "amp_key", "AMPLITUDE_SECRET_KEY": "amp_secret"},
        amplitude_api,
        _amplitude,
        amp_events,
        "ddl/raw_amplitude.sql",
        "staging/amplitude/stg_amplitude__events.sql",
        {"start_date": date(2026, 11, 20)},
    ),
    "mixpanel": Case(
        "mixpanel",
        "GET",
        r"/api/2\.0/export",
        {
            "MIXPANEL_SERVICE_ACCOUNT_USERNAME": "sa.user",
            "MIXPANEL_SERVICE_ACCOUNT_SECRET": "sa_secret",
        },
        mixpanel_api,
        _mixpanel,
        mp_events,
        "ddl/raw_mixpanel.sql",
        "staging/mixpanel/stg_mixpanel__events.sql",
        {"start_date": date(2026, 11, 18)},
    ),
}


@pytest.fixture
def srv():
    with FakeServer() as s:
        yield s


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture(autouse=True)
def creds(monkeypatch):
    for case in CASES.values():
        for name, value in case.env.items():
            monkeypatch.setenv(name, value)


@pytest.fixture
def wh(con):
    for case in CASES.values():
        if case.ddl:
            db.run_sql_file(con, case.ddl)
    return con


def run(conn: Any, state: dict | None = None, end: datetime = WINDOW_END) -> list[LandedPage]:
    return list(conn.pages(state, end))


def stage(con, case: Case) -> list[dict]:
    rel = con.sql(db.sql_text(case.staging))
    cols = rel.columns
    return [dict(zip(cols, r, strict=True)) for r in rel.order("event_id").fetchall()]


# -- every connector ------------------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize(
    "fault",
    [
        Response(429, "slow down", headers={"Retry-After": "7"}),
        Response(503, "unavailable"),
        Response(500, "oops"),
    ],
    ids=["429-retry-after", "503", "500"],
)
def test_rate_limits_and_server_errors_are_retried(name, fault, srv, sleeps):
    case = CASES[name]
    events = case.events(12)
    handler = case.install(srv, events)
    srv.script(case.method, case.path, [fault], then=handler)

    pages = run(case.make(srv, sleeps))

    assert sum(p.n_records for p in pages) == 12
    assert len(srv.requests_to(case.path)) >= 2
    if fault.status == 429:
        assert sleeps[0] == 7.0  # the Retry-After, not a guessed backoff
    else:
        assert sleeps and sleeps[0] < 1
    srv.assert_clean()


@pytest.mark.parametrize("name", CASES)
def test_bad_credentials_fail_fast_naming_the_env_var(name, srv, sleeps, monkeypatch):
    case = CASES[name]
    case.install(srv, case.events(3))
    for env in case.env:
        monkeypatch.setenv(env, "wrong-value")

    with pytest.raises(AuthError) as err:
        run(case.make(srv, sleeps))

    assert len(srv.requests) == 1 and sleeps == []
    for env in case.env:
        assert env in str(err.value)
    assert "wrong-value" not in str(err.value)


@pytest.mark.parametrize("name", CASES)
def test_missing_credentials_name_the_env_var(name, srv, sleeps, monkeypatch):
    case = CASES[name]
    env = next(iter(case.env))
    monkeypatch.delenv(env)
    with pytest.raises(Exception, match=env):
        run(case.make(srv, sleeps))
    assert srv.requests == []


def _broken_body(name: str) -> bytes:
    if name == "posthog":
        return b'{"columns": ["uuid", "event", "distinct_id", "timestamp", "properties"], "resu'
    if name == "amplitude":
        return export_zip(amp_events(8))[:-30]  # cut into the zip's central directory
    line = json.dumps(mixpanel_event("x"))
    return (line + "\n" + line[:25]).encode()  # last line cut off


@pytest.mark.parametrize("name", CASES)
def test_a_page_broken_once_is_retried(name, srv, sleeps, wh, tmp_path):
    case = CASES[name]
    handler = case.install(srv, case.events(4))
    srv.script(case.method, case.path, [Response(200, _broken_body(name))], then=handler)
    conn = case.make(srv, sleeps)
    load.load_pages(wh, conn.spec, conn.pages(None, WINDOW_END), "r1", tmp_path / "land")
    assert load.read_state(wh, conn.source, conn.stream) is not None
    n = wh.execute(f"select count(*) from {conn.spec.raw_table}").fetchone()[0]
    assert n == 4


@pytest.mark.parametrize("name", CASES)
def test_invalid_or_truncated_page_fails_the_batch(name, srv, sleeps, wh, tmp_path):
    case = CASES[name]
    handler = case.install(srv, case.events(4))
    broken = [Response(200, _broken_body(name))] * FAST_RETRY.max_attempts
    srv.script(case.method, case.path, broken, then=handler)
    conn = case.make(srv, sleeps)

    with pytest.raises(InvalidBodyError) as err:
        load.load_pages(wh, conn.spec, conn.pages(None, WINDOW_END), "r1", tmp_path / "land")
    assert str(err.value).startswith(f"{conn.source}: ")

    assert load.read_state(wh, conn.source, conn.stream) is None  # cursor not advanced
    assert list((tmp_path / "land").iterdir()) == []


@pytest.mark.parametrize("name", CASES)
def test_check_is_one_cheap_authenticated_call(name, srv, sleeps):
    case = CASES[name]
    case.install(srv, case.events(3))
    case.make(srv, sleeps).check()
    (req,) = srv.requests
    if name == "posthog":
        assert (req.method, req.path) == ("GET", "/api/projects/1/")
    elif name == "amplitude":
        assert req.arg("start") == req.arg("end")  # one hour, 404 allowed
    else:
        assert req.arg("from_date") == req.arg("to_date") and req.arg("limit") == "1"
    srv.assert_clean()


EXPECTED_STAGED = {
    "posthog": {
        "event_id": f"posthog:{uid(1)}",
        "source": "posthog",
        "occurred_at": datetime(2026, 11, 20, 0, 0, tzinfo=UTC),
        "user_key": "u0",
        "account_key": "acct-1",
        "event_name": "export_started",
        "url_path": "/exports",
    },
    "amplitude": {
        "event_id": f"amplitude:{uid(1)}",
        "source": "amplitude",
        "occurred_at": datetime(2026, 11, 20, 1, 0, tzinfo=UTC),
        "user_key": "u0",
        "account_key": "acct-1",
        "event_name": "export_started",
        "url_path": "/exports",
    },
    "mixpanel": {
        "source": "mixpanel",
        "occurred_at": datetime(2026, 11, 18, 0, 15, tzinfo=UTC),
        "user_key": "u0",
        "account_key": "acct-1",
        "event_name": "export_started",
        "url_path": "/exports",
    },
}


@pytest.mark.parametrize("name", CASES)
def test_landed_pages_load_into_raw_and_stage_to_canonical_columns(name, srv, sleeps, wh, tmp_path):
    case = CASES[name]
    case.install(srv, case.events(25))
    conn = case.make(srv, sleeps)

    stats = load.load_pages(wh, conn.spec, conn.pages(None, WINDOW_END), "r1", tmp_path / "l")

    assert (stats.n_inserted, stats.n_quarantined) == (25, 0)
    assert load.read_state(wh, conn.source, conn.stream) is not None
    described = wh.sql(f"describe ({db.sql_text(case.staging)})").fetchall()
    # the vendor model adds the n_events weight (1 per event; a PostHog daily group's count in
    # daily_aggregates mode) and the staging type check, NULL on a well-typed row
    weight = [("n_events", "BIGINT")]
    assert [(r[0], r[1]) for r in described] == [*CANONICAL, *weight, ("type_error", "VARCHAR")]
    rows = stage(wh, case)
    assert len(rows) == 25 and len({r["event_id"] for r in rows}) == 25
    assert {r.get("type_error") for r in rows} == {None}
    first = min(rows, key=lambda r: (r["occurred_at"], r["event_id"]))
    assert {k: first[k] for k in EXPECTED_STAGED[name]} == EXPECTED_STAGED[name]
    for col in ("occurred_at", "user_key", "account_key", "event_name", "url_path", "properties"):
        assert all(r[col] is not None for r in rows), col
    assert {r["account_key"] for r in rows} == {"acct-1"}

    # The next run re-reads its overlap (lookback / re-export): the merge absorbs it.
    again = load.load_pages(
        wh,
        conn.spec,
        conn.pages(load.read_state(wh, name, "events"), WINDOW_END),
        "r2",
        tmp_path / "l",
    )
    assert again.n_inserted == 0 and again.n_quarantined == 0
    assert wh.sql(f"select count(*) from raw.{name}__events").fetchall()[0][0] == 25


# -- PostHog --------------------------------------------------------------------------------


def test_posthog_keyset_pages_then_next_run_asks_only_from_watermark_minus_lookback(srv, sleeps):
    events = ph_events(25)  # 2026-11-20 00:00 .. 02:48, 7 minutes apart
    posthog_api(srv, events)
    conn = CASES["posthog"].make(srv, sleeps, lookback_days=0.1)

    pages = run(conn)

    assert [p.n_records for p in pages] == [10, 10, 5]
    q = [query_text(r) for r in srv.requests]
    assert len(q) == 3
    assert "timestamp >= toDateTime64('2026-11-20 00:00:00.000000', 6, 'UTC')" in q[0]
    assert "timestamp < toDateTime64('2026-11-21 02:30:00.000000', 6, 'UTC')" in q[0]
    assert "uuid >" not in q[0] and "limit 10" in q[0]
    # Page 2 continues after the last row of page 1: (01:03, uuid 10).
    assert f"uuid > toUUID('{uid(10)}')" in q[1]
    assert "timestamp = toDateTime64('2026-11-20 01:03:00.000000', 6, 'UTC')" in q[1]
    final = pages[-1].state
    assert final == {
        "timestamp": "2026-11-20T02:48:00.000000+00:00",
        "uuid": uid(25),
        "watermark": "2026-11-20T02:48:00.000000+00:00",
    }

    events.extend(ph_events(3, day="2026-11-21", first=101))  # new since the first run
    srv.requests.clear()
    second = run(conn, final, WINDOW_END + timedelta(days=1))

    q2 = [query_text(r) for r in srv.requests]
    # From the watermark 02:48 minus the 2.4 h lookback, up to the new window end.
    assert "timestamp >= toDateTime64('2026-11-20 00:24:00.000000', 6, 'UTC')" in q2[0]
    assert "timestamp < toDateTime64('2026-11-22 02:30:00.000000', 6, 'UTC')" in q2[-1]
    assert sum(p.n_records for p in second) == 21 + 3  # the lookback re-reads; the merge dedupes
    assert second[-1].state["uuid"] == uid(103)
    assert second[-1].state["watermark"] == "2026-11-21T00:14:00.000000+00:00"
    srv.assert_clean()


def test_posthog_lookback_picks_up_late_events_within_it_only(srv, sleeps):
    events = ph_events(5)
    posthog_api(srv, events)
    conn = CASES["posthog"].make(srv, sleeps, lookback_days=2, start_date=date(2026, 11, 1))
    state = run(conn)[-1].state

    late = [
        posthog_event(uid(900), ts="2026-11-19T12:00:00+00:00"),  # 1.6 days behind: re-read
        posthog_event(uid(901), ts="2026-11-18T00:00:00+00:00"),  # beyond the lookback
    ]
    events.extend(late)
    start = conn.start_at(state, WINDOW_END)
    assert start == datetime(2026, 11, 18, 0, 28, tzinfo=UTC)  # watermark 00:28 - 2 days
    got = {row[0] for p in run(conn, state) for row in json.loads(p.body)["results"]}
    assert uid(900) in got and uid(901) not in got


def test_posthog_configured_start_bounds_the_lookback(srv, sleeps):
    posthog_api(srv, ph_events(3))
    conn = CASES["posthog"].make(srv, sleeps, lookback_days=5)
    state = {"timestamp": "2026-11-20T00:14:00+00:00", "uuid": uid(3)}
    assert conn.start_at(state, WINDOW_END) == datetime(2026, 11, 20, tzinfo=UTC)
    assert conn.start_at(None, WINDOW_END) == datetime(2026, 11, 20, tzinfo=UTC)


def test_posthog_day_slices_and_project_timezone_offsets(srv, sleeps):
    events = ph_events(12, day="2026-11-18") + ph_events(12, first=101)
    posthog_api(srv, events, utc_offset_hours=-8)  # a US/Pacific project answers in -08:00
    conn = CASES["posthog"].make(
        srv, sleeps, start_date=date(2026, 11, 18), slice_hours=24, page_size=10
    )

    pages = run(conn)

    windows = [
        tuple(q.split("toDateTime64('")[i].split("'")[0] for i in (1, 2))
        for q in map(query_text, srv.requests)
    ]
    # 4 slices: two pages each for the 18th and the 20th; the empty 19th and the last partial
    # slice cost one query each.
    assert [w[1] for w in windows] == [
        "2026-11-19 00:00:00.000000",
        "2026-11-19 00:00:00.000000",
        "2026-11-20 00:00:00.000000",
        "2026-11-21 00:00:00.000000",
        "2026-11-21 00:00:00.000000",
        "2026-11-21 02:30:00.000000",
    ]
    assert [p.n_records for p in pages] == [10, 2, 10, 2]
    assert pages[-1].state["watermark"] == "2026-11-20T01:17:00.000000+00:00"  # UTC again


def test_posthog_query_budget_paces_requests(srv):
    posthog_api(srv, ph_events(25))
    sleeps: list[float] = []
    t = FakeTime(sleeps)
    s = PostHogSettings(
        base_url=srv.url,
        project_id="1",
        start_date=date(2026, 11, 20),
        page_size=10,
        slice_hours=48,
        queries_per_hour=2,
    )
    pages = run(PostHogConnector(s, budget=t.budget(s.queries_per_hour), sleep=t.sleep))
    assert len(pages) == 3 and sleeps == [3600.0]  # the third query waits for the hour


# -- Amplitude ------------------------------------------------------------------------------


def test_amplitude_hour_pages_then_next_run_starts_after_the_last_hour(srv, sleeps):
    events = amp_events(12)  # upload hours 01, 02, 03 of 2026-11-20
    amplitude_api(srv, events, parts_per_hour=2)
    conn = CASES["amplitude"].make(srv, sleeps, hours_per_request=24)

    pages = run(conn)

    (req,) = srv.requests
    # window end 02:30 minus the 2 h lag -> 00:30 -> last complete upload hour is 23:00.
    assert (req.arg("start"), req.arg("end")) == ("20261120T00", "20261120T23")
    assert [p.n_records for p in pages] == [4, 4, 4]
    assert [p.state["last_hour"] for p in pages] == ["20261120T01", "20261120T02", "20261120T23"]
    first_hour = [json.loads(x)["uuid"] for x in pages[0].body.splitlines()]
    assert sorted(first_hour) == [uid(i) for i in (1, 2, 3, 4)]  # both parts of the hour

    events.append(amplitude_event(uid(99), upload_time="2026-11-21 00:05:00.000000"))
    srv.requests.clear()
    more = run(conn, pages[-1].state, WINDOW_END + timedelta(hours=1))
    (req,) = srv.requests
    assert (req.arg("start"), req.arg("end")) == ("20261121T00", "20261121T00")
    assert [p.n_records for p in more] == [1]
    assert more[-1].state == {"last_hour": "20261121T00"}


def test_amplitude_404_means_no_data_and_the_state_moves_on(srv, sleeps):
    amplitude_api(srv, [])
    conn = CASES["amplitude"].make(srv, sleeps, hours_per_request=12)

    pages = run(conn)

    assert [(p.body, p.n_records) for p in pages] == [(b"", 0), (b"", 0)]
    assert pages[-1].state == {"last_hour": "20261120T23"}
    assert run(conn, pages[-1].state) == []  # nothing newer is complete yet
    assert len(srv.requests) == 2 and sleeps == []


def test_amplitude_never_asks_for_incomplete_hours(srv, sleeps):
    amplitude_api(srv, [])
    conn = CASES["amplitude"].make(srv, sleeps, availability_lag_hours=2)
    end = datetime(2026, 11, 21, 5, 59, tzinfo=UTC)
    assert conn.last_complete_hour(end) == datetime(2026, 11, 21, 2, tzinfo=UTC)
    run(conn, {"last_hour": "20261121T00"}, end)
    assert [(r.arg("start"), r.arg("end")) for r in srv.requests] == [
        ("20261121T01", "20261121T02")
    ]


def test_amplitude_corrupt_gzip_member_is_invalid(srv, sleeps):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("1/1_2026-11-20_3#0.json.gz", b"\x1f\x8b\x08\x00not really gzip")
    srv.route("GET", r"/api/2/export", Response(200, buf.getvalue()))
    with pytest.raises(InvalidResponseError, match="corrupt or truncated"):
        run(CASES["amplitude"].make(srv, sleeps))


# -- Mixpanel -------------------------------------------------------------------------------


def test_mixpanel_day_pages_then_reexport_window_on_the_next_run(srv, sleeps):
    events = mp_events(30)  # 2026-11-18..20
    mixpanel_api(srv, events)
    conn = CASES["mixpanel"].make(srv, sleeps, reexport_days=2)

    pages = run(conn)

    assert [(r.arg("from_date"), r.arg("to_date")) for r in srv.requests] == [
        ("2026-11-18", "2026-11-18"),
        ("2026-11-19", "2026-11-19"),
        ("2026-11-20", "2026-11-20"),  # window end is 2026-11-21 02:30: the 21st is not done
    ]
    assert all(r.arg("project_id") == "42" and r.arg("limit") is None for r in srv.requests)
    assert [p.n_records for p in pages] == [10, 10, 10]
    assert [p.state for p in pages] == [{"last_day": f"2026-11-{d}"} for d in (18, 19, 20)]

    srv.requests.clear()
    second = run(conn, pages[-1].state, WINDOW_END + timedelta(days=1))
    # The new day (21st) plus a 2-day re-export (19th, 20th); the state never goes back.
    assert [r.arg("from_date") for r in srv.requests] == ["2026-11-19", "2026-11-20", "2026-11-21"]
    assert [p.state["last_day"] for p in second] == ["2026-11-20", "2026-11-20", "2026-11-21"]

    srv.requests.clear()
    no_reexport = CASES["mixpanel"].make(srv, sleeps, reexport_days=0)
    run(no_reexport, pages[-1].state, WINDOW_END + timedelta(days=1))
    assert [(r.arg("from_date"), r.arg("to_date")) for r in srv.requests] == [
        ("2026-11-21", "2026-11-21")
    ]


def test_mixpanel_project_timezone_sets_the_day_boundary(srv, sleeps):
    mixpanel_api(srv, [], project_timezone="America/Los_Angeles")
    conn = CASES["mixpanel"].make(srv, sleeps, project_timezone="America/Los_Angeles")
    # 02:30 UTC on the 21st is still the 20th in Los Angeles: the 19th is the last full day.
    assert conn.last_complete_day(WINDOW_END) == date(2026, 11, 19)
    pages = run(conn)
    assert [p.body for p in pages] == [b"", b""] and pages[-1].state == {"last_day": "2026-11-19"}


def test_mixpanel_duplicates_and_events_without_insert_id_merge_on_a_stable_key(
    srv, sleeps, wh, tmp_path
):
    dup = mixpanel_event("same", time=epoch("2026-11-19T08:00:00+00:00"))
    legacy = mixpanel_event(None, time=epoch("2026-11-19T09:00:00+00:00"))
    mixpanel_api(srv, [dup, dict(dup), legacy, dict(legacy)])
    conn = CASES["mixpanel"].make(srv, sleeps)

    stats = load.load_pages(wh, conn.spec, conn.pages(None, WINDOW_END), "r1", tmp_path / "l")

    # Exported twice (the raw export is not deduplicated): one row each, nothing quarantined.
    assert (stats.n_inserted, stats.n_superseded, stats.n_quarantined) == (2, 2, 0)
