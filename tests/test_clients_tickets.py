"""Help-desk connectors (Zendesk, Intercom, Freshdesk) against vendor-shaped fake APIs, landed
through the real loader and mapped by their staging models."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from tasks import db, load
from tasks.clients.freshdesk import FreshdeskSettings, FreshdeskTickets
from tasks.clients.http import (
    AuthError,
    InvalidBodyError,
    PaginationLoopError,
    RequestBudget,
    RetryPolicy,
)
from tasks.clients.intercom import IntercomConversations, IntercomSettings
from tasks.clients.zendesk import ZENDESK_TICKETS_SPEC, ZendeskSettings, ZendeskTickets
from tasks.contracts import LandedPage
from tasks.redact import register_duckdb
from tasks.settings import ConfigError
from tests.conftest import write_json, zendesk_page, zendesk_ticket
from tests.fakes import freshdesk as fd
from tests.fakes import intercom as ic
from tests.fakes import zendesk as zd
from tests.fakes.server import FakeServer, Request, Response

SALT = "test-salt"
T0 = int(datetime(2026, 11, 20, 10, 0, tzinfo=UTC).timestamp())
WINDOW_END = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
START = "2026-11-01"
CANONICAL = [
    "ticket_id",
    "source",
    "created_at",
    "updated_at",
    "status",
    "priority",
    "channel",
    "subject",
    "body",
    "tags",
    "requester_key",
    "account_key",
    "is_deleted",
]


class FakeClock:
    """Monotonic clock whose sleep advances it and records the wait (no real sleeping)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


RETRY = RetryPolicy(max_attempts=4, base_delay_s=0.5, max_delay_s=30.0, jitter=0.0)


# --------------------------------------------------------------------------------------------
# One harness per vendor, so the common behaviour is tested once, parametrized
# --------------------------------------------------------------------------------------------


@dataclass
class Vendor:
    name: str
    method: str
    path: str  # regex of the data endpoint
    secret_env: str
    staging: str  # sql/ path of the staging model
    install: Callable[..., Any]  # (srv, records, page_size, **kw) -> fake
    record: Callable[[int, int], dict]  # (id, updated epoch) -> vendor record
    connector: Callable[..., Any]  # (srv, clock, page_size, **settings) -> connector
    handler: Callable[[Any], Callable[[Request], Response]]  # fake -> its data handler
    window_of: Callable[[Request], Any]  # what the request asks for (cursor / lower bound)
    expected_window: Callable[[dict], Any]  # the same, derived from the stored state


def _zd_connector(srv, clock, page_size=3, budget=None, **kw):
    settings = ZendeskSettings(
        base_url=srv.url, email="agent@acme.test", start_date=START, page_size=page_size, **kw
    )
    return ZendeskTickets(
        settings,
        budget=budget or RequestBudget(1000, 60, clock=clock, sleep=clock.sleep),
        retry=RETRY,
        sleep=clock.sleep,
    )


def _ic_connector(srv, clock, page_size=3, **kw):
    settings = IntercomSettings(base_url=srv.url, start_date=START, page_size=page_size, **kw)
    return IntercomConversations(settings, retry=RETRY, sleep=clock.sleep)


def _fd_connector(srv, clock, page_size=3, **kw):
    settings = FreshdeskSettings(base_url=srv.url, start_date=START, page_size=page_size, **kw)
    return FreshdeskTickets(settings, retry=RETRY, sleep=clock.sleep)


def _ic_lower_bound(req: Request) -> int:
    (gt,) = [q["value"] for q in req.json()["query"]["value"] if q["operator"] == ">"]
    return gt


