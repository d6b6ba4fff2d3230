"""Extraction on workers: one `extract` flow run per API connector, the warehouse commit in the
nightly.

With the nightly's `extract_on_workers` parameter, the nightly (holding the warehouse's writer
lock) reads every configured connector's committed cursor, starts one `extract` flow run per
connector on the work pool (`run_deployment` of the `extract` deployment in prefect.yaml), waits
for them, then commits what they landed one source at a time (tasks/steps.py load_sources with
`landed`). An extract run only fetches and lands pages (tasks/extract.py land_connector): it
never opens the warehouse, so any number of them run at once on any workers that share the
landing folder. A connector whose extract run failed is that source's failed load: the run is
Degraded, naming it, and the other sources commit.

It orchestrates only; the landing, manifests and the commit are plain functions in tasks/.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Annotated, Any

from prefect import flow, get_run_logger
from pydantic import Field

from tasks import runtime
from tasks.settings import ENV_PREFIX, ConfigError, Settings

EXTRACT_DEPLOYMENT = "extract/extract"
WAIT_SECONDS = 2 * 3600  # an extract run not finished by then is cancelled and counted failed
POLL_SECONDS = 2.0


@flow(name="extract", log_prints=False, timeout_seconds=2 * 3600)
def extract(
    connector: Annotated[str, Field(description="The connector to pull (zendesk, intercom, ...).")],
    window_end: Annotated[datetime, Field(description="Upper bound of the pull (UTC).")],
    state: Annotated[
        dict[str, Any] | None,
        Field(description="The connector's committed cursor; empty = its configured start."),
    ] = None,
    run_id: Annotated[str | None, Field(description="The nightly run this extract is for.")] = None,
    config_path: runtime.ConfigPathParam = None,
) -> dict[str, Any]:
    """Fetch one connector's new pages from `state` up to `window_end` into the landing folder
    and return the landed batch's manifest (without its page list). Touches no warehouse; a
    re-run for the same cursor and window end finds the complete batch and skips."""
    from tasks.connectors import build_connectors
    from tasks.extract import ExtractFailed, land_connector
    from tasks.steps import _credential_values, failure_reason

    logger = get_run_logger()
    settings = runtime.run_settings(config_path)
    found = [c for c in build_connectors(settings) if c.source == connector]
    if not found:
        raise ConfigError(f"extract: no [connectors.{connector}] table in the settings")
    logger.info("%s (run %s): pulling from %s", connector, run_id, state or "the configured start")
    try:
        manifest = land_connector(
            found[0], state, window_end, settings.landing_dir, progress=logger.info
        )
    except Exception as exc:  # one masked line in the state message, never a credential
        reason = failure_reason(exc, _credential_values(settings))
        logger.error("%s: extract failed: %s", connector, reason)
        raise ExtractFailed(reason) from None
    return {k: v for k, v in manifest.items() if k != "pages"}


def config_path_for_workers(config_path: str | None) -> str | None:
    """The settings file the extract runs should read: the nightly's parameter, else its
    $FEEDBACK_LOOP_CONFIG; None lets the worker resolve it (the Prefect Variable)."""
    return config_path or os.environ.get(ENV_PREFIX + "CONFIG") or None


def run_extracts(
    settings: Settings,
    kinds: set[str],
    run_id: str,
    window_end: datetime,
    config_path: str | None,
    logger: Any,
    *,
    wait_seconds: float = WAIT_SECONDS,
) -> dict[str, dict]:
    """Start one `extract` flow run per configured connector of `kinds`, wait for all, and
    return {source: {"folder", "flow_run_id", "state"} or {"error", "flow_run_id", "state"}}
    for tasks/steps.py load_sources(landed=...). The caller holds the writer lock, so the
    cursors read here are the ones the commit starts from."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    from tasks import db, load
    from tasks.connectors import build_connectors
    from tasks.extract import clear_extracts, extract_dir, extract_key

    kinds = set(kinds) | ({"errors"} if "bugs" in kinds else set())
    connectors = build_connectors(settings, kinds)
    if not connectors:
        return {}
    with db.warehouse(settings.duckdb_path, memory_limit=settings.duckdb_memory_limit) as con:
        db.ensure_schema(con)
        states = {c.source: load.read_state(con, c.source, c.stream) for c in connectors}
    for c in connectors:  # batches of earlier runs never committed: fetched again if needed
        clear_extracts(
            settings.landing_dir, c.source, c.stream, keep=extract_key(states[c.source], window_end)
        )
    started: dict[str, Any] = {}
    for c in connectors:
        try:
            started[c.source] = run_deployment(
                EXTRACT_DEPLOYMENT,
                parameters={
                    "connector": c.source,
                    "state": states[c.source],
                    "window_end": window_end.astimezone(UTC).isoformat(),
                    "run_id": run_id,
                    "config_path": config_path,
                },
                flow_run_name=f"extract-{c.source}-{run_id}",
                idempotency_key=f"{run_id}:{c.source}",
                tags=["feedback-loop", "extract"],
                timeout=0,  # start all, then wait
            )
        except ObjectNotFound:
            raise ConfigError(
                f"extract_on_workers: there is no deployment {EXTRACT_DEPLOYMENT!r}; deploy it "
                "(prefect deploy --all) and start workers on its pool (README: Run it in "
                "production)"
            ) from None
        logger.info("%s: extract run %s started", c.source, started[c.source].name)

    deadline = time.monotonic() + wait_seconds
    final: dict[str, Any] = {}
    with get_client(sync_client=True) as client:
        while len(final) < len(started):
            for source, fr in started.items():
                if source in final:
                    continue
                now = client.read_flow_run(fr.id)
                if now.state is not None and now.state.is_final():
                    final[source] = now
            if len(final) < len(started):
                if time.monotonic() > deadline:
                    break
                time.sleep(POLL_SECONDS)
        for source, fr in started.items():
            if source not in final:  # never picked up (no worker?) or still running
                from prefect.states import Cancelling

                client.set_flow_run_state(fr.id, Cancelling(), force=True)
                final[source] = None

    landed: dict[str, dict] = {}
    for c in connectors:
        fr = final[c.source]
        row: dict[str, Any] = {"flow_run_id": str(started[c.source].id)}
        if fr is None:
            row |= {
                "state": "Cancelled",
                "error": f"{started[c.source].name} did not finish within "
                f"{wait_seconds / 60:.0f} min (are workers running on its pool?)",
            }
        elif fr.state.is_completed():
            row |= {
                "state": fr.state.name,
                "folder": str(
                    extract_dir(
                        settings.landing_dir, c.source, c.stream, states[c.source], window_end
                    )
                ),
            }
        else:
            message = (fr.state.message or "").strip().splitlines()
            row |= {
                "state": fr.state.name,
                "error": f"{fr.name} {fr.state.name}" + (f": {message[0]}" if message else ""),
            }
        logger.info("%s: extract run %s", c.source, row.get("error") or row["state"])
        landed[c.source] = row
    return landed
