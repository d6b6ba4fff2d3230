"""Secrets in every form stay out of errors and logs; broken 2xx bodies are transient for reads.

Every auth style the connectors use is driven against a local server that echoes the
request's credentials (tests/fakes/server.py `echo`); the raised exception (`str`, `repr`,
pickled) and the captured log records must hold no form of the secret: as is, URL-encoded,
decoded `user:password`, or base64 in any alignment (also a 12-character piece of it).
"""

from __future__ import annotations

import base64
import logging
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from requests.auth import HTTPBasicAuth

from tasks import load
from tasks.clients.http import (
    AuthError,
    ClientRequestError,
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
    expect_json,
    mask_text,
)
from tasks.clients.zendesk import ZendeskSettings, ZendeskTickets
from tasks.redact import register_duckdb
from tasks.secrets import GRAM, register_secret
from tests.fakes import zendesk as zd
from tests.fakes.server import FakeServer, Request, Response, echo

FAST = RetryPolicy(max_attempts=3, base_delay_s=0.0, max_delay_s=0.0, jitter=0.0)


@dataclass(frozen=True)
class AuthStyle:
    """How one connector authenticates (see its make_client / _client)."""

    name: str
    secrets: tuple[str, ...]  # the values that must never show
    auth: Any = None
    headers: tuple[tuple[str, str], ...] = ()
    basic: tuple[str, str] | None = None  # (user, password) of Basic auth

    def client(self, srv: FakeServer, **kw: Any) -> HttpClient:
        return HttpClient(
            self.name,
            srv.url,
            auth=self.auth,
            headers=dict(self.headers),
            retry=FAST,
            sleep=lambda s: None,
            timeout=(2.0, 5.0),
            **kw,
        )


ZD_USER, ZD_TOKEN = "agent@acme.test/token", "zdT0kenAbCdEfGhIjKlMnOpQrStUv4"
FD_KEY = "fdKeyQwErTyUiOp1234567"
JIRA_USER, JIRA_TOKEN = "agent@acme.test", "ATATT3xFfGF0jiraTokenValue+/=42"
AMP_KEY, AMP_SECRET = "ampKey0123456789abcdef", "ampSecret/9876+fedcba=="
MP_USER, MP_SECRET = "svc.user.mp", "mpSecretValue12345678XyZ"

STYLES = [
    AuthStyle("zendesk", (ZD_TOKEN,), HTTPBasicAuth(ZD_USER, ZD_TOKEN), basic=(ZD_USER, ZD_TOKEN)),
    AuthStyle("freshdesk", (FD_KEY,), HTTPBasicAuth(FD_KEY, "X"), basic=(FD_KEY, "X")),
    AuthStyle("jira", (JIRA_TOKEN,), (JIRA_USER, JIRA_TOKEN), basic=(JIRA_USER, JIRA_TOKEN)),
    AuthStyle(
        "github",
        ("ghp_GitHubPat0123456789abcdefXYZ",),
        headers=(("Authorization", "Bearer ghp_GitHubPat0123456789abcdefXYZ"),),
    ),
    AuthStyle(
        "linear",  # the personal API key without "Bearer"
        ("lin_api_LinearKey0123456789abcd",),
        headers=(("Authorization", "lin_api_LinearKey0123456789abcd"),),
    ),
    AuthStyle(
        "sentry",
        ("sntrys_SentryToken0123456789ab",),
        headers=(("Authorization", "Bearer sntrys_SentryToken0123456789ab"),),
    ),
    AuthStyle(
        "intercom",
        ("dG9rOmIntercomToken0123456789==",),
        headers=(("Authorization", "Bearer dG9rOmIntercomToken0123456789=="),),
    ),
    AuthStyle(
        "posthog",
        ("phx_PostHogPersonalKey0123456789",),
        headers=(("Authorization", "Bearer phx_PostHogPersonalKey0123456789"),),
    ),
    AuthStyle(
        "amplitude", (AMP_KEY, AMP_SECRET), (AMP_KEY, AMP_SECRET), basic=(AMP_KEY, AMP_SECRET)
    ),
    AuthStyle("mixpanel", (MP_SECRET,), (MP_USER, MP_SECRET), basic=(MP_USER, MP_SECRET)),
]
BY_NAME = pytest.mark.parametrize("style", STYLES, ids=[s.name for s in STYLES])


