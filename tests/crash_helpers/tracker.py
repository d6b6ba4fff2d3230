"""Child process for tests/test_tracker_idempotency.py: plan and apply write-back to GitHub.

`python -m tests.crash_helpers.tracker '<json config>'` opens the warehouse file, plans the given
suggestions against the (fake) GitHub repository and applies the plan — the parent SIGKILLs it
while the tracker call is in flight.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import duckdb

from tasks import writeback
from tasks.clients.github import GitHubSettings, make_client
from tasks.clients.http import RequestBudget, RetryPolicy
from tasks.trackers.github import GitHubTracker, WritePacer


def github_tracker(base_url: str, token: str, owner: str, repo: str) -> GitHubTracker:
    """No real waiting: writes unpaced (the kill comes long before a second write), no retries."""
    settings = GitHubSettings(base_url=base_url, owner=owner, repo=repo)
    client = make_client(
        settings, token=token, budget=RequestBudget(5000, 3600), retry=RetryPolicy(max_attempts=1)
    )
    return GitHubTracker(settings, client=client, pacer=WritePacer(min_interval_s=0.0))


def main(argv: list[str]) -> int:
    cfg: dict[str, Any] = json.loads(argv[0])
    tracker = github_tracker(cfg["base_url"], cfg["token"], cfg["owner"], cfg["repo"])
    con = duckdb.connect(cfg["db"])
    try:
        plan = writeback.plan_writeback(con, tracker, cfg["suggestions"], cfg.get("max_new", 5))
        writeback.apply_plan(con, tracker, plan, cfg["run_id"])
    finally:
        con.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
