"""load_pages: a connector's pages (tasks.clients.base.LandedPage) landed and loaded in
batches, each committed with its last page's cursor state; the next pages are fetched ahead in
a thread of their own (_FetchAhead) while a batch lands."""

from __future__ import annotations

import contextvars
import logging
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import duckdb

from tasks import screening
from tasks.contracts import SourceSpec
from tasks.load import batch, direct, purge
from tasks.load.files import BATCH_BYTES
from tasks.load.report import LoadStats

# One logger for the whole loader (tasks.load), whichever of its modules logs.
log = logging.getLogger("tasks.load")


# Pages fetched ahead of the one being landed (load_pages): the next requests and their JSON
# checks run while DuckDB lands and commits the current batch. At most FETCH_AHEAD pages and
# FETCH_AHEAD_BYTES of bodies wait in memory (always at least one page). 0 = fetch only when the
# loader asks.
FETCH_AHEAD = 8
FETCH_AHEAD_BYTES = 64 * 1024 * 1024


class _FetchAhead:
    """Iterates `pages` in a thread of its own, up to `depth` pages (and about `max_bytes` of
    page bodies) ahead of the consumer.

    The order is kept and a fetch error is raised at the point of the iteration where it
    happened: the pages before it are handed over first. The cursor is unaffected: a page
    fetched ahead is only ever stored with the batch that lands it, so a crash (or an early
    stop) loses at most pages that were never committed, and the next run fetches them again
    from the committed cursor. `close()` stops the thread after its current fetch and waits
    for it, so no request outlives the load. The thread runs in a copy of the caller's
    context (Prefect's run context: connector logs still reach the run)."""

    _END = object()

    def __init__(self, pages: Iterable[Any], depth: int, max_bytes: int | None = None) -> None:
        self._pages = pages
        self._depth = max(1, depth)
        self._max_bytes = max_bytes
        self._items: deque[tuple[Any, BaseException | None, int]] = deque()
        self._bytes = 0
        self._cond = threading.Condition()
        self._stop = threading.Event()
        ctx = contextvars.copy_context()
        self._thread = threading.Thread(
            target=ctx.run, args=(self._produce,), name="fetch-ahead", daemon=True
        )
        self._thread.start()

    def _room(self) -> bool:
        """Wait until another page may be fetched (False: stopped)."""
        with self._cond:
            while not self._stop.is_set():
                full = len(self._items) >= self._depth or (
                    self._max_bytes is not None and self._bytes >= self._max_bytes
                )
                if not full:
                    return True
                self._cond.wait(0.1)
        return False

    def _put(self, item: Any, error: BaseException | None = None) -> None:
        size = len(getattr(item, "body", b"") or b"")
        with self._cond:
            self._items.append((item, error, size))
            self._bytes += size
            self._cond.notify_all()

    def _produce(self) -> None:
        it = iter(self._pages)
        try:
            while self._room():
                try:
                    page = next(it)
                except StopIteration:
                    break
                except BaseException as exc:  # handed to the consumer, raised there
                    self._put(None, exc)
                    return
                self._put(page)
            self._put(self._END)
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> Iterator[Any]:
        while True:
            with self._cond:
                while not self._items:
                    self._cond.wait()
                item, error, size = self._items.popleft()
                self._bytes -= size
                self._cond.notify_all()
            if error is not None:
                raise error
            if item is self._END:
                return
            yield item

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join()


