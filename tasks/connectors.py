"""Which API connectors a run uses: `[connectors.<vendor>]` tables in the settings -> objects."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from tasks.settings import ConfigError, Settings, describe_errors


@dataclass(frozen=True)
class ConnectorType:
    module: str
    settings_class: str
    connector_class: str
    env_vars: tuple[str, ...]  # the credential variables (for .env.example and doctor hints)


CONNECTOR_TYPES = {
    "posthog": ConnectorType(
        "tasks.clients.posthog",
        "PostHogSettings",
        "PostHogConnector",
        ("POSTHOG_PERSONAL_API_KEY",),
    ),
    "amplitude": ConnectorType(
        "tasks.clients.amplitude",
        "AmplitudeSettings",
        "AmplitudeConnector",
        ("AMPLITUDE_API_KEY", "AMPLITUDE_SECRET_KEY"),
    ),
    "mixpanel": ConnectorType(
        "tasks.clients.mixpanel",
        "MixpanelSettings",
        "MixpanelConnector",
        ("MIXPANEL_SERVICE_ACCOUNT_USERNAME", "MIXPANEL_SERVICE_ACCOUNT_SECRET"),
    ),
    "zendesk": ConnectorType(
        "tasks.clients.zendesk",
        "ZendeskSettings",
        "ZendeskTickets",
        ("ZENDESK_EMAIL", "ZENDESK_API_TOKEN", "ZENDESK_OAUTH_TOKEN"),
    ),
    "intercom": ConnectorType(
        "tasks.clients.intercom",
        "IntercomSettings",
        "IntercomConversations",
        ("INTERCOM_ACCESS_TOKEN",),
    ),
    "freshdesk": ConnectorType(
        "tasks.clients.freshdesk",
        "FreshdeskSettings",
        "FreshdeskTickets",
        ("FRESHDESK_API_KEY",),
    ),
    "github": ConnectorType(
        "tasks.clients.github", "GitHubSettings", "GitHubIssuesConnector", ("GITHUB_TOKEN",)
    ),
    "jira": ConnectorType(
        "tasks.clients.jira", "JiraSettings", "JiraConnector", ("JIRA_EMAIL", "JIRA_API_TOKEN")
    ),
    "linear": ConnectorType(
        "tasks.clients.linear", "LinearSettings", "LinearConnector", ("LINEAR_API_KEY",)
    ),
    "sentry": ConnectorType(
        "tasks.clients.sentry", "SentrySettings", "SentryConnector", ("SENTRY_AUTH_TOKEN",)
    ),
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
