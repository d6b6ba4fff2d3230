"""Fault injection: each connector's load step against its vendor fake with ≥ 20% of requests
failing (tests/fakes/faults.py), compared with a clean load of the same data.

Pass = the data (raw rows without bookkeeping columns) and the committed cursor equal the clean
load; or the load stopped with an error (the run would be Degraded for that source) and what it
committed is consistent: a fault-free rerun from the committed cursor gives exactly the clean
result. Either way no credential may appear in the error. Runs in the drill's worker process
(the connector's load step, not the whole flow: a fault trial then takes a second, not a
minute); retry waits are real requests for a wait, capped to a few ms by the worker's sleep cap.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.drill.common import Trial

SECTION = "faults"
T0 = int(datetime(2026, 11, 20, 10, 0, tzinfo=UTC).timestamp())
FAULT_RATE = 0.25


@dataclass(frozen=True)
class Vendor:
    name: str
    env: dict[str, str]
    settings: dict[str, Any]
    window_end: str
    raw_table: str
    install: Callable[[Any], Any]  # FakeServer -> fake (with its data)
    # (settings_cls, connector_cls, settings, retry, fake) -> connector; None = the usual
    # `connector_cls(settings, retry=retry)`.
    build: Callable[..., Any] | None = None


def _posthog(srv: Any) -> Any:
    from datetime import timedelta

    from tests.fakes.posthog import posthog_api

    base = datetime(2026, 11, 19, 9, 0, tzinfo=UTC)
    events = [
        {
            "uuid": f"0190a000-0000-7000-8000-{i:012d}",
            "event": "export_started" if i % 2 else "report_viewed",
            "distinct_id": f"user-{i % 5}",
            "timestamp": (base + timedelta(hours=3 * i)).isoformat(),
            "properties": {"$pathname": "/exports", "$groups": {"company": "acct-1"}},
        }
        for i in range(40)
    ]
    return posthog_api(srv, events)


def _zendesk(srv: Any) -> Any:
    from tests.fakes import zendesk as zd

    tickets = [
        zd.ticket(100 + i, zd.iso(T0 + 60 * i), subject=f"Export {i} fails") for i in range(40)
    ]
    tickets.append(zd.ticket(103, zd.iso(T0 + 60 * 30), status="solved"))
    return zd.zendesk_api(srv, tickets, page_size=3)


def _intercom(srv: Any) -> Any:
    from tests.fakes.intercom import conversation, intercom_api

    convs = [conversation(f"ic-{i}", T0 + 60 * i, subject="Export broken") for i in range(36)]
    return intercom_api(srv, convs, page_size=3)


def _freshdesk(srv: Any) -> Any:
    from tests.fakes import freshdesk as fd
    from tests.fakes.zendesk import iso

    tickets = [fd.ticket(500 + i, iso(T0 + 60 * i)) for i in range(36)]
    return fd.freshdesk_api(srv, tickets, page_size=3)


def _amplitude(srv: Any) -> Any:
    from tests.fakes.amplitude import amplitude_api, amplitude_event

    events = [
        amplitude_event(
            f"0190b000-0000-7000-8000-{i:012d}",
            user_id=f"u{i}",
            event_time=f"2026-11-20 {1 + i // 4:02d}:{i % 4 * 10:02d}:00.000000",
            upload_time=f"2026-11-20 {1 + i // 4:02d}:{i % 4 * 10 + 1:02d}:00.000000",
        )
        for i in range(40)
    ]
    return amplitude_api(srv, events)


def _mixpanel(srv: Any) -> Any:
    from tests.fakes.mixpanel import epoch, mixpanel_api, mixpanel_event

    events = [
        mixpanel_event(
            f"ins-{i}",
            distinct_id=f"u{i}",
            time=epoch(f"2026-11-{10 + i % 11}T{i % 24:02d}:15:00+00:00"),
        )
        for i in range(36)
    ]
    return mixpanel_api(srv, events)


BUG_NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _github(srv: Any) -> Any:
    from datetime import timedelta

    from tests.fakes.github import FakeGitHub

    fake = FakeGitHub()
    fake.server = srv  # serve from the drill's server (the one the faults wrap)
    srv.route("*", r"/.*", fake._handle)
    for i in range(36):
        fake.add_issue(
            f"Export {i} fails",
            "steps to reproduce",
            labels=("bug",) if i % 3 else ("bug", "area:exports"),
            state="closed" if i % 7 == 0 else "open",
            pr=i % 11 == 5,  # pull requests are listed too; the loader drops them
            updated_at=datetime(2026, 11, 19, 9, 0, tzinfo=UTC) + timedelta(minutes=10 * i),
        )
    return fake


def _github_connector(settings_cls: Any, connector_cls: Any, settings: Any, retry: Any, fake: Any):
    from tasks.clients.github import make_client

    client = make_client(settings, retry=retry, wall_clock=lambda: fake.now.timestamp())
    return connector_cls(settings, client=client)


def _jira(srv: Any) -> Any:
    from datetime import timedelta

    from tests.fakes.jira import jira_api

    fake = jira_api(srv)
    for i in range(36):
        fake.add_issue(
            BUG_NOW - timedelta(hours=4 * i + 1),
            summary=f"Export {i} fails",
            priority=("Highest", "High", "Medium", "Low", None)[i % 5],
            labels=["customer"] if i % 2 else [],
            status="Done" if i % 6 == 0 else "To Do",
        )
    return fake


def _linear(srv: Any) -> Any:
    from datetime import timedelta

    from tests.fakes.linear import linear_api

    fake = linear_api(srv)
    for i in range(36):
        fake.add_issue(
            BUG_NOW - timedelta(hours=4 * i + 1),
            title=f"Export {i} fails",
            priority=i % 5,
            state="Done" if i % 6 == 0 else "Todo",
            labels=["Bug"],
            archived=i % 13 == 4,
            issue_id=f"00000000-0000-4000-8000-{i:012d}",
        )
    return fake


def _linear_connector(settings_cls: Any, connector_cls: Any, settings: Any, retry: Any, fake: Any):
    return connector_cls(settings, retry=retry, clock=lambda: BUG_NOW.timestamp())


def _sentry(srv: Any) -> Any:
    from datetime import timedelta

    from tests.fakes.sentry import sentry_api

    fake = sentry_api(srv, now=BUG_NOW + timedelta(hours=1))
    for i in range(36):
        fake.add_issue(
            BUG_NOW - timedelta(hours=4 * i + 1),
            status=("unresolved", "resolved", "ignored")[i % 3],
            count=100 + i,
            users=i,
        )
    return fake


VENDORS = {
    "posthog": Vendor(
        "posthog",
        {"POSTHOG_PERSONAL_API_KEY": "phx_test_key"},
        {
            "project_id": "1",
            "start_date": "2026-11-19",
            "page_size": 3,
            "lookback_days": 1,
            "queries_per_hour": 100_000,
        },
        "2026-11-22T00:00:00+00:00",
        "raw.posthog__events",
        _posthog,
    ),
    "zendesk": Vendor(
        "zendesk",
        {"ZENDESK_API_TOKEN": "zd-test-token-123"},
        {
            "email": "agent@acme.test",
            "start_date": "2026-11-01",
            "page_size": 3,
            "requests_per_minute": 100_000,
        },
        "2026-11-26T02:00:00+00:00",
        "raw.zendesk__tickets",
        _zendesk,
    ),
    "intercom": Vendor(
        "intercom",
        {"INTERCOM_ACCESS_TOKEN": "ic-test-token-123"},
        {"start_date": "2026-11-01", "page_size": 3},
        "2026-11-26T02:00:00+00:00",
        "raw.intercom__conversations",
        _intercom,
    ),
    "freshdesk": Vendor(
        "freshdesk",
        {"FRESHDESK_API_KEY": "fd-test-key-123"},
        {"start_date": "2026-11-01", "page_size": 3},
        "2026-11-26T02:00:00+00:00",
        "raw.freshdesk__tickets",
        _freshdesk,
    ),
    "amplitude": Vendor(
        "amplitude",
        {"AMPLITUDE_API_KEY": "amp_key", "AMPLITUDE_SECRET_KEY": "amp_secret"},
        {"start_date": "2026-11-20", "hours_per_request": 1},
        "2026-11-21T02:30:00+00:00",
        "raw.amplitude__events",
        _amplitude,
    ),
    "mixpanel": Vendor(
        "mixpanel",
        {
            "MIXPANEL_SERVICE_ACCOUNT_USERNAME": "sa.user",
            "MIXPANEL_SERVICE_ACCOUNT_SECRET": "sa_secret",
        },
        {"project_id": "42", "start_date": "2026-11-10", "queries_per_hour": 100_000},
        "2026-11-21T02:30:00+00:00",
        "raw.mixpanel__events",
        _mixpanel,
    ),
    "github": Vendor(
        "github",
        {"GITHUB_TOKEN": "ghp_fakeToken123456"},
        {"owner": "acme", "repo": "analytics", "per_page": 3},
        "2026-11-21T00:00:00+00:00",
        "raw.github__issues",
        _github,
        _github_connector,
    ),
    "jira": Vendor(
        "jira",
        {"JIRA_EMAIL": "bot@acme.test", "JIRA_API_TOKEN": "jira-test-token-123"},
        {"project": "ABC", "start_days": 7, "page_size": 3},
        BUG_NOW.isoformat(),
        "raw.jira__issues",
        _jira,
    ),
    "linear": Vendor(
        "linear",
        {"LINEAR_API_KEY": "lin_api_TestKey1234567890"},
        {"team_key": "ENG", "start_days": 7, "page_size": 3},
        BUG_NOW.isoformat(),
        "raw.linear__issues",
        _linear,
        _linear_connector,
    ),
    "sentry": Vendor(
        "sentry",
        {"SENTRY_AUTH_TOKEN": "sntrys_TestToken1234567890"},
        {"org": "acme", "start_days": 7, "page_size": 3},
        BUG_NOW.isoformat(),
        "raw.sentry__issues",
        _sentry,
    ),
}
# Connectors with no fault trial yet: reported as not covered.
NOT_COVERED: tuple[str, ...] = ()


_LOCAL_URL = re.compile(r"http://127\.0\.0\.1:\d+")


def _snapshot(db: Path, table: str) -> tuple[list, list]:
    import duckdb

    from benchmarks.drill.common import EXCLUDED_COLUMNS

    con = duckdb.connect(str(db), read_only=True)
    try:
        cols = [
            r[0] for r in con.sql(f"describe {table}").fetchall() if r[0] not in EXCLUDED_COLUMNS
        ]
        rows = con.sql(f"select {', '.join(cols)} from {table} order by all").fetchall()
        state = con.sql(
            "select source, stream, cursor_value from ops.sync_state order by all"
        ).fetchall()
        # Every load runs against a fresh fake on its own port: URLs in payloads (Jira's
        # `self`) differ by the port only.
        return [tuple(_LOCAL_URL.sub("<FAKE>", str(v)) for v in r) for r in rows], [
            tuple(map(str, r)) for r in state
        ]
    finally:
        con.close()


def load_once(v: Vendor, db: Path, landing: Path, rate: float, seed: int) -> tuple[str | None, Any]:
    """One load step of `v` into `db` against a fresh fake; (error text or None, injector)."""
    import os

    import duckdb

    from tasks import db as dbmod
    from tasks import load
    from tasks.clients.http import RetryPolicy
    from tasks.connectors import CONNECTOR_TYPES, _load
    from tasks.redact import register_duckdb
    from tests.fakes.faults import inject_faults
    from tests.fakes.server import FakeServer

    os.environ.update(v.env)
    settings_cls, connector_cls = _load(CONNECTOR_TYPES[v.name])
    with FakeServer() as srv:
        fake = v.install(srv)
        inj = inject_faults(srv, rate, seed) if rate > 0 else None
        settings = settings_cls.model_validate({**v.settings, "base_url": srv.url})
        retry = RetryPolicy(max_attempts=6, base_delay_s=0.01, max_delay_s=0.05, jitter=0.0)
        if v.build is not None:
            connector = v.build(settings_cls, connector_cls, settings, retry, fake)
        else:
            connector = connector_cls(settings, retry=retry)
        con = duckdb.connect(str(db))
        try:
            dbmod.ensure_schema(con)
            register_duckdb(con, "drill-salt")
            state = load.read_state(con, connector.source, connector.stream)
            pages = connector.pages(state, datetime.fromisoformat(v.window_end))
            load.load_pages(con, connector.spec, pages, f"drill-{seed}", landing)
            return None, inj
        except Exception as exc:  # the flow would mark this source failed (Degraded run)
            return f"{type(exc).__name__}: {exc}", inj
        finally:
            con.close()


def trial(spec: dict) -> Trial:
    import time

    v: Vendor = VENDORS[spec["vendor"]]
    seed, rate = spec["seed"], spec.get("rate", FAULT_RATE)
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f"faults-{v.name}-{seed}-", dir=spec["work"]))
    try:
        clean_err, _ = load_once(v, tmp / "clean.duckdb", tmp / "landing-clean", 0.0, seed)
        if clean_err:
            return Trial(
                SECTION, f"{v.name}#{seed}", False, f"clean load failed: {clean_err[:200]}"
            )
        want = _snapshot(tmp / "clean.duckdb", v.raw_table)
        err, inj = load_once(v, tmp / "faulty.duckdb", tmp / "landing", rate, seed)
        n_faults = len(inj.injected) if inj else 0
        kinds = sorted({k for k, _ in inj.injected}) if inj else []
        problems = []
        secrets = [s for s in v.env.values() if err and s in err]
        if secrets:
            problems.append("credential in the error text")
        if err is None:
            outcome = "identical" if _snapshot(tmp / "faulty.duckdb", v.raw_table) == want else None
            if outcome is None:
                problems.append("load succeeded but data/cursor differ from the clean load")
        else:
            rerun_err, _ = load_once(v, tmp / "faulty.duckdb", tmp / "landing", 0.0, seed)
            if rerun_err:
                problems.append(f"fault-free rerun failed: {rerun_err[:160]}")
            elif _snapshot(tmp / "faulty.duckdb", v.raw_table) != want:
                problems.append(
                    "committed part inconsistent: the rerun differs from the clean load"
                )
            outcome = f"stopped ({err[:120]})"
        detail = f"{n_faults} faults in {inj.served if inj else 0} requests {kinds}; " + (
            "; ".join(problems) if problems else (outcome or "")
        )
        return Trial(
            SECTION,
            f"{v.name}#{seed}",
            not problems,
            detail,
            time.perf_counter() - t0,
            extra={
                "vendor": v.name,
                "faults": n_faults,
                "requests": inj.served if inj else 0,
                "kinds": kinds,
            },
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
