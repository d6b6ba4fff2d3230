"""Extraction across workers (flows/extract.py) against a real Prefect server (`make test-server`).

`prefect server start`, the process work pool, `prefect deploy --all` (the `extract`
deployment), TWO process workers (`--limit 1` each, named), and the vendor fakes for Zendesk and
Intercom in this process, every request answered after a little latency. The nightly runs as a
subprocess against the server on the demo export files plus both connectors:

- in-process (the default): the reference warehouse;
- `extract_on_workers`: two `extract` flow runs, one per connector, ran on the two different
  workers, landed their pages, and the nightly committed them (once, serially, in its own load
  step); the raw and staging rows and the cursors equal the in-process run's, the landed
  folders are gone after the commit;
- again with Zendesk refusing its credential: that extract run fails, the nightly ends Degraded
  naming zendesk, Intercom still commits, Zendesk's cursor is not set.

Bounded: every wait has a deadline; every process started here is stopped (process groups).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pytest
import requests

from benchmarks.drill.common import table_hashes
from tasks.demo_data import DemoConfig, generate_demo_data
from tasks.settings import PROJECT_ROOT
from tests.fakes import zendesk as zd
from tests.fakes.intercom import conversation, intercom_api
from tests.fakes.server import FakeServer
from tests.test_prefect_server import _api, _cli, _free_port, _process

pytestmark = pytest.mark.server

END = date(2026, 11, 24)
BIN = Path(sys.executable).parent
T0 = int(datetime(2026, 11, 20, 10, 0, tzinfo=UTC).timestamp())
LATENCY_S = 0.3
TOKENS = {"ZENDESK_API_TOKEN": "zd-test-token-123", "INTERCOM_ACCESS_TOKEN": "ic-test-token-123"}
SALT = "workers-test-salt"
FAKE_ID = 9_000_000  # the fake tickets' ids, beside the demo export's tickets
WORKERS = ("extract-worker-a", "extract-worker-b")
NIGHTLY = """
import json, sys
from flows.nightly import nightly
state = nightly(config_path=sys.argv[1], dry_run=True, extract_on_workers=sys.argv[2] == "1",
                return_state=True)
summary = state.result(raise_on_failure=False)
summary = summary if isinstance(summary, dict) else {}
print("RESULT " + json.dumps({
    "type": state.type.value, "name": state.name, "message": state.message,
    "flow_run_id": str(state.state_details.flow_run_id),
    "loads": summary.get("loads"), "extract_runs": summary.get("extract_runs"),
}, default=str))
"""


def _settings(root: Path, name: str, demo: Path, urls: dict[str, str]) -> Path:
    path = root / f"{name}.toml"
    wh = root / name
    path.write_text(
        f"""
