"""A load killed (SIGKILL) between page commits, or with a page fetched but not committed, reruns
to exactly the rows and cursor of an uninterrupted run: nothing duplicated, nothing missing.

The load runs in a real child process (tests/crash_helpers/loader.py) against a fake vendor API
served from this process; progress is read from the fake's request log (the child holds the
DuckDB write lock, so the database is only opened once the child is dead).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tasks import db, load
from tests.crash_helpers import loader
from tests.fakes import posthog as ph
from tests.fakes import zendesk as zd
from tests.fakes.server import FakeServer, Request, Response

REPO = Path(__file__).resolve().parents[1]
WAIT_S = 20.0  # generous upper bound for the child to reach the kill point; normally < 2 s
T0 = int(datetime(2026, 11, 20, 10, 0, tzinfo=UTC).timestamp())
ZD_WINDOW_END = "2026-11-26T02:00:00+00:00"
ZD_SETTINGS = {"email": "agent@acme.test", "start_date": "2026-11-01", "page_size": 3}
PH_WINDOW_END = "2026-11-22T00:00:00+00:00"
PH_SETTINGS = {"project_id": "1", "start_date": "2026-11-19", "page_size": 2, "lookback_days": 1}


# --------------------------------------------------------------------------------------------
# Harness
# --------------------------------------------------------------------------------------------


class Gate:
    """Wraps a fake's data handler: the `stall_at`-th request blocks until released, then the
    connection is dropped. The loader fetches pages ahead of the one it lands
    (load.FETCH_AHEAD), so the request for page k+1 may overlap page k's commit: run_and_kill
    waits for the commits before the stalled request, and the child is then between two
    commits."""

    def __init__(self, inner: Callable[[Request], Response], stall_at: int | None) -> None:
        self.inner, self.stall_at = inner, stall_at
        self.n = 0
        self.entered, self.release = threading.Event(), threading.Event()
        self._lock = threading.Lock()

    def __call__(self, req: Request) -> Response:
        with self._lock:
            self.n += 1
            stall = self.n == self.stall_at
        if stall:
            self.entered.set()
            self.release.wait(WAIT_S)
            return Response.drop()
        return self.inner(req)


@dataclass
class Source:
    name: str
    path: str  # regex of the data endpoint in the fake
    method: str
    secret_env: str
    secret: str
    settings: dict[str, Any]
    window_end: str
    raw_table: str
    key: str


ZENDESK = Source(
    "zendesk",
    zd.EXPORT_PATH,
    "GET",
    "ZENDESK_API_TOKEN",
    "zd-test-token-123",
    ZD_SETTINGS,
    ZD_WINDOW_END,
    "raw.zendesk__tickets",
    "ticket_id",
)
POSTHOG = Source(
    "posthog",
    ph.QUERY_PATH,
    "POST",
    "POSTHOG_PERSONAL_API_KEY",
    "phx_test_key",
    PH_SETTINGS,
    PH_WINDOW_END,
    "raw.posthog__events",
    "event_id",
)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty warehouse built once; each run gets a copy (ensure_schema takes ~0.4 s)."""
    path = tmp_path_factory.mktemp("crash") / "template.duckdb"
    con = duckdb.connect(str(path))
    db.ensure_schema(con)
    con.close()
    return path


@pytest.fixture
def new_warehouse(template: Path) -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        shutil.copyfile(template, path)
        return path

    return make


def child_config(src: Source, srv: FakeServer, tmp: Path, name: str, **extra: Any) -> dict:
    return {
        "db": str(tmp / f"{name}.duckdb"),
        "source": src.name,
        "base_url": srv.url,
        "settings": src.settings,
        "window_end": src.window_end,
        "run_id": f"{name}-run",
        "landing_dir": str(tmp / f"landing-{name}"),
        "result_file": str(tmp / f"{name}-result.json"),
        **extra,
    }


