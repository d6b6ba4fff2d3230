"""Sync under injected HTTP faults: how many runs end with the same data as a clean sync?

    python benchmarks/fault_sync.py                       # zendesk + mixpanel, 20 %, 10 runs
    python benchmarks/fault_sync.py --connector zendesk --rate 0.3 --runs 20 --seed 7

Each connector syncs a vendor-shaped local fake (tests/fakes) into a fresh DuckDB through the
real loader (load.load_pages, one commit per page). One clean sync gives the reference raw rows
and cursor; then every faulty run answers ~`rate` of the data requests with one of: 429 with
Retry-After: 0, 500, 503, a TCP reset, a read timeout, or a 200 whose JSON/JSONL body is cut
short (with a consistent Content-Length). Retry waits are kept short through RetryPolicy.
A run counts as identical when its raw rows (load metadata columns aside) and stored cursor
equal the clean sync's; a run that raises is reported as failed loudly.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402

from tasks import db, load  # noqa: E402
from tasks.clients.http import HttpError, RequestBudget, RetryPolicy  # noqa: E402
from tasks.redact import register_duckdb  # noqa: E402
from tests.fakes.server import FakeServer, Request, Response  # noqa: E402

RETRY = RetryPolicy(max_attempts=6, base_delay_s=0.01, max_delay_s=0.05, jitter=0.0)
READ_TIMEOUT_S = 0.2
FAULTS = ("429", "500", "503", "reset", "timeout", "truncated")


class Faulty:
    """Wraps a fake's handler: answers ~rate of the requests with a fault instead."""

    def __init__(self, handler: Callable[[Request], Response], rate: float, seed: int):
        self.handler, self.rate = handler, rate
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.injected: Counter[str] = Counter()

    def __call__(self, req: Request) -> Response:
        with self.lock:
            fault = self.rng.choice(FAULTS) if self.rng.random() < self.rate else None
            if fault:
                self.injected[fault] += 1
        if fault == "429":
            return Response.json({"error": "slow down"}, status=429, **{"Retry-After": "0"})
        if fault in ("500", "503"):
            return Response(int(fault), "<html>backend error</html>")
        if fault == "reset":
            return Response.reset()
        if fault == "timeout":
            return Response.stall(READ_TIMEOUT_S * 2, then=self.handler(req))
        answer = self.handler(req)
        if fault == "truncated" and answer.status == 200:
            payload, _ = answer.encoded()
            return Response.cut_short(payload, keep=0.5)
        return answer


def _warehouse(path: Path, ddl: str | None) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(path))
    db.ensure_schema(con)
    if ddl:
        db.run_sql_file(con, ddl)
    register_duckdb(con, "bench-salt")
    con.execute("set variable hash_salt = ?", ["bench-salt"])
    return con


def _snapshot(con: duckdb.DuckDBPyConnection, conn: Any) -> tuple[Any, ...]:
    table = conn.spec.raw_table
    schema, name = table.split(".")
    cols = [
        c
        for (c,) in con.execute(
            "select column_name from information_schema.columns "
            "where table_schema = ? and table_name = ? and column_name not like '\\_%' escape '\\'"
            " order by ordinal_position",
            [schema, name],
        ).fetchall()
    ]
    rows = con.sql(f"select {', '.join(cols)} from {table} order by all").fetchall()
    return tuple(rows), load.read_state(con, conn.source, conn.stream)


# -- connectors -------------------------------------------------------------------------------


def zendesk_case(srv: FakeServer) -> tuple[Callable[[], Any], Callable, str | None, datetime]:
    from tasks.clients.zendesk import ZendeskSettings, ZendeskTickets
    from tests.fakes import zendesk as zd

    t0 = int(datetime(2026, 11, 2, tzinfo=UTC).timestamp())
    tickets = [zd.ticket(i, zd.iso(t0 + 97 * i), subject=f"Export fails #{i}") for i in range(60)]
    fake = zd.zendesk_api(srv, tickets, page_size=3)
    os.environ["ZENDESK_API_TOKEN"] = fake.token

    def make() -> Any:
        settings = ZendeskSettings(
            base_url=srv.url, email=fake.email, start_date=datetime(2026, 11, 1), page_size=3
        )
        conn = ZendeskTickets(
            settings, retry=RETRY, sleep=time.sleep, budget=RequestBudget(100_000, 60)
        )
        conn.export_http.timeout = (1.0, READ_TIMEOUT_S)
        return conn

    return make, fake.export, None, datetime(2026, 12, 31, tzinfo=UTC)