ZENDESK = Vendor(
    name="zendesk",
    method="GET",
    path=zd.EXPORT_PATH,
    secret_env="ZENDESK_API_TOKEN",
    staging="staging/zendesk/stg_zendesk__tickets.sql",
    install=lambda srv, recs, page_size, **kw: zd.zendesk_api(srv, recs, page_size, **kw),
    record=lambda i, ts: zd.ticket(i, zd.iso(ts)),
    connector=_zd_connector,
    handler=lambda fake: fake.export,
    window_of=lambda req: req.arg("cursor"),
    expected_window=lambda state: state["cursor"],
)
INTERCOM = Vendor(
    name="intercom",
    method="POST",
    path=ic.SEARCH_PATH,
    secret_env="INTERCOM_ACCESS_TOKEN",
    staging="staging/intercom/stg_intercom__conversations.sql",
    install=lambda srv, recs, page_size, **kw: ic.intercom_api(srv, recs, page_size, **kw),
    record=lambda i, ts: ic.conversation(str(i), ts),
    connector=_ic_connector,
    handler=lambda fake: fake.search,
    window_of=_ic_lower_bound,
    expected_window=lambda state: state["updated_at"] - 300,
)
FRESHDESK = Vendor(
    name="freshdesk",
    method="GET",
    path=fd.TICKETS_PATH,
    secret_env="FRESHDESK_API_KEY",
    staging="staging/freshdesk/stg_freshdesk__tickets.sql",
    install=lambda srv, recs, page_size, **kw: fd.freshdesk_api(srv, recs, page_size, **kw),
    record=lambda i, ts: fd.ticket(i, zd.iso(ts)),
    connector=_fd_connector,
    handler=lambda fake: fake.list_tickets,
    window_of=lambda req: req.arg("updated_since"),
    expected_window=lambda state: zd.iso(
        int(datetime.fromisoformat(state["updated_since"]).timestamp()) - 300
    ),
)
VENDORS = [ZENDESK, INTERCOM, FRESHDESK]
by_name = pytest.mark.parametrize("vendor", VENDORS, ids=lambda v: v.name)


def _secret(fake: Any) -> str:
    return getattr(fake, "token", None) or fake.api_key


@pytest.fixture
def srv():
    with FakeServer() as server:
        yield server


@pytest.fixture
def wh(con):
    """The test warehouse with the help-desk raw tables and the redaction UDFs."""
    db.run_sql_file(con, "ddl/raw_intercom.sql")
    db.run_sql_file(con, "ddl/raw_freshdesk.sql")
    register_duckdb(con, SALT)
    con.execute("set variable hash_salt = ?", [SALT])
    return con


def setup(vendor: Vendor, srv, monkeypatch, records, page_size=3, **fake_kw):
    fake = vendor.install(srv, records, page_size, **fake_kw)
    monkeypatch.setenv(vendor.secret_env, _secret(fake))
    return fake


def land(con, connector, tmp_path, *, state: Any = "stored", run_id: str = "r1"):
    """One run: read the committed state, load every page through the real loader (one
    commit per page, like a crash-safe nightly run), return the stats."""
    if state == "stored":
        state = load.read_state(con, connector.source, connector.stream)
    pages = connector.pages(state, WINDOW_END)
    return load.load_pages(con, connector.spec, pages, run_id, tmp_path / "landing", batch_bytes=1)


def stored_state(con, connector) -> dict | None:
    return load.read_state(con, connector.source, connector.stream)


def raw_count(con, connector) -> int:
    return con.sql(f"select count(*) from {connector.spec.raw_table}").fetchall()[0][0]


def staging(con, vendor: Vendor) -> list[dict]:
    rel = con.sql(db.sql_text(vendor.staging))
    cols = rel.columns
    return [dict(zip(cols, row, strict=True)) for row in rel.order("ticket_id").fetchall()]


def data_requests(srv, vendor: Vendor) -> list[Request]:
    return srv.requests_to(vendor.path, vendor.method)


# --------------------------------------------------------------------------------------------
# Common behaviour
# --------------------------------------------------------------------------------------------


@by_name
def test_pages_across_three_pages_land_and_stage_canonically(
    vendor, srv, wh, tmp_path, monkeypatch
):
    setup(vendor, srv, monkeypatch, [vendor.record(100 + i, T0 + 60 * i) for i in range(7)])
    conn = vendor.connector(srv, FakeClock())

    stats = land(wh, conn, tmp_path)

    assert len(data_requests(srv, vendor)) == 3  # 3 + 3 + 1
    assert (stats.records_read, stats.n_inserted, stats.n_quarantined) == (7, 7, 0)
    assert raw_count(wh, conn) == 7
    rows = staging(wh, vendor)
    assert list(rows[0])[: len(CANONICAL)] == CANONICAL
    assert [r["ticket_id"] for r in rows] == [f"{vendor.name}:{100 + i}" for i in range(7)]
    r = rows[0]
    assert r["source"] == vendor.name
    assert r["created_at"] is not None and r["updated_at"] == datetime.fromtimestamp(T0, UTC)
    assert r["status"] == "open" and r["priority"] == "normal" and r["is_deleted"] is False
    assert r["requester_key"] and len(r["requester_key"]) == 64
    assert not list((tmp_path / "landing").iterdir())  # landed files go once committed
    srv.assert_clean()


