"""The one HTTP layer every connector uses: session, retries, rate-limit pacing, pagination.

Rules (API_NOTES): retry 429, 5xx and connection errors/timeouts with exponential backoff and
jitter, honouring `Retry-After` (seconds or HTTP date) and reset headers
(`x-ratelimit-reset` epoch seconds, `ratelimit-reset` delta seconds); GitHub's 403 with
`x-ratelimit-remaining: 0` or a secondary-rate-limit message is a rate limit too. Never retry
400/401/403(non-rate-limit)/404: fail at once with a message naming the source and the setting
to fix. A read's 2xx body that is truncated, not JSON or not the expected shape (`expect=`) is
retried like a 5xx, then InvalidBodyError; for a write it is UncertainWriteError. Secrets never
appear in exceptions or logs in any form (mask_text + the registry in tasks.secrets).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json as jsonlib
import logging
import math
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from tasks.secrets import GRAM, register_secret, registered_forms, secret_forms

log = logging.getLogger(__name__)

USER_AGENT = f"feedback-loop/0.1 python-requests/{requests.__version__}"

# 408 and the gateway family are answered before the API did anything; 500 is usually a
# transient backend fault at these vendors. Other 5xx (501, 505, ...) will not get better.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# Statuses that say the request was not applied, so even a non-idempotent write may be repeated.
NOT_APPLIED_STATUSES = frozenset({408, 429, 503})
# GitHub answers its primary and secondary rate limits with 403 (or 429) and these messages.
_RATE_LIMIT_BODY = re.compile(r"secondary rate limit|rate limit exceeded|abuse detection", re.I)
_SECONDARY_BODY = re.compile(r"secondary rate limit|abuse detection", re.I)
# GitHub: "If you exceed a secondary rate limit and there is no retry-after header, wait at
# least one minute before retrying."
SECONDARY_LIMIT_MIN_WAIT_S = 60.0
_RESET_HEADERS = ("x-ratelimit-reset", "ratelimit-reset", "x-rate-limit-reset")
_REMAINING_HEADERS = ("x-ratelimit-remaining", "ratelimit-remaining", "x-rate-limit-remaining")
_TRANSPORT_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)
# The useful part of a requests/urllib3 error text, most specific first.
_REASONS = [
    re.compile(r"\[Errno -?\d+\]([^'\")]*)"),
    re.compile(r"\w+Error\(-?\d+, '([^']*)'\)"),
    re.compile(r"RemoteDisconnected\('([^']*)'\)"),
    re.compile(r"(IncompleteRead\([^)]*\))"),
    re.compile(r"(Connection (?:broken|aborted|reset)[^'\"]*)"),
]
_EXCERPT_BYTES = 2048
_EXCERPT_CHARS = 200
_MIN_SECRET_LEN = 6  # shorter "secrets" would shred ordinary words in messages


# ---------------------------------------------------------------------------------------------
# Errors


class HttpError(RuntimeError):
    """A request failed for good. `source` names the connector, `hint` the setting to fix."""

    def __init__(
        self,
        source: str,
        message: str,
        *,
        status: int | None = None,
        hint: str | None = None,
        url: str | None = None,
    ):
        self.source, self.status, self.hint, self.url = source, status, hint, url
        text = f"{source}: {message}"
        if hint:
            text += f" — {hint}"
        super().__init__(text)

    def __reduce__(self) -> tuple[Any, ...]:
        # Prefect pickles task exceptions; the default (cls(*args)) would call __init__ with
        # the formatted text as `source` and no message. Rebuild from the text and the fields.
        return (_restore_http_error, (type(self), str(self), dict(self.__dict__)))


def _restore_http_error(cls: type[HttpError], text: str, fields: dict[str, Any]) -> HttpError:
    exc = cls.__new__(cls)
    RuntimeError.__init__(exc, text)
    exc.__dict__.update(fields)
    return exc


class AuthError(HttpError):
    """401, or 403 that is not a rate limit: bad or under-scoped credentials."""


class NotFoundError(HttpError):
    """404 (and 410): wrong base URL / id, or a resource that is gone."""


class ClientRequestError(HttpError):
    """Other 4xx: the request itself is wrong (a bug or a bad setting)."""


class RetriesExhaustedError(HttpError):
    """429 / 5xx / connection errors persisted through every retry."""


class UncertainWriteError(HttpError):
    """A non-idempotent request (`idempotent=False`) failed after it may have reached the API
    (5xx, read timeout, connection dropped mid-request). It was not repeated: look the object
    up (e.g. a tracker's `find`) before trying again."""


class PaginationLoopError(HttpError):
    """The API handed back a cursor/URL it already gave: stop instead of looping forever."""


class InvalidResponseError(HttpError):
    """The body is not what the vendor documents (invalid/truncated JSON, missing keys)."""


class InvalidBodyError(InvalidResponseError):
    """A read's 2xx body stayed invalid (not JSON, truncated, not the expected shape) through
    every retry of the RetryPolicy: a cut or garbled body is treated as transient, like a 5xx."""


def is_transient(exc: object, task_run: object = None, state: object = None) -> bool:
    """Should an outer retry (Prefect task retries) try again after `exc`?

    False for every HttpError: HttpClient already retried the transient ones and the rest are
    permanent, so stacking Prefect retries on top would multiply requests against a rate limit.
    True only for raw network errors that escaped HttpClient (`requests`/socket timeouts and
    connection errors). Usable directly as Prefect's `retry_condition_fn(task, task_run, state)`:
    with three arguments the exception is taken from the Failed state.
    """
    if state is not None:
        exc = _exception_of_state(state)
    if isinstance(exc, HttpError):
        return False
    return isinstance(exc, (*_TRANSPORT_ERRORS, ConnectionError, TimeoutError))


def _exception_of_state(state: object) -> BaseException | None:
    data = getattr(state, "data", None)
    if isinstance(data, BaseException):
        return data
    result = getattr(state, "result", None)
    if result is None:
        return None
    try:  # Prefect: a Failed state's result is its exception when raise_on_failure=False
        value = result(raise_on_failure=False)
    except Exception:
        return None
    return value if isinstance(value, BaseException) else None


# ---------------------------------------------------------------------------------------------
# Masking: URLs and excerpts in messages never carry credentials


def _is_secret_name(name: str) -> bool:
    key = unquote(name).strip().lower()
    if re.search(
        r"token|secret|passw|signature|api[_\-.]?key|apikey|credential|private|authorization|"
        r"cookie",
        key,
    ):
        return True
    return re.fullmatch(r"(.*[_\-.])?(key|sig|auth|pwd|code|session|jwt)", key) is not None


# name=value in URLs, and in echoed query strings / form bodies inside response text
_QUERY_PARAM = re.compile(r"(^|[?&;\s,(\[{\"'])([^=&;#\s?,(\[{\"']+)=([^&;#\s'\"<>]*)")
_USERINFO = re.compile(r"(//[^/@:\s]+:)[^/@\s]+@")
_JSON_SECRET = re.compile(r'("([^"\\]{1,64})"\s*:\s*")((?:[^"\\]|\\.)*)(")')
# "Bearer <token>", "Basic <base64>", "token <pat>" (GitHub): values that look like credentials
_AUTH_SCHEME = re.compile(
    r"(?i)\b(bearer|basic|digest|token)(\s+)(?=\S*[\d+/=_-]|\S{16})([\w.~+/=:-]{8,})"
)
# an echoed request header: `Authorization: ...`, `'X-Api-Key': '...'`, `Cookie: a=b; c=d`
_HEADER_ECHO = re.compile(
    r"(?i)\b((?:proxy-)?authorization|x-api-key|api-key|apikey|x-auth-token|x-access-token|"
    r"private-token|x-csrf-token)(['\"]?\s*[:=]\s*['\"]?)((?:[a-z]+\s+)?[^\s'\",;}]+)?"
)
_COOKIE_ECHO = re.compile(r"(?i)\b((?:set-)?cookie)(['\"]?\s*[:=]\s*['\"]?)([^\r\n'\"]+)?")


def mask_text(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with credentials replaced by `***`: every form of the given and the registered
    secrets (tasks.secrets.register_secret: as is, URL-encoded, base64 in any alignment, and
    any 12-character run of those, so a cut excerpt is masked too), credential-looking query
    values and `name=value` pairs, URL passwords, JSON secret fields, `Bearer`/`Basic`/`token`
    values and echoed `Authorization`/`X-Api-Key`/`Cookie` headers."""
    forms, grams = registered_forms()
    for secret in secrets:
        if secret and len(secret) >= _MIN_SECRET_LEN and secret not in forms:
            more_forms, more_grams = secret_forms(secret)
            forms, grams = forms | more_forms, grams | more_grams
    for secret in sorted(forms, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "***")
    if grams and len(text) >= GRAM:
        text = _mask_runs(text, grams)
    for echo in (_COOKIE_ECHO, _HEADER_ECHO):
        text = echo.sub(lambda m: f"{m[1]}{m[2]}***" if m[3] else m[0], text)
    text = _AUTH_SCHEME.sub(r"\1\2***", text)
    text = _USERINFO.sub(r"\1***@", text)
    text = _QUERY_PARAM.sub(
        lambda m: f"{m[1]}{m[2]}=***" if _is_secret_name(m[2]) and m[3] and m[3] != "***" else m[0],
        text,
    )
    return _JSON_SECRET.sub(
        lambda m: f"{m[1]}***{m[4]}" if _is_secret_name(m[2]) and m[3] else m[0], text
    )


def _mask_runs(text: str, grams: frozenset[str]) -> str:
    """Replace every run of text covered by GRAM-long pieces of a secret's forms by `***`."""
    masked = [False] * len(text)
    hit = False
    for i in range(len(text) - GRAM + 1):
        if text[i : i + GRAM] in grams:
            masked[i : i + GRAM] = [True] * GRAM
            hit = True
    if not hit:
        return text
    out: list[str] = []
    for i, ch in enumerate(text):
        if not masked[i]:
            out.append(ch)
        elif i == 0 or not masked[i - 1]:
            out.append("***")
    return "".join(out)


def mask_url(url: str) -> str:
    """The URL with the values of token/key/secret/password/signature-like params masked."""
    return mask_text(url)


class _MaskingFilter(logging.Filter):
    """urllib3 logs each request line ("GET /path?token=... HTTP/1.1") at DEBUG: mask it too."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


for _logger in (logging.getLogger("urllib3.connectionpool"), log):
    if not any(isinstance(f, _MaskingFilter) for f in _logger.filters):
        _logger.addFilter(_MaskingFilter())


def _secret_values(headers: Mapping[str, str] | None, auth: Any) -> set[str]:
    values: set[str] = set()
    for name, value in (headers or {}).items():
        if value and re.search(r"auth|token|key|secret|cookie|session|signature|passw", name, re.I):
            text = str(value)
            # "Bearer <token>" -> also the bare token; stripped too, as a pasted token often
            # ends in a newline and requests' InvalidHeader message shows it escaped.
            bare = text.split(None, 1)[-1] if text.strip() else text
            values.update({text, text.strip(), bare, bare.strip()})
    if isinstance(auth, tuple | list):
        values.update(str(v).strip() for v in auth if v)
        pair = [str(v) for v in auth]
    elif auth is not None:
        attrs = getattr(auth, "__dict__", {})
        values.update(v.strip() for v in attrs.values() if isinstance(v, str) and v)
        pair = [str(attrs[k]) for k in ("username", "password") if attrs.get(k) is not None]
    else:
        pair = []
    if len(pair) == 2:  # Basic auth: the decoded `user:password` (its base64 via the registry)
        values.add(":".join(pair))
    return values


# ---------------------------------------------------------------------------------------------
# Pacing


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    base_delay_s: float = 1.0
    max_delay_s: float = 120.0
    jitter: float = 0.5  # +- fraction of the computed delay

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be >= 1")
        if not 0 <= self.jitter < 1:
            raise ValueError("RetryPolicy.jitter must be in [0, 1)")

    def backoff(self, failures: int, rng: random.Random | None = None) -> float:
        """Delay after the `failures`-th failure: base * 2^(n-1) +- jitter, capped."""
        delay = min(self.max_delay_s, self.base_delay_s * 2 ** max(0, failures - 1))
        if self.jitter:
            delay *= 1 + (rng or random).uniform(-self.jitter, self.jitter)
        return max(0.0, min(self.max_delay_s, delay))


class RequestBudget:
    """Paces calls to stay under a vendor limit (e.g. 10/min Zendesk export, 120/h PostHog
    query, 60/h Mixpanel export): `acquire()` sleeps until a request fits the window.
    Thread-safe; one instance per API, shared by every client of that API in the process.

    `extra_windows` adds more (max_requests, per_seconds) limits that must all hold, and
    `min_interval_s` spaces requests out — GitHub writes: RequestBudget(80, 60,
    extra_windows=[(500, 3600)], min_interval_s=1.0).
    """

    def __init__(
        self,
        max_requests: int,
        per_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        extra_windows: Iterable[tuple[int, float]] = (),
        min_interval_s: float = 0.0,
    ):
        windows = [(max_requests, per_seconds), *extra_windows]
        for n, per in windows:
            if n < 1 or per <= 0:
                raise ValueError(f"RequestBudget window ({n}, {per}) must be >= 1 per > 0 s")
        self.clock, self._sleep = clock, sleep
        self._windows = [(n, float(per), collections.deque[float]()) for n, per in windows]
        self._min_interval = float(min_interval_s)
        self._last: float | None = None
        self._paused_until = -math.inf
        self._lock = threading.Lock()

    def _wait_needed(self, now: float) -> float:
        wait = self._paused_until - now
        if self._last is not None and self._min_interval:
            wait = max(wait, self._last + self._min_interval - now)
        for n, per, sent in self._windows:
            while sent and sent[0] <= now - per:
                sent.popleft()
            if len(sent) >= n:
                wait = max(wait, sent[-n] + per - now)
        return wait

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = self.clock()
                wait = self._wait_needed(now)
                if wait <= 1e-9:  # float rounding at the window edge must not spin
                    for _, _, sent in self._windows:
                        sent.append(now)
                    self._last = now
                    return
            # Sleep outside the lock so pause_until() and other threads are not blocked; the
            # loop re-checks because another thread may have taken the slot meanwhile.
            self._sleep(wait)

    def pause_until(self, monotonic_deadline: float) -> None:
        """After a 429: nobody sharing this budget sends before the deadline."""
        with self._lock:
            self._paused_until = max(self._paused_until, monotonic_deadline)

    def pause_for(self, seconds: float) -> None:
        """pause_until(clock() + seconds)."""
        self.pause_until(self.clock() + seconds)


# ---------------------------------------------------------------------------------------------
# Session and client


def make_session(pool_size: int = 10) -> requests.Session:
    """A pooled session (HTTPAdapter pool_connections/pool_maxsize) with no urllib3 retries
    (retries live in HttpClient so they are counted, logged and honour Retry-After)."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    return session


def _parse_epoch_or_delta(value: str, now: float) -> float | None:
    """A reset header: epoch milliseconds / seconds (GitHub) or delta seconds (IETF draft)."""
    try:
        number = float(value.strip())
    except ValueError:
        return None
    if number > 1e12:
        return number / 1000 - now
    if number > 1e9:
        return number - now
    return number


class HttpClient:
    """Requests against one API. `auth` is a requests auth object or None; `headers` are added
    to every request (the secret ones are never logged). `timeout` = (connect, read) seconds.

    Extras beyond the contract (keyword-only):
    - `wall_clock`: time.time for HTTP-date / epoch reset headers (tests inject it);
    - `rng`: random.Random for jitter;
    - `rate_limited(resp) -> bool`: a vendor rate-limit signal the status does not show (Linear's
      GraphQL `ratelimited` error on a 200/400); such a response is retried like a 429;
    - `trusted_hosts`: other hosts that may receive the credentials in absolute URLs (by default
      only base_url's host does).
    """

    def __init__(
        self,
        source: str,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        auth: Any = None,
        timeout: tuple[float, float] = (10.0, 120.0),
        retry: RetryPolicy = RetryPolicy(),
        budget: RequestBudget | None = None,
        session: requests.Session | None = None,
        auth_hint: str = "check the credentials",
        sleep: Callable[[float], None] = time.sleep,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        rate_limited: Callable[[requests.Response], bool] | None = None,
        trusted_hosts: Iterable[str] = (),
    ):
        self.source = source
        self.base_url = base_url.rstrip("/")
        self.headers = dict(headers or {})
        self.auth = auth
        self.timeout = timeout
        self.retry = retry
        self.budget = budget
        self._own_session = session is None
        self.session = session or make_session()
        self.auth_hint = auth_hint
        self._sleep = sleep
        self._wall_clock = wall_clock
        self._rng = rng or random.Random()
        self._rate_limited = rate_limited
        base = urlsplit(self.base_url)
        self._base_scheme = base.scheme.lower()
        self._trusted = {h.lower() for h in trusted_hosts}
        if base.hostname:
            self._trusted.add(_host_port(base))
        self._auth_secrets = _secret_values(None, auth)
        register_secret(*self._auth_secrets, *_secret_values(self.headers, None))
        self._count = 0
        self._count_lock = threading.Lock()

    # -- small helpers -----------------------------------------------------------------------
    @property
    def n_requests(self) -> int:
        """Requests sent so far (retries included) — tests assert on it."""
        return self._count

    def close(self) -> None:
        if self._own_session:
            self.session.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def mask(self, text: str, extra_secrets: Iterable[str] = ()) -> str:
        """`text` safe for logs and exceptions: no credentials of this client in it."""
        secrets = self._auth_secrets | _secret_values(self.headers, None)
        return mask_text(text, secrets.union(extra_secrets))

    def url_for(self, path_or_url: str) -> str:
        """base_url + path, or an absolute URL verbatim (credentials only go to trusted hosts)."""
        split = urlsplit(path_or_url)
        if split.scheme.lower() not in ("http", "https"):
            return f"{self.base_url}/{path_or_url.lstrip('/')}" if path_or_url else self.base_url
        if (
            self._trusted
            and _host_port(split) not in self._trusted
            and split.hostname not in (self._trusted)
        ):
            raise ClientRequestError(
                self.source,
                f"refusing to send credentials to {split.hostname} (not the host of base_url)",
                url=mask_url(path_or_url),
                hint="list it in HttpClient(trusted_hosts=...) if the vendor serves from there",
            )
        if self._base_scheme == "https" and split.scheme.lower() == "http":
            raise ClientRequestError(
                self.source,
                f"refusing to downgrade to plain http: {mask_url(path_or_url)}",
                url=mask_url(path_or_url),
            )
        return path_or_url

    def _shown(self, url: str, params: Mapping[str, Any] | None, secrets: set[str]) -> str:
        prepared = requests.models.PreparedRequest()
        try:
            prepared.prepare_url(url, params)
            full = prepared.url or url
        except Exception:  # an unpreparable URL fails in request(); show what we have
            full = url
        return self.mask(full, secrets)

    def _excerpt(self, resp: requests.Response, secrets: set[str]) -> str:
        try:
            raw = next(resp.iter_content(_EXCERPT_BYTES), b"")
        except Exception:  # the body broke off: the status still says enough
            raw = b""
        text = " ".join(raw.decode("utf-8", "replace").split())
        if len(text) > _EXCERPT_CHARS:
            text = text[:_EXCERPT_CHARS] + "…"
        return self.mask(text, secrets)

    def _server_wait(self, resp: requests.Response) -> tuple[float, str] | None:
        """Seconds the server asked us to wait (Retry-After, else a reset header)."""
        now = self._wall_clock()
        date = resp.headers.get("Date")
        if date:
            # Relative to the server's own clock: a skewed local clock must not shorten waits.
            with contextlib.suppress(TypeError, ValueError, IndexError):
                now = parsedate_to_datetime(date).timestamp()
        value = resp.headers.get("Retry-After")
        if value:
            value = value.strip()
            try:
                return max(0.0, float(value)), "Retry-After"
            except ValueError:
                pass
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - now), "Retry-After"
            except (TypeError, ValueError, IndexError):
                pass
        # GitHub sends its reset header on every answer; it only says when to retry once the
        # quota is used up. With quota left (a secondary limit) the reset is an hour away.
        for name in _REMAINING_HEADERS:
            remaining = resp.headers.get(name, "").strip()
            if remaining and remaining != "0":
                return None
        for name in _RESET_HEADERS:
            value = resp.headers.get(name)
            wait = _parse_epoch_or_delta(value, now) if value else None
            if wait is not None:
                return max(0.0, wait), name
        return None

    def _bump(self) -> None:
        with self._count_lock:
            self._count += 1

    # -- the request loop --------------------------------------------------------------------
    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        ok_statuses: tuple[int, ...] = (200,),
        stream: bool = False,
        idempotent: bool = True,
        extra_budget: RequestBudget | None = None,
        expect: Callable[[bytes], Any] | None = None,
        read: bool | None = None,
    ) -> requests.Response:
        """Send with retries; returns the response when its status is in ok_statuses (a
        connector that treats 404 as 'no data', like Amplitude, passes ok_statuses=(200, 404)).
        Absolute URLs (Link rel="next") are used verbatim.

        `idempotent=False` (creating writes: new issue, new comment): a failure after the
        request may have been applied (5xx other than 503, read timeout, dropped connection)
        raises UncertainWriteError instead of repeating it; 429/503/connect errors still retry.
        `extra_budget` is acquired too (e.g. a per-token write budget on top of the client's).
        `data` must be replayable (bytes/str/dict), not a stream, because retries resend it.

        `expect(body) -> value` checks a 2xx body (parse it, check its shape; raise
        InvalidResponseError or ValueError when it is wrong) and its value is kept as
        `resp.parsed`. A read (GET/HEAD, or `read=True` for a search/GraphQL query POST) whose
        body fails the check — truncated, garbled, HTML, wrong shape — is retried like a 5xx
        and, when it stays broken, raises InvalidBodyError. For a write the outcome is then
        unknown: UncertainWriteError, never repeated.
        """
        method = method.upper()
        url = self.url_for(path_or_url)
        send_headers = {**self.headers, **(headers or {})}
        call_secrets = self._auth_secrets | _secret_values(send_headers, None)
        if headers:
            register_secret(*_secret_values(headers, None))
        shown = self._shown(url, params, call_secrets)
        budgets = [b for b in (self.budget, extra_budget) if b is not None]
        policy = self.retry
        is_read = read if read is not None else method in ("GET", "HEAD", "OPTIONS")
        failures: list[str] = []
        body_problem = ""
        for attempt in range(1, policy.max_attempts + 1):
            for budget in budgets:
                budget.acquire()
            self._bump()
            log.debug("%s: %s %s (attempt %d)", self.source, method, shown, attempt)
            rate_limited = False
            try:
                resp = self.session.request(
                    method,
                    url,
                    params=params,
                    json=json,
                    data=data,
                    headers=send_headers,
                    auth=self.auth,
                    timeout=self.timeout,
                    stream=stream,
                )
            except _TRANSPORT_ERRORS as exc:
                what = self._describe(exc, call_secrets)
                if not idempotent and not _never_sent(exc):
                    raise UncertainWriteError(
                        self.source,
                        f"{method} {shown} failed with {what} and may have been applied; "
                        "not repeated",
                        url=shown,
                    ) from None
                wait, why = policy.backoff(attempt, self._rng), "backoff"
            except requests.exceptions.ContentDecodingError as exc:
                raise InvalidResponseError(
                    self.source,
                    f"{method} {shown}: body does not decode as its Content-Encoding says "
                    f"({self._describe(exc, call_secrets)})",
                    url=shown,
                ) from None
            except requests.RequestException as exc:  # bad URL or header value: nothing sent
                raise ClientRequestError(
                    self.source,
                    f"{method} {shown} could not be sent: {self._describe(exc, call_secrets)}",
                    url=shown,
                    hint=f"check base_url and the credential's format; {self.auth_hint}",
                ) from None
            else:
                hook_limited = self._rate_limited is not None and self._rate_limited(resp)
                if resp.status_code in ok_statuses and not hook_limited:
                    if expect is None or not 200 <= resp.status_code < 300:
                        return resp
                    problem = self._check_body(resp, expect, call_secrets)
                    if problem is None:
                        return resp
                    resp.close()
                    if not is_read:
                        raise UncertainWriteError(
                            self.source,
                            f"{method} {shown} answered HTTP {resp.status_code} with {problem} "
                            "(may have been applied; not repeated)",
                            status=resp.status_code,
                            url=shown,
                        )
                    body_problem = problem
                    what = f"HTTP {resp.status_code} with an invalid body"
                    failures.append(what)
                    if attempt == policy.max_attempts:
                        break
                    wait = policy.backoff(attempt, self._rng)
                    log.warning(
                        "%s: %s on %s %s (%s) — retry %d/%d in %.1f s",
                        self.source,
                        what,
                        method,
                        shown,
                        problem,
                        attempt,
                        policy.max_attempts - 1,
                        wait,
                    )
                    if wait > 0:
                        self._sleep(wait)
                    continue
                try:
                    what, wait, why, rate_limited = self._classify(
                        resp, method, shown, attempt, call_secrets, hook_limited, idempotent
                    )
                finally:
                    resp.close()
            failures.append(what)
            if rate_limited:
                for budget in budgets:  # everyone sharing the budget waits, not just us
                    budget.pause_for(wait)
            if attempt == policy.max_attempts:
                break
            log.warning(
                "%s: %s on %s %s — retry %d/%d in %.1f s (%s)",
                self.source,
                what,
                method,
                shown,
                attempt,
                policy.max_attempts - 1,
                wait,
                why,
            )
            if wait > 0:
                self._sleep(wait)
        counts = collections.Counter(failures)
        if len(counts) == 1:
            summary = failures[-1]
        else:
            summary = ", ".join(f"{w} ×{n}" if n > 1 else w for w, n in counts.items())
            summary += f"; last: {failures[-1]}"
        if failures[-1].endswith("invalid body"):
            raise InvalidBodyError(
                self.source,
                f"{method} {shown} failed {len(failures)} times ({summary}): {body_problem}",
                status=_status_of(failures[-1]),
                url=shown,
                hint="the API kept sending a truncated or garbled body: try again later",
            )
        limited = any("rate limit" in f for f in failures)
        raise RetriesExhaustedError(
            self.source,
            f"{method} {shown} failed {len(failures)} times: {summary}",
            status=_status_of(failures[-1]),
            url=shown,
            hint=(
                "the API kept rate limiting: lower the request rate or raise RetryPolicy"
                if limited
                else "the service kept failing: try again later"
            ),
        )

    def _classify(
        self,
        resp: requests.Response,
        method: str,
        shown: str,
        attempt: int,
        secrets: set[str],
        hook_limited: bool,
        idempotent: bool,
    ) -> tuple[str, float, str, bool]:
        """(what failed, wait, why that wait, is a rate limit) for a retryable response; raises
        the right HttpError for a permanent one."""
        status = resp.status_code
        policy = self.retry
        excerpt = self._excerpt(resp, secrets)
        github_limited = status == 403 and (
            resp.headers.get("x-ratelimit-remaining", "").strip() == "0"
            or "Retry-After" in resp.headers
            or _RATE_LIMIT_BODY.search(excerpt) is not None
        )
        if status == 429 or github_limited or hook_limited:
            server = self._server_wait(resp)
            if server is not None:
                wait, why = server
                if wait > policy.max_delay_s:
                    why += f" asked {wait:.0f} s, capped by max_delay_s"
                    wait = policy.max_delay_s
            elif status == 403 or _SECONDARY_BODY.search(excerpt):
                backoff = policy.backoff(attempt, self._rng)
                wait = min(policy.max_delay_s, max(backoff, SECONDARY_LIMIT_MIN_WAIT_S))
                why = "secondary rate limit without Retry-After"
            else:
                wait, why = policy.backoff(attempt, self._rng), "backoff"
            return f"HTTP {status} rate limit", wait, why, True
        if status in RETRY_STATUSES:
            if not idempotent and status not in NOT_APPLIED_STATUSES:
                raise UncertainWriteError(
                    self.source,
                    f"HTTP {status} on {method} {shown} (may have been applied; not repeated): "
                    f"{excerpt}",
                    status=status,
                    url=shown,
                )
            server = self._server_wait(resp) if "Retry-After" in resp.headers else None
            if server is not None:
                return f"HTTP {status}", min(server[0], policy.max_delay_s), server[1], False
            return f"HTTP {status}", policy.backoff(attempt, self._rng), "backoff", False
        text = f"HTTP {status} on {method} {shown}" + (f": {excerpt}" if excerpt else "")
        if status == 401:
            raise AuthError(self.source, text, status=status, url=shown, hint=self.auth_hint)
        if status == 403:
            raise AuthError(
                self.source,
                text,
                status=status,
                url=shown,
                hint=f"forbidden: the credentials lack access or scope; {self.auth_hint}",
            )
        if status in (404, 410):
            hint = (
                "check the base URL and the configured ids"
                if status == 404
                else "the resource or endpoint is gone"
            )
            raise NotFoundError(self.source, text, status=status, url=shown, hint=hint)
        if 400 <= status < 500:
            raise ClientRequestError(self.source, text, status=status, url=shown)
        if 200 <= status < 400:
            raise InvalidResponseError(self.source, f"unexpected {text}", status=status, url=shown)
        raise HttpError(self.source, text, status=status, url=shown)

    def _check_body(
        self, resp: requests.Response, expect: Callable[[bytes], Any], secrets: set[str]
    ) -> str | None:
        """None when `expect` accepts the body (its value is kept as resp.parsed), else what is
        wrong with it, masked, with a short masked excerpt of its start."""
        try:
            raw = resp.content
        except _TRANSPORT_ERRORS as exc:  # stream=True: the body broke off mid-way
            return f"a body that broke off ({self._describe(exc, secrets)})"
        try:
            resp.parsed = expect(raw)  # type: ignore[attr-defined]
            return None
        except HttpError as exc:  # a connector's own parser: InvalidResponseError
            detail = str(exc)
            prefix = f"{exc.source}: "
            detail = detail[len(prefix) :] if detail.startswith(prefix) else detail
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            detail = _body_problem(raw, exc)
        head = " ".join(raw[:60].decode("utf-8", "replace").split())
        excerpt = f"; starts {self.mask(head, secrets)!r}" if head else "; empty"
        return self.mask(" ".join(f"{detail} ({len(raw)} bytes{excerpt})".split()), secrets)

    def _describe(self, exc: Exception, secrets: set[str]) -> str:
        # str(exc) repeats the URL (with its query) and object reprs: keep only the reason.
        text = self.mask(str(exc), secrets)
        if isinstance(exc, requests.ReadTimeout):
            return f"ReadTimeout (no answer within {self.timeout[1]} s)"
        if isinstance(exc, requests.ConnectTimeout):
            return f"ConnectTimeout (no connection within {self.timeout[0]} s)"
        reason = text[:120]
        for pattern in _REASONS:
            match = pattern.search(text)
            if match:
                reason = (match[1] or match[0]).strip()
                break
        return f"{type(exc).__name__} ({reason})"

    # -- JSON and downloads ------------------------------------------------------------------
    def request_json(self, method: str, path_or_url: str, **kwargs: Any) -> Any:
        """request(...) then parse the JSON body. Writes (non-GET) accept 200/201/202/204 unless
        told otherwise, and a 204 or empty body on a write gives None. `expect(doc)` may check
        the parsed document's shape (raise InvalidResponseError/ValueError when it is wrong);
        a broken 2xx body is retried for reads (GET, or `read=True`) and InvalidBodyError when
        it stays broken, UncertainWriteError for writes."""
        method = method.upper()
        if method != "GET":
            kwargs.setdefault("ok_statuses", (200, 201, 202, 204))
        check = kwargs.pop("expect", None)

        def expect(raw: bytes) -> Any:
            if not raw.strip():
                if method != "GET":
                    return None
                raise ValueError("empty body")
            doc = jsonlib.loads(raw)
            return check(doc) if check is not None else doc

        resp = self.request(method, path_or_url, expect=expect, **kwargs)
        if 200 <= resp.status_code < 300:
            return resp.parsed  # type: ignore[attr-defined]
        return self._parse_json(resp, method)

    def get_json(self, path_or_url: str, **kwargs: Any) -> Any:
        """request('GET', ...) then parse JSON; invalid JSON on every retry -> InvalidBodyError."""
        return self.request_json("GET", path_or_url, **kwargs)

    def post_json(self, path_or_url: str, body: Any, **kwargs: Any) -> Any:
        """POST a JSON body, parse the JSON answer (200/201/202/204 unless told otherwise)."""
        return self.request_json("POST", path_or_url, json=body, **kwargs)

    def _parse_json(self, resp: requests.Response, method: str) -> Any:
        shown = self.mask(resp.url or "")
        try:
            raw = resp.content
        except _TRANSPORT_ERRORS as exc:  # only with stream=True: the body broke off
            raise InvalidResponseError(
                self.source,
                f"body of {method} {shown} broke off: {self._describe(exc, set())}",
                status=resp.status_code,
                url=shown,
            ) from None
        if not raw.strip():
            if resp.status_code == 204 or method != "GET":
                return None
            raise InvalidResponseError(
                self.source, f"empty body from {method} {shown}", status=resp.status_code, url=shown
            )
        try:
            return jsonlib.loads(raw)
        except ValueError as exc:
            where = f" at char {exc.pos}" if isinstance(exc, jsonlib.JSONDecodeError) else ""
            head = " ".join(raw[:80].decode("utf-8", "replace").split())
            raise InvalidResponseError(
                self.source,
                f"invalid or truncated JSON from {method} {shown} ({len(raw)} bytes, "
                f"{type(exc).__name__}{where}; starts {self.mask(head)!r})",
                status=resp.status_code,
                url=shown,
            ) from None

    def download_to(
        self,
        path_or_url: str,
        dest: str | os.PathLike[str],
        *,
        chunk_size: int = 1 << 20,
        **kwargs: Any,
    ) -> requests.Response:
        """GET a (large) body straight to `dest` (written to `dest.part`, then renamed). A body
        that breaks off mid-way is fetched again under the same RetryPolicy. Returns the
        (consumed) response; only a 2xx body is written, e.g. Amplitude's ok 404 is not."""
        dest = Path(dest)
        part = dest.with_name(dest.name + ".part")
        failures: list[str] = []
        for attempt in range(1, self.retry.max_attempts + 1):
            resp = self.request("GET", path_or_url, stream=True, **kwargs)
            with resp:
                if not 200 <= resp.status_code < 300:
                    return resp
                try:
                    with part.open("wb") as fh:
                        for chunk in resp.iter_content(chunk_size):
                            fh.write(chunk)
                except _TRANSPORT_ERRORS as exc:
                    part.unlink(missing_ok=True)
                    what = self._describe(exc, set())
                    failures.append(what)
                    if attempt == self.retry.max_attempts:
                        break
                    wait = self.retry.backoff(attempt, self._rng)
                    log.warning(
                        "%s: body of %s broke off (%s) — retry %d/%d in %.1f s",
                        self.source,
                        self.mask(resp.url or ""),
                        what,
                        attempt,
                        self.retry.max_attempts - 1,
                        wait,
                    )
                    self._sleep(wait)
                    continue
            os.replace(part, dest)
            return resp
        raise RetriesExhaustedError(
            self.source,
            f"download of {self.mask(self.url_for(path_or_url))} broke off "
            f"{len(failures)} times; last: {failures[-1]}",
        )


