"""Pull a run's sources concurrently; the warehouse takes their commits one at a time.

Fetching is network-bound (round trips, pagination, rate-limit waits) and every connector lands
its pages in its own files, so connectors overlap well. The warehouse is one DuckDB file with
one writer: each batch's transaction (load, merge, cursor) takes `commit_lock`, so a commit
still carries exactly its batch's cursor (tasks/load.py load_pages). Each worker works on its
own cursor of the run's connection: a DuckDB connection is not to be shared between threads,
and temp tables (the loader's per-batch scratch) are per cursor.

Sources that write the same raw table (the PostHog export files and the PostHog API) are one
worker, in the configured order: the loader caches which ids a table holds between batches of
one load, and the merge counts (new/updated/unchanged) depend on which came first.

Inside a Prefect run each worker is a `pull-<source>` task run on a ThreadPoolTaskRunner with
`max_parallel_pulls` threads, so the UI shows every source's pull, its logs and its state (a
source that fails ends Failed with its masked one-line reason). Outside a run (tests calling
`load_sources.fn`) plain threads do the same work.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import duckdb
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext, TaskRunContext

from tasks.load import LoadStats

log = logging.getLogger(__name__)

# (cursor, commit lock, logger) -> the source's load statistics; raises when the source fails.
LoadFn = Callable[[duckdb.DuckDBPyConnection, AbstractContextManager[Any], Any], LoadStats]


@dataclass(frozen=True)
class Pull:
    """One source of the load step: a set of export files or an API connector."""

    source: str  # the vendor (posthog, zendesk, ...): names the pull-<source> task run
    key: str  # its name in the load results ("zendesk", or "zendesk (api)" beside its files)
    kind: str  # usage | tickets | bugs: what its failure blocks
    table: str  # the raw table it writes; pulls of one table run in order in one worker
    load: LoadFn


# (logger, pull, its stats or the exception it raised) -> its row of the load results.
Settle = Callable[[Any, Pull, LoadStats | Exception], dict]


class PullFailed(RuntimeError):
    """A source of a pull task failed; the message is the masked one-line reason only."""


class _Worker:
    """The pulls of one raw table, run in order on one cursor. Results are kept here as each
    pull ends (not only returned), so they are read even when the task run ends Failed. A plain
    class: Prefect passes it to the task as it is (it rebuilds dataclasses and dicts it finds
    in parameters only when it changes them, but it must not look inside this one)."""

    def __init__(
        self,
        pulls: list[Pull],
        con: duckdb.DuckDBPyConnection,
        commit_lock: threading.Lock,
        settle: Settle,
    ) -> None:
        self.pulls = pulls
        self.name = pulls[0].source
        self._con = con
        self._lock = commit_lock
        self._settle = settle
        self.results: dict[str, dict] = {}

    def run(self, logger: Any) -> None:
        cursor = self._con.cursor()
        try:
            for pull in self.pulls:
                outcome: LoadStats | Exception
                try:
                    outcome = pull.load(cursor, self._lock, logger)
                except Exception as exc:  # isolated: the other sources go on
                    outcome = exc
                self.results[pull.key] = self._settle(logger, pull, outcome)
        finally:
            cursor.close()

    def failures(self) -> list[str]:
        return [
            f"{key}: {row.get('reason', '')}"
            for key, row in self.results.items()
            if row.get("failed")
        ]


@task(
    name="pull",
    task_run_name="pull-{name}",
    retries=0,  # the HTTP layer retried what is transient; a rerun resumes from the cursor
    cache_policy=NO_CACHE,
    persist_result=False,
)
def pull_source(name: str, worker: _Worker) -> list[str]:
    """Fetch, land and commit one source (export files and/or its API connector). Ends Failed
    when one of them failed (its cursor stays at its last committed batch); the load step goes
    on with the others either way. Returns the result keys it filled."""
    worker.run(get_run_logger())
    failed = worker.failures()
    if failed:
        raise PullFailed("; ".join(failed)) from None
    return list(worker.results)


def pull_all(
    con: duckdb.DuckDBPyConnection,
    pulls: list[Pull],
    settle: Settle,
    *,
    max_parallel: int,
    logger: Any,
) -> dict[str, dict]:
    """Run `pulls` with at most `max_parallel` sources in flight (1: one after another, in the
    given order); returns {pull.key: result row} in the order of `pulls`, whatever order they
    finished in. `settle` turns each pull's stats or exception into its row (and logs it)."""
    commit_lock = threading.Lock()
    by_table: dict[str, list[Pull]] = {}
    for pull in pulls:
        by_table.setdefault(pull.table, []).append(pull)
    workers = [_Worker(group, con, commit_lock, settle) for group in by_table.values()]
    problems: dict[str, Exception | str] = {}
    if TaskRunContext.get() is not None or FlowRunContext.get() is not None:
        from prefect.task_runners import ThreadPoolTaskRunner

        with ThreadPoolTaskRunner(max_workers=max_parallel) as runner:
            futures = [runner.submit(pull_source, {"name": w.name, "worker": w}) for w in workers]
            for worker, future in zip(workers, futures, strict=True):
                future.wait()
                state = future.state
                if not state.is_completed():
                    problems[worker.name] = state.message or state.name or "did not finish"
    else:
        with ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="pull") as pool:
            jobs = [pool.submit(w.run, logger) for w in workers]
            for worker, job in zip(workers, jobs, strict=True):
                if (exc := job.exception()) is not None:
                    if not isinstance(exc, Exception):
                        raise exc  # an interrupt is not a source failure
                    problems[worker.name] = exc
    out: dict[str, dict] = {}
    for worker in workers:
        for pull in worker.pulls:
            if pull.key in worker.results:
                out[pull.key] = worker.results[pull.key]
            else:  # the worker itself broke before this pull ended (not a source failure)
                problem = problems.get(worker.name, "did not run")
                exc = problem if isinstance(problem, Exception) else RuntimeError(str(problem))
                out[pull.key] = settle(logger, pull, exc)
    return {pull.key: out[pull.key] for pull in pulls}