def mixpanel_case(srv: FakeServer) -> tuple[Callable[[], Any], Callable, str | None, datetime]:
    from tasks.clients.mixpanel import MixpanelConnector, MixpanelSettings
    from tests.fakes.mixpanel import epoch, mixpanel_api, mixpanel_event

    events = [
        mixpanel_event(
            f"ins-{i}",
            distinct_id=f"u{i % 17}",
            time=epoch(f"2026-11-{1 + i % 20:02d}T{i % 24:02d}:15:00+00:00"),
        )
        for i in range(400)
    ]
    handler = mixpanel_api(srv, events)
    os.environ["MIXPANEL_SERVICE_ACCOUNT_USERNAME"] = "sa.user"
    os.environ["MIXPANEL_SERVICE_ACCOUNT_SECRET"] = "sa_secret"

    def make() -> Any:
        settings = MixpanelSettings(
            base_url=srv.url, project_id="42", start_date=date(2026, 11, 1), days_per_request=1
        )
        conn = MixpanelConnector(
            settings, retry=RETRY, sleep=time.sleep, budget=RequestBudget(100_000, 60)
        )
        conn.http.timeout = (1.0, READ_TIMEOUT_S)
        return conn

    return make, handler, "ddl/raw_mixpanel.sql", datetime(2026, 11, 22, tzinfo=UTC)


CASES = {
    "zendesk": (zendesk_case, r"/api/v2/incremental/tickets/cursor\.json", "GET"),
    "mixpanel": (mixpanel_case, r"/api/2\.0/export", "GET"),
}


def _sync(make: Callable[[], Any], ddl: str | None, end: datetime, work: Path, run: str):
    conn = make()
    con = _warehouse(work / f"{run}.duckdb", ddl)
    try:
        pages = conn.pages(None, end)
        load.load_pages(con, conn.spec, pages, run, work / f"land-{run}", batch_bytes=1)
        return _snapshot(con, conn), None
    except (HttpError, load.LoadError) as exc:
        return _snapshot(con, conn), exc
    finally:
        con.close()


def bench(name: str, rate: float, runs: int, seed: int) -> str:
    case, path, method = CASES[name]
    with FakeServer() as srv, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make, handler, ddl, end = case(srv)
        clean, err = _sync(make, ddl, end, work, "clean")
        assert err is None, f"the clean sync failed: {err}"
        identical = loud = 0
        injected: Counter[str] = Counter()
        t0 = time.perf_counter()
        for i in range(runs):
            faulty = Faulty(handler, rate, seed + i)
            srv.route(method, path, faulty)
            got, err = _sync(make, ddl, end, work, f"run{i}")
            injected += faulty.injected
            if err is not None:
                loud += 1
                print(f"  {name} run {i}: failed loudly: {err}")
            elif got == clean:
                identical += 1
            else:
                print(
                    f"  {name} run {i}: finished with DIFFERENT data ({len(got[0])} rows vs "
                    f"{len(clean[0])}; state {got[1]} vs {clean[1]})"
                )
        secs = time.perf_counter() - t0
        rows = len(clean[0])
    faults = ", ".join(f"{k} ×{v}" for k, v in sorted(injected.items()))
    return (
        f"{name} {rate:.0%} faults: {identical}/{runs} identical, {loud} failed loudly, "
        f"{runs - identical - loud} silently different ({rows} rows; faults injected: {faults}; "
        f"{secs:.1f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connector", choices=sorted(CASES), action="append")
    parser.add_argument("--rate", type=float, default=0.2)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the retry warnings would drown the figures
    for name in args.connector or sorted(CASES):
        print(bench(name, args.rate, args.runs, args.seed), flush=True)


if __name__ == "__main__":
    main()
