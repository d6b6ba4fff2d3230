"""One writer per warehouse, queued: every flow that writes a DuckDB warehouse holds this lock for
its whole run, so a second run (another deployment, the CLI, a backfill) waits instead of failing.

Two layers, taken in this order:

1. A Prefect global concurrency limit named after the warehouse (`limit_name`, limit 1), when a
   Prefect server is configured (PREFECT_API_URL). It is what the Prefect UI shows: the limit's
   active slot under Concurrency, and the waiting run's state `AwaitingWarehouse`. Its lease is
   renewed while the run lives; the server reclaims the slot of a killed run when the lease
   runs out.
2. An OS file lock (`flock`) on `<warehouse>.writer.lock`, always. The kernel drops it the moment
   the holder dies, so a killed run can never leave the warehouse locked, and it also covers the
   CLI's ephemeral Prefect API (one in-process server per command, whose slot leases would not
   survive a kill). The file records who holds it (run id, flow run, pid, since) for the waiting
   message.

A run that cannot get the lock within the wait budget fails with one line naming the holder.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LIMIT_PREFIX = "feedback-loop-warehouse"
LEASE_SECONDS = 120.0  # a killed holder's Prefect slot is reclaimed within about this long
POLL_SECONDS = 1.0
FIRST_ATTEMPT_SECONDS = 3.0
REPORT_EVERY_SECONDS = 60.0


class WarehouseBusyError(RuntimeError):
    """Another run kept the warehouse for longer than this run was willing to wait."""


def limit_name(db_path: Path | str) -> str:
    """The Prefect global concurrency limit of a warehouse: readable (the file's stem) and unique
    (a hash of its absolute path), e.g. `feedback-loop-warehouse-feedback-3f2a9c1e`."""
    resolved = str(Path(db_path).expanduser().resolve())
    stem = re.sub(r"[^a-zA-Z0-9_-]+", "-", Path(resolved).stem).strip("-")[:40] or "warehouse"
    digest = hashlib.sha1(resolved.encode("utf-8")).hexdigest()[:8]  # noqa: S324 (a name)
    return f"{LIMIT_PREFIX}-{stem}-{digest}"


def lock_path(db_path: Path | str) -> Path:
    p = Path(db_path).expanduser().resolve()
    return p.with_name(p.name + ".writer.lock")


def read_holder(db_path: Path | str) -> dict[str, Any] | None:
    """Who holds (or last held) the writer lock, from the lock file; None when unknown."""
    try:
        text = lock_path(db_path).read_text(encoding="utf-8").strip()
        return json.loads(text) if text else None
    except (OSError, ValueError):
        return None


def describe_holder(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "another run"
    parts = [f"run {holder.get('run_id') or '?'}"]
    if holder.get("flow"):
        parts[0] = f"{holder['flow']} {parts[0]}"
    if holder.get("flow_run_id"):
        parts.append(f"flow run {holder['flow_run_id']}")
    if holder.get("pid"):
        parts.append(f"pid {holder['pid']} on {holder.get('host', '?')}")
    since = f" since {holder['since']}" if holder.get("since") else ""
    return f"{parts[0]} ({', '.join(parts[1:])}){since}" if len(parts) > 1 else parts[0] + since


def prefect_server_url() -> str | None:
    """The configured Prefect API URL, or None for the ephemeral (in-process) API."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


@contextlib.contextmanager
def warehouse_writer(
    db_path: Path | str,
    *,
    holder: dict[str, Any],
    wait_seconds: float,
    on_wait: Callable[[str], None] | None = None,
    on_acquired: Callable[[float], None] | None = None,
    use_prefect: bool | None = None,
) -> Iterator[float]:
    """Hold the warehouse's writer lock for the block; yields the seconds spent waiting.

    `holder` (run_id, flow, flow_run_id) is written to the lock file for waiting runs to name.
    `on_wait(message)` is called once when the lock is taken by someone else (the flow turns it
    into its `AwaitingWarehouse` state); `on_acquired(waited)` once the lock is held.
    `use_prefect`: None = when a Prefect server is configured.
    """
    started = time.monotonic()
    deadline = started + max(0.0, wait_seconds)
    use_prefect = prefect_server_url() is not None if use_prefect is None else use_prefect
    waited_flag = {"told": False}

    def tell(message: str) -> None:
        if not waited_flag["told"]:
            waited_flag["told"] = True
            if on_wait:
                on_wait(message)  # the caller logs it (the flow: to its run log)
            else:
                log.warning("%s", message)

    with contextlib.ExitStack() as stack:
        if use_prefect:
            stack.enter_context(_prefect_slot(db_path, deadline, tell))
        fd = stack.enter_context(_file_lock(db_path, deadline, tell))
        waited = time.monotonic() - started
        _write_holder(fd, holder)
        stack.callback(_clear_holder, fd)
        if on_acquired:
            on_acquired(waited)
        yield waited


@contextlib.contextmanager
def _prefect_slot(db_path, deadline: float, tell: Callable[[str], None]) -> Iterator[None]:
    """One slot of the warehouse's global concurrency limit (created with limit 1 if missing;
    `strict=True`, as a missing limit would otherwise be skipped silently). The first attempt
    is short, so a run that has to queue says so (`tell`) while it goes on waiting."""
    from prefect.concurrency.sync import concurrency

    name = limit_name(db_path)
    _ensure_limit(name)
    with contextlib.ExitStack() as stack:
        attempt = FIRST_ATTEMPT_SECONDS
        while True:
            remaining = deadline - time.monotonic()
            try:
                stack.enter_context(
                    concurrency(
                        name,
                        occupy=1,
                        timeout_seconds=max(min(attempt, remaining), 1.0),
                        lease_duration=LEASE_SECONDS,
                        strict=True,
                    )
                )
                break
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise WarehouseBusyError(_busy_message(db_path, deadline)) from None
                who = describe_holder(read_holder(db_path))
                tell(
                    f"waiting for the warehouse {Path(db_path).name}: {who} is writing it "
                    f"(Prefect concurrency limit {name})"
                )
                attempt = REPORT_EVERY_SECONDS
        yield


def _ensure_limit(name: str) -> None:
    """Create the limit (1 slot) when missing; keep it at one active slot."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
    )
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):  # another run created it first
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1, active=True)
                )
            limit = client.read_global_concurrency_limit_by_name(name)
        if limit.limit != 1 or not limit.active:  # one writer, whatever someone set by hand
            client.update_global_concurrency_limit(
                name, GlobalConcurrencyLimitUpdate(limit=1, active=True)
            )


@contextlib.contextmanager
def _file_lock(db_path, deadline: float, tell: Callable[[str], None]) -> Iterator[int]:
    path = lock_path(db_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        next_report = 0.0
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                now = time.monotonic()
                if now >= deadline:
                    raise WarehouseBusyError(_busy_message(db_path, deadline)) from None
                message = (
                    f"waiting for the warehouse {Path(db_path).name}: "
                    f"{describe_holder(read_holder(db_path))} is writing it"
                )
                tell(message)
                if now >= next_report:
                    log.info("%s (up to %.0f s more)", message, deadline - now)
                    next_report = now + REPORT_EVERY_SECONDS
                time.sleep(POLL_SECONDS)
        try:
            yield fd
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _busy_message(db_path, deadline: float) -> str:
    return (
        f"warehouse {db_path} stayed busy: {describe_holder(read_holder(db_path))} is still "
        "writing it and this run's wait (warehouse_wait_minutes) ran out; it was not started. "
        "Start it again once that run has finished."
    )


def _write_holder(fd: int, holder: dict[str, Any]) -> None:
    record = {
        **holder,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record, default=str).encode("utf-8"), 0)


def _clear_holder(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