def spawn(src: Source, cfg: dict, tmp: Path) -> subprocess.Popen:
    env = {**os.environ, src.secret_env: src.secret}
    with (tmp / "child-stderr.txt").open("w") as stderr:  # the child keeps its own copy
        return subprocess.Popen(
            [sys.executable, "-m", "tests.crash_helpers.loader", json.dumps(cfg)],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def wait_for(ready: Callable[[], bool], child: subprocess.Popen, tmp: Path) -> None:
    deadline = time.monotonic() + WAIT_S
    while not ready():
        if child.poll() is not None:
            err = (tmp / "child-stderr.txt").read_text()
            pytest.fail(f"child exited ({child.returncode}) before the kill point:\n{err}")
        if time.monotonic() > deadline:
            child.kill()
            pytest.fail("child never reached the kill point")
        time.sleep(0.005)


def sigkill(child: subprocess.Popen) -> None:
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait(timeout=10) == -signal.SIGKILL


def raw_rows(path: Path | str, src: Source) -> list[tuple]:
    """Every raw row without the per-load bookkeeping columns, in key order."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.sql(
            f"select * exclude (_source_file, _batch_id, _loaded_at) from {src.raw_table} "
            f"order by {src.key}"
        ).fetchall()
    finally:
        con.close()


def duplicate_keys(path: Path | str, src: Source) -> list[tuple]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.sql(
            f"select {src.key}, count(*) from {src.raw_table} group by all having count(*) > 1"
        ).fetchall()
    finally:
        con.close()


def committed_state(path: Path | str, src: Source) -> dict | None:
    con = duckdb.connect(str(path), read_only=True)
    try:
        stream = "tickets" if src.name == "zendesk" else "events"
        return load.read_state(con, src.name, stream)
    finally:
        con.close()


def in_process_load(
    src: Source, srv: FakeServer, cfg: dict, monkeypatch: pytest.MonkeyPatch
) -> load.LoadStats:
    monkeypatch.setenv(src.secret_env, src.secret)
    return loader.run_load(
        cfg["db"],
        src.name,
        srv.url,
        src.settings,
        src.window_end,
        cfg["run_id"],
        cfg["landing_dir"],
    )


@dataclass
class Killed:
    requests_before_kill: list[Request]  # data requests the killed child made
    hung_state: dict | None  # the state of the page fetched but never committed


def run_and_kill(
    src: Source,
    srv: FakeServer,
    gate: Gate,
    cfg: dict,
    tmp: Path,
    mode: str,
    at: int,
    new_warehouse: Callable[[Path], Path],
    committed: int = 0,
) -> Killed:
    """Run the child until the kill point, SIGKILL it. mode 'between': data request `at` is
    made and stalls, and the `committed` pages before it are committed; 'before_commit': page
    batch `at` is staged and merged, its cursor written, the transaction still open (the
    fetch-ahead thread may have requested up to FETCH_AHEAD + 1 pages after it)."""
    signal_file = tmp / "hung-state.json"
    commits_file = tmp / "commits.txt"
    if mode == "before_commit":
        cfg = {**cfg, "hang_before_commit": at, "signal_file": str(signal_file)}
        ready = signal_file.exists
    else:
        gate.stall_at = at
        cfg = {**cfg, "commits_file": str(commits_file)}

        def ready() -> bool:
            if not gate.entered.is_set():
                return False
            done = int(commits_file.read_text()) if commits_file.exists() else 0
            assert done <= committed, f"{done} batches committed, expected {committed}"
            return done == committed

    new_warehouse(Path(cfg["db"]))
    child = spawn(src, cfg, tmp)
    try:
        wait_for(ready, child, tmp)
        sigkill(child)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        gate.stall_at = None
        gate.release.set()
    hung = json.loads(signal_file.read_text()) if mode == "before_commit" else None
    return Killed(srv.requests_to(src.path, src.method), hung)


@pytest.fixture
def srv() -> Iterator[FakeServer]:
    with FakeServer() as server:
        yield server
        server.assert_clean()


# --------------------------------------------------------------------------------------------
# Zendesk: JSON export pages, ticket versions (newest wins)
# --------------------------------------------------------------------------------------------


def zendesk_data() -> tuple[list[dict], list[dict]]:
    """13 ticket versions, 5 pages of 3 in cursor order:
    [101 102 103] [104 105 106] [107 108 109] [110 105' 105''] [103'] — 105 changes twice on
    one page (the newest wins inside the batch), 103 changes across every kill point below."""
    people = {
        9001: ("Ada Lovelace-Byron", "ada.lb@example.org"),
        9002: ("Grace Hopper", "gh@x.org"),
    }
    tickets = [
        zd.ticket(
            100 + i,
            zd.iso(T0 + 60 * i),
            # The requester's own name and e-mail: redacted at landing via the users sideload.
            subject="Export {} fails for {} ({})".format(i, *people[9001 + i % 2]),
            requester_id=9001 + i % 2,
        )
        for i in range(1, 11)
    ]
    tickets += [
        zd.ticket(105, zd.iso(T0 + 60 * 11), status="pending", subject="Export 5, retried"),
        zd.ticket(105, zd.iso(T0 + 60 * 12), status="solved", subject="Export 5, fixed"),
        zd.ticket(103, zd.iso(T0 + 60 * 13), status="solved", priority="high"),
    ]
    users = [zd.user(uid, name, email) for uid, (name, email) in people.items()]
    return tickets, users


def page_ids(req_index: int, versions: list[dict], per_page: int = 3) -> list[int]:
    ordered = sorted(versions, key=zd._position)
    return [t["id"] for t in ordered[per_page * req_index : per_page * (req_index + 1)]]


def served_ticket_ids(srv: FakeServer, reqs: list[Request], versions: list[dict]) -> int:
    """How many ticket versions the fake served to `reqs` (recomputed from their cursors)."""
    ordered = sorted(versions, key=zd._position)
    n = 0
    for r in reqs:
        cursor = r.arg("cursor")
        if cursor is None:
            start = int(r.arg("start_time") or 0)
            remaining = [t for t in ordered if zd._position(t)[0] >= start]
        else:
            pos = zd.decode_cursor(cursor)
            remaining = [t for t in ordered if zd._position(t) > pos]
        n += len(remaining[:3])
    return n


KILL_POINTS = [
    # (mode, at, pages committed when killed)
    pytest.param("between", 3, 2, id="between-commits-2-of-5"),
    pytest.param("between", 5, 4, id="between-commits-4-of-5"),
    pytest.param("before_commit", 3, 2, id="page-3-fetched-not-committed"),
    pytest.param("before_commit", 1, 0, id="first-page-fetched-not-committed"),
]


@pytest.mark.parametrize(("mode", "at", "committed"), KILL_POINTS)
def test_zendesk_killed_load_reruns_to_the_uninterrupted_result(
    srv: FakeServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    new_warehouse: Callable[[Path], Path],
    mode: str,
    at: int,
    committed: int,
) -> None:
    tickets, users = zendesk_data()
    fake = zd.zendesk_api(srv, tickets, page_size=3, users=users)
    gate = Gate(fake.export, None)
    srv.route("GET", zd.EXPORT_PATH, gate)
    cfg = child_config(ZENDESK, srv, tmp_path, "crashed")

    killed = run_and_kill(ZENDESK, srv, gate, cfg, tmp_path, mode, at, new_warehouse, committed)

    # What survived the kill: exactly the committed pages, and the cursor after the last of them.
    reqs = killed.requests_before_kill
    if mode == "between":
        assert len(reqs) == at  # the stalled request holds the fetch-ahead thread
    else:  # fetched ahead of the hung batch: at most FETCH_AHEAD + 1 pages, of 5
        assert at <= len(reqs) <= min(at + load.FETCH_AHEAD + 1, 5)
    state = committed_state(cfg["db"], ZENDESK)
    if committed == 0:
        assert state is None
    else:
        # The loader asked for page k+1 with the cursor it committed after page k.
        assert state == {"cursor": reqs[committed].arg("cursor")}
    if killed.hung_state is not None:
        assert killed.hung_state != state  # its cursor was written, never committed
    survived = {r[0] for r in raw_rows(cfg["db"], ZENDESK)}
    expected_ids = {i for k in range(committed) for i in page_ids(k, tickets)}
    assert survived == expected_ids
    assert duplicate_keys(cfg["db"], ZENDESK) == []

    # The rerun (a new process would do the same; in-process keeps the test fast).
    n_before = len(srv.requests_to(zd.EXPORT_PATH, "GET"))
    rerun = in_process_load(ZENDESK, srv, {**cfg, "run_id": "rerun"}, monkeypatch)
    rerun_reqs = srv.requests_to(zd.EXPORT_PATH, "GET")[n_before:]
    first = rerun_reqs[0]
    if state is None:
        assert first.arg("cursor") is None and first.arg("start_time") == reqs[0].arg("start_time")
    else:
        assert first.arg("cursor") == state["cursor"]  # re-asked from the committed cursor
    assert len(rerun_reqs) == 5 - committed  # only the uncommitted pages are fetched again

    # The uninterrupted run into a second warehouse.
    base_cfg = child_config(ZENDESK, srv, tmp_path, "baseline")
    new_warehouse(Path(base_cfg["db"]))
    n_before = len(srv.requests_to(zd.EXPORT_PATH, "GET"))
    base = in_process_load(ZENDESK, srv, base_cfg, monkeypatch)
    assert len(srv.requests_to(zd.EXPORT_PATH, "GET")) - n_before == 5

    got, want = raw_rows(cfg["db"], ZENDESK), raw_rows(base_cfg["db"], ZENDESK)
    assert got == want
    assert [r[0] for r in want] == list(range(101, 111))  # nothing missing
    assert duplicate_keys(cfg["db"], ZENDESK) == []
    assert committed_state(cfg["db"], ZENDESK) == committed_state(base_cfg["db"], ZENDESK)
    # Newest version wins, also when the versions straddle the kill.
    by_id = {r[0]: json.loads(r[2]) for r in got}
    assert (by_id[103]["status"], by_id[103]["priority"]) == ("solved", "high")
    assert (by_id[105]["status"], by_id[105]["subject"]) == ("solved", "Export 5, fixed")
    # Redaction at landing is deterministic, so a re-fetched page lands identically.
    leaks = ("ada.lb@example.org", "Lovelace", "Grace", "gh@x.org")
    assert not [r for r in got if any(leak in r[2] for leak in leaks)]

    # Row accounting: every version the rerun read is landed or superseded, and what survived
    # plus what the rerun inserted is every ticket once.
    assert rerun.records_read == served_ticket_ids(srv, rerun_reqs, tickets)
    assert rerun.records_read == rerun.n_landed + rerun.n_superseded
    assert rerun.n_quarantined == 0
    assert len(survived) + rerun.n_inserted == 10
    assert (base.records_read, base.n_inserted, base.n_updated, base.n_superseded) == (13, 10, 2, 1)


def test_zendesk_changes_after_the_kill_are_picked_up_by_the_rerun(
    srv: FakeServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    new_warehouse: Callable[[Path], Path],
) -> None:
    """Killed with page 3 fetched but not committed; before the rerun an already committed
    ticket changes and a new one arrives. The rerun equals an uninterrupted run over the
    final data."""
    tickets, users = zendesk_data()
    fake = zd.zendesk_api(srv, tickets, page_size=3, users=users)
    gate = Gate(fake.export, None)
    srv.route("GET", zd.EXPORT_PATH, gate)
    cfg = child_config(ZENDESK, srv, tmp_path, "crashed")
    run_and_kill(ZENDESK, srv, gate, cfg, tmp_path, "before_commit", 3, new_warehouse)
    assert {r[0] for r in raw_rows(cfg["db"], ZENDESK)} == set(range(101, 107))

    tickets.append(zd.ticket(102, zd.iso(T0 + 60 * 20), status="solved", subject="Fixed"))
    tickets.append(zd.ticket(111, zd.iso(T0 + 60 * 21), subject="New one"))
    rerun = in_process_load(ZENDESK, srv, {**cfg, "run_id": "rerun"}, monkeypatch)
    base_cfg = child_config(ZENDESK, srv, tmp_path, "baseline")
    new_warehouse(Path(base_cfg["db"]))
    in_process_load(ZENDESK, srv, base_cfg, monkeypatch)

    got = raw_rows(cfg["db"], ZENDESK)
    assert got == raw_rows(base_cfg["db"], ZENDESK)
    assert [r[0] for r in got] == list(range(101, 112))
    assert json.loads(got[1][2])["status"] == "solved"  # 102: committed, then changed
    assert committed_state(cfg["db"], ZENDESK) == committed_state(base_cfg["db"], ZENDESK)
    assert duplicate_keys(cfg["db"], ZENDESK) == []
    assert (rerun.n_inserted, rerun.n_updated) == (11 - 6, 3)  # 102, 103, 105 changed


# --------------------------------------------------------------------------------------------
# PostHog: query-API pages reshaped to typed columns, watermark state with lookback
# --------------------------------------------------------------------------------------------


def posthog_data() -> list[dict]:
    """9 events: 5 on Nov 20, 4 on Nov 21 (pages of 2: the 19th is empty, then [2 2 1] [2 2])."""
    base = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    out = []
    for i in range(9):
        ts = base + timedelta(days=i // 5, hours=i % 5)
        out.append(
            {
                "uuid": f"0190a000-0000-7000-8000-{i:012d}",
                "event": "export_started" if i % 2 else "report_viewed",
                "distinct_id": f"user-{i % 3}",
                "timestamp": ts.isoformat(),
                "properties": {"$pathname": "/exports", "$groups": {"company": "acct-1"}},
            }
        )
    return out


_LO = re.compile(r"timestamp >= toDateTime64\('([^']+)', 6, 'UTC'\)")


@pytest.mark.parametrize(
    ("mode", "at"),
    [
        pytest.param("between", 5, id="between-days"),
        pytest.param("before_commit", 2, id="second-page-fetched-not-committed"),
    ],
)
def test_posthog_killed_load_reruns_to_the_uninterrupted_result(
    srv: FakeServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    new_warehouse: Callable[[Path], Path],
    mode: str,
    at: int,
) -> None:
    events = posthog_data()
    handler = ph.posthog_api(srv, events)
    gate = Gate(handler, None)
    srv.route("POST", ph.QUERY_PATH, gate)
    cfg = child_config(POSTHOG, srv, tmp_path, "crashed")

    # Request 5 is Nov 21's first page: the 3 pages of Nov 20 are committed before the kill.
    committed = 3 if mode == "between" else 0
    killed = run_and_kill(POSTHOG, srv, gate, cfg, tmp_path, mode, at, new_warehouse, committed)

    state = committed_state(cfg["db"], POSTHOG)
    survived = raw_rows(cfg["db"], POSTHOG)
    if mode == "between":  # all of Nov 20 committed
        assert len(killed.requests_before_kill) == 5
        assert [r[0] for r in survived] == [e["uuid"] for e in events[:5]]
        assert state is not None and state["uuid"] == events[4]["uuid"]
    else:  # Nov 19 is empty (no page); page 1 [e0 e1] committed, page 2 [e2 e3] did not
        # (requests: Nov 19, page 1, page 2, then up to FETCH_AHEAD + 1 pages fetched ahead)
        assert 3 <= len(killed.requests_before_kill) <= 3 + load.FETCH_AHEAD + 1
        assert killed.hung_state is not None and killed.hung_state["uuid"] == events[3]["uuid"]
        assert [r[0] for r in survived] == [e["uuid"] for e in events[:2]]
        assert state is not None and state["uuid"] == events[1]["uuid"]

    n_before = len(srv.requests_to(ph.QUERY_PATH, "POST"))
    rerun = in_process_load(POSTHOG, srv, {**cfg, "run_id": "rerun"}, monkeypatch)
    first = srv.requests_to(ph.QUERY_PATH, "POST")[n_before]
    lo = datetime.fromisoformat(_LO.search(ph.query_text(first))[1]).replace(tzinfo=UTC)
    # The committed watermark minus the lookback, but never before the configured start.
    assert lo == max(
        datetime.fromisoformat(state["watermark"]) - timedelta(days=1),
        datetime(2026, 11, 19, tzinfo=UTC),
    )

    base_cfg = child_config(POSTHOG, srv, tmp_path, "baseline")
    new_warehouse(Path(base_cfg["db"]))
    base = in_process_load(POSTHOG, srv, base_cfg, monkeypatch)

    got = raw_rows(cfg["db"], POSTHOG)
    assert got == raw_rows(base_cfg["db"], POSTHOG)
    assert [r[0] for r in got] == [e["uuid"] for e in events]
    assert duplicate_keys(cfg["db"], POSTHOG) == []
    assert committed_state(cfg["db"], POSTHOG) == committed_state(base_cfg["db"], POSTHOG)
    # Re-read events (the lookback overlap) merge as unchanged, never as new rows.
    assert rerun.records_read == rerun.n_landed and rerun.n_quarantined == 0
    assert len(survived) + rerun.n_inserted == 9
    assert (base.records_read, base.n_inserted) == (9, 9)


def test_killed_load_leaves_no_unredacted_landing_files(
    srv: FakeServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    new_warehouse: Callable[[Path], Path],
) -> None:
    tickets, users = zendesk_data()
    fake = zd.zendesk_api(srv, tickets, page_size=3, users=users)
    gate = Gate(fake.export, None)
    srv.route("GET", zd.EXPORT_PATH, gate)
    cfg = child_config(ZENDESK, srv, tmp_path, "crashed")
    run_and_kill(ZENDESK, srv, gate, cfg, tmp_path, "before_commit", 3, new_warehouse)
    in_process_load(ZENDESK, srv, {**cfg, "run_id": "rerun"}, monkeypatch)
    left = [p for p in Path(cfg["landing_dir"]).iterdir() if "ada.lb@example.org" in p.read_text()]
    assert left == []
