"""PostHog daily_aggregates mode: HogQL daily groups against the fake's query endpoint, landed
in raw.posthog__events, and the same user-day rollups as the events mode on the same events."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tasks import catalog, db, load, transform
from tasks.clients.http import AuthError, InvalidBodyError, RetryPolicy
from tasks.clients.posthog import PostHogConnector, PostHogSettings
from tasks.settings import DEFAULT_CATALOG, ScoreWeights
from tests.conftest import posthog_event
from tests.fakes.posthog import daily_groups, posthog_api, query_text
from tests.fakes.server import FakeServer, Response
from tests.test_clients_usage import FakeTime

QUERY = r"/api/projects/1/query/"
KEY = "phx_daily_secret_key_0123456789"
END = datetime(2026, 11, 21, 2, 30, tzinfo=UTC)  # the run's start: day 21 is partial
FAST = RetryPolicy(max_attempts=3, base_delay_s=0.25, jitter=0)
FEATURES = [  # (event, path) the default catalog maps, plus an unmapped page view
    ("export_started", "/exports"),
    ("export_completed", "/exports"),
    ("search_performed", "/search"),
    ("alert_created", "/alerts"),
    ("$pageview", "/pricing"),
    ("$pageview", None),
]


def _uuid(i: int) -> str:
    return f"00000000-0000-4000-8000-{i:012d}"


def world(days: int = 6, users: int = 9, last: date = date(2026, 11, 21)) -> list[dict]:
    """Events over `days` UTC days up to `last` 02:00: users with their own company, several
    events a day on a few (event, path) pairs, some at the edges of the day."""
    out, i = [], 0
    for d in range(days):
        day = datetime.combine(last - timedelta(days=days - 1 - d), datetime.min.time(), UTC)
        for u in range(users):
            if (u + d) % 4 == 3:
                continue  # not active that day
            for k in range((u * 7 + d) % 5 + 1):
                event, path = FEATURES[(u + k * d) % len(FEATURES)]
                minute = (u * 97 + k * 211 + d * 13) % (24 * 60)
                if k == 0 and u % 3 == 0:
                    minute = 0 if u % 2 else 24 * 60 - 1  # 00:00 and 23:59 UTC
                if d == days - 1:
                    minute %= 120  # the last day has only begun
                ts = day + timedelta(minutes=minute, microseconds=i)
                ev = posthog_event(
                    _uuid(i), event, f"user-{u}", ts.isoformat(), "/", f"acct-{u % 3}"
                )
                ev["properties"]["$pathname"] = path
                if path is None:
                    del ev["properties"]["$pathname"]
                out.append(ev)
                i += 1
    return out


def connector(srv: FakeServer, sleeps: list[float] | None = None, **kw: Any) -> PostHogConnector:
    s = PostHogSettings(
        base_url=srv.url,
        project_id="1",
        **({"mode": "daily_aggregates", "start_date": date(2026, 11, 16), "page_size": 4} | kw),
    )
    t = FakeTime(sleeps if sleeps is not None else [])
    return PostHogConnector(s, retry=FAST, sleep=t.sleep, budget=t.budget(s.queries_per_hour))


def pull(con, conn: PostHogConnector, run_id: str, tmp: Path, end: datetime = END):
    state = load.read_state(con, conn.source, conn.stream)
    return load.load_pages(con, conn.spec, conn.pages(state, end), run_id, tmp / "land")


@pytest.fixture
def srv():
    with FakeServer() as s:
        yield s


@pytest.fixture(autouse=True)
def creds(monkeypatch):
    monkeypatch.setenv("POSTHOG_PERSONAL_API_KEY", KEY)


def _staged(con) -> list[tuple]:
    transform.build_staging(con, "salt")
    return con.sql(
        "select event_id, occurred_at, user_key, account_key, event_name, url_path, n_events, "
        "type_error from staging.stg_usage_events__unvalidated order by all"
    ).fetchall()


# -- the connector --------------------------------------------------------------------------


def test_days_are_queried_whole_and_paged_by_offset_until_has_more_is_false(srv, con, tmp_path):
    events = world()
    posthog_api(srv, events, api_key=KEY, utc_offset_hours=-8)  # project in US/Pacific
    conn = connector(srv)

    pages = list(conn.pages(None, END))

    texts = [query_text(r) for r in srv.requests_to(QUERY)]
    days = [date(2026, 11, 16) + timedelta(days=n) for n in range(6)]
    for day in days:  # every UTC day from the start, the run's partial day included
        lo = datetime.combine(day, datetime.min.time(), UTC)
        hi = min(lo + timedelta(days=1), END)
        groups = daily_groups(events, lo, hi)
        mine = [t for t in texts if t.startswith(f"select '{day.isoformat()}' as day")]
        n_pages = max(1, -(-len(groups) // 4))
        assert [t.rsplit(" offset ", 1)[1] for t in mine] == [str(4 * p) for p in range(n_pages)]
        assert all(" limit 4 offset " in t for t in mine)
    # The run's start bounds the partial last day and stamps every row as its pull time.
    assert "timestamp < toDateTime64('2026-11-21 02:30:00.000000', 6, 'UTC')" in texts[-1]
    assert all("'2026-11-21T02:30:00.000000+00:00' as pulled_at" in t for t in texts)
    n_groups = 0
    for day in days:
        lo = datetime.combine(day, datetime.min.time(), UTC)
        n_groups += len(daily_groups(events, lo, min(lo + timedelta(days=1), END)))
    assert sum(p.n_records for p in pages) == n_groups
    # The state says which day is done (offset None) or where its next page starts.
    assert pages[0].state == {"day": "2026-11-16", "offset": 4}
    assert pages[-1].state == {"day": "2026-11-21", "offset": None}

    stats = load.load_pages(con, conn.spec, pages, "r1", tmp_path / "land")
    assert stats.n_quarantined == 0 and stats.n_landed == stats.records_read
    n_events = con.sql(
        "select sum((properties ->> '$._daily.n_events')::bigint), count(*) "
        "from raw.posthog__events"
    ).fetchall()[0]
    assert n_events[0] == len(events)  # every event counted once, in PostHog's ClickHouse
    assert n_events[1] == stats.records_read < len(events)
    srv.assert_clean()


def test_a_server_row_cap_is_followed_with_has_more(srv):
    events = world(days=1, users=9)
    posthog_api(srv, events, page_limit=3, api_key=KEY)
    conn = connector(srv, start_date=date(2026, 11, 21), page_size=50)
    pages = list(conn.pages(None, END))
    groups = daily_groups(events, datetime(2026, 11, 21, tzinfo=UTC), END)
    assert sum(p.n_records for p in pages) == len(groups) > 3
    offsets = [query_text(r).rsplit(" offset ", 1)[1] for r in srv.requests_to(QUERY)]
    assert offsets == [str(3 * i) for i in range(len(pages))]


@pytest.mark.parametrize(
    "fault",
    [
        Response(429, "slow down", headers={"Retry-After": "7"}),
        Response(503, "unavailable"),
        Response(500, "oops"),
    ],
    ids=["429-retry-after", "503", "500"],
)
def test_rate_limits_and_server_errors_are_retried(srv, fault):
    events = world(days=2)
    handler = posthog_api(srv, events, api_key=KEY)
    srv.script("POST", QUERY, [fault], then=handler)
    sleeps: list[float] = []
    pages = list(connector(srv, sleeps, start_date=date(2026, 11, 20)).pages(None, END))

    day20, day21 = datetime(2026, 11, 20, tzinfo=UTC), datetime(2026, 11, 21, tzinfo=UTC)
    expected = len(daily_groups(events, day20, day21)) + len(daily_groups(events, day21, END))
    assert sum(p.n_records for p in pages) == expected
    if fault.status == 429:
        assert sleeps[0] == 7.0  # the Retry-After, not a guessed backoff
    else:
        assert 0 < sleeps[0] < 1
    srv.assert_clean()


def test_a_refused_key_fails_at_once_in_one_line_without_the_key(srv, monkeypatch):
    posthog_api(srv, world(days=1), api_key=KEY)
    monkeypatch.setenv("POSTHOG_PERSONAL_API_KEY", "phx_WRONG_but_secret_value_42")
    sleeps: list[float] = []

    with pytest.raises(AuthError) as err:
        list(connector(srv, sleeps).pages(None, END))

    message = str(err.value)
    assert len(srv.requests) == 1 and sleeps == []  # never retried
    assert "\n" not in message and "POSTHOG_PERSONAL_API_KEY" in message
    assert "phx_WRONG_but_secret_value_42" not in message and KEY not in message


def test_an_answer_for_another_day_is_invalid(srv, con, tmp_path):
    handler = posthog_api(srv, world(days=2), api_key=KEY)
    wrong = {
        "columns": [
            "day",
            "event",
            "distinct_id",
            "pathname",
            "company",
            "n_events",
            "first_at",
            "last_at",
            "pulled_at",
        ],
        "results": [
            [
                "2026-11-01",
                "x",
                "u",
                None,
                None,
                1,
                "2026-11-01T00:00:00+00:00",
                "2026-11-01T00:00:00+00:00",
                "2026-11-21T02:30:00+00:00",
            ]
        ],
        "hasMore": False,
    }
    conn = connector(srv, start_date=date(2026, 11, 20))
    srv.script("POST", QUERY, [Response.json(wrong)] * FAST.max_attempts, then=handler)
    with pytest.raises(InvalidBodyError, match="2026-11-01"):
        load.load_pages(con, conn.spec, conn.pages(None, END), "r1", tmp_path / "land")
    assert load.read_state(con, "posthog", "event_days") is None
    assert con.sql("select count(*) from raw.posthog__events").fetchall()[0][0] == 0


# -- idempotency ----------------------------------------------------------------------------


def test_a_rerun_adds_nothing_and_a_late_event_repulls_its_day_whole(srv, con, tmp_path):
    events = world()
    posthog_api(srv, events, api_key=KEY)
    conn = connector(srv, lookback_days=2)
    pull(con, conn, "r1", tmp_path)
    first = _staged(con)
    assert sum(r[6] for r in first) == len(events)
    assert load.read_state(con, "posthog", "event_days") == {"day": "2026-11-21", "offset": None}

    # The same night again: the lookback days are re-pulled and merge onto the same rows.
    n_before = len(srv.requests_to(QUERY))
    again = pull(con, conn, "r2", tmp_path)
    assert again.n_inserted == 0 and again.n_quarantined == 0
    assert [r[:7] for r in _staged(con)] == [r[:7] for r in first]
    asked = {query_text(r)[8:18] for r in srv.requests_to(QUERY)[n_before:]}
    assert asked == {"2026-11-19", "2026-11-20", "2026-11-21"}  # last day - ceil(2 days)

    # A late event for the 20th in an existing group, one in a new group, the rest of the 21st.
    late = [
        posthog_event(
            _uuid(9001),
            "export_started",
            "user-1",
            "2026-11-20T23:00:00+00:00",
            "/exports",
            "acct-1",
        ),
        posthog_event(
            _uuid(9002),
            "alert_created",
            "user-77",
            "2026-11-20T12:00:00+00:00",
            "/alerts",
            "acct-9",
        ),
        posthog_event(
            _uuid(9003),
            "search_performed",
            "user-2",
            "2026-11-21T09:00:00+00:00",
            "/search",
            "acct-2",
        ),
    ]
    events.extend(late)
    third = pull(con, conn, "r3", tmp_path, end=datetime(2026, 11, 22, 2, 0, tzinfo=UTC))
    assert third.n_quarantined == 0
    staged = _staged(con)
    assert sum(r[6] for r in staged) == len(events)  # each event once, none twice
    assert len({r[0] for r in staged}) == len(staged)
    by_day = con.sql(
        "select occurred_at::date, sum(n_events)::int from staging.stg_usage_events__unvalidated "
        "group by 1 order by 1"
    ).fetchall()
    expect: dict[date, int] = {}
    for e in events:
        day = datetime.fromisoformat(e["timestamp"]).astimezone(UTC).date()
        expect[day] = expect.get(day, 0) + 1
    assert dict(by_day) == expect
    srv.assert_clean()


def test_an_interrupted_day_resumes_at_its_next_page(srv, con, tmp_path):
    events = world(days=2)
    handler = posthog_api(srv, events, api_key=KEY)
    conn = connector(srv, start_date=date(2026, 11, 20), page_size=3)
    n_first = 2  # pages answered before the API keeps failing
    srv.script("POST", QUERY, [handler] * n_first + [Response(503, "down")] * 3, then=handler)

    with pytest.raises(Exception, match="503"):
        load.load_pages(
            con, conn.spec, conn.pages(None, END), "r1", tmp_path / "land", batch_bytes=1
        )
    state = load.read_state(con, "posthog", "event_days")
    assert state == {"day": "2026-11-20", "offset": 6}  # two pages of three committed

    pull(con, conn, "r2", tmp_path)
    resumed = query_text(srv.requests_to(QUERY)[n_first + 3])
    assert resumed.startswith("select '2026-11-20'") and resumed.endswith("offset 6")
    assert sum(r[6] for r in _staged(con)) == len(events)


# -- equal scores between modes --------------------------------------------------------------


def _score(con) -> None:
    transform.build_staging(con, "salt")
    catalog.publish_catalog(con, catalog.load_catalog(DEFAULT_CATALOG))
    params = transform.ScoreParams(date(2026, 11, 20), 28, ScoreWeights().normalised(), "r1")
    transform.build_marts(con, params)


def test_both_modes_give_the_same_user_days_feature_daily_and_coverage(srv, tmp_path):
    events = world(days=6, users=14)
    posthog_api(srv, events, api_key=KEY, utc_offset_hours=-8)
    tables = (
        "select * from intermediate.int_feature_user_days order by all",
        "select * exclude (n_records, n_mapped) from marts.catalog_coverage order by all",
        "select signal, n_records, n_mapped from marts.catalog_coverage order by all",
        "select * from marts.feature_daily order by all",
        "select feature_key, as_of_date, health_score, adoption_score, engagement_score "
        "from marts.feature_health order by all",
    )
    out = {}
    for mode in ("events", "daily_aggregates"):
        path = tmp_path / mode
        path.mkdir()
        con = duckdb.connect(str(path / "w.duckdb"))
        try:
            db.ensure_schema(con)
            conn = connector(srv, mode=mode, page_size=5, slice_hours=24)
            assert pull(con, conn, "r1", path).n_quarantined == 0
            _score(con)
            out[mode] = [con.sql(q).fetchall() for q in tables]
            rows = con.sql("select count(*) from staging.stg_usage_events").fetchall()[0][0]
            out[mode + ":rows"] = rows
        finally:
            con.close()
    assert out["events:rows"] == len(events) > out["daily_aggregates:rows"]
    user_days, *_ = out["events"]
    assert len({r[0] for r in user_days}) >= 4  # several features and __product__
    for i, (a, b) in enumerate(zip(out["events"], out["daily_aggregates"], strict=True)):
        assert a == b, tables[i]
    srv.assert_clean()


def test_daily_groups_replace_the_single_events_of_their_days(srv, con, tmp_path):
    """Switching modes never counts a day twice: a day with daily groups is theirs alone."""
    events = world(days=3)
    posthog_api(srv, events, api_key=KEY)
    pull(con, connector(srv, mode="events", start_date=date(2026, 11, 19)), "r1", tmp_path)
    assert sum(r[6] for r in _staged(con)) == len(events)

    pull(con, connector(srv, start_date=date(2026, 11, 20)), "r2", tmp_path)  # 20th and 21st
    staged = _staged(con)
    assert sum(r[6] for r in staged) == len(events)
    kinds = {(r[1].date(), r[0].startswith("posthog:daily:")) for r in staged}
    assert kinds == {
        (date(2026, 11, 19), False),
        (date(2026, 11, 20), True),
        (date(2026, 11, 21), True),
    }


def test_a_group_without_a_positive_count_is_a_type_error(con):
    con.execute(
        """insert into raw.posthog__events values
           ('daily:2026-11-20:abc', 'export_started', 'user-1', '"2026-11-20T10:00:00+00:00"',
            '{"$pathname": "/exports", "_daily": {"day": "2026-11-20", "n_events": 0}}',
            '2026-11-21', null, 'b', now()),
           ('daily:2026-11-20:def', 'export_started', 'user-2', '"2026-11-20T10:00:00+00:00"',
            '{"$pathname": "/exports", "_daily": {"day": "2026-11-20", "n_events": "many"}}',
            '2026-11-21', null, 'b', now()),
           ('daily:2026-11-20:ghi', 'export_started', 'user-3', '"2026-11-20T10:00:00+00:00"',
            '{"$pathname": "/exports", "_daily": {"day": "2026-11-20", "n_events": 3}}',
            '2026-11-21', null, 'b', now())"""
    )
    staged = {r[0]: (r[6], r[7]) for r in _staged(con)}
    assert staged == {
        "posthog:daily:2026-11-20:abc": (0, "wrong_type:n_events"),
        "posthog:daily:2026-11-20:def": (None, "wrong_type:n_events"),
        "posthog:daily:2026-11-20:ghi": (3, None),
    }