@by_name
def test_second_run_asks_only_for_the_new_window(vendor, srv, wh, tmp_path, monkeypatch):
    records = [vendor.record(100 + i, T0 + 60 * i) for i in range(7)]
    setup(vendor, srv, monkeypatch, records)
    conn = vendor.connector(srv, FakeClock())
    land(wh, conn, tmp_path)
    state = stored_state(wh, conn)
    n_first = len(data_requests(srv, vendor))

    records += [vendor.record(200, T0 + 3600), vendor.record(201, T0 + 3660)]
    stats = land(wh, vendor.connector(srv, FakeClock()), tmp_path, run_id="r2")

    second = data_requests(srv, vendor)[n_first:]
    assert vendor.window_of(second[0]) == vendor.expected_window(state)
    assert stats.n_inserted == 2  # what the overlap re-reads merges as unchanged
    assert raw_count(wh, conn) == 9
    assert stored_state(wh, conn) != state
    srv.assert_clean()


@by_name
def test_429_retry_after_is_waited_out(vendor, srv, wh, tmp_path, monkeypatch):
    fake = setup(vendor, srv, monkeypatch, [vendor.record(100 + i, T0 + i) for i in range(4)])
    srv.script(
        vendor.method,
        vendor.path,
        [Response.json({"error": "slow down"}, status=429, **{"Retry-After": "7"})],
        then=vendor.handler(fake),
    )
    clock = FakeClock()

    stats = land(wh, vendor.connector(srv, clock), tmp_path)

    assert 7.0 in clock.sleeps
    assert stats.n_inserted == 4
    assert len(data_requests(srv, vendor)) == 3  # the 429, then two pages


@by_name
def test_5xx_is_retried_then_succeeds(vendor, srv, wh, tmp_path, monkeypatch):
    fake = setup(vendor, srv, monkeypatch, [vendor.record(100 + i, T0 + i) for i in range(2)])
    srv.script(
        vendor.method,
        vendor.path,
        [Response(500, "boom"), Response(503, "unavailable")],
        then=vendor.handler(fake),
    )
    clock = FakeClock()

    stats = land(wh, vendor.connector(srv, clock), tmp_path)

    assert stats.n_inserted == 2
    assert clock.sleeps == [0.5, 1.0]  # exponential backoff, injected sleep
    assert len(data_requests(srv, vendor)) == 3


@by_name
def test_401_fails_fast_naming_the_env_var(vendor, srv, wh, tmp_path, monkeypatch):
    setup(vendor, srv, monkeypatch, [vendor.record(100, T0)])
    monkeypatch.setenv(vendor.secret_env, "wrong-secret-value")
    clock = FakeClock()

    with pytest.raises(AuthError) as err:
        land(wh, vendor.connector(srv, clock), tmp_path)

    assert vendor.secret_env in str(err.value)
    assert "wrong-secret-value" not in str(err.value)
    assert len(data_requests(srv, vendor)) == 1 and clock.sleeps == []
    assert stored_state(wh, vendor.connector(srv, clock)) is None


@by_name
def test_missing_secret_is_a_config_error_naming_the_env_var(vendor, srv, monkeypatch):
    setup(vendor, srv, monkeypatch, [])
    monkeypatch.delenv(vendor.secret_env)
    with pytest.raises(ConfigError, match=vendor.secret_env):
        vendor.connector(srv, FakeClock()).check()
    assert srv.requests == []


@by_name
def test_check_is_one_authenticated_call(vendor, srv, monkeypatch):
    setup(vendor, srv, monkeypatch, [])
    vendor.connector(srv, FakeClock()).check()
    assert len(srv.requests) == 1 and srv.requests[0].method == "GET"
    monkeypatch.setenv(vendor.secret_env, "nope-nope-nope")
    with pytest.raises(AuthError, match=vendor.secret_env):
        vendor.connector(srv, FakeClock()).check()
    srv.assert_clean()


