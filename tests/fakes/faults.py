"""Seeded fault injection around the vendor fakes: wrap every route of a FakeServer so that a
share of requests fails the way real APIs fail.

    with FakeServer() as srv:
        zendesk_api(srv, tickets)
        faults = inject_faults(srv, rate=0.25, seed=7)
        ...  # run the connector; faults.injected lists what was done to which request

At least `rate` of the requests fail (less one), every kind in turn. Kinds: 429 with
Retry-After, 500/502/503, connection reset (TCP RST), a stalled answer that is then cut (the
client sees the connection die mid-wait), and a 200 whose body is cut short (Content-Length
announced, fewer bytes sent). A faulted request never reaches the fake's handler
(except a cut-short 200: the page is produced, then truncated), so a stateful fake only
advances on answers the client really received.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from tests.fakes.server import FakeServer, Request, Response, _answer

KINDS = ("429", "500", "502", "503", "reset", "stall-close", "truncated-200")


@dataclass
class FaultInjector:
    rate: float
    seed: int
    kinds: tuple[str, ...] = KINDS
    retry_after_s: int = 1
    stall_s: float = 0.3
    max_in_a_row: int = 2  # never more than this many faults back to back (retries must win)
    injected: list[tuple[str, str]] = field(default_factory=list)  # (kind, method path)
    served: int = 0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()
        self._streak = 0
        self._drawn = 0
        self._deck: list[str] = []

    def _draw(self) -> str | None:
        """Fault with probability `rate`, and whenever the share so far has fallen more than
        one request behind `rate` (a short run still gets its share). Kinds are dealt from a
        shuffled deck: every kind once per len(kinds) faults."""
        with self._lock:
            self.served += 1
            lucky = self._rng.random() < self.rate
            behind = self._drawn < self.rate * self.served - 1
            if self._streak < self.max_in_a_row and (lucky or behind):
                self._streak += 1
                self._drawn += 1
                if not self._deck:
                    self._deck = list(self.kinds)
                    self._rng.shuffle(self._deck)
                return self._deck.pop()
            self._streak = 0
            return None

    def fault(self, kind: str, req: Request, inner) -> Response:
        self.injected.append((kind, f"{req.method} {req.path}"))
        if kind == "429":
            return Response.json(
                {"error": "rate limited"}, status=429, **{"Retry-After": str(self.retry_after_s)}
            )
        if kind in ("500", "502", "503"):
            return Response(status=int(kind), body=f"<html>{kind} drill fault</html>")
        if kind == "reset":
            return Response.reset()
        if kind == "stall-close":
            return Response(disconnect="close", delay_s=self.stall_s)
        # truncated-200: the real page, cut to half its bytes
        resp = _answer(inner, req)
        if resp.status != 200:
            return resp
        body, headers = resp.encoded()
        return Response(
            status=resp.status,
            body=body,
            headers=headers,
            truncate_to=max(1, len(body) // 2),
        )

    def wrap(self, inner):
        def handler(req: Request) -> Response:
            kind = self._draw()
            if kind is None:
                return _answer(inner, req)
            return self.fault(kind, req, inner)

        return handler


def inject_faults(
    srv: FakeServer,
    rate: float,
    seed: int,
    kinds: Iterable[str] = KINDS,
    skip_paths: Iterable[str] = (),
) -> FaultInjector:
    """Wrap every route installed on `srv` so far (handlers and queued answers)."""
    inj = FaultInjector(rate=rate, seed=seed, kinds=tuple(kinds))
    skip = tuple(skip_paths)
    with srv._lock:
        for route in srv._routes:
            if any(route.pattern.pattern == s for s in skip):
                continue
            if route.handler is not None:
                route.handler = inj.wrap(route.handler)
            route.queue = [inj.wrap(item) for item in route.queue]
    return inj
