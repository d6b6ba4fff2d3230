"""Against a real Prefect server, the production path end to end (`make test-server`, in CI).

`prefect server start` (local), a process work pool, the project's Prefect Variables, `prefect
deploy --all` from prefect.yaml, the alert automation with a local webhook receiver, a worker.
Then, through the REST API:

- `manual` with non-default parameters (window 21 days, not a dry run, at most 2 new issues)
  and `nightly` triggered together: both complete, one of them waited in AwaitingWarehouse,
  the parameters were honoured (ops.runs, the tracker), the artifacts are there;
- a run on a settings file with a critical data-quality failure ends in the FAILED-type state
  Degraded and the automation posts a notification to the webhook;
- a production deployment without settings fails at once with the one-line reason.

Bounded: every wait has a deadline; every process started here is stopped (process groups).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import duckdb
import pytest
import requests

from tasks.demo_data import DemoConfig, generate_demo_data
from tasks.settings import PROJECT_ROOT
from tests.helpers import demo_config

pytestmark = pytest.mark.server

END = date(2026, 11, 24)
BIN = Path(sys.executable).parent
DEADLINE = 420  # seconds for all runs of the test


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Hook(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server API)
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        with contextlib.suppress(ValueError):
            _Hook.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def _process(args: list[str], env: dict, log: Path, cwd: Path = PROJECT_ROOT):
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _cli(args: list[str], env: dict, timeout: float = 120) -> str:
    done = subprocess.run(
        args, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done.stdout


def _config(root: Path, name: str, demo: Path, tracker: Path) -> Path:
    return demo_config(root / name, demo, tracker=tracker, warehouse=root / "wh")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("server")
    demo = root / "demo"
    generate_demo_data(DemoConfig(out_dir=demo, end_date=END, days=45, users=400, accounts=40))
    # A copy whose tickets all fail a critical check: its runs are Degraded.
    bad = root / "demo_bad"
    shutil.copytree(demo, bad)
    for page in (bad / "zendesk").glob("*.json"):
        data = json.loads(page.read_text(encoding="utf-8"))
        for t in data["tickets"]:
            t["created_at"] = "not a date"
        page.write_text(json.dumps(data), encoding="utf-8")

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
    }
    hook = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    _Hook.received.clear()
    t0 = time.monotonic()
    with _process(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
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
        prefect = str(BIN / "prefect")
        _cli([prefect, "work-pool", "create", "feedback-loop", "--type", "process"], env)
        _cli([prefect, "variable", "set", "feedback_loop_home", str(PROJECT_ROOT)], env)
        good = _config(root, "settings.toml", demo, root / "tracker")
        _cli([prefect, "variable", "set", "feedback_loop_config", str(good)], env)
        _cli([prefect, "--no-prompt", "deploy", "--all"], env, timeout=180)
        _cli(
            [
                str(BIN / "feedback-loop"),
                "alerts",
                "--webhook-url",
                f"http://127.0.0.1:{hook.server_address[1]}/hook",
            ],
            env,
        )
        worker_env = env | {
            "FEEDBACK_LOOP_HASH_SALT": "server-test-salt",
            "PREFECT_WORKER_QUERY_SECONDS": "2",
        }
        with _process(
            [prefect, "worker", "start", "--pool", "feedback-loop", "--type", "process"],
            worker_env,
            root / "worker.log",
        ) as worker:
            yield {
                "root": root,
                "api": api,
                "env": env,
                "bad_demo": bad,
                "worker": worker,
                "setup_seconds": time.monotonic() - t0,
            }
    hook.shutdown()


def _api(method: str, url: str, **kw) -> requests.Response:
    """A REST call to the local server, retried on 5xx and dropped connections (the SQLite-backed
    server answers 503 while its database is busy, as Prefect's own client retries too)."""
    for attempt in range(8):
        try:
            r = requests.request(method, url, timeout=15, **kw)
            if r.status_code < 500:
                r.raise_for_status()
                return r
        except requests.ConnectionError:
            if attempt == 7:
                raise
        time.sleep(min(0.5 * 2**attempt, 8))
    r.raise_for_status()
    return r


def _deployment_id(api: str, name: str) -> str:
    return _api("GET", f"{api}/deployments/name/nightly/{name}").json()["id"]


def _trigger(api: str, deployment: str, parameters: dict) -> str:
    r = _api(
        "POST",
        f"{api}/deployments/{_deployment_id(api, deployment)}/create_flow_run",
        json={"parameters": parameters},
    )
    return r.json()["id"]


def _wait(api: str, flow_run_ids: list[str], stack, seconds: float = DEADLINE) -> dict[str, dict]:
    deadline = time.monotonic() + seconds
    while True:
        runs = {i: _api("GET", f"{api}/flow_runs/{i}").json() for i in flow_run_ids}
        if all(
            r["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
            for r in runs.values()
        ):
            return runs
        assert stack["worker"].poll() is None, (stack["root"] / "worker.log").read_text()[-3000:]
        assert time.monotonic() < deadline, (
            f"runs not finished in {seconds}s: "
            f"{[(r['name'], r['state']['name']) for r in runs.values()]}\n"
            + (stack["root"] / "worker.log").read_text()[-3000:]
        )
        time.sleep(2)


def _state_names(api: str, flow_run_id: str) -> list[str]:
    r = _api("GET", f"{api}/flow_run_states/", params={"flow_run_id": flow_run_id})
    return [s["name"] for s in sorted(r.json(), key=lambda s: s["timestamp"])]


def _artifact_keys(api: str, flow_run_id: str) -> set[str]:
    r = _api(
        "POST",
        f"{api}/artifacts/filter",
        json={"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}},
    )
    return {a["key"] for a in r.json() if a.get("key")}


def test_two_deployments_together_both_complete_one_waited_parameters_honoured(stack):
    api = stack["api"]
    t0 = time.monotonic()
    manual = _trigger(
        api, "manual", {"window_days": 21, "dry_run": False, "max_new_suggestions": 2}
    )
    nightly = _trigger(api, "nightly", {})
    runs = _wait(api, [manual, nightly], stack)
    elapsed = time.monotonic() - t0
    for fr in runs.values():
        assert fr["state"]["type"] == "COMPLETED", (fr["name"], fr["state"])
    histories = {i: _state_names(api, i) for i in runs}
    waited = [i for i, names in histories.items() if "AwaitingWarehouse" in names]
    assert len(waited) == 1, histories  # the second writer queued; nobody failed

    db = stack["root"] / "wh" / "feedback.duckdb"
    with duckdb.connect(str(db), read_only=True) as con:
        rows = {
            r[0]: r[1:]
            for r in con.execute(
                "select flow_run_id, window_days, is_dry_run, status from ops.runs"
            ).fetchall()
        }
    assert rows[manual] == (21, False, "completed")  # the manual run's parameters
    assert rows[nightly] == (28, False, "completed")  # the settings file's window
    created = list((stack["root"] / "tracker").glob("*.md"))
    assert 1 <= len(created) <= 2 + 5  # manual capped at 2; nightly may add up to its 5
    for i in runs:
        assert {"nightly-summary", "top-suggestions", "feature-health", "data-quality"} <= (
            _artifact_keys(api, i)
        )
    print(f"setup {stack['setup_seconds']:.0f}s; two runs together {elapsed:.0f}s")  # noqa: T201


def test_a_degraded_run_is_not_green_and_the_automation_notifies(stack):
    api = stack["api"]
    bad_cfg = _config(stack["root"], "bad.toml", stack["bad_demo"], stack["root"] / "tracker-bad")
    t0 = time.monotonic()
    run_id = _trigger(api, "manual", {"config_path": str(bad_cfg), "dry_run": True})
    fr = _wait(api, [run_id], stack)[run_id]
    assert fr["state"]["type"] == "FAILED" and fr["state"]["name"] == "Degraded", fr["state"]
    assert "stg_support_tickets" in fr["state"]["message"]
    deadline = time.monotonic() + 90
    while not any("Degraded" in m.get("subject", "") for m in _Hook.received):
        assert time.monotonic() < deadline, f"no notification; received {_Hook.received}"
        time.sleep(1)
    note = next(m for m in _Hook.received if "Degraded" in m.get("subject", ""))
    assert fr["name"] in note["subject"] and "stg_support_tickets" in note["body"]
    print(f"degraded run + notification {time.monotonic() - t0:.0f}s")  # noqa: T201


def test_a_production_deployment_without_settings_fails_at_once(stack):
    api = stack["api"]
    env = stack["env"]
    db = stack["root"] / "wh" / "feedback.duckdb"
    with duckdb.connect(str(db), read_only=True) as con:
        n_runs = con.sql("select count(*) from ops.runs").fetchall()[0][0]
    _cli([str(BIN / "prefect"), "--no-prompt", "variable", "unset", "feedback_loop_config"], env)
    run_id = _trigger(api, "manual", {})
    fr = _wait(api, [run_id], stack, seconds=180)[run_id]
    assert fr["state"]["type"] == "FAILED"
    assert "no settings for this production deployment" in fr["state"]["message"]
    tasks = _api(
        "POST", f"{api}/task_runs/filter", json={"flow_runs": {"id": {"any_": [run_id]}}}
    ).json()
    assert tasks == []  # failed before any step: no demo data, nothing loaded
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.sql("select count(*) from ops.runs").fetchall()[0][0] == n_runs
