"""The shared HTTP layer against a local fake server: retries, rate limits, errors, paging."""

from __future__ import annotations

import gzip
import logging
import socket
import threading
import time
from email.utils import formatdate
from pathlib import Path

import pytest
import requests

from tasks.clients.http import (
    AuthError,
    ClientRequestError,
    CursorGuard,
    HttpClient,
    HttpError,
    InvalidBodyError,
    InvalidResponseError,
    NotFoundError,
    PaginationLoopError,
    RequestBudget,
    RetriesExhaustedError,
    RetryPolicy,
    UncertainWriteError,
    is_transient,
    iter_link_pages,
    make_session,
    mask_url,
    parse_link_header,
)
from tests.fakes.server import FakeServer, Request, Response

TOKEN = "ghp_SuperSecretToken123"
NOW = 1_800_000_000.0  # the injected wall clock (epoch seconds)
NO_JITTER = RetryPolicy(max_attempts=6, base_delay_s=1.0, max_delay_s=120.0, jitter=0.0)


class FakeClock:
    """A monotonic clock whose sleep advances it and records every wait."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def srv():
    with FakeServer() as server:
        yield server


def client_for(srv: FakeServer, waits: list[float] | None = None, **kwargs) -> HttpClient:
    kwargs.setdefault("retry", NO_JITTER)
    kwargs.setdefault("timeout", (1.0, 2.0))
    kwargs.setdefault("headers", {"Authorization": f"Bearer {TOKEN}"})
    kwargs.setdefault("auth_hint", "set GITHUB_TOKEN")
    return HttpClient(
        "github",
        srv.url,
        sleep=(waits.append if waits is not None else _no_sleep),
        wall_clock=lambda: NOW,
        **kwargs,
    )


def _no_sleep(seconds: float) -> None:
    raise AssertionError(f"unexpected sleep({seconds})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- success and URLs -------------------------------------------------------------------------


def test_get_json_sends_headers_params_and_counts(srv):
    srv.route("GET", "/user", Response(body={"login": "octocat"}))
    client = client_for(srv)
    assert client.get_json("/user", params={"per_page": 100}) == {"login": "octocat"}
    assert client.n_requests == 1
    (req,) = srv.requests
    assert req.headers["Authorization"] == f"Bearer {TOKEN}"
    assert req.headers["User-Agent"].startswith("feedback-loop/")
    assert req.query == {"per_page": ["100"]}
    srv.assert_clean()


def test_post_json_accepts_201_and_sends_the_body(srv):
    srv.route("POST", "/repos/o/r/issues", lambda req: Response(201, {"number": 7, **req.json()}))
    client = client_for(srv)
    assert client.post_json("/repos/o/r/issues", {"title": "t"}) == {"number": 7, "title": "t"}
    assert srv.requests[0].json() == {"title": "t"}


def test_writes_accept_204_and_return_none(srv):
    srv.route("PUT", "/rest/api/3/issue/10001", Response(204))
    assert client_for(srv).request_json("PUT", "/rest/api/3/issue/10001", json={"f": 1}) is None


def test_relative_paths_join_the_base_url_and_absolute_urls_are_verbatim(srv):
    srv.route("GET", r"/api/v2/.*", lambda req: Response(body={"path": req.path}))
    srv.route("GET", "/repositories/1/issues", Response(body=[]))
    client = HttpClient("zendesk", srv.url + "/api/v2/", sleep=_no_sleep)
    assert client.get_json("tickets.json")["path"] == "/api/v2/tickets.json"
    assert client.get_json("/tickets.json")["path"] == "/api/v2/tickets.json"
    assert client.get_json(srv.url + "/repositories/1/issues?page=2&since=x") == []
    assert srv.requests[-1].target == "/repositories/1/issues?page=2&since=x"
    srv.assert_clean()


def test_absolute_url_on_another_host_gets_no_credentials_unless_trusted(srv):
    with FakeServer() as other:
        other.route("GET", "/x", Response(body={"ok": True}))
        client = client_for(srv)
        with pytest.raises(ClientRequestError, match="refusing to send credentials"):
            client.get_json(other.url + "/x?token=abc")
        assert client.n_requests == 0 and other.requests == []
        trusting = client_for(srv, trusted_hosts=[f"127.0.0.1:{other.port}"])
        assert trusting.get_json(other.url + "/x") == {"ok": True}


# -- rate limits ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected_wait"),
    [
        ({"Retry-After": "3"}, 3.0),
        ({"Retry-After": formatdate(NOW + 7, usegmt=True)}, 7.0),
        # An HTTP date is read against the server's Date, not a possibly skewed local clock.
        (
            {
                "Retry-After": formatdate(NOW + 500, usegmt=True),
                "Date": formatdate(NOW + 495, usegmt=True),
            },
            5.0,
        ),
        ({"x-ratelimit-reset": str(int(NOW) + 9)}, 9.0),
        ({"x-ratelimit-reset": str(int(NOW * 1000) + 4000)}, 4.0),  # epoch milliseconds
        ({"ratelimit-reset": "4"}, 4.0),
        ({"x-rate-limit-reset": "2"}, 2.0),
        ({"Retry-After": "3600"}, 120.0),  # capped by max_delay_s
        ({}, 1.0),  # no hint: exponential backoff
    ],
)
def test_429_waits_what_the_server_asks(srv, headers, expected_wait):
    srv.script("GET", "/q", [Response(429, {"message": "slow down"}, headers), Response(body=[1])])
    waits: list[float] = []
    client = client_for(srv, waits)
    assert client.get_json("/q") == [1]
    assert waits == [pytest.approx(expected_wait)]
    assert client.n_requests == 2


def test_backoff_doubles_and_jitter_stays_in_bounds(srv):
    srv.script("GET", "/q", [Response(429)] * 4 + [Response(body={})])
    waits: list[float] = []
    assert client_for(srv, waits).get_json("/q") == {}
    assert waits == [1.0, 2.0, 4.0, 8.0]

    policy = RetryPolicy(base_delay_s=2.0, max_delay_s=10.0, jitter=0.5)
    samples = [policy.backoff(n) for n in (1, 2, 3, 4, 5) for _ in range(50)]
    assert all(1.0 <= s <= 10.0 for s in samples)
    assert len({round(s, 6) for s in samples}) > 10  # jittered, not a lockstep


@pytest.mark.parametrize(
    ("response", "expected_wait"),
    [
        (
            Response(
                403,
                {"message": "You have exceeded a secondary rate limit. Please wait a few minutes."},
                {"Retry-After": "30"},
            ),
            30.0,
        ),
        (
            Response(403, {"message": "You have exceeded a secondary rate limit."}),
            60.0,  # GitHub: without Retry-After wait at least a minute
        ),
        (
            # GitHub sends x-ratelimit-reset on every answer; with quota left it is not the wait.
            Response(
                403,
                {"message": "You have exceeded a secondary rate limit."},
                {"x-ratelimit-remaining": "4990", "x-ratelimit-reset": str(int(NOW) + 3000)},
            ),
            60.0,
        ),
        (
            Response(
                403,
                {"message": "API rate limit exceeded for user ID 1."},
                {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) + 42)},
            ),
            42.0,
        ),
    ],
)
def test_github_403_rate_limits_are_retried(srv, response, expected_wait):
    srv.script("GET", "/repos/o/r/issues", [response, Response(body=[])])
    waits: list[float] = []
    client = client_for(srv, waits)
    assert client.get_json("/repos/o/r/issues") == []
    assert waits == [expected_wait]


def test_rate_limited_hook_retries_a_graphql_error_on_200(srv):
    limited = Response(200, {"errors": [{"extensions": {"type": "ratelimited"}}]})
    srv.script("POST", "/graphql", [limited, Response(body={"data": {"ok": 1}})])
    waits: list[float] = []
    client = client_for(srv, waits, rate_limited=lambda r: b'"ratelimited"' in r.content and r.ok)
    assert client.post_json("/graphql", {"query": "{ ok }"}) == {"data": {"ok": 1}}
    assert waits == [1.0]


# -- server errors and transport failures -----------------------------------------------------


def test_5xx_are_retried_then_succeed(srv):
    srv.script("GET", "/q", [Response(s, "oops") for s in (500, 502, 503, 504)] + [Response()])
    waits: list[float] = []
    client = client_for(srv, waits)
    assert client.request("GET", "/q").status_code == 200
    assert waits == [1.0, 2.0, 4.0, 8.0]
    assert client.n_requests == 5


def test_retries_exhausted_says_what_kept_failing(srv, caplog):
    srv.route("GET", "/q", Response(503, "down for maintenance"))
    waits: list[float] = []
    client = client_for(srv, waits, retry=RetryPolicy(max_attempts=3, jitter=0.0))
    with (
        caplog.at_level(logging.DEBUG, logger="tasks.clients.http"),
        pytest.raises(RetriesExhaustedError) as err,
    ):
        client.get_json("/q", params={"access_token": TOKEN, "cursor": "c1"})
    message = str(err.value)
    assert message.startswith("github: GET ")
    assert "failed 3 times: HTTP 503" in message
    assert "cursor=c1" in message and "access_token=***" in message
    assert err.value.status == 503
    assert client.n_requests == 3 and len(srv.requests) == 3
    assert waits == [1.0, 2.0]  # no sleep after the last attempt
    retries = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(retries) == 2
    assert "HTTP 503" in retries[0].getMessage() and "in 1.0 s" in retries[0].getMessage()
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert sum("github: GET http://127.0.0.1" in m for m in debug) == 3
    assert TOKEN not in caplog.text


def test_connection_refused_is_retried_then_exhausted():
    waits: list[float] = []
    client = HttpClient(
        "posthog",
        f"http://127.0.0.1:{free_port()}",
        retry=RetryPolicy(max_attempts=3, jitter=0.0),
        sleep=waits.append,
    )
    with pytest.raises(RetriesExhaustedError, match="Connection refused"):
        client.get_json("/api/projects/1/query/?personal_api_key=phx_secret_value")
    assert client.n_requests == 3 and waits == [1.0, 2.0]


@pytest.mark.parametrize(
    "fault",
    [Response.drop(), Response.reset(), Response(body=b"{}" * 500, truncate_to=10)],
    ids=["closed", "reset", "truncated-body"],
)
def test_dropped_connections_are_retried(srv, fault):
    srv.script("GET", "/q", [fault, Response(body={"ok": True})])
    waits: list[float] = []
    client = client_for(srv, waits)
    assert client.get_json("/q") == {"ok": True}
    assert waits == [1.0] and client.n_requests == 2


def test_read_timeout_is_retried(srv):
    srv.script("GET", "/slow", [Response.stall(2.0), Response(body={"ok": True})])
    waits: list[float] = []
    client = client_for(srv, waits, timeout=(1.0, 0.15))
    assert client.get_json("/slow") == {"ok": True}
    assert waits == [1.0] and client.n_requests == 2


def test_non_idempotent_write_is_not_repeated_after_it_may_have_applied(srv):
    srv.script("POST", "/repos/o/r/issues", [Response(502, "bad gateway")])
    client = client_for(srv, [])
    with pytest.raises(UncertainWriteError, match="may have been applied"):
        client.post_json("/repos/o/r/issues", {"title": "t"}, idempotent=False)
    assert client.n_requests == 1
    # ...but a 429 or a refused connection was certainly not applied: those still retry.
    srv.script("POST", "/repos/o/r/comments", [Response(429), Response(201, {"id": 1})])
    waits: list[float] = []
    client = client_for(srv, waits)
    assert client.post_json("/repos/o/r/comments", {"body": "b"}, idempotent=False) == {"id": 1}
    assert waits == [1.0]


# -- permanent failures -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (401, {"message": "Bad credentials"}),
        (403, {"message": "Resource not accessible by personal access token"}),
        (401, {"message": f"token {TOKEN} is revoked"}),  # a body echoing the token
    ],
)
def test_auth_failures_fail_fast_without_leaking_the_token(srv, caplog, status, body):
    srv.route("GET", "/user", Response(status, body))
    client = client_for(srv)  # any sleep would raise
    with caplog.at_level(logging.DEBUG), pytest.raises(AuthError) as err:
        client.get_json(f"/user?token={TOKEN}")
    message = str(err.value)
    assert message.startswith("github: ")
    assert "set GITHUB_TOKEN" in message and f"HTTP {status}" in message
    assert TOKEN not in message and TOKEN not in repr(err.value.__dict__)
    assert TOKEN not in caplog.text
    assert client.n_requests == 1 and len(srv.requests) == 1


@pytest.mark.parametrize("status", [404, 410])
def test_not_found_and_gone_fail_at_once(srv, status):
    srv.route("GET", "/repos/o/r/issues/9", Response(status, {"message": "Not Found"}))
    client = client_for(srv)
    with pytest.raises(NotFoundError) as err:
        client.get_json("/repos/o/r/issues/9")
    assert err.value.status == status and client.n_requests == 1


def test_ok_statuses_let_a_connector_treat_404_as_no_data(srv):
    srv.route("GET", "/api/2/export", Response(404, "No data"))
    resp = client_for(srv).request("GET", "/api/2/export", ok_statuses=(200, 404))
    assert resp.status_code == 404


def test_other_4xx_is_a_client_error_with_a_short_body_excerpt(srv):
    body = {"message": "Validation Failed", "password": "hunter2-secret", "pad": "x" * 5000}
    srv.route("POST", "/search", Response(422, body))
    with pytest.raises(ClientRequestError) as err:
        client_for(srv).post_json("/search", {"q": 1})
    message = str(err.value)
    assert "HTTP 422" in message and "Validation Failed" in message
    assert "hunter2-secret" not in message and len(message) < 500


def test_a_token_with_a_trailing_newline_fails_without_echoing_it(srv):
    client = client_for(srv, headers={"Authorization": f"Bearer {TOKEN}\n"})
    with pytest.raises(ClientRequestError) as err:
        client.get_json("/user")
    assert TOKEN not in str(err.value) and "set GITHUB_TOKEN" in str(err.value)
    assert srv.requests == []


# -- JSON -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body", [b'{"tickets": [1, 2', b"<html>502 Bad Gateway</html>", b"", b"\xff\xfe{"]
)
def test_invalid_or_truncated_json_is_retried_then_an_invalid_body(srv, body):
    # A broken 2xx body on a read is transient, like a 5xx: every attempt of the policy is used,
    # then InvalidBodyError (an InvalidResponseError) names the source and the masked URL.
    srv.route("GET", "/api/v2/tickets.json", Response(body=body))
    waits: list[float] = []
    client = client_for(srv, waits)
    with pytest.raises(InvalidBodyError) as err:
        client.get_json("/api/v2/tickets.json", params={"api_key": "k-123456789"})
    assert isinstance(err.value, InvalidResponseError)
    message = str(err.value)
    assert message.startswith("github: ") and "/api/v2/tickets.json?api_key=***" in message
    assert "k-123456789" not in message and "\n" not in message
    assert client.n_requests == NO_JITTER.max_attempts
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0]


def test_a_body_broken_once_is_retried_to_success(srv):
    srv.script(
        "GET",
        "/api/v2/tickets.json",
        [Response(body=b'{"tickets": [1, 2'), Response(body={"tickets": [1, 2]})],
    )
    waits: list[float] = []
    client = client_for(srv, waits)
    assert client.get_json("/api/v2/tickets.json") == {"tickets": [1, 2]}
    assert client.n_requests == 2 and waits == [1.0]


# -- budget -----------------------------------------------------------------------------------


def test_budget_paces_a_sliding_window():
    clock = FakeClock()
    budget = RequestBudget(2, 10.0, clock=clock, sleep=clock.sleep)
    sent = []
    for _ in range(5):
        budget.acquire()
        sent.append(clock.now)
    assert sent == [0.0, 0.0, 10.0, 10.0, 20.0]


def test_budget_with_several_windows_and_a_minimum_interval():
    clock = FakeClock()
    budget = RequestBudget(
        3, 60.0, clock=clock, sleep=clock.sleep, extra_windows=[(4, 3600.0)], min_interval_s=1.0
    )
    sent = []
    for _ in range(5):
        budget.acquire()
        sent.append(clock.now)
    assert sent == [0.0, 1.0, 2.0, 60.0, 3600.0]


def test_budget_pause_until_holds_everyone():
    clock = FakeClock()
    budget = RequestBudget(100, 1.0, clock=clock, sleep=clock.sleep)
    budget.acquire()
    budget.pause_until(clock.now + 30)
    budget.acquire()
    assert clock.now == 30.0


def test_budget_holds_the_window_across_threads():
    budget = RequestBudget(3, 0.1)
    sent: list[float] = []

    def worker() -> None:
        for _ in range(3):
            budget.acquire()
            sent.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sent.sort()
    assert len(sent) == 9
    # 20 ms slack: a thread can be descheduled between acquire() and noting the time.
    assert all(sent[i + 3] - sent[i] >= 0.08 for i in range(len(sent) - 3))


def test_a_429_pauses_the_shared_budget(srv):
    clock = FakeClock()
    budget = RequestBudget(100, 60.0, clock=clock, sleep=clock.sleep)
    srv.script("GET", "/q", [Response(429, headers={"Retry-After": "7"}), Response(body={})])
    client_waits: list[float] = []
    # The client's own sleep does not move the budget's clock: the budget must hold the retry.
    client = client_for(srv, client_waits, budget=budget)
    assert client.get_json("/q") == {}
    assert client_waits == [7.0] and clock.sleeps == [7.0]
    # Another client sharing the budget was held too; after the pause it goes straight through.
    srv.route("GET", "/other", Response(body=[]))
    assert client_for(srv, budget=budget).get_json("/other") == []
    assert clock.sleeps == [7.0]


# -- pagination -------------------------------------------------------------------------------


def test_parse_link_header_github_and_sentry():
    github = (
        '<https://api.github.com/repositories/1/issues?page=2&per_page=100>; rel="next", '
        '<https://api.github.com/repositories/1/issues?page=9&per_page=100>; rel="last"'
    )
    assert parse_link_header(github) == {
        "next": "https://api.github.com/repositories/1/issues?page=2&per_page=100",
        "last": "https://api.github.com/repositories/1/issues?page=9&per_page=100",
    }
    sentry = (
        "<https://sentry.io/api/0/organizations/acme/issues/?cursor=0:0:1>; "
        'rel="previous"; results="false"; cursor="0:0:1", '
        "<https://sentry.io/api/0/organizations/acme/issues/?cursor=0:100:0>; "
        'rel="next"; results="false"; cursor="0:100:0"'
    )
    links = parse_link_header(sentry)
    assert links["next"].endswith("cursor=0:100:0")
    assert links["next:results"] == "false" and links["next:cursor"] == "0:100:0"
    assert links["previous:results"] == "false"


def test_parse_link_header_edge_cases():
    assert parse_link_header(None) == {} and parse_link_header("") == {}
    value = (
        '<https://x.test/a?f=a,b;c>; rel="next last"; title="a, \\"quoted\\"; one", '
        "<https://x.test/b>; REL=prev; type=text/html"
    )
    links = parse_link_header(value)
    assert links["next"] == links["last"] == "https://x.test/a?f=a,b;c"
    assert links["next:title"] == 'a, "quoted"; one'
    assert links["prev"] == "https://x.test/b" and links["prev:type"] == "text/html"


def _paged(pages: int, sentry_style: bool = False):
    def handler(req: Request) -> Response:
        page = int(req.arg("page", "1"))
        base = f"http://{req.headers['Host']}/repositories/1/issues"
        more = page < pages
        if sentry_style:
            link = f'<{base}?page={page + 1}>; rel="next"; results="{str(more).lower()}"'
        else:
            link = f'<{base}?page={page + 1}>; rel="next"' if more else ""
        return Response(body=[{"page": page}], headers={"Link": link} if link else {})

    return handler


@pytest.mark.parametrize("sentry_style", [False, True])
def test_iter_link_pages_follows_next_verbatim(srv, sentry_style):
    srv.route("GET", "/repos/o/r/issues", _paged(3, sentry_style))
    srv.route("GET", "/repositories/1/issues", _paged(3, sentry_style))
    client = client_for(srv)
    pages = [r.json() for r in iter_link_pages(client, "/repos/o/r/issues", {"state": "all"})]
    assert pages == [[{"page": 1}], [{"page": 2}], [{"page": 3}]]
    assert [r.target for r in srv.requests] == [
        "/repos/o/r/issues?state=all",
        "/repositories/1/issues?page=2",
        "/repositories/1/issues?page=3",
    ]
    srv.assert_clean()


def test_iter_link_pages_stops_when_the_api_links_back(srv):
    def loop(req: Request) -> Response:
        target = "/issues?page=1" if req.arg("page") == "2" else "/issues?page=2"
        return Response(body=[], headers={"Link": f'<{target}>; rel="next"'})

    srv.route("GET", "/issues", loop)
    client = client_for(srv)
    with pytest.raises(PaginationLoopError, match="already gave"):
        list(iter_link_pages(client, "/issues", {"page": 1}))
    assert client.n_requests == 2


def test_cursor_guard():
    guard = CursorGuard("zendesk", max_pages=5)
    for token in ("a", "b", {"after": "c"}, None):
        guard.check(token)
    with pytest.raises(PaginationLoopError, match="zendesk: .*already gave"):
        guard.check({"after": "c"})
    small = CursorGuard("jira", max_pages=2)
    small.check(1)
    small.check(2)
    with pytest.raises(PaginationLoopError, match="more than 2 pages"):
        small.check(3)


# -- downloads, masking, misc -----------------------------------------------------------------


def test_download_to_refetches_a_body_that_broke_off(srv, tmp_path: Path):
    payload = gzip.compress(b'{"event": "x"}\n' * 200_000)
    full = Response(body=payload, headers={"Content-Type": "application/gzip"})
    broken = Response(body=payload, truncate_to=1000)
    srv.script("GET", "/api/2/export", [broken, full])
    waits: list[float] = []
    client = client_for(srv, waits)
    dest = tmp_path / "export.gz"
    resp = client.download_to("/api/2/export", dest, params={"start": "20261120T00"})
    assert resp.status_code == 200
    assert dest.read_bytes() == payload  # raw bytes: not decoded, no partial left behind
    assert not dest.with_name("export.gz.part").exists()
    assert waits == [1.0] and client.n_requests == 2


def test_mask_url_hides_credentials_only():
    url = (
        "https://u:pa55word@api.test/x?cursor=abc&access_token=t0k&api_key=k1"
        "&X-Amz-Signature=s1g&client_secret=cs&page=2&key=kk&password=p"
    )
    masked = mask_url(url)
    for secret in ("pa55word", "t0k", "=k1", "s1g", "=cs", "=kk", "=p&"):
        assert secret not in masked + "&"
    assert "cursor=abc" in masked and "page=2" in masked and "//u:***@api.test" in masked


def test_is_transient_never_retries_http_errors():
    for exc in (
        RetriesExhaustedError("s", "m"),
        AuthError("s", "m"),
        NotFoundError("s", "m"),
        InvalidResponseError("s", "m"),
        HttpError("s", "m"),
    ):
        assert is_transient(exc) is False
    assert is_transient(requests.ConnectionError("boom")) is True
    assert is_transient(TimeoutError()) is True
    assert is_transient(ValueError("bug")) is False

    class State:  # Prefect's retry_condition_fn(task, task_run, state) shape
        def __init__(self, exc: BaseException) -> None:
            self.data = exc

    assert is_transient(None, None, State(AuthError("s", "m"))) is False
    assert is_transient(None, None, State(requests.ReadTimeout())) is True


def test_make_session_pools_without_urllib3_retries():
    session = make_session(pool_size=4)
    adapter = session.get_adapter("https://api.github.com")
    assert adapter.max_retries.total == 0
    assert adapter._pool_maxsize == 4


def test_unexpected_requests_are_answered_599_and_recorded(srv):
    client = client_for(srv)
    with pytest.raises(HttpError, match="HTTP 599"):
        client.get_json("/nowhere")
    assert [r.path for r in srv.unexpected] == ["/nowhere"]


def test_fake_server_script_fallback_errors_and_large_bodies(srv):
    srv.script("GET", "/s", [Response(body="first")], then=lambda req: Response(body=req.path))
    srv.route("GET", "/boom", lambda req: 1 / 0)
    big = b"z" * (50 * 1024 * 1024)
    srv.route("GET", "/big", Response(body=big, headers={"Content-Type": "application/zip"}))
    srv.route("POST", r"/up/(?P<name>\w+)", lambda req: Response(body={"n": req.groups["name"]}))
    session = make_session()
    assert [session.get(srv.url + "/s").text for _ in range(3)] == ["first", "/s", "/s"]
    assert session.get(srv.url + "/boom").status_code == 598
    assert [repr(e) for _, e in srv.errors] == ["ZeroDivisionError('division by zero')"]
    assert session.get(srv.url + "/big").content == big
    chunked = session.post(srv.url + "/up/abc", data=iter([b"a", b"bc"]))
    assert chunked.json() == {"n": "abc"} and srv.requests[-1].body == b"abc"
    assert session.head(srv.url + "/big").headers["Content-Length"] == str(len(big))
    assert srv.unexpected == []
