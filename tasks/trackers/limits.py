"""Polite write-back under rate limits: a time budget for the whole write-back, and the waits
GitHub documents for its secondary limits.

GitHub (REST "rate limits", secondary limits): if `retry-after` is present, wait that many
seconds; else if `x-ratelimit-remaining` is 0, wait until `x-ratelimit-reset`; else wait at least
one minute, and longer (exponentially) while the limit keeps answering. A wait that would not fit
in what is left of the write-back's time budget is not started: `BudgetExhausted` is raised
before anything more is sent, and `writeback.apply_plan` reports the run as partial.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import requests

from tasks.clients.http import AuthError, RetriesExhaustedError

log = logging.getLogger(__name__)

DEFAULT_TIME_BUDGET_S = 900.0
SECONDARY_MIN_WAIT_S = 60.0
# HTTP layers cap a server-requested wait at their max delay; trackers lift the cap to this, so
# a Retry-After is never cut short: the time budget decides whether to wait or stop instead.
NO_CAP_S = 24 * 3600.0
# Past the reset instant by this much, so a clock a little behind GitHub's does not retry early.
RESET_MARGIN_S = 1.0
_LIMIT_BODY = re.compile(r"secondary rate limit|rate limit exceeded|abuse detection", re.I)
_EXCERPT_CHARS = 200


class BudgetExhausted(Exception):
    """A rate-limit wait would not fit in the write-back time budget, so it was not started and
    nothing more was sent. Not an HttpError: nothing failed, the run chose to stop politely."""

    def __init__(self, source: str, wait_s: float, remaining_s: float, why: str) -> None:
        self.source, self.wait_s, self.remaining_s, self.why = source, wait_s, remaining_s, why
        super().__init__(
            f"{source}: waiting {wait_s:.0f} s ({why}) would overrun the write-back time budget "
            f"({max(remaining_s, 0):.0f} s left); stopped, the next run resumes"
        )


class TimeBudget:
    """Seconds the write-back may take, counted on a monotonic clock from construction.

    `sleep(seconds)` sleeps only when the wait fits in what is left; otherwise it raises
    BudgetExhausted without sleeping. Pass it as the `sleep` of an HTTP client so the client's
    own backoffs are bounded too. `clock`/`sleep` are injectable (tests never wait a minute)."""

    def __init__(
        self,
        seconds: float = DEFAULT_TIME_BUDGET_S,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        source: str = "write-back",
    ) -> None:
        if seconds <= 0:
            raise ValueError("the write-back time budget must be > 0 seconds")
        self.seconds = float(seconds)
        self.clock, self._sleep, self.source = clock, sleep, source
        self.started = clock()
        self.waited_s = 0.0
        self.waits: list[float] = []

    def remaining(self) -> float:
        return self.started + self.seconds - self.clock()

    def check(self, seconds: float, why: str) -> None:
        remaining = self.remaining()
        if seconds > remaining:
            raise BudgetExhausted(self.source, seconds, remaining, why)

    def sleep(self, seconds: float, why: str = "backoff") -> None:
        seconds = max(0.0, float(seconds))
        self.check(seconds, why)
        self.waits.append(seconds)
        self.waited_s += seconds
        if seconds:
            self._sleep(seconds)


def _headers_wait(headers: Mapping[str, str], wall_now: float) -> tuple[float, str] | None:
    """Retry-After (seconds or HTTP date), else the reset instant when nothing is left."""
    now = wall_now
    date = headers.get("Date")
    if date:  # relative to the server's clock: a skewed local clock must not shorten the wait
        with contextlib.suppress(TypeError, ValueError, IndexError):
            now = parsedate_to_datetime(date).timestamp()
    value = (headers.get("Retry-After") or "").strip()
    if value:
        try:
            return max(0.0, float(value)), "Retry-After"
        except ValueError:
            pass
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - now), "Retry-After"
        except (TypeError, ValueError, IndexError):
            pass
    if (headers.get("x-ratelimit-remaining") or "").strip() == "0":
        reset = (headers.get("x-ratelimit-reset") or "").strip()
        try:
            at = float(reset)
        except ValueError:
            return None
        at = at / 1000 if at > 1e12 else at
        if at > now:
            return at - now + RESET_MARGIN_S, "x-ratelimit-reset"
    return None


def is_rate_limited(status: int, headers: Mapping[str, str], body: str) -> bool:
    """A 429, or a 403 with a secondary- or primary-limit signal (GitHub's documented forms)."""
    if status == 429:
        return True
    return status == 403 and (
        "Retry-After" in headers
        or (headers.get("x-ratelimit-remaining") or "").strip() == "0"
        or _LIMIT_BODY.search(body) is not None
    )


def limit_wait(headers: Mapping[str, str], failures: int, wall_now: float) -> tuple[float, str]:
    """How long to wait after the `failures`-th consecutive rate-limit answer, and why.

    Never shorter than Retry-After; else until the primary reset; else 60 s, 120 s, 240 s ..."""
    told = _headers_wait(headers, wall_now)
    if told is not None:
        return told
    return SECONDARY_MIN_WAIT_S * 2 ** max(0, failures - 1), "secondary limit, no Retry-After"


class PoliteClient:
    """An HttpClient whose 403/429 rate-limit answers are waited out per GitHub's rules inside a
    TimeBudget (the HTTP layer's own retries stop after a few short waits). Anything else is
    delegated to the wrapped client. Rate-limited requests were not applied, so repeating even a
    create is safe."""

    def __init__(
        self,
        inner: Any,
        budget: TimeBudget,
        *,
        wall_clock: Callable[[], float] = time.time,
        max_waits: int = 30,
        on_wait: Callable[[float], None] | None = None,
    ) -> None:
        self.inner, self.budget, self.wall_clock = inner, budget, wall_clock
        self.max_waits, self.on_wait = max_waits, on_wait
        self.n_limited = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def request(
        self, method: str, path_or_url: str, *, ok_statuses: tuple[int, ...] = (200,), **kw: Any
    ) -> requests.Response:
        wanted = tuple(ok_statuses)
        failures = 0
        while True:
            resp = self.inner.request(method, path_or_url, ok_statuses=(*wanted, 403, 429), **kw)
            if resp.status_code in wanted:
                return resp
            body = _excerpt(resp)
            shown = self.inner.mask(resp.url or "")
            if not is_rate_limited(resp.status_code, resp.headers, body):
                resp.close()
                raise AuthError(
                    self.inner.source,
                    f"HTTP {resp.status_code} on {method.upper()} {shown}: {self.inner.mask(body)}",
                    status=resp.status_code,
                    url=shown,
                    hint=f"forbidden: the credentials lack access or scope; {self.inner.auth_hint}",
                )
            failures += 1
            self.n_limited += 1
            wait, why = limit_wait(resp.headers, failures, self.wall_clock())
            resp.close()
            if failures > self.max_waits:
                raise RetriesExhaustedError(
                    self.inner.source,
                    f"{method.upper()} {shown} still rate limited after {self.max_waits} waits",
                    status=resp.status_code,
                    url=shown,
                    hint="the API kept rate limiting: try again later",
                )
            if not math.isfinite(wait):
                wait = self.budget.remaining() + 1
            log.warning(
                "%s: HTTP %d rate limit on %s %s — waiting %.0f s (%s), %.0f s of the "
                "write-back budget left",
                self.inner.source,
                resp.status_code,
                method.upper(),
                shown,
                wait,
                why,
                self.budget.remaining(),
            )
            self.budget.sleep(wait, why)  # raises BudgetExhausted when it does not fit
            if self.on_wait is not None:
                self.on_wait(wait)


def _excerpt(resp: requests.Response) -> str:
    try:
        text = resp.content[:2048].decode("utf-8", "replace")
    except Exception:  # a body that broke off: the status and headers still say enough
        return ""
    text = " ".join(text.split())
    return text[:_EXCERPT_CHARS] + ("…" if len(text) > _EXCERPT_CHARS else "")
