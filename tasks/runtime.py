"""What every flow that writes a warehouse does first: find its settings (never silently the demo
in production) and take the warehouse's writer lock, waiting in a visible state.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import Field

from tasks import db
from tasks.settings import ENV_PREFIX, ConfigError, Settings, load_settings

log = logging.getLogger(__name__)
T = TypeVar("T")

# Flow parameters that the nightly and backfill flows share (the Prefect UI's form fields).
WindowDaysParam = Annotated[
    int | None,
    Field(ge=7, le=120, description="Scoring window in days; empty = window_days of config."),
]
ConfigPathParam = Annotated[
    str | None,
    Field(
        description="Settings file (TOML); empty = $FEEDBACK_LOOP_CONFIG, else (production "
        "deployments) the Prefect Variable feedback_loop_config, else the embedded demo."
    ),
]

# Set in the job variables of the prefect.yaml deployments that run on a work pool: such a run
# must name its settings file and may not use the demo.
REQUIRE_CONFIG_ENV = ENV_PREFIX + "REQUIRE_CONFIG"
# Prefect Variables a production deployment reads at run time (set with `prefect variable set`).
CONFIG_VARIABLE = "feedback_loop_config"
SALT_BLOCK_VARIABLE = "feedback_loop_hash_salt_block"
AWAITING_STATE = "AwaitingWarehouse"


def production_mode(environ: dict[str, str] | None = None) -> bool:
    value = (os.environ if environ is None else environ).get(REQUIRE_CONFIG_ENV, "")
    return value.strip().lower() in {"1", "true", "yes", "on"}


def run_settings(config_path: str | None) -> Settings:
    """Settings of a flow run: the `config_path` parameter, else $FEEDBACK_LOOP_CONFIG, else (in
    production mode) the Prefect Variable `feedback_loop_config`, else the embedded demo.

    In production mode (FEEDBACK_LOOP_REQUIRE_CONFIG=1, set by the work-pool deployments) a run
    without a settings file, with the demo generator on, or with the demo salt fails at once with
    one line (ConfigError) — before anything is loaded or written. The salt may come from a
    Prefect Secret block named by the Variable `feedback_loop_hash_salt_block`.
    """
    production = production_mode()
    path = config_path or os.environ.get(ENV_PREFIX + "CONFIG")
    if production and not path:
        path = _variable(CONFIG_VARIABLE)  # only here: a local run never picks it up
    if production and not path:
        raise ConfigError(
            "no settings for this production deployment: set the Prefect Variable "
            f"{CONFIG_VARIABLE} to the settings file (prefect variable set {CONFIG_VARIABLE} "
            "/etc/feedback-loop/settings.toml), or the config_path parameter; it never falls "
            "back to the demo"
        )
    settings = load_settings(path)
    salt_block = _variable(SALT_BLOCK_VARIABLE) if production else None
    if salt_block and not os.environ.get(ENV_PREFIX + "HASH_SALT"):
        from pydantic import SecretStr

        from tasks.secrets import resolve_secret

        salt = resolve_secret(ENV_PREFIX + "HASH_SALT", salt_block)
        settings = settings.model_copy(update={"hash_salt": SecretStr(salt or "")})
    if production and settings.demo.enabled:
        raise ConfigError(
            f"{path}: demo.enabled is on in a production deployment; set [demo] enabled = false"
        )
    if production and settings.hash_salt == Settings.model_fields["hash_salt"].default:
        raise ConfigError(
            f"{path}: the requester-hash salt is the demo's; set FEEDBACK_LOOP_HASH_SALT in the "
            f"deployment's environment or a Prefect Secret block named by the Variable "
            f"{SALT_BLOCK_VARIABLE}"
        )
    from tasks import rawstore

    rawstore.activate(settings)  # every connection of the run reaches the raw event store
    return settings


def _variable(name: str) -> str | None:
    """A Prefect Variable's value, None when unset or when no API answers (local runs)."""
    try:
        from prefect.variables import Variable

        value = Variable.get(name, default=None)
    except Exception:  # no API (a plain function call), or an unreachable one: not configured
        log.debug("Prefect Variable %s not readable", name, exc_info=True)
        return None
    return str(value).strip() or None if value is not None else None


@contextlib.contextmanager
def writer(settings: Settings, *, flow: str, run_id: str, logger) -> Iterator[float]:
    """Hold the warehouse's writer lock for a flow run (tasks.writer_lock); while another run
    holds it this run is in the Prefect state `AwaitingWarehouse` (a Running state whose message
    names the holder), back to `Running` once it has the lock. Yields the seconds waited."""
    from tasks.writer_lock import warehouse_writer

    db.set_lock_wait(settings.lock_wait_seconds)
    from tasks import rawstore

    rawstore.activate(settings)
    flow_run_id = _flow_run_id()

    def on_wait(message: str) -> None:
        wait = settings.warehouse_wait_minutes
        logger.warning("%s; this run waits (up to %.0f min)", message, wait)
        _set_state(flow_run_id, AWAITING_STATE, message)

    def on_acquired(waited: float) -> None:
        if waited >= 1.0:
            logger.info("warehouse free after %.0f s of waiting; the run starts", waited)
            _set_state(flow_run_id, "Running", f"started after waiting {waited:.0f} s")

    with warehouse_writer(
        Path(settings.duckdb_path),
        holder={"flow": flow, "run_id": run_id, "flow_run_id": flow_run_id},
        wait_seconds=settings.warehouse_wait_minutes * 60,
        on_wait=on_wait,
        on_acquired=on_acquired,
    ) as waited:
        yield waited


def _flow_run_id() -> str | None:
    from prefect.runtime import flow_run

    return flow_run.get_id()


def _set_state(flow_run_id: str | None, name: str, message: str) -> None:
    """Show the wait in the Prefect UI: a Running state named `name`. Best effort: a state the
    API refuses only loses the label, never the run."""
    if not flow_run_id:
        return
    try:
        from prefect.client.orchestration import get_client
        from prefect.states import Running

        with get_client(sync_client=True) as client:
            client.set_flow_run_state(flow_run_id, Running(name=name, message=message), force=True)
    except Exception:
        log.debug("could not set the state of flow run %s", flow_run_id, exc_info=True)


class StageTimer:
    """Seconds per stage of a run (`timings`, as recorded in ops.runs.stage_seconds)."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def __call__(self, name: str, fn: Callable[..., T], *args: Any) -> T:
        t0 = time.perf_counter()
        result = fn(*args)
        self.timings[name] = round(time.perf_counter() - t0, 3)
        return result