def _truncated(fake_handler):
    def answer(req: Request) -> Response:
        body, headers = fake_handler(req).encoded()
        return Response(200, body[: len(body) // 2], headers)

    return answer


def _wrong_shape(vendor: Vendor) -> Response:
    # valid JSON, but not the documented page: no record list / an object instead of a list
    return Response.json({"results": []} if vendor is not FRESHDESK else {"tickets": []})


@by_name
@pytest.mark.parametrize("bad", ["truncated", "wrong_shape"])
def test_a_page_broken_once_is_retried(vendor, bad, srv, wh, tmp_path, monkeypatch):
    fake = setup(vendor, srv, monkeypatch, [vendor.record(100 + i, T0 + i) for i in range(7)])
    handler = vendor.handler(fake)
    broken = _truncated(handler) if bad == "truncated" else _wrong_shape(vendor)
    srv.script(vendor.method, vendor.path, [handler, broken], then=handler)
    clock = FakeClock()
    stats = land(wh, vendor.connector(srv, clock), tmp_path)
    assert stats.n_inserted == 7 and clock.sleeps == [RETRY.base_delay_s]


@by_name
@pytest.mark.parametrize("bad", ["truncated", "wrong_shape"])
def test_invalid_page_raises_and_keeps_the_committed_state(
    vendor, bad, srv, wh, tmp_path, monkeypatch
):
    fake = setup(vendor, srv, monkeypatch, [vendor.record(100 + i, T0 + i) for i in range(7)])
    handler = vendor.handler(fake)
    broken = _truncated(handler) if bad == "truncated" else _wrong_shape(vendor)
    # broken on every attempt of the retry policy: InvalidBodyError, loud and one line
    srv.script(vendor.method, vendor.path, [handler] + [broken] * RETRY.max_attempts, then=handler)
    conn = vendor.connector(srv, FakeClock())

    with pytest.raises(InvalidBodyError) as err:
        land(wh, conn, tmp_path)
    assert str(err.value).startswith(f"{conn.source}: ") and "\n" not in str(err.value)

    # page 1 was committed with its state; page 2 never landed
    assert raw_count(wh, conn) == 3
    state = stored_state(wh, conn)
    assert state is not None
    # the rerun resumes from page 1's state and completes
    stats = land(wh, vendor.connector(srv, FakeClock()), tmp_path, run_id="r2")
    assert raw_count(wh, conn) == 7 and stats.n_inserted == 4
    assert not list((tmp_path / "landing").iterdir())


# --------------------------------------------------------------------------------------------
# Zendesk
# --------------------------------------------------------------------------------------------


def test_zendesk_repeated_tickets_newest_wins_and_deleted_are_kept(srv, wh, tmp_path, monkeypatch):
    versions = [
        zd.ticket(1, zd.iso(T0), status="new"),
        zd.ticket(1, zd.iso(T0 + 10), status="open"),  # same page: a second version
        zd.ticket(2, zd.iso(T0 + 20)),
        zd.ticket(3, zd.iso(T0 + 30), status="open"),
        zd.ticket(1, zd.iso(T0 + 40), status="solved", priority="high"),  # a later page
        zd.ticket(3, zd.iso(T0 + 50), status="deleted"),
    ]
    setup(ZENDESK, srv, monkeypatch, versions, page_size=2)
    conn = _zd_connector(srv, FakeClock(), page_size=2)

    stats = land(wh, conn, tmp_path)

    assert stats.records_read == 6 and stats.n_quarantined == 0
    assert raw_count(wh, conn) == 3
    rows = {r["ticket_id"]: r for r in staging(wh, ZENDESK)}
    assert (rows["zendesk:1"]["status"], rows["zendesk:1"]["priority"]) == ("solved", "high")
    assert rows["zendesk:1"]["updated_at"] == datetime.fromtimestamp(T0 + 40, UTC)
    assert (rows["zendesk:3"]["status"], rows["zendesk:3"]["is_deleted"]) == ("deleted", True)
    assert rows["zendesk:2"]["is_deleted"] is False

    # an older version arriving again (a re-read) never overwrites the newer one
    load.load_pages(
        wh,
        conn.spec,
        [_landed({"tickets": [versions[0]], "end_of_stream": True, "after_cursor": "x"})],
        "r2",
        tmp_path / "landing",
    )
    assert staging(wh, ZENDESK)[0]["status"] == "solved"


def _landed(doc: dict) -> LandedPage:
    return LandedPage(json.dumps(doc).encode(), {"cursor": "x"}, len(doc["tickets"]))


def test_zendesk_state_is_the_server_cursor_and_first_run_uses_start_time(
    srv, wh, tmp_path, monkeypatch
):
    setup(ZENDESK, srv, monkeypatch, [zd.ticket(i, zd.iso(T0 + i)) for i in range(1, 6)])
    conn = _zd_connector(srv, FakeClock())

    land(wh, conn, tmp_path)

    reqs = data_requests(srv, ZENDESK)
    first_start = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp())
    assert reqs[0].query == {
        "start_time": [str(first_start)],
        "include": ["users"],
        "per_page": ["3"],
    }
    assert reqs[1].query == {"cursor": [zd.encode_cursor(T0 + 3, 3)], **_zd_common()}
    assert stored_state(wh, conn) == {"cursor": zd.encode_cursor(T0 + 5, 5)}


def _zd_common() -> dict:
    return {"include": ["users"], "per_page": ["3"]}


def test_zendesk_export_budget_is_ten_requests_a_minute(srv, wh, tmp_path, monkeypatch):
    setup(ZENDESK, srv, monkeypatch, [zd.ticket(i, zd.iso(T0 + i)) for i in range(1, 13)], 1)
    clock = FakeClock()
    budget = RequestBudget(10, 60, clock=clock, sleep=clock.sleep)
    conn = _zd_connector(srv, clock, page_size=1, budget=budget, requests_per_minute=10)

    land(wh, conn, tmp_path)

    assert len(data_requests(srv, ZENDESK)) == 12
    assert clock.sleeps == [pytest.approx(60.0)]  # the 11th request waits for the window


def test_zendesk_stops_at_the_window_end_and_resumes_there(srv, wh, tmp_path, monkeypatch):
    end = int(WINDOW_END.timestamp())
    tickets = [zd.ticket(1, zd.iso(end - 100)), zd.ticket(2, zd.iso(end - 50))]
    tickets += [zd.ticket(3, zd.iso(end + 10)), zd.ticket(4, zd.iso(end + 20))]
    tickets += [zd.ticket(5, zd.iso(end + 30)), zd.ticket(6, zd.iso(end + 40))]
    setup(ZENDESK, srv, monkeypatch, tickets, page_size=2)
    conn = _zd_connector(srv, FakeClock(), page_size=2)

    land(wh, conn, tmp_path)

    assert len(data_requests(srv, ZENDESK)) == 2  # the page reaching window_end is the last
    assert stored_state(wh, conn) == {"cursor": zd.encode_cursor(end + 20, 4)}


def test_zendesk_oauth_bearer_and_anonymous_check(srv, monkeypatch):
    zd.zendesk_api(srv, [], oauth_token="oauth-abc-123")
    monkeypatch.setenv("ZENDESK_OAUTH_TOKEN", "oauth-abc-123")
    _zd_connector(srv, FakeClock(), auth="oauth").check()
    assert srv.requests[-1].headers["Authorization"] == "Bearer oauth-abc-123"

    # Zendesk answers a request without valid credentials 200 with an anonymous user
    srv.route("GET", zd.ME_PATH, Response.json({"user": {"id": None, "role": "anonymous"}}))
    with pytest.raises(AuthError, match="ZENDESK_OAUTH_TOKEN"):
        _zd_connector(srv, FakeClock(), auth="oauth").check()


def test_zendesk_demo_export_pages_without_users_still_land(wh, tmp_path):
    """The same spec loads the demo/export files (no users array): nothing to attach."""
    write_json(
        tmp_path / "zd" / "tickets-page-0001.json",
        zendesk_page([zendesk_ticket(1, description="mail me at jo@example.com")], "c1", True),
    )
    load.load_source(wh, ZENDESK_TICKETS_SPEC, str(tmp_path / "zd" / "*.json"), "r1")
    (payload,) = wh.sql("select payload from raw.zendesk__tickets").fetchall()[0]
    doc = json.loads(payload)
    assert doc["description"] == "mail me at [email]" and "requester" not in doc


# --------------------------------------------------------------------------------------------
# Intercom
# --------------------------------------------------------------------------------------------


def test_intercom_overlap_catches_a_late_indexed_conversation(srv, wh, tmp_path, monkeypatch):
    convs = [ic.conversation(str(i), T0 + 600 * i) for i in range(1, 5)]
    late = ic.conversation("99", T0 + 600 * 4 - 120)  # updated before the watermark ...
    fake = setup(INTERCOM, srv, monkeypatch, [*convs, late], hidden={"99"})  # ... indexed later
    conn = _ic_connector(srv, FakeClock())
    land(wh, conn, tmp_path)
    assert stored_state(wh, conn) == {"updated_at": T0 + 2400}
    assert raw_count(wh, conn) == 4

    fake.hidden.clear()
    n = len(data_requests(srv, INTERCOM))
    stats = land(wh, _ic_connector(srv, FakeClock()), tmp_path, run_id="r2")

    body = data_requests(srv, INTERCOM)[n].json()
    assert body["query"]["value"] == [
        {"field": "updated_at", "operator": ">", "value": T0 + 2400 - 300},
        {"field": "updated_at", "operator": "<", "value": int(WINDOW_END.timestamp())},
    ]
    assert body["sort"] == {"field": "updated_at", "order": "ascending"}
    assert stats.n_inserted == 1 and raw_count(wh, conn) == 5
    assert set(fake.versions_seen) == {"2.11"}  # the pinned Intercom-Version header


def test_intercom_resumes_the_interrupted_query_with_its_cursor(srv, wh, tmp_path, monkeypatch):
    fake = setup(INTERCOM, srv, monkeypatch, [ic.conversation(str(i), T0 + i) for i in range(7)])
    broken = [Response(200, "{")] * RETRY.max_attempts
    srv.script("POST", ic.SEARCH_PATH, [fake.search, *broken], then=fake.search)
    conn = _ic_connector(srv, FakeClock())
    with pytest.raises(InvalidBodyError):
        land(wh, conn, tmp_path)
    state = stored_state(wh, conn)
    start = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp())
    assert (state["updated_at"], state["seen_max"]) == (start, T0 + 2)  # watermark not yet moved
    assert state["starting_after"]
    n = len(data_requests(srv, INTERCOM))

    land(wh, _ic_connector(srv, FakeClock()), tmp_path, run_id="r2")

    resumed = [r.json() for r in data_requests(srv, INTERCOM)[n:]]
    assert resumed[0]["pagination"]["starting_after"] == state["starting_after"]
    assert _ic_lower_bound_body(resumed[0]) == state["query_after"]
    assert raw_count(wh, conn) == 7
    assert stored_state(wh, conn) == {"updated_at": T0 + 6}  # the cursor is gone at the end