def load_pages(
    con: duckdb.DuckDBPyConnection,
    spec: SourceSpec,
    pages: Iterable[Any],
    run_id: str,
    landing_dir: Path,
    *,
    batch_bytes: int = BATCH_BYTES,
    progress: Callable[[str], None] | None = None,
    commit_lock: AbstractContextManager[Any] | None = None,
    fetch_ahead: int | None = None,
) -> LoadStats:
    """Load a connector's pages (tasks.clients.base.LandedPage) into `spec.raw_table`.

    Pages are written to `landing_dir` and loaded in batches of about `batch_bytes`; each batch
    commits together with the state of its last page, so a crash (or a failing page) leaves the
    cursor at the last committed batch and a rerun re-fetches from there — the merge on the
    stable id absorbs anything fetched twice. Landing files are removed once committed.

    Each page is screened as it arrives (screening.screen_files): a page that is not the vendor's
    documented shape (an error body, HTML, invalid JSON, the record list missing) is quarantined
    without its text and the load stops before it — the pages before it commit, the cursor stays
    before it, and the next run fetches it again.

    `commit_lock`: when connectors are pulled in parallel (tasks/extract.py), fetching, landing
    and screening go on unlocked and only each batch's transaction holds the lock, so the
    warehouse has one writer at a time and a commit still carries exactly its batch's cursor.
    At most one batch of landed pages (on disk, about `batch_bytes`) waits for it.

    `fetch_ahead` (default FETCH_AHEAD): how many pages a thread fetches ahead of the page being
    landed (_FetchAhead), so requests overlap the batch's transaction; 0 fetches a page only
    after the one before it is handled. Either way a commit carries its own pages' cursor only.
    """
    started = time.perf_counter()
    stats = LoadStats(source=spec.source)
    commit = commit_lock if commit_lock is not None else nullcontext()
    landing_dir.mkdir(parents=True, exist_ok=True)
    # Pages a killed run fetched but never committed: they are fetched again from the committed
    # cursor, and they may hold unredacted text, so they must not linger.
    for stale in landing_dir.glob(f"{spec.source}-{spec.stream}-*"):
        stale.unlink(missing_ok=True)
    suffix = "jsonl" if spec.layout == "lines" else "json"
    pending: list[tuple[Path, int, int]] = []
    size = 0
    last_state: dict[str, Any] | None = None

    work = Path(tempfile.mkdtemp(prefix="feedback-pages-"))  # gunzipped/cleaned copies
    screened = screening.Screen()

    def flush() -> None:
        nonlocal pending, size, screened
        if not pending:
            return
        with commit:
            batch._load_batch(con, spec, pending, run_id, stats, state=last_state, screen=screened)
        stats.files_loaded += len(pending)
        if progress:
            progress(f"{spec.source}: committed {stats.records_read:,} records so far")
        for p, _, _ in pending:
            p.unlink(missing_ok=True)
        for copy in screened.aliases:
            Path(copy).unlink(missing_ok=True)
        pending, size, screened = [], 0, screening.Screen()

    with commit:
        purge.finish_purges(con)
    depth = FETCH_AHEAD if fetch_ahead is None else fetch_ahead
    ahead = _FetchAhead(pages, depth, FETCH_AHEAD_BYTES) if depth > 0 else None
    direct._forget_seen_keys(con)
    try:
        for i, page in enumerate(ahead if ahead is not None else pages):
            path = landing_dir / f"{spec.source}-{spec.stream}-{run_id}-{i:06d}.{suffix}"
            path.write_bytes(page.body)
            stats.files_seen += 1
            screen = screening.screen_files(
                con, spec, [path], work, getattr(page, "shape_checked", False)
            )
            if screen.rejected_files:
                flush()  # the pages before it, with their cursor
                try:
                    with commit:
                        batch._load_batch(
                            con,
                            spec,
                            [(path, len(page.body), 0)],
                            run_id,
                            stats,
                            state=None,
                            screen=screen,
                            keep_cursor=True,
                        )
                finally:
                    path.unlink(missing_ok=True)
                stats.warnings.append(
                    f"{spec.source}: stopped before page {i + 1}; the cursor stays before it "
                    "and the next run fetches it again"
                )
                break
            pending.append((path, len(page.body), 0))
            screened.extend(screen)
            size += len(page.body)
            last_state = page.state
            if size >= batch_bytes:
                flush()
        flush()
    finally:  # a failed fetch or batch: its pages are fetched again next run
        if ahead is not None:
            ahead.close()
        direct._forget_seen_keys(con)
        for p, _, _ in pending:
            p.unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)
    stats.seconds = round(time.perf_counter() - started, 3)
    log.info("loaded %s pages: %s", spec.source, stats.as_dict())
    return stats
