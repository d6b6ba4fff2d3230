"""Parallel pulls (tasks/extract.py): the load step against local vendor fakes, as real Prefect
task runs on a real warehouse.

Four sources — PostHog export files plus its API, Zendesk, Intercom, Freshdesk — every request
answered after a fixed latency. One module fixture loads them twice into fresh warehouses, one
source at a time (max_parallel_pulls=1) and four at a time: the warehouses must be identical
(rows, quarantine, cursors) and the parallel load clearly faster, its fetches overlapping. A
load before them has Zendesk refuse the credential: only Zendesk fails, the others commit.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
from prefect import flow

from benchmarks.drill.common import table_hashes
from tasks.settings import FileSources, Settings
from tasks.steps import SourceKind, load_sources
from tests.conftest import posthog_event, write_jsonl
from tests.fakes import freshdesk as fd
from tests.fakes import zendesk as zd
from tests.fakes.intercom import conversation, intercom_api
from tests.fakes.posthog import posthog_api
from tests.fakes.server import FakeServer

WINDOW_END = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
T0 = int(datetime(2026, 11, 20, 10, 0, tzinfo=UTC).timestamp())
LATENCY_S = 0.15
TOKENS = {
    "POSTHOG_PERSONAL_API_KEY": "phx_test_key",
    "ZENDESK_API_TOKEN": "zd-test-token-123",
    "INTERCOM_ACCESS_TOKEN": "ic-test-token-123",
    "FRESHDESK_API_KEY": "fd-test-key-123",
}
VENDORS = ("posthog", "zendesk", "intercom", "freshdesk")


@flow(name="load-step")
def load_step(settings: Settings, run_id: str) -> dict[str, dict]:
    return load_sources(settings, [SourceKind.usage, SourceKind.tickets], run_id, WINDOW_END)


def _install(servers: dict[str, FakeServer]) -> dict[str, object]:
    """Each vendor's fake with a dozen or so records in pages of 3 (about five requests each)."""
    events = [
        {
            **posthog_event(f"0190a000-0000-7000-8000-{i:012d}", user=f"user-{i % 5}"),
            "timestamp": datetime.fromtimestamp(T0 + 5400 * i, UTC).isoformat(),
        }
        for i in range(14)
    ]
    tickets = [zd.ticket(100 + i, zd.iso(T0 + 60 * i), subject=f"Export {i}") for i in range(14)]
    convs = [conversation(f"ic-{i}", T0 + 60 * i, subject="Export broken") for i in range(14)]
    fd_tickets = [fd.ticket(500 + i, zd.iso(T0 + 60 * i)) for i in range(14)]
    return {
        "posthog": posthog_api(servers["posthog"], events),
        "zendesk": zd.zendesk_api(servers["zendesk"], tickets, page_size=3),
        "intercom": intercom_api(servers["intercom"], convs, page_size=3),
        "freshdesk": fd.freshdesk_api(servers["freshdesk"], fd_tickets, page_size=3),
    }


def _settings(root: Path, servers: dict[str, FakeServer], parallel: int) -> Settings:
    # Export files beside the PostHog API: both write raw.posthog__events (one worker, in order).
    files = write_jsonl(
        root / "exports" / "events.jsonl",
        [posthog_event(f"file-{i}", ts=f"2026-11-18T0{i}:00:00+00:00") for i in range(3)],
    )
    urls = {name: srv.url for name, srv in servers.items()}
    return Settings(
        duckdb_path=root / "w.duckdb",
        max_parallel_pulls=parallel,
        sources=FileSources(
            posthog_events=str(files), zendesk_tickets="", github_issues="", accounts=""
        ),
        connectors={
            "posthog": {
                "base_url": urls["posthog"],
                "project_id": "1",
                "start_date": "2026-11-19",
                "page_size": 3,
                "lookback_days": 0,
                "slice_hours": 48,
                "queries_per_hour": 100_000,
            },
            "zendesk": {
                "base_url": urls["zendesk"],
                "email": "agent@acme.test",
                "start_date": "2026-11-01",
                "page_size": 3,
                "requests_per_minute": 100_000,
            },
            "intercom": {"base_url": urls["intercom"], "start_date": "2026-11-01", "page_size": 3},
            "freshdesk": {
                "base_url": urls["freshdesk"],
                "start_date": "2026-11-01",
                "page_size": 3,
            },
        },
    )


def _run(root: Path, servers: dict[str, FakeServer], parallel: int) -> dict:
    for srv in servers.values():
        srv.spans.clear()
    settings = _settings(root, servers, parallel)
    t0 = time.perf_counter()
    state = load_step(settings, "r1", return_state=True)
    wall = time.perf_counter() - t0
    spans = {name: list(srv.spans) for name, srv in servers.items()}
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        cursors = con.sql(
            "select source, stream, cursor_value from ops.sync_state order by all"
        ).fetchall()
        files = con.sql(
            "select source, n_records, n_quarantined, status from ops.loaded_files order by all"
        ).fetchall()
    return {
        "loads": state.result(),
        "flow_run_id": state.state_details.flow_run_id,
        "wall": wall,
        "spans": spans,
        "tables": table_hashes(settings.duckdb_path, root),
        "cursors": cursors,
        "files": files,
    }


