"""The base the API connectors build on (the contract they fulfil, `Connector`, is in
tasks/contracts.py).

It holds what every connector had written out for itself: its settings, the injection points
the flow, the doctor and the tests use (a requests session, a request budget, a retry policy, a
sleep function, or a ready HttpClient) and one HttpClient made on first use by the vendor's
`make_http` — so a missing credential fails the run that needs the source, not the import or
`build_connectors`. A vendor module then declares its source, stream, kind and spec, its
settings, `make_http` (base URL, credentials, the hint shown when they are refused, a shared
budget) and `check` / `pages`: what is truly its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

import requests

from tasks.clients.http import HttpClient, RequestBudget, RetryPolicy
from tasks.contracts import SourceSpec

_BUDGETS: dict[tuple[Any, ...], RequestBudget] = {}
_BUDGETS_LOCK = threading.Lock()


def shared_budget(scope: tuple[Any, ...], limit: int, per_seconds: float) -> RequestBudget:
    """One RequestBudget per vendor limit in this process, by `scope` (e.g. ("posthog", host,
    key variable)): the vendors count their limits per key, project or account, not per
    connector object, so every connector of that scope draws from the same budget."""
    with _BUDGETS_LOCK:
        if scope not in _BUDGETS:
            _BUDGETS[scope] = RequestBudget(limit, per_seconds)
        return _BUDGETS[scope]


class ApiConnector:
    source: ClassVar[str]
    stream: ClassVar[str]
    kind: ClassVar[str]  # usage | tickets | bugs | errors
    spec: ClassVar[SourceSpec]

    def __init__(
        self,
        settings: Any,
        *,
        http: HttpClient | None = None,
        session: requests.Session | None = None,
        budget: RequestBudget | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.session, self.budget, self.sleep = session, budget, sleep
        self.retry = retry or RetryPolicy()
        self._http = http

    @property
    def http(self) -> HttpClient:
        """The source's client, made by `make_http` on first use (or the one given)."""
        if self._http is None:
            self._http = self.make_http()
        return self._http

    def make_http(self) -> HttpClient:
        """The vendor's client: its base URL, credentials and auth hint (see `new_http`)."""
        raise NotImplementedError

    def clients(self) -> list[HttpClient]:
        """Every client the connector has made so far (the doctor tunes their timeouts)."""
        return [self._http] if self._http is not None else []

    def new_http(
        self,
        base_url: str,
        *,
        auth_hint: str,
        auth: Any = None,
        headers: dict[str, str] | None = None,
        budget: RequestBudget | None = None,
        timeout: tuple[float, float] | None = None,
    ) -> HttpClient:
        """An HttpClient for this source with the connector's session, retry policy and sleep;
        `budget` stands in when the connector was given none."""
        return HttpClient(
            self.source,
            base_url.rstrip("/"),
            headers=headers,
            auth=auth,
            **({"timeout": timeout} if timeout is not None else {}),
            retry=self.retry,
            budget=self.budget if self.budget is not None else budget,
            session=self.session,
            auth_hint=auth_hint,
            sleep=self.sleep,
        )
