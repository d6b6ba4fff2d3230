"""Pull a run's sources concurrently; the warehouse takes their commits one at a time.

Fetching is network-bound (round trips, pagination, rate-limit waits) and every connector lands
its pages in its own files, so connectors overlap well. The warehouse is one DuckDB file with
one writer: each batch's transaction (load, merge, cursor) takes `commit_lock`, so a commit
still carries exactly its batch's cursor (tasks/load/pages.py load_pages). Each worker works on its
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

import hashlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
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


# -- extraction on workers ---------------------------------------------------------------------
#
# With `extract_on_workers` the nightly starts one `extract` flow run per connector on the work
# pool (flows/extract.py). Each fetches its connector's new pages from the cursor the nightly
# handed it and lands them under `<landing_dir>/extract/<source>-<stream>/<key>/`, where `key`
# names the request (cursor + window end): never the warehouse. A folder is complete only once
# its manifest is written, and it is moved into place whole (written as `<key>.partial-*`, then
# renamed), so a crashed extract leaves no folder the commit would read; a re-run for the same
# key finds the complete folder and skips. The nightly then commits the landed pages serially
# with the same code as an in-process pull (tasks/load/pages.py load_pages: screening, batches, each
# batch with its cursor), and removes the folder once committed.

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


class ExtractFailed(RuntimeError):
    """The connector's extract run did not land a complete batch (the message is one line)."""


def extract_root(landing_dir: Path) -> Path:
    return Path(landing_dir) / "extract"


def extract_key(state: dict[str, Any] | None, window_end: datetime) -> str:
    """What an extract fetches is fixed by its start cursor and window end: same key, same pages."""
    text = json.dumps(
        {"state": state, "window_end": window_end.astimezone(UTC).isoformat()},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def extract_dir(
    landing_dir: Path, source: str, stream: str, state: dict[str, Any] | None, window_end: datetime
) -> Path:
    return extract_root(landing_dir) / f"{source}-{stream}" / extract_key(state, window_end)


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of a complete landed batch, or None when there is none (never landed, or a
    partial folder). Raises ExtractFailed when a page is missing or differs from the manifest."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if manifest.get("version") != MANIFEST_VERSION or not manifest.get("complete"):
        return None
    for page in manifest["pages"]:
        path = folder / page["file"]
        if not path.is_file() or path.stat().st_size != page["bytes"]:
            raise ExtractFailed(f"{folder.name}: landed page {page['file']} is missing or cut")
    return manifest


def landed_pages(folder: Path, manifest: dict[str, Any]) -> Iterator[Any]:
    """The manifest's pages in order, as the connector yielded them (body, state after it);
    a page whose bytes differ from the manifest's sha256 stops the commit (ExtractFailed)."""
    from tasks.contracts import LandedPage

    for page in manifest["pages"]:
        body = (folder / page["file"]).read_bytes()
        if hashlib.sha256(body).hexdigest() != page["sha256"]:
            raise ExtractFailed(f"{folder.name}: landed page {page['file']} changed after landing")
        yield LandedPage(body=body, state=page["state"], n_records=page["n_records"])


def land_connector(
    connector: Any,
    state: dict[str, Any] | None,
    window_end: datetime,
    landing_dir: Path,
    *,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Fetch `connector`'s pages from `state` up to `window_end` into its extract folder and
    return the manifest (`skipped` when a complete folder for the same key was already there).
    Touches no warehouse. A fetch that fails leaves nothing behind (the pages may hold text not
    yet redacted) and raises."""
    folder = extract_dir(landing_dir, connector.source, connector.stream, state, window_end)
    existing = read_manifest(folder)
    if existing is not None:
        if progress:
            progress(f"{connector.source}: already landed ({folder}); skipped")
        return existing | {"skipped": True, "folder": str(folder)}
    folder.parent.mkdir(parents=True, exist_ok=True)
    for stale in folder.parent.glob(f"{folder.name}.partial-*"):  # a killed extract's pages
        shutil.rmtree(stale, ignore_errors=True)
    if folder.exists():  # a folder without a valid manifest (cannot be ours): fetched again
        shutil.rmtree(folder, ignore_errors=True)
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    partial.mkdir(mode=0o700)
    started = time.perf_counter()
    pages: list[dict[str, Any]] = []
    suffix = "jsonl" if connector.spec.layout == "lines" else "json"
    try:
        for i, page in enumerate(connector.pages(state, window_end)):
            name = f"page-{i:06d}.{suffix}"
            with open(partial / name, "wb") as fh:
                fh.write(page.body)
                fh.flush()
                os.fsync(fh.fileno())
            pages.append(
                {
                    "file": name,
                    "bytes": len(page.body),
                    "sha256": hashlib.sha256(page.body).hexdigest(),
                    "n_records": page.n_records,
                    "state": page.state,
                }
            )
            if progress and (i + 1) % 50 == 0:
                progress(f"{connector.source}: landed {i + 1} pages")
        manifest = {
            "version": MANIFEST_VERSION,
            "complete": True,
            "source": connector.source,
            "stream": connector.stream,
            "kind": connector.kind,
            "key": folder.name,
            "state_in": state,
            "window_end": window_end.astimezone(UTC).isoformat(),
            "n_pages": len(pages),
            "n_records": sum(p["n_records"] for p in pages),
            "bytes": sum(p["bytes"] for p in pages),
            "seconds": round(time.perf_counter() - started, 3),
            "pages": pages,
        }
        tmp = partial / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, default=str), encoding="utf-8")
        os.replace(tmp, partial / MANIFEST)
        try:
            os.rename(partial, folder)  # the folder appears whole, manifest included
        except OSError:  # another extract of the same key finished first: keep its folder
            shutil.rmtree(partial, ignore_errors=True)
            if (done := read_manifest(folder)) is None:
                raise
            return done | {"skipped": True, "folder": str(folder)}
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if progress:
        progress(
            f"{connector.source}: landed {manifest['n_pages']} pages, "
            f"{manifest['n_records']} records in {folder}"
        )
    return manifest | {"skipped": False, "folder": str(folder)}


def clear_extracts(landing_dir: Path, source: str, stream: str, keep: str | None = None) -> int:
    """Remove a connector's landed folders except `keep` (a key): batches of earlier runs that
    were never committed (they are fetched again from the committed cursor) and partial ones.
    Returns how many were removed."""
    parent = extract_root(landing_dir) / f"{source}-{stream}"
    removed = 0
    for path in parent.glob("*") if parent.is_dir() else []:
        if keep is not None and path.name == keep:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed += 1
    return removed