duckdb_path = "{wh / "feedback.duckdb"}"
snapshot_path = "{wh / "feedback_analyst.duckdb"}"
[demo]
enabled = false
[sources]
posthog_events = "{demo}/posthog/*.jsonl"
zendesk_tickets = "{demo}/zendesk/*.json"
github_issues = "{demo}/github/*.json"
[writeback]
tracker_dir = "{root / (name + "-tracker")}"
[connectors.zendesk]
base_url = "{urls["zendesk"]}"
email = "agent@acme.test"
start_date = "2026-11-01"
page_size = 3
requests_per_minute = 100000
[connectors.intercom]
base_url = "{urls["intercom"]}"
start_date = "2026-11-01"
page_size = 3
""",
        encoding="utf-8",
    )
    return path


def _extract_runs(api: str) -> dict[str, dict]:
    dep = _api("GET", f"{api}/deployments/name/extract/extract").json()["id"]
    runs = _api(
        "POST", f"{api}/flow_runs/filter", json={"flow_runs": {"deployment_id": {"any_": [dep]}}}
    ).json()
    return {r["id"]: r for r in runs}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("workers")
    demo = root / "demo"
    generate_demo_data(DemoConfig(out_dir=demo, end_date=END, days=45, users=400, accounts=40))
    servers = {name: FakeServer().start() for name in ("zendesk", "intercom")}
    tickets = [
        zd.ticket(FAKE_ID + i, zd.iso(T0 + 600 * i), subject=f"Export {i}") for i in range(14)
    ]
    convs = [conversation(f"ic-{i}", T0 + 600 * i, subject="Export broken") for i in range(14)]
    fakes = {
        "zendesk": zd.zendesk_api(servers["zendesk"], tickets, page_size=3),
        "intercom": intercom_api(servers["intercom"], convs, page_size=3),
    }
    for srv in servers.values():
        srv.latency_s = LATENCY_S
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_", "FEEDBACK_LOOP_")) and k != "VIRTUAL_ENV"
    }
    env |= {
        "PREFECT_HOME": str(root / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "GX_ANALYTICS_ENABLED": "false",
        "PATH": f"{BIN}:{env.get('PATH', '')}",
        "FEEDBACK_LOOP_HASH_SALT": SALT,
        **TOKENS,
    }
    prefect = str(BIN / "prefect")
    try:
        with _process(
            [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env,
            root / "server.log",
        ) as server:
            deadline = time.monotonic() + 120
            while True:
                assert server.poll() is None, (root / "server.log").read_text()
                with contextlib.suppress(requests.RequestException):
                    if requests.get(f"{api}/health", timeout=2).ok:
                        break
                assert time.monotonic() < deadline, "the Prefect server did not start in 120 s"
                time.sleep(0.5)
            env["PREFECT_API_URL"] = api
            _cli([prefect, "work-pool", "create", "feedback-loop", "--type", "process"], env)
            _cli([prefect, "variable", "set", "feedback_loop_home", str(PROJECT_ROOT)], env)
            _cli([prefect, "--no-prompt", "deploy", "--all"], env, timeout=180)
            worker_env = env | {"PREFECT_WORKER_QUERY_SECONDS": "1"}
            with contextlib.ExitStack() as workers:
                for name in WORKERS:
                    workers.enter_context(
                        _process(
                            [
                                *(prefect, "worker", "start", "--pool", "feedback-loop"),
                                *("--type", "process", "--name", name, "--limit", "1"),
                            ],
                            worker_env,
                            root / f"{name}.log",
                        )
                    )
                yield {
                    "root": root,
                    "api": api,
                    "env": env,
                    "demo": demo,
                    "fakes": fakes,
                    "urls": {n: s.url for n, s in servers.items()},
                }
    finally:
        for srv in servers.values():
            srv.stop()


def _nightly(stack, name: str, on_workers: bool) -> dict:
    cfg = _settings(stack["root"], name, stack["demo"], stack["urls"])
    before = set(_extract_runs(stack["api"]))
    done = subprocess.run(
        [sys.executable, "-c", NIGHTLY, str(cfg), "1" if on_workers else "0"],
        env=stack["env"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    assert lines, f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    out = json.loads(lines[-1][len("RESULT ") :])
    runs = _extract_runs(stack["api"])
    out["extract"] = {i: r for i, r in runs.items() if i not in before}
    out["db"] = stack["root"] / name / "feedback.duckdb"
    out["landing"] = stack["root"] / name / "landing"
    out["stderr"] = done.stderr
    return out


def _cursors(db: Path) -> dict[tuple[str, str], str]:
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.sql("select source, stream, cursor_value from ops.sync_state").fetchall()
    return {(source, stream): value for source, stream, value in rows}


def _api_tickets(db: Path) -> list[tuple]:
    """(rows, batches) of the tickets the Zendesk API fake served."""
    with duckdb.connect(str(db), read_only=True) as con:
        return con.sql(
            f"select count(*), count(distinct _batch_id) from raw.zendesk__tickets "
            f"where ticket_id >= {FAKE_ID}"
        ).fetchall()


def _hashes(db: Path, root: Path) -> dict:
    keep = ("raw.zendesk", "raw.intercom", "staging.stg_zendesk", "staging.stg_intercom")
    hashes = table_hashes(db, root)
    return {k: v for k, v in hashes.items() if k.startswith(keep)}


@pytest.fixture(scope="module")
def nights(stack):
    t0 = time.monotonic()
    out = {"in_process": _nightly(stack, "in-process", on_workers=False)}
    out["workers"] = _nightly(stack, "workers", on_workers=True)
    fake = stack["fakes"]["zendesk"]
    token, fake.token = fake.token, "rotated-elsewhere-456"
    try:
        out["refused"] = _nightly(stack, "refused", on_workers=True)
    finally:
        fake.token = token
    print(f"three nightly runs {time.monotonic() - t0:.0f}s")  # noqa: T201
    return out


def test_workers_mode_extracts_on_two_workers_and_commits_the_same_rows(stack, nights):
    ref, run = nights["in_process"], nights["workers"]
    assert ref["type"] == "COMPLETED", (ref["name"], ref["message"], ref["stderr"][-3000:])
    assert run["type"] == "COMPLETED", (run["name"], run["message"], run["stderr"][-3000:])
    assert ref["extract"] == {}  # the default pulls in-process: no extract runs
    # One extract flow run per connector, both Completed, on the two different workers.
    extract = run["extract"].values()
    assert sorted(r["parameters"]["connector"] for r in extract) == ["intercom", "zendesk"]
    assert all(r["state"]["type"] == "COMPLETED" for r in extract), [r["state"] for r in extract]
    assert {r["labels"].get("prefect.worker.name") for r in extract} == set(WORKERS)
    assert {r["parent_task_run_id"] is not None for r in extract} == {True}  # subflows
    # The nightly saw them land their pages, then committed them itself.
    assert set(run["extract_runs"]) == {"zendesk", "intercom"}
    for source in ("zendesk (api)", "intercom"):  # the API beside Zendesk's export files
        row = run["loads"][source]
        assert row["n_inserted"] == 14 and row["files_loaded"] >= 5, row
        assert row == {**ref["loads"][source], "seconds": row["seconds"]}
    # The same rows and cursors as in-process, committed in one batch per source.
    root = stack["root"]
    assert _hashes(run["db"], root) == _hashes(ref["db"], root)
    assert _hashes(run["db"], root)["raw.intercom__conversations"][0] == 14
    assert _cursors(run["db"]) == _cursors(ref["db"])
    with duckdb.connect(str(run["db"]), read_only=True) as con:
        batches = "select count(distinct _batch_id) from raw.intercom__conversations"
        assert con.sql(batches).fetchall() == [(1,)]
    assert _api_tickets(run["db"]) == [(14, 1)]
    # Committed pages do not linger in the landing folder.
    assert [p for p in run["landing"].rglob("*") if p.is_file()] == []


def test_a_failing_extract_run_degrades_the_nightly_naming_its_source(stack, nights):
    run = nights["refused"]
    assert run["type"] == "FAILED" and run["name"] == "Degraded", (run["name"], run["message"])
    assert "zendesk (api) failed to load" in run["message"]
    assert "intercom" not in run["message"]
    assert TOKENS["ZENDESK_API_TOKEN"] not in run["message"]
    states = {r["parameters"]["connector"]: r["state"]["type"] for r in run["extract"].values()}
    assert states == {"zendesk": "FAILED", "intercom": "COMPLETED"}
    loads = run["loads"]
    assert loads["zendesk (api)"]["failed"] and loads["intercom"]["n_inserted"] == 14
    assert loads["zendesk"]["n_inserted"] > 0  # Zendesk's export files still loaded
    cursors = _cursors(run["db"])
    assert ("intercom", "conversations") in cursors and ("zendesk", "tickets") not in cursors
    assert _api_tickets(run["db"]) == [(0, 0)]