def _ic_lower_bound_body(body: dict) -> int:
    return next(q["value"] for q in body["query"]["value"] if q["operator"] == ">")


def test_intercom_staging_maps_state_priority_tags_and_html(srv, wh, tmp_path, monkeypatch):
    convs = [
        ic.conversation(
            "1",
            T0,
            state="snoozed",
            priority="priority",
            tags=[" Exports ", "Bug"],
            body="<p>Export &amp; share <b>fail</b></p><p>again</p>",
            source_type="email",
        ),
        ic.conversation("2", T0 + 1, state="closed", title="Billing question"),
    ]
    setup(INTERCOM, srv, monkeypatch, convs)
    land(wh, _ic_connector(srv, FakeClock()), tmp_path)
    one, two = staging(wh, INTERCOM)
    assert (one["status"], one["priority"], one["channel"]) == ("pending", "high", "email")
    assert one["tags"] == ["exports", "bug"]
    assert one["body"] == "Export & share fail\nagain"
    assert (two["status"], two["priority"], two["channel"]) == ("closed", "normal", "chat")
    assert two["subject"] == "Billing question" and two["account_key"] is None


# --------------------------------------------------------------------------------------------
# Freshdesk
# --------------------------------------------------------------------------------------------


def test_freshdesk_restarts_from_the_last_updated_at_at_the_page_cap(
    srv, wh, tmp_path, monkeypatch
):
    tickets = [fd.ticket(i, zd.iso(T0 + 60 * i)) for i in range(1, 11)]
    setup(FRESHDESK, srv, monkeypatch, tickets, page_size=2, max_pages=3)
    conn = _fd_connector(srv, FakeClock(), page_size=2, max_pages=3)

    stats = land(wh, conn, tmp_path)

    reqs = data_requests(srv, FRESHDESK)
    asked = [(r.arg("updated_since"), r.arg("page")) for r in reqs]
    restart = zd.iso(T0 + 360)  # ticket 6, the newest seen on page 3
    assert asked == [
        ("2026-11-01T00:00:00Z", "1"),
        ("2026-11-01T00:00:00Z", "2"),
        ("2026-11-01T00:00:00Z", "3"),
        (restart, "1"),
        (restart, "2"),
        (restart, "3"),
    ]
    assert all(r.arg("order_by") == "updated_at" and r.arg("order_type") == "asc" for r in reqs)
    assert stats.n_inserted == 10 and raw_count(wh, conn) == 10
    assert stored_state(wh, conn) == {"updated_since": zd.iso(T0 + 600)}
    srv.assert_clean()