def _b64_pieces(raw: bytes) -> set[str]:
    """Base64 text of `raw` in each alignment, trimmed of the characters its neighbours set."""
    out = set()
    for pad in range(3):
        enc = base64.b64encode(b"\x00" * pad + raw).decode()
        out.add(enc[(0, 2, 3)[pad] : 4 * ((pad + len(raw)) // 3)])
    return out


def forms_of(style: AuthStyle) -> set[str]:
    """Every form a secret of `style` can take in an echo."""
    forms: set[str] = set()
    for secret in style.secrets:
        forms |= {secret, quote(secret, safe=""), quote_plus(secret)}
        forms |= _b64_pieces(secret.encode())
    if style.basic:
        pair = ":".join(style.basic)
        forms |= {pair, base64.b64encode(pair.encode()).decode()}
    return forms


def leaks(text: str, style: AuthStyle) -> list[str]:
    """The pieces (GRAM characters, or a whole short form) of any secret form in `text`."""
    found = []
    for form in forms_of(style):
        pieces = [form] if len(form) < GRAM else [form[i : i + GRAM] for i in range(len(form) - 11)]
        found += [p for p in pieces if p in text]
    return found


def assert_no_secret(exc: BaseException, caplog: pytest.LogCaptureFixture, style: AuthStyle):
    texts = {
        "str": str(exc),
        "repr": repr(exc),
        "pickle": pickle.dumps(exc).decode("latin-1"),
        "fields": repr(vars(exc)),
        "logs": "\n".join(f"{r.getMessage()} {r.args!r} {r.msg!r}" for r in caplog.records),
    }
    for where, text in texts.items():
        assert not leaks(text, style), (where, leaks(text, style), text[:600])


@pytest.fixture(scope="module")
def srv():
    with FakeServer() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(srv, caplog):
    srv.reset()
    caplog.set_level(logging.DEBUG)  # urllib3's request lines are DEBUG records


# -- secrets in every form ---------------------------------------------------------------------


@BY_NAME
@pytest.mark.parametrize(
    ("status", "method", "raised"),
    [
        (401, "GET", AuthError),
        (400, "GET", ClientRequestError),
        (500, "GET", RetriesExhaustedError),
        (500, "POST", UncertainWriteError),  # a create: the excerpt is in the message
    ],
)
@pytest.mark.parametrize("body", ["text", "json", "cut"])
def test_echoed_credentials_are_masked_everywhere(srv, caplog, style, status, method, raised, body):
    # "cut": filler first, so the 200-character excerpt ends inside the echoed credential
    pad = 200 - len("rejected ") - 14 if body == "cut" else 0
    srv.route("*", "/api/thing", echo(status, style="json" if body == "json" else "text", pad=pad))
    client = style.client(srv)
    # one query value the client cannot know is secret (only its registered forms say so)
    params = {"access_token": style.secrets[0], "q": style.secrets[-1], "page": 2}
    with pytest.raises(raised) as err:
        client.request(method, "/api/thing", params=params, idempotent=method == "GET")
    assert_no_secret(err.value, caplog, style)
    assert err.value.status == status or raised is RetriesExhaustedError
    # the message still says what happened, in one line
    assert str(err.value).startswith(f"{style.name}: ") and "\n" not in str(err.value)
    srv.assert_clean()


@BY_NAME
def test_the_echo_really_carries_the_secret(srv, style):
    # guard against a vacuous pass: unmasked, the echo holds the secret's forms
    srv.route("GET", "/api/thing", echo(401))
    client = style.client(srv)
    resp = client.request("GET", "/api/thing", params={"q": style.secrets[-1]}, ok_statuses=(401,))
    assert leaks(resp.text, style)


@pytest.mark.parametrize(
    "text",
    [
        "Authorization: Basic {b64}",
        "{{'Authorization': 'Basic {b64}'}}",
        'seen "{b64_cut}" in the header',
        "user {pair} not allowed",
        "cookie: session={secret}; theme=dark",
        "X-Api-Key: {secret}",
        "redirect to https://{pair_url}@host.test/x?api_key={secret_url}",
        "args token={secret_url}&access_token={secret}&page=2",
        "embedded {embedded}",
    ],
)
def test_mask_text_hides_every_form(text):
    user, secret = "agent@acme.test/token", "MaskMeT0ken/With+Chars=9"
    register_secret(secret, f"{user}:{secret}")
    pair = f"{user}:{secret}"
    b64 = base64.b64encode(pair.encode()).decode()
    embedded = base64.b64encode(f"xy:{secret}:more".encode()).decode()  # another alignment
    filled = text.format(
        b64=b64,
        b64_cut=b64[7:27],
        pair=pair,
        pair_url=quote(user, safe="") + ":" + quote(secret, safe=""),
        secret=secret,
        secret_url=quote(secret, safe=""),
        embedded=embedded,
    )
    style = AuthStyle("t", (secret,), basic=(user, secret))
    masked = mask_text(filled)
    assert not leaks(masked, style), masked
    assert "***" in masked


def test_ordinary_words_are_not_masked():
    text = "invalid token provided; basic information: see the docs (page=2, cursor=abc)"
    assert mask_text(text) == text


# -- exceptions survive pickling (Prefect pickles task exceptions) --------------------------


@pytest.mark.parametrize(
    "cls",
    [
        HttpError,
        AuthError,
        NotFoundError,
        ClientRequestError,
        RetriesExhaustedError,
        UncertainWriteError,
        PaginationLoopError,
        InvalidResponseError,
        InvalidBodyError,
    ],
)
def test_http_errors_round_trip_through_pickle(cls):
    exc = cls("zendesk", "GET /x failed", status=503, hint="try later", url="https://h/x?a=***")
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is cls and str(back) == str(exc) and back.args == exc.args
    assert (back.source, back.status, back.hint, back.url) == ("zendesk", 503, "try later", exc.url)


# -- broken 2xx bodies: transient for reads, uncertain for writes ------------------------------


DOC = {"tickets": [{"id": i, "subject": "x" * 20} for i in range(5)], "end_of_stream": True}


@pytest.mark.parametrize(
    "broken",
    [
        Response.cut_short(DOC),
        Response(200, "<html><body>Bad gateway</body></html>", {"Content-Type": "text/html"}),
        Response.json({"results": []}),  # valid JSON, wrong shape
    ],
    ids=["truncated", "html", "wrong_shape"],
)
@pytest.mark.parametrize("times", [1, FAST.max_attempts])
def test_a_broken_read_body_is_retried_then_invalid_body(srv, caplog, broken, times):
    srv.script("GET", "/export", [broken] * times, then=Response.json(DOC))
    style = STYLES[0]
    client = style.client(srv)
    expect = expect_json(dict, lists=("tickets",))
    if times < FAST.max_attempts:
        assert client.request("GET", "/export", expect=expect).parsed == DOC
        assert client.n_requests == times + 1
        return
    with pytest.raises(InvalidBodyError) as err:
        client.request("GET", "/export", params={"api_key": ZD_TOKEN}, expect=expect)
    message = str(err.value)
    assert message.startswith("zendesk: GET ") and "/export?api_key=***" in message
    assert "\n" not in message and len(message) < 600
    assert client.n_requests == FAST.max_attempts
    assert_no_secret(err.value, caplog, style)


def test_a_post_query_is_a_read_when_said_so(srv):
    srv.script("POST", "/search", [Response.cut_short(DOC)], then=Response.json(DOC))
    client = STYLES[2].client(srv)
    assert client.post_json("/search", {"jql": "x"}, read=True) == DOC
    assert client.n_requests == 2


@pytest.mark.parametrize("idempotent", [True, False])
def test_a_garbled_answer_to_a_write_is_uncertain_and_not_repeated(srv, idempotent):
    srv.route("*", "/issue", Response.cut_short({"id": "10001", "key": "FB-1"}, status=201))
    client = STYLES[2].client(srv)
    with pytest.raises(UncertainWriteError, match="may have been applied"):
        client.post_json("/issue", {"fields": {}}, idempotent=idempotent)
    with pytest.raises(UncertainWriteError):
        client.request("PUT", "/issue", json={}, ok_statuses=(201,), expect=expect_json(dict))
    assert client.n_requests == 2  # one each: never repeated


# -- the cursor stays where it was when a read fails -------------------------------------------


def _zendesk(srv: FakeServer) -> ZendeskTickets:
    settings = ZendeskSettings(
        base_url=srv.url, email="agent@acme.test", start_date=datetime(2026, 11, 1), page_size=2
    )
    return ZendeskTickets(
        settings, retry=FAST, sleep=lambda s: None, budget=RequestBudget(1000, 60)
    )


def test_cursor_stays_at_the_last_committed_page_when_a_read_keeps_failing(
    srv, con, tmp_path, monkeypatch
):
    register_duckdb(con, "test-salt")
    con.execute("set variable hash_salt = ?", ["test-salt"])
    t0 = int(datetime(2026, 11, 2, tzinfo=UTC).timestamp())
    fake = zd.zendesk_api(srv, [zd.ticket(i, zd.iso(t0 + i)) for i in range(1, 6)], 2)
    monkeypatch.setenv("ZENDESK_API_TOKEN", fake.token)

    def cut(req: Request) -> Response:
        payload, _ = fake.export(req).encoded()
        return Response.cut_short(payload, keep=0.6)

    srv.script("GET", zd.EXPORT_PATH, [fake.export] + [cut] * FAST.max_attempts, then=fake.export)
    pages = _zendesk(srv).pages(None, datetime(2026, 12, 31, tzinfo=UTC))
    with pytest.raises(InvalidBodyError):
        load.load_pages(con, _zendesk(srv).spec, pages, "r1", tmp_path / "land", batch_bytes=1)
    first = load.read_state(con, "zendesk", _zendesk(srv).stream)
    assert first is not None and "cursor" in first  # page 1 committed, page 2 never
    # the rerun resumes from that cursor and lands the rest
    resumed = _zendesk(srv).pages(first, datetime(2026, 12, 31, tzinfo=UTC))
    load.load_pages(con, _zendesk(srv).spec, resumed, "r2", tmp_path / "land", batch_bytes=1)
    n = con.sql("select count(*) from raw.zendesk__tickets").fetchall()[0][0]
    assert n == 5


# -- the real connectors, each with its own auth, against a server that echoes it ------------


def _connectors() -> dict[str, tuple[dict[str, str], Callable[[str], Any], AuthStyle]]:
    from tasks.clients.amplitude import AmplitudeConnector, AmplitudeSettings
    from tasks.clients.freshdesk import FreshdeskSettings, FreshdeskTickets
    from tasks.clients.github import GitHubIssuesConnector, GitHubSettings, make_client
    from tasks.clients.intercom import IntercomConversations, IntercomSettings
    from tasks.clients.jira import JiraConnector, JiraSettings
    from tasks.clients.linear import LinearConnector, LinearSettings
    from tasks.clients.mixpanel import MixpanelConnector, MixpanelSettings
    from tasks.clients.posthog import PostHogConnector, PostHogSettings
    from tasks.clients.sentry import SentryConnector, SentrySettings

    kw: dict[str, Any] = {"retry": FAST, "sleep": lambda s: None}
    by = {s.name: s for s in STYLES}

    def github(url: str) -> Any:
        settings = GitHubSettings(base_url=url, owner="acme", repo="analytics")
        return GitHubIssuesConnector(settings, client=make_client(settings, retry=FAST))

    return {
        "zendesk": (
            {"ZENDESK_API_TOKEN": ZD_TOKEN},
            lambda url: ZendeskTickets(
                ZendeskSettings(base_url=url, email="agent@acme.test"), **kw
            ),
            by["zendesk"],
        ),
        "freshdesk": (
            {"FRESHDESK_API_KEY": FD_KEY},
            lambda url: FreshdeskTickets(FreshdeskSettings(base_url=url), **kw),
            by["freshdesk"],
        ),
        "intercom": (
            {"INTERCOM_ACCESS_TOKEN": by["intercom"].secrets[0]},
            lambda url: IntercomConversations(IntercomSettings(base_url=url), **kw),
            by["intercom"],
        ),
        "jira": (
            {"JIRA_EMAIL": JIRA_USER, "JIRA_API_TOKEN": JIRA_TOKEN},
            lambda url: JiraConnector(JiraSettings(base_url=url, project="ABC"), **kw),
            by["jira"],
        ),
        "linear": (
            {"LINEAR_API_KEY": by["linear"].secrets[0]},
            lambda url: LinearConnector(LinearSettings(base_url=url, team_key="ENG"), **kw),
            by["linear"],
        ),
        "sentry": (
            {"SENTRY_AUTH_TOKEN": by["sentry"].secrets[0]},
            lambda url: SentryConnector(SentrySettings(base_url=url, org="acme"), **kw),
            by["sentry"],
        ),
        "github": ({"GITHUB_TOKEN": by["github"].secrets[0]}, github, by["github"]),
        "posthog": (
            {"POSTHOG_PERSONAL_API_KEY": by["posthog"].secrets[0]},
            lambda url: PostHogConnector(PostHogSettings(base_url=url, project_id="1"), **kw),
            by["posthog"],
        ),
        "amplitude": (
            {"AMPLITUDE_API_KEY": AMP_KEY, "AMPLITUDE_SECRET_KEY": AMP_SECRET},
            lambda url: AmplitudeConnector(AmplitudeSettings(base_url=url), **kw),
            by["amplitude"],
        ),
        "mixpanel": (
            {
                "MIXPANEL_SERVICE_ACCOUNT_USERNAME": MP_USER,
                "MIXPANEL_SERVICE_ACCOUNT_SECRET": MP_SECRET,
            },
            lambda url: MixpanelConnector(MixpanelSettings(base_url=url, project_id="42"), **kw),
            by["mixpanel"],
        ),
    }


CONNECTORS = _connectors()


@pytest.mark.parametrize("status", [401, 500])
@pytest.mark.parametrize("name", sorted(CONNECTORS))
def test_a_connector_check_against_an_echoing_server_leaks_nothing(
    srv, caplog, monkeypatch, name, status
):
    env, make, style = CONNECTORS[name]
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    srv.route("*", r"/.*", echo(status))
    with pytest.raises(HttpError) as err:
        make(srv.url).check()
    assert srv.requests, "the check sent nothing"
    echoed = srv.requests[0].headers.get("Authorization", "")
    assert echoed and leaks(echo(status)(srv.requests[0]).body, style)  # the echo is real
    assert_no_secret(err.value, caplog, style)