def _pull_states(flow_run_id: uuid.UUID) -> dict[str, str]:
    """{task run name: state name} of the pull-* task runs (their final states are recorded a
    moment after the flow returns)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + 20
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
        states = {r.name: r.state.name for r in runs if r.name.startswith("pull-") and r.state}
        final = all(r.state and r.state.is_final() for r in runs if r.name.startswith("pull-"))
        if (final and states) or time.monotonic() > deadline:
            return states
        time.sleep(0.2)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, prefect_api):
    root = tmp_path_factory.mktemp("parallel")
    out: dict = {}
    with pytest.MonkeyPatch.context() as mp:
        for name, value in TOKENS.items():
            mp.setenv(name, value)
        servers = {name: FakeServer().start() for name in VENDORS}
        try:
            fakes = _install(servers)
            for srv in servers.values():
                srv.latency_s = LATENCY_S
            # The first load warms up (imports, Prefect's first task runs): it is the one that
            # is not timed.
            token = fakes["zendesk"].token  # type: ignore[attr-defined]
            fakes["zendesk"].token = "rotated-elsewhere-456"  # type: ignore[attr-defined]
            out["refused"] = _run(root / "refused", servers, 4)
            fakes["zendesk"].token = token  # type: ignore[attr-defined]
            out["parallel"] = _run(root / "parallel", servers, 4)
            out["serial"] = _run(root / "serial", servers, 1)
            out["states"] = {
                name: _pull_states(out[name]["flow_run_id"]) for name in ("parallel", "refused")
            }
            for srv in servers.values():
                srv.assert_clean()
        finally:
            for srv in servers.values():
                srv.stop()
    return out


def _without_timing(loads: dict[str, dict]) -> dict[str, dict]:
    return {k: {f: v for f, v in row.items() if f != "seconds"} for k, row in loads.items()}


def test_parallel_pulls_land_the_same_rows_and_cursors_as_serial_ones(runs):
    serial, parallel = runs["serial"], runs["parallel"]
    order = ["posthog", "posthog (api)", "zendesk", "intercom", "freshdesk"]  # as configured
    assert list(serial["loads"]) == list(parallel["loads"]) == order
    assert _without_timing(parallel["loads"]) == _without_timing(serial["loads"])
    assert parallel["loads"]["zendesk"]["n_inserted"] == 14
    assert parallel["loads"]["posthog"]["n_inserted"] == 3
    assert parallel["loads"]["posthog (api)"]["n_inserted"] == 14
    assert parallel["tables"] == serial["tables"]
    assert parallel["tables"]["raw.intercom__conversations"][0] == 14
    assert parallel["cursors"] == serial["cursors"]
    assert {source for source, _, _ in parallel["cursors"]} == {
        "posthog",
        "zendesk",
        "intercom",
        "freshdesk",
    }
    assert parallel["files"] == serial["files"]
    # Every source is its own task run (the export files and the API of PostHog are one).
    assert runs["states"]["parallel"] == {f"pull-{v}": "Completed" for v in VENDORS}


def test_sources_are_fetched_concurrently_and_the_load_is_faster(runs):
    serial, parallel = runs["serial"], runs["parallel"]
    # Serial: one request at a time over all fakes. Parallel: the vendors' request streams
    # overlap — each one's first request comes before every other one's last.
    starts = {v: min(s for s, _ in parallel["spans"][v]) for v in VENDORS}
    ends = {v: max(e for _, e in parallel["spans"][v]) for v in VENDORS}
    assert all(starts[a] < ends[b] for a in VENDORS for b in VENDORS if a != b), (starts, ends)
    n_requests = sum(len(s) for s in serial["spans"].values())
    assert n_requests >= 16
    assert serial["wall"] > n_requests * LATENCY_S
    # Four streams in flight: well under the serial time (generous: 2 shared cores).
    assert parallel["wall"] < 0.75 * serial["wall"], (parallel["wall"], serial["wall"])


def test_a_connector_refusing_its_credential_fails_alone_and_the_others_commit(runs):
    refused, serial = runs["refused"], runs["serial"]
    loads = refused["loads"]
    failed = {k: row for k, row in loads.items() if row.get("failed")}
    assert set(failed) == {"zendesk"}
    row = failed["zendesk"]
    assert row["kind"] == "tickets"
    assert row["reason"].startswith("AuthError:") and "\n" not in row["reason"]
    assert TOKENS["ZENDESK_API_TOKEN"] not in json.dumps(loads)
    assert row["errors"] == [row["reason"]] and row["n_landed"] == 0
    # Nothing of Zendesk committed, no cursor; every other source loaded as in the clean run.
    assert refused["tables"]["raw.zendesk__tickets"][0] == 0
    assert [c for c in refused["cursors"] if c[0] != "zendesk"] == [
        c for c in serial["cursors"] if c[0] != "zendesk"
    ]
    assert "zendesk" not in {c[0] for c in refused["cursors"]}
    others = {k: v for k, v in _without_timing(loads).items() if k != "zendesk"}
    assert others == {k: v for k, v in _without_timing(serial["loads"]).items() if k != "zendesk"}
    # The UI shows Zendesk's pull as Failed, the others Completed.
    states = runs["states"]["refused"]
    assert states == {f"pull-{v}": "Failed" if v == "zendesk" else "Completed" for v in VENDORS}


@pytest.mark.parametrize("value", ["0", "17", '"four"'])
def test_max_parallel_pulls_out_of_range_is_a_settings_error(tmp_path, value):
    from tasks.settings import ConfigError, load_settings

    cfg = tmp_path / "c.toml"
    cfg.write_text(f"max_parallel_pulls = {value}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="max_parallel_pulls"):
        load_settings(cfg, environ={})
    cfg.write_text("max_parallel_pulls = 1\n", encoding="utf-8")
    assert load_settings(cfg, environ={}).max_parallel_pulls == 1