def test_freshdesk_page_cap_with_one_shared_second_is_a_loop_error(srv, wh, tmp_path, monkeypatch):
    tickets = [fd.ticket(i, zd.iso(T0)) for i in range(1, 10)]
    setup(FRESHDESK, srv, monkeypatch, tickets, page_size=2, max_pages=2)
    conn = _fd_connector(srv, FakeClock(), page_size=2, max_pages=2)
    with pytest.raises(PaginationLoopError, match="share updated_at"):
        land(wh, conn, tmp_path)


def test_freshdesk_always_sends_updated_since(srv, wh, tmp_path, monkeypatch):
    """Without updated_since Freshdesk returns only tickets created in the last 30 days."""
    old = fd.ticket(1, zd.iso(T0), created="2026-06-01T00:00:00Z")
    setup(FRESHDESK, srv, monkeypatch, [old, fd.ticket(2, zd.iso(T0 + 1))])
    land(wh, _fd_connector(srv, FakeClock()), tmp_path)
    (req,) = data_requests(srv, FRESHDESK)
    assert req.arg("updated_since") == "2026-11-01T00:00:00Z"
    assert req.arg("include") == "requester,description"
    assert [r["ticket_id"] for r in staging(wh, FRESHDESK)] == ["freshdesk:1", "freshdesk:2"]


