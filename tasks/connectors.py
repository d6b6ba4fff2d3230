"""Which API connectors a run uses: `[connectors.<vendor>]` tables in the settings -> objects."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from tasks.settings import ConfigError, Settings, describe_errors
from tasks.sources import VENDORS


@dataclass(frozen=True)
class ConnectorType:
    module: str
    settings_class: str
    connector_class: str
    env_vars: tuple[str, ...]  # the credential variables (for .env.example and doctor hints)


# Every vendor declared with a connector (tasks/sources.py declare, in its tasks/clients module).
CONNECTOR_TYPES = {
    v.source: ConnectorType(v.module, v.settings_class, v.connector_class, v.env_vars)
    for v in VENDORS
    if v.module and v.settings_class and v.connector_class
}


def _load(kind: ConnectorType) -> tuple[Any, Any]:
    module = importlib.import_module(kind.module)
    return getattr(module, kind.settings_class), getattr(module, kind.connector_class)


def connector_settings(settings: Settings) -> dict[str, Any]:
    """Validated settings of every `[connectors.<vendor>]` table; ConfigError when invalid."""
    out = {}
    for name, raw in settings.connectors.items():
        if name not in CONNECTOR_TYPES:
            known = ", ".join(sorted(CONNECTOR_TYPES))
            raise ConfigError(
                f"connectors.{name}: unknown connector; rename the table to one of: {known}"
            )
        settings_cls, _ = _load(CONNECTOR_TYPES[name])
        try:
            out[name] = settings_cls.model_validate(raw)
        except ValidationError as exc:
            problems = describe_errors(exc, f"connectors.{name}", settings_cls)
            raise ConfigError(f"{problems} (fix the [connectors.{name}] table)") from None
    return out


def build_connectors(settings: Settings, kinds: set[str] | None = None) -> list[Any]:
    """The configured connectors, optionally only those feeding `kinds` (usage/tickets/bugs/...)."""
    built = []
    for name, vendor_settings in connector_settings(settings).items():
        _, connector_cls = _load(CONNECTOR_TYPES[name])
        connector = connector_cls(vendor_settings)
        if kinds is None or connector.kind in kinds:
            built.append(connector)
    return built
