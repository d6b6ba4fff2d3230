"""Prefect flows of feedback-loop. Importing this package sets quiet, offline defaults."""

import os

# Telemetry off, GX analytics off; the ephemeral Prefect API can take a while on a cold machine.
for _name, _value in {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "tasks",
}.items():
    os.environ.setdefault(_name, _value)

import logging  # noqa: E402

# GX announces a temporary docs directory per validation at INFO; keep run logs readable.
logging.getLogger("great_expectations").setLevel(logging.WARNING)