@pytest.mark.parametrize("batch_bytes", [1, 64 * 1024 * 1024], ids=["page-batches", "one-batch"])
@pytest.mark.parametrize("deleted_first", [False, True], ids=["live-first", "deleted-first"])
def test_freshdesk_deleted_ticket_wins_a_tie_in_any_order_and_batch_split(
    wh, tmp_path, batch_bytes, deleted_first
):
    """A ticket with deleted: true (or spam: true) is a tombstone: with the same updated_at it
    wins over the live version whichever page came later and however the pages were batched."""
    from tasks.clients.freshdesk import FRESHDESK_TICKETS

    at = "2026-11-20T10:00:00Z"
    live = [fd.ticket(7, at, subject="live"), fd.ticket(8, at, subject="live")]
    gone = [
        fd.ticket(7, at, subject="gone", deleted=True),
        fd.ticket(8, at, subject="gone", spam=True),
    ]
    bodies = [gone, live] if deleted_first else [live, gone]
    pages = [LandedPage(json.dumps(b).encode(), {"updated_since": at}, len(b)) for b in bodies]
    load.load_pages(
        wh, FRESHDESK_TICKETS, pages, "r1", tmp_path / "landing", batch_bytes=batch_bytes
    )
    rows = wh.sql(
        "select ticket_id, payload ->> 'subject' from raw.freshdesk__tickets order by 1"
    ).fetchall()
    assert rows == [(7, "gone"), (8, "gone")]


def test_freshdesk_staging_maps_codes(srv, wh, tmp_path, monkeypatch):
    tickets = [
        fd.ticket(1, zd.iso(T0), status=4, priority=4, source=7, tags=["Exports"]),
        fd.ticket(2, zd.iso(T0 + 1), status=5, priority=1, source=2, spam=True),
        fd.ticket(3, zd.iso(T0 + 2), status=3, priority=3, source=3, company_id=None),
        fd.ticket(4, zd.iso(T0 + 3), status=6),  # a custom status arrives as its code
    ]
    setup(FRESHDESK, srv, monkeypatch, tickets)
    land(wh, _fd_connector(srv, FakeClock()), tmp_path)
    rows = staging(wh, FRESHDESK)
    got = [(r["status"], r["priority"], r["channel"], r["is_deleted"]) for r in rows]
    assert got == [
        ("solved", "urgent", "chat", False),
        ("closed", "low", "web", True),
        ("pending", "high", "phone", False),
        ("6", "normal", "email", False),
    ]
    assert rows[0]["tags"] == ["exports"] and rows[0]["account_key"] == "freshdesk_company:55"
    assert rows[2]["account_key"] is None and rows[0]["body"] == "The export fails."


# --------------------------------------------------------------------------------------------
# Redaction: nothing a customer wrote about themselves reaches DuckDB
# --------------------------------------------------------------------------------------------

PEOPLE = [
    ("Jane Cooper", "jane.cooper@example.com", "+1 212 555 0199"),
    ("Marcus Whitfield", "m.whitfield@example.org", "(415) 555-0134"),
    ("Ingrid Solberg", "ingrid.solberg@example.net", "+44 20 7946 0958"),
]
CARD = "4111 1111 1111 1111"
CARD_PLAIN = "5555555555554444"
SECRETS = [
    s
    for name, email, phone in PEOPLE
    for s in (name, *name.split(), email, phone, phone.replace(" ", ""))
] + [CARD, CARD_PLAIN, "jane.cooper", "jane&#64;example.com"]


def _text(i: int) -> tuple[str, str]:
    name, email, phone = PEOPLE[i % len(PEOPLE)]
    first = name.split()[0]
    subject = f"{name} cannot export ({email})"
    body = (
        f"Hi, this is {name}. Reach me at {email} or {phone}. "
        f"Card {CARD} was declined, so was {CARD_PLAIN}. Thanks, {first}"
    )
    return subject, body


