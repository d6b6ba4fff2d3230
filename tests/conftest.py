"""Shared fixtures: a fresh warehouse per test, vendor-shaped export records, helpers."""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path

import duckdb
import pytest

import flows  # noqa: F401  (offline/telemetry defaults)
from tasks import db

os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


@pytest.fixture(scope="session")
def prefect_api():
    """One Prefect test server for every test that runs flows against an API (starting one
    costs ~20 s): from the first test that asks for it to the end of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def con(tmp_path: Path):
    c = duckdb.connect(str(tmp_path / "w.duckdb"))
    db.ensure_schema(c)
    yield c
    c.close()


def posthog_event(
    uuid: str,
    event: str = "export_started",
    user: str = "user-1",
    ts: object = "2026-11-20T10:00:00+00:00",
    path: str = "/exports",
    company: str = "acct-1",
) -> dict:
    return {
        "uuid": uuid,
        "event": event,
        "distinct_id": user,
        "timestamp": ts,
        "properties": {"$pathname": path, "$groups": {"company": company}, "$browser": "Firefox"},
    }


def zendesk_ticket(
    tid: int,
    updated: str = "2026-11-20T10:00:00Z",
    status: str = "open",
    priority: str | None = "normal",
    tags: list[str] | None = None,
    subject: str = "Export fails",
    description: str = "It fails.",
    created: object = "2026-11-19T10:00:00Z",
) -> dict:
    return {
        "id": tid,
        "url": f"https://acme-demo.zendesk.com/api/v2/tickets/{tid}.json",
        "created_at": created,
        "updated_at": updated,
        "subject": subject,
        "description": description,
        "priority": priority,
        "status": status,
        "requester_id": 9000 + tid,
        "organization_id": 77,
        "tags": tags if tags is not None else ["exports"],
        "via": {"channel": "email"},
    }


def zendesk_page(tickets: list[dict], cursor: str, end: bool) -> dict:
    return {
        "tickets": tickets,
        "after_cursor": cursor,
        "before_cursor": None,
        "after_url": f"https://acme-demo.zendesk.com/api/v2/incremental/tickets/cursor.json?cursor={cursor}",
        "end_of_stream": end,
    }


def github_issue(
    number: int,
    node_id: str | None = None,
    state: str = "open",
    labels: list[str] | None = None,
    created: str = "2026-11-18T09:00:00Z",
    updated: str = "2026-11-20T09:00:00Z",
    pr: bool = False,
) -> dict:
    item = {
        "id": 1000 + number,
        "node_id": node_id if node_id is not None else f"I_kwDOtest{number:04d}",
        "number": number,
        "html_url": f"https://github.com/acme/analytics/issues/{number}",
        "title": f"Issue {number}",
        "state": state,
        "state_reason": None,
        "labels": [{"name": n} for n in (labels or ["bug", "area:exports"])],
        "created_at": created,
        "updated_at": updated,
        "closed_at": None,
        "reactions": {"+1": 2, "total_count": 3},
    }
    if node_id == "":
        del item["node_id"]
    if pr:
        item["pull_request"] = {"url": "https://api.github.com/repos/acme/analytics/pulls/1"}
    return item


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows),
        encoding="utf-8",
    )
    return path


def write_json(path: Path, obj: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def chromium() -> str:
    """Headless Chromium for the report checks: found on PATH, else installed with apt-get
    (`make test` installs it first); skipped with the reason only where neither works."""
    from tests.browser import find_chromium

    path, why = find_chromium()
    if path is None:
        pytest.skip(f"NO BROWSER CHECK OF THE HTML REPORT: {why} (install Debian's chromium)")
    return path


E2E_END = date(2026, 11, 24)  # the demo's last data day in the end-to-end runs


@pytest.fixture(scope="session")
def demo_nightly(tmp_path_factory, prefect_api):
    """Default-size demo data, the `nightly` flow run twice on it (real Prefect runs): shared
    read-only by the end-to-end, report and data-dictionary tests (one ~50 s run pair per
    session). Tests that change things copy the demo files into their own folder."""
    from flows.nightly import nightly
    from tasks.demo_data import DemoConfig, generate_demo_data
    from tests.helpers import demo_config
    from tests.test_nightly_e2e import _table_fingerprints

    root = tmp_path_factory.mktemp("e2e")
    manifest = generate_demo_data(DemoConfig(out_dir=root / "demo", end_date=E2E_END))
    config = demo_config(root / "config.toml")
    first = nightly(config_path=str(config), return_state=True)
    snapshot_1 = _table_fingerprints(root / "feedback.duckdb")
    files_1 = {p.name: p.stat().st_mtime_ns for p in (root / "tracker").glob("*.md")}
    second = nightly(config_path=str(config), return_state=True)
    return {
        "root": root,
        "manifest": manifest,
        "first": first,
        "second": second,
        "snapshot_1": snapshot_1,
        "files_1": files_1,
        "config": config,
    }
