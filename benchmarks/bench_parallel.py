"""Parallel pulls benchmark: the load step of the demo with every API connector served by the
local vendor fakes, one source at a time (max_parallel_pulls=1) and several at a time.

    python benchmarks/bench_parallel.py                        # 30 ms per request, 4 at a time
    python benchmarks/bench_parallel.py --latency-ms 50 --parallel 4 --repeat 3

The world: the drill's small demo (tasks.demo_data, 60 days, 5k events; generated once under
benchmarks/out/) served through the PostHog, Zendesk and GitHub fakes instead of export files,
plus the drill's worlds of the seven other vendors (benchmarks/drill/faults.py), and the demo's
accounts file. The fakes run in a child process (a remote API does not share the loader's
interpreter) and answer every request after `--latency-ms`, a network round trip.

The load step runs as in the nightly — the `load-sources` Prefect task in a flow, each source a
`pull-<source>` task run — on a temporary Prefect server (prefect_test_harness; its start-up is
not timed). One untimed parallel load warms up first (imports, Prefect's first task runs); then
serial and parallel loads alternate into fresh warehouses. Every warehouse must equal the first
serial one (raw rows, quarantine, cursors, load counts) or the benchmark fails. Prints the wall
time of each mode (median over --repeat) and the gain.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "benchmarks" / "out"

WINDOW_END = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
DEMO_VENDORS = ("posthog", "zendesk", "github")
# The demo's sources through the API: pages of a size that gives each a dozen requests or so.
DEMO_SETTINGS: dict[str, dict[str, Any]] = {
    "posthog": {
        "project_id": "1",
        "start_date": "2026-09-20",
        "page_size": 1000,
        "slice_hours": 168,
        "lookback_days": 0,
        "queries_per_hour": 100_000,
    },
    "zendesk": {
        "email": "agent@acme.test",
        "start_date": "2026-09-01",
        "page_size": 100,
        "requests_per_minute": 100_000,
    },
    "github": {"owner": "acme", "repo": "analytics", "per_page": 25},
}
# The drill's vendor worlds, read up to WINDOW_END: Amplitude in half-day requests.
DRILL_OVERRIDES: dict[str, dict[str, Any]] = {"amplitude": {"hours_per_request": 12}}


# ---------------------------------------------------------------------------------------------
# The fakes (child process)


def _demo_records(world: Path) -> dict[str, Any]:
    """The demo's PostHog events, Zendesk tickets (with their users) and GitHub issues."""
    events = []
    for path in sorted((world / "posthog").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                event = json.loads(line)
                datetime.fromisoformat(event["timestamp"])
            except (ValueError, KeyError, TypeError):
                continue  # the demo's planted bad lines: an API would not serve them
            if isinstance(event.get("uuid"), str):
                events.append(event)
    tickets, users = [], {}
    for path in sorted((world / "zendesk").glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        tickets += [t for t in doc["tickets"] if isinstance(t.get("id"), int)]
        users.update({u["id"]: u for u in doc.get("users", [])})
    issues = []
    for path in sorted((world / "github").glob("*.json")):
        issues += json.loads(path.read_text(encoding="utf-8"))
    return {"events": events, "tickets": tickets, "users": list(users.values()), "issues": issues}


def _install_github(srv: Any, issues: list[dict[str, Any]]) -> Any:
    from tests.fakes.github import FakeGitHub

    fake = FakeGitHub()
    fake.server = srv
    srv.route("*", r"/.*", fake._handle)
    for issue in sorted(issues, key=lambda i: i["number"]):
        fake.add_issue(
            issue["title"],
            issue.get("body"),
            labels=[label["name"] for label in issue.get("labels", [])],
            state=issue.get("state", "open"),
            state_reason=issue.get("state_reason"),
            pr="pull_request" in issue,
            updated_at=datetime.fromisoformat(issue["updated_at"].replace("Z", "+00:00")),
        )
    return fake


def serve(world: Path, latency_s: float) -> None:
    """Start every vendor's fake, print {vendor: url} as one JSON line, serve until stdin
    closes, then print {vendor: requests answered}."""
    from contextlib import ExitStack

    from benchmarks.drill import faults
    from tests.fakes.posthog import posthog_api
    from tests.fakes.server import FakeServer
    from tests.fakes.zendesk import zendesk_api

    demo = _demo_records(world)
    with ExitStack() as stack:
        servers = {name: stack.enter_context(FakeServer()) for name in faults.VENDORS}
        for name, srv in servers.items():
            if name == "posthog":
                posthog_api(srv, demo["events"])
            elif name == "zendesk":
                zendesk_api(srv, demo["tickets"], page_size=100, users=demo["users"])
            elif name == "github":
                _install_github(srv, demo["issues"])
            else:
                faults.VENDORS[name].install(srv)
            srv.latency_s = latency_s
        print(json.dumps({name: srv.url for name, srv in servers.items()}), flush=True)
        sys.stdin.read()
        counts = {name: len(srv.requests) for name, srv in servers.items()}
        problems = {
            name: len(srv.unexpected) + len(srv.errors)
            for name, srv in servers.items()
            if srv.unexpected or srv.errors
        }
    print(json.dumps({"requests": counts, "problems": problems}), flush=True)


# ---------------------------------------------------------------------------------------------
# The load step (this process)


def _settings(run_dir: Path, world: Path, urls: dict[str, str], parallel: int) -> Any:
    from benchmarks.drill import faults
    from tasks.settings import FileSources, Settings

    connectors = {}
    for name, vendor in faults.VENDORS.items():
        base = DEMO_SETTINGS[name] if name in DEMO_VENDORS else vendor.settings
        connectors[name] = {**base, **DRILL_OVERRIDES.get(name, {}), "base_url": urls[name]}
    return Settings(
        duckdb_path=run_dir / "feedback.duckdb",
        max_parallel_pulls=parallel,
        sources=FileSources(
            posthog_events="",
            zendesk_tickets="",
            github_issues="",
            accounts=str(world / "accounts" / "*.csv"),
        ),
        connectors=connectors,
    )


def _snapshot(db: Path, root: Path, loads: dict[str, dict]) -> dict[str, Any]:
    """What must not depend on the number of parallel pulls: every raw row and quarantine row
    (bookkeeping columns aside), the cursors, the file bookkeeping and the load counts."""
    import duckdb

    from benchmarks.drill.common import table_hashes

    with duckdb.connect(str(db), read_only=True) as con:
        cursors = con.sql("select source, stream, cursor_value from ops.sync_state order by all")
        files = con.sql("select source, n_records, n_quarantined, status from ops.loaded_files")
        return {
            "tables": table_hashes(db, root),
            "cursors": cursors.fetchall(),
            "files": sorted(files.fetchall()),
            "loads": {
                k: {f: v for f, v in row.items() if f != "seconds"} for k, row in loads.items()
            },
        }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--latency-ms", type=float, default=30.0, help="per request (default 30)")
    p.add_argument("--parallel", type=int, default=4, help="max_parallel_pulls (default 4)")
    p.add_argument("--repeat", type=int, default=1, help="timed loads per mode (median shown)")
    p.add_argument("--keep", action="store_true", help="keep the warehouses (benchmarks/out/)")
    p.add_argument("--serve", metavar="WORLD", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(Path(args.serve), args.latency_ms / 1000)
        return 0

    import os

    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    import flows  # noqa: F401  (offline/telemetry defaults)
    from benchmarks.drill import faults
    from benchmarks.drill.common import world_template

    OUT.mkdir(parents=True, exist_ok=True)
    world = world_template(OUT)
    for vendor in faults.VENDORS.values():
        os.environ.update(vendor.env)
    work = OUT / "parallel"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    from prefect import flow
    from prefect.testing.utilities import prefect_test_harness

    from tasks.steps import ALL_SOURCES, load_sources

    @flow(name="bench-load-step")
    def load_step(settings: Any, run_id: str) -> dict[str, dict]:
        return load_sources(settings, list(ALL_SOURCES), run_id, WINDOW_END)

    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(world), "--latency-ms", str(args.latency_ms)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    urls = json.loads(child.stdout.readline())
    walls: dict[int, list[float]] = {1: [], args.parallel: []}
    reference: dict[str, Any] | None = None
    mismatches: list[str] = []
    source_seconds: dict[int, dict[str, float]] = {}
    try:
        print("starting a temporary Prefect server (not timed) …", flush=True)
        with prefect_test_harness(server_startup_timeout=120):
            plan = [(args.parallel, False)] + [
                (n, True) for _ in range(args.repeat) for n in (1, args.parallel)
            ]
            for i, (parallel, timed) in enumerate(plan):
                run_dir = work / f"{i:02d}-p{parallel}"
                settings = _settings(run_dir, world, urls, parallel)
                t0 = time.perf_counter()
                loads = load_step(settings, "bench")  # one run id: it is in landing file names
                wall = time.perf_counter() - t0
                failed = [k for k, row in loads.items() if row.get("failed")]
                if failed:
                    raise SystemExit(f"load failed for {failed}: {loads[failed[0]]['reason']}")
                label = f"{parallel} at a time" + ("" if timed else " (warm-up, not timed)")
                print(f"  load {i}: {label}: {wall:.2f}s", flush=True)
                snap = _snapshot(settings.duckdb_path, run_dir, loads)
                if reference is None:
                    reference = snap
                for part in ("tables", "cursors", "files", "loads"):
                    if snap[part] != reference[part]:
                        mismatches.append(f"load {i} ({parallel} at a time): {part} differ")
                if timed:
                    walls[parallel].append(wall)
                    source_seconds[parallel] = {k: row["seconds"] for k, row in loads.items()}
                if not args.keep:
                    shutil.rmtree(run_dir, ignore_errors=True)
    finally:
        child.stdin.close()
        tail = child.stdout.read().strip().splitlines()
        child.wait(timeout=30)
    served = json.loads(tail[-1]) if tail else {"requests": {}, "problems": {}}
    report(args, walls, source_seconds, served, reference or {}, world)
    if mismatches or served["problems"]:
        print("FAIL: " + "; ".join(mismatches or [f"fake problems {served['problems']}"]))
        return 1
    return 0


def report(
    args: argparse.Namespace,
    walls: dict[int, list[float]],
    source_seconds: dict[int, dict[str, float]],
    served: dict[str, Any],
    reference: dict[str, Any],
    world: Path,
) -> None:
    n_runs = 1 + 2 * args.repeat
    requests = {k: v // n_runs for k, v in served["requests"].items()}
    rows = sum(n for t, (n, _) in reference.get("tables", {}).items() if t.startswith("raw."))
    serial = statistics.median(walls[1])
    parallel = statistics.median(walls[args.parallel])
    print()
    print(
        f"parallel pulls: {len(requests)} API connectors on local fakes + the accounts file; "
        f"demo world {world.name}; {args.latency_ms:g} ms per request"
    )
    print(
        f"per load: {sum(requests.values())} requests ("
        + ", ".join(f"{k} {v}" for k, v in sorted(requests.items()))
        + f"), {rows:,} raw rows"
    )
    print()
    print("| mode | wall (s) | sum of per-source load times (s) | gain |")
    print("|---|---|---|---|")
    print(f"| max_parallel_pulls=1 | {serial:.2f} | {sum(source_seconds[1].values()):.2f} | - |")
    print(
        f"| max_parallel_pulls={args.parallel} | {parallel:.2f} | "
        f"{sum(source_seconds[args.parallel].values()):.2f} | {serial / parallel:.2f}x faster, "
        f"-{100 * (1 - parallel / serial):.0f}% wall |"
    )
    print()
    print(
        f"median of {args.repeat} timed load(s) per mode; each warehouse compared with the first "
        "(raw rows, quarantine, cursors, load counts)"
    )
    slowest = max(source_seconds[args.parallel].items(), key=lambda kv: kv[1])
    print(f"slowest source in parallel: {slowest[0]} {slowest[1]:.2f}s")


if __name__ == "__main__":
    sys.exit(main())
