"""The API connectors share one base (tasks/clients/base.py): construction takes the same
injection points everywhere, and the HTTP client is made on first use, with the connector's
retry policy, sleep, session and budget."""

from __future__ import annotations

import importlib

import pytest
import requests

from tasks.clients.base import ApiConnector
from tasks.clients.http import HttpClient, RequestBudget, RetryPolicy
from tasks.connectors import CONNECTOR_TYPES
from tasks.settings import ConfigError

# The least settings each vendor accepts (the base URL is never contacted here).
MINIMAL = {
    "posthog": {"project_id": "1"},
    "amplitude": {},
    "mixpanel": {"project_id": "42"},
    "zendesk": {"subdomain": "acme", "email": "a@acme.test"},
    "intercom": {},
    "freshdesk": {"domain": "acme"},
    "jira": {"base_url": "https://acme.atlassian.net"},
    "sentry": {"org": "acme"},
}


def _make(vendor: str, **kwargs):
    t = CONNECTOR_TYPES[vendor]
    module = importlib.import_module(t.module)
    settings = getattr(module, t.settings_class)(**MINIMAL[vendor])
    return getattr(module, t.connector_class)(settings, **kwargs), t


@pytest.mark.parametrize("vendor", MINIMAL)
def test_a_connector_needs_its_credentials_only_when_it_makes_a_request(vendor, monkeypatch):
    connector, t = _make(vendor)
    assert isinstance(connector, ApiConnector)
    for var in t.env_vars:
        monkeypatch.delenv(var, raising=False)
    assert connector.clients() == []  # built without a credential
    with pytest.raises(ConfigError, match="missing credential: set"):
        connector.http  # noqa: B018 - the first use makes the client


@pytest.mark.parametrize("vendor", MINIMAL)
def test_the_client_gets_the_connectors_retry_sleep_session_and_budget(vendor, monkeypatch):
    for var in CONNECTOR_TYPES[vendor].env_vars:
        monkeypatch.setenv(var, "test-credential-123")
    retry, budget, session = RetryPolicy(max_attempts=2), RequestBudget(5, 1.0), requests.Session()
    slept = []
    connector, _ = _make(vendor, retry=retry, budget=budget, session=session, sleep=slept.append)
    http = connector.http
    assert isinstance(http, HttpClient) and http is connector.http  # made once
    assert http.source == connector.source
    if vendor != "jira":  # Jira's client is the tracker's too (tasks.clients.jira.jira_http)
        assert http.session is session
    assert http.retry is retry and http._sleep == slept.append
    # a connector's given budget wins over the vendor's shared one; Zendesk's check calls
    # spend none (only its export does)
    if vendor == "zendesk":
        assert http.budget is None and connector.export_http.budget is budget
        assert connector.clients() == [http, connector.export_http]
    elif vendor != "jira":
        assert http.budget is budget
    assert connector.clients() == [http] or vendor == "zendesk"


def test_a_ready_client_is_used_as_given():
    given = HttpClient("sentry", "https://sentry.test")
    connector, _ = _make("sentry", http=given)
    assert connector.http is given and connector.clients() == [given]
