"""Child process for tests/test_crash.py: load one connector's pages into a DuckDB file.

`python -m tests.crash_helpers.loader '<json config>'` runs a nightly load step the way the flow
does (committed state -> connector pages -> `load.load_pages` with one commit per page). With
`hang_before_commit: N` the N-th batch is staged, merged and its cursor written, then the process
announces it (`signal_file`) and blocks before COMMIT, so the parent can SIGKILL it there. With
`commits_file` it writes the number of batches committed so far after each commit: pages are
fetched ahead of the one being landed (load.FETCH_AHEAD), so the parent that stalls a request
waits for the commits before it, too, before it kills.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from tasks import load
from tasks.clients.http import RequestBudget, RetryPolicy
from tasks.redact import register_duckdb

SALT = "crash-test-salt"


def make_connector(source: str, base_url: str, settings: dict[str, Any]) -> Any:
    """A connector against the fake API; budgets roomy and no retries (nothing may sleep)."""
    budget = RequestBudget(100_000, 60.0)
    retry = RetryPolicy(max_attempts=1)
    if source == "zendesk":
        from tasks.clients.zendesk import ZendeskSettings, ZendeskTickets

        return ZendeskTickets(
            ZendeskSettings(base_url=base_url, **settings), budget=budget, retry=retry
        )
    if source == "posthog":
        from tasks.clients.posthog import PostHogConnector, PostHogSettings

        return PostHogConnector(
            PostHogSettings(base_url=base_url, **settings), budget=budget, retry=retry
        )
    raise ValueError(f"no crash harness for {source!r}")


def run_load(
    db_path: str | Path,
    source: str,
    base_url: str,
    settings: dict[str, Any],
    window_end: str,
    run_id: str,
    landing_dir: str | Path,
) -> load.LoadStats:
    """One load step: read the committed state, load every page, one commit per page."""
    connector = make_connector(source, base_url, settings)
    con = duckdb.connect(str(db_path))
    try:
        register_duckdb(con, SALT)
        state = load.read_state(con, connector.source, connector.stream)
        pages = connector.pages(state, datetime.fromisoformat(window_end))
        return load.load_pages(con, connector.spec, pages, run_id, Path(landing_dir), batch_bytes=1)
    finally:
        con.close()


def _hang_before_commit(n: int, signal_file: Path) -> None:
    """Patch the loader so the n-th batch stops inside its transaction, just before COMMIT."""
    real = load.cursor._advance_cursor
    calls = 0

    def advance_then_hang(con: Any, spec: Any, run_id: str, state: Any) -> None:
        nonlocal calls
        real(con, spec, run_id, state)
        calls += 1
        if calls == n:
            # Atomic, so the parent never reads a half-written file.
            tmp = signal_file.with_name(signal_file.name + ".tmp")
            tmp.write_text(json.dumps(state), encoding="utf-8")
            tmp.replace(signal_file)
            while True:  # the parent SIGKILLs us here
                time.sleep(60)

    load.cursor._advance_cursor = advance_then_hang


def _announce_commits(commits_file: Path) -> None:
    """Patch the loader so every committed batch bumps the count in `commits_file`."""
    real = load.batch._load_batch
    calls = 0

    def load_then_announce(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        real(*args, **kwargs)
        calls += 1
        tmp = commits_file.with_name(commits_file.name + ".tmp")
        tmp.write_text(str(calls), encoding="utf-8")
        tmp.replace(commits_file)

    load.batch._load_batch = load_then_announce


def main(argv: list[str]) -> int:
    cfg = json.loads(argv[0])
    if cfg.get("commits_file"):
        _announce_commits(Path(cfg["commits_file"]))
    if cfg.get("hang_before_commit"):
        _hang_before_commit(int(cfg["hang_before_commit"]), Path(cfg["signal_file"]))
    stats = run_load(
        cfg["db"],
        cfg["source"],
        cfg["base_url"],
        cfg["settings"],
        cfg["window_end"],
        cfg["run_id"],
        cfg["landing_dir"],
    )
    Path(cfg["result_file"]).write_text(json.dumps(stats.as_dict()), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