def _host_port(split: Any) -> str:
    host = (split.hostname or "").lower()
    return f"{host}:{split.port}" if split.port else host


def _never_sent(exc: Exception) -> bool:
    """True when the connection was never established, so the API cannot have seen it."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, urllib3.exceptions.NewConnectionError)


def _body_problem(raw: bytes, exc: Exception) -> str:
    if isinstance(exc, jsonlib.JSONDecodeError):
        return f"invalid or truncated JSON ({exc.msg} at char {exc.pos})"
    if isinstance(exc, UnicodeDecodeError):
        return "a body that is not UTF-8 text"
    if type(exc) is ValueError:  # an `expect` hook's own words
        return str(exc)[:120]
    return f"an unexpected body ({type(exc).__name__}: {str(exc)[:80]})"


def expect_json(
    kind: type = dict, *, lists: Iterable[str] = (), dicts: Iterable[str] = ()
) -> Callable[[bytes], Any]:
    """An `expect` hook for HttpClient.request: the body is JSON of type `kind` (dict or list)
    and, for a dict, holds a list under each of `lists` and an object under each of `dicts`."""
    list_keys, dict_keys = tuple(lists), tuple(dicts)

    def check(raw: bytes) -> Any:
        doc = jsonlib.loads(raw)
        if not isinstance(doc, kind):
            raise ValueError(f"expected a JSON {kind.__name__}, got {type(doc).__name__}")
        for key in list_keys:
            if not isinstance(doc.get(key), list):
                raise ValueError(f"no {key!r} list in the JSON object")
        for key in dict_keys:
            if not isinstance(doc.get(key), dict):
                raise ValueError(f"no {key!r} object in the JSON object")
        return doc

    return check


def _status_of(what: str) -> int | None:
    match = re.match(r"HTTP (\d{3})", what)
    return int(match[1]) if match else None


# ---------------------------------------------------------------------------------------------
# Pagination


_LINK_PARAM = re.compile(r'\s*;\s*([^\s=;,]+)\s*(?:=\s*("(?:[^"\\]|\\.)*"|[^;,\s]*))?')


def parse_link_header(value: str | None) -> dict[str, str]:
    """RFC 8288 Link header -> {rel: url}; extra params such as results="false" (Sentry) are
    returned as `rel + ':' + name` keys, e.g. {'next': url, 'next:results': 'false'}."""
    links: dict[str, str] = {}
    if not value:
        return links
    pos = 0
    while True:
        start = value.find("<", pos)
        if start < 0:
            break
        end = value.find(">", start)
        if end < 0:
            break
        url = value[start + 1 : end].strip()
        pos = end + 1
        params: dict[str, str] = {}
        while True:
            match = _LINK_PARAM.match(value, pos)
            if not match:
                break
            name, raw = match[1].lower(), match[2] or ""
            if raw.startswith('"'):
                raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
            params.setdefault(name, raw)
            pos = match.end()
        # skip to the next link-value: the comma after this one's params
        comma = value.find(",", pos)
        pos = len(value) if comma < 0 else comma + 1
        for rel in params.get("rel", "").lower().split():
            if rel in links:
                continue  # RFC 8288: the first occurrence of a relation wins
            links[rel] = url
            for name, param in params.items():
                if name != "rel":
                    links[f"{rel}:{name}"] = param
    return links


class CursorGuard:
    """Loop detection for any paginator: `guard.check(token)` raises PaginationLoopError when a
    cursor / next URL / page key repeats, or when more than `max_pages` pages were requested."""

    def __init__(self, source: str, max_pages: int = 100_000):
        self.source, self.max_pages = source, max_pages
        self._seen: set[bytes] = set()
        self.pages = 0

    def check(self, token: Any) -> None:
        self.pages += 1
        if self.pages > self.max_pages:
            raise PaginationLoopError(
                self.source,
                f"more than {self.max_pages} pages requested",
                hint="a paginator that never ends; raise max_pages if the data really is that big",
            )
        try:
            key = jsonlib.dumps(token, sort_keys=True, default=repr)
        except (TypeError, ValueError):
            key = repr(token)
        digest = hashlib.sha1(key.encode(), usedforsecurity=False).digest()
        if digest in self._seen:
            shown = mask_text(key if len(key) <= 120 else key[:120] + "…")
            raise PaginationLoopError(
                self.source,
                f"the API returned a cursor it already gave ({shown}) after {self.pages} pages",
                hint="stopping instead of looping forever; the vendor's pagination is broken",
            )
        self._seen.add(digest)


def iter_link_pages(
    client: HttpClient,
    path: str,
    params: Mapping[str, Any] | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    max_pages: int = 100_000,
    expect: Callable[[bytes], Any] | None = None,
) -> Iterator[requests.Response]:
    """Follow `Link: rel="next"` verbatim until there is none (GitHub, Sentry); `expect` checks
    each page's body as in HttpClient.request (the value is `resp.parsed`)."""
    guard = CursorGuard(client.source, max_pages=max_pages)
    url: str = path
    page_params = params
    first = True
    while True:
        resp = client.request("GET", url, params=page_params, headers=headers, expect=expect)
        if first:
            guard.check(resp.url)  # page 1 by its full URL, so a link back to it is caught
            first = False
        yield resp
        links = parse_link_header(resp.headers.get("Link"))
        nxt = links.get("next")
        # Sentry always sends rel="next"; results="false" says there is nothing behind it.
        if not nxt or links.get("next:results", "").lower() == "false":
            return
        nxt = urljoin(resp.url, nxt)  # RFC 8288 allows relative references
        guard.check(nxt)
        url, page_params = nxt, None