def _pii_zendesk(i: int) -> tuple[dict, dict]:
    name, email, phone = PEOPLE[i % len(PEOPLE)]
    subject, body = _text(i)
    t = zd.ticket(
        i,
        zd.iso(T0 + i),
        requester_id=5000 + i,
        subject=subject,
        description=body,
        via={
            "channel": "email",
            "source": {"from": {"address": email, "name": name}, "to": {}, "rel": None},
        },
        custom_fields=[{"id": 1, "value": f"call {phone}"}, {"id": 2, "value": None}],
        satisfaction_rating={"score": "bad", "comment": f"{name.split()[1]} is unhappy"},
    )
    return t, zd.user(5000 + i, name, email, phone=phone)


def _pii_intercom(i: int) -> dict:
    name, email, phone = PEOPLE[i % len(PEOPLE)]
    subject, body = _text(i)
    html = "<p>" + body.replace(email, email.replace("@", "&#64;")) + "</p>"
    return ic.conversation(
        str(i),
        T0 + i,
        title=subject,
        body=html.replace(name, "<b>" + name + "</b>"),
        author={"type": "user", "id": f"u{i}", "name": name, "email": email},
        contacts={"type": "contact.list", "contacts": [{"id": f"c{i}", "external_id": email}]},
        custom_attributes={"Phone": phone, "Plan": "Pro"},
        conversation_rating={"rating": 1, "remark": f"{name} says no"},
    )


def _pii_freshdesk(i: int) -> dict:
    name, email, phone = PEOPLE[i % len(PEOPLE)]
    subject, body = _text(i)
    return fd.ticket(
        i,
        zd.iso(T0 + i),
        subject=subject,
        description_text=body,
        requester={"id": 7000 + i, "name": name, "email": email, "phone": phone, "mobile": None},
        cc_emails=[email],
        custom_fields={"cf_contact": f"{name} {phone}", "cf_area": "exports"},
    )


def _scan(con, needles: list[str]) -> list[tuple[str, str, str]]:
    """Every (table, column, needle) where a VARCHAR/JSON/VARCHAR[] value contains a needle
    (case-insensitively), over every table in the database."""
    cols = con.sql("""
        select schema_name, table_name, column_name from duckdb_columns()
        where data_type in ('VARCHAR', 'JSON', 'VARCHAR[]') and not internal
    """).fetchall()
    hits = []
    for schema, table, column in cols:
        values = con.sql(
            f'select lower("{column}"::varchar) from "{schema}"."{table}" '
            f'where "{column}" is not null'
        ).fetchall()
        text = "\n".join(v for (v,) in values)
        hits += [(f"{schema}.{table}", column, n) for n in needles if n.lower() in text]
    return hits


@by_name
def test_seeded_pii_leaves_no_trace_in_duckdb(vendor, srv, wh, tmp_path, monkeypatch):
    if vendor is ZENDESK:
        pairs = [_pii_zendesk(i) for i in range(1, 7)]
        records, users = [t for t, _ in pairs], [u for _, u in pairs]
        broken = dict(records[0], url="https://acme.zendesk.com/api/v2/tickets/999.json")
        del broken["id"]  # quarantined: its payload must be the redacted one
        records.append(broken)
        fake = zd.zendesk_api(srv, records, 3, users)
        monkeypatch.setenv(vendor.secret_env, fake.token)
    else:
        make = _pii_intercom if vendor is INTERCOM else _pii_freshdesk
        setup(vendor, srv, monkeypatch, [make(i) for i in range(1, 7)])
    conn = vendor.connector(srv, FakeClock())

    stats = land(wh, conn, tmp_path)
    assert stats.n_inserted == 6
    wh.execute(f"create table staging.stg_{vendor.name} as {db.sql_text(vendor.staging)}")

    assert _scan(wh, SECRETS) == []
    assert _scan(wh, ["[email]"])  # positive control: the scan does read the payloads
    payload = json.loads(
        wh.sql(f"select payload from {conn.spec.raw_table} order by all limit 1").fetchall()[0][0]
    )
    text = json.dumps(payload)
    # (a phone given as the requester's own known term is replaced by [name], not [phone])
    assert "[email]" in text and "[card]" in text and "[name]" in text
    if vendor is ZENDESK:
        assert wh.sql("select count(*) from quality.quarantine").fetchall()[0][0] == 1
        assert len(payload["requester"]["email_key"]) == 64
