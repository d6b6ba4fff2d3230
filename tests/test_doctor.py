"""`feedback-loop doctor` against the vendor fakes: a verdict per source, exit code, no secrets."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from flows.cli import main
from tasks import doctor
from tasks.settings import PROJECT_ROOT, load_settings
from tests.fakes.github import FakeGitHub
from tests.fakes.jira import jira_api
from tests.fakes.linear import linear_api
from tests.fakes.posthog import posthog_api
from tests.fakes.sentry import sentry_api
from tests.fakes.server import FakeServer, Request, Response
from tests.fakes.zendesk import zendesk_api

POSTHOG_KEY = "phx_test_key"  # what the PostHog fake accepts
ZENDESK_WRONG = "zd-wrong-token-4711"  # the fake accepts zd-test-token-123
SENTRY_TOKEN = "sntrys_TestToken1234567890"
LINEAR_KEY = "lin_api_TestKey1234567890"
GITHUB_TOKEN = "ghp_fakeToken123456"
SECRETS = (POSTHOG_KEY, ZENDESK_WRONG, SENTRY_TOKEN, LINEAR_KEY, GITHUB_TOKEN)
OPTS = doctor._Options(timeout=(2.0, 5.0), retry=doctor.DOCTOR_RETRY, sleep=lambda s: None)
NO_FILES = (
    '[sources]\nposthog_events = ""\nzendesk_tickets = ""\ngithub_issues = ""\naccounts = ""\n'
)


@pytest.fixture
def creds(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in doctor.credential_env_vars():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("FEEDBACK_LOOP_CONFIG", raising=False)
    monkeypatch.setenv("POSTHOG_PERSONAL_API_KEY", POSTHOG_KEY)
    monkeypatch.setenv("ZENDESK_EMAIL", "agent@acme.test")
    monkeypatch.setenv("ZENDESK_API_TOKEN", ZENDESK_WRONG)
    monkeypatch.setenv("SENTRY_AUTH_TOKEN", SENTRY_TOKEN)
    monkeypatch.setenv("LINEAR_API_KEY", LINEAR_KEY)
    monkeypatch.setenv("GITHUB_TOKEN", GITHUB_TOKEN)


def closed_port() -> int:
    """A port on 127.0.0.1 nobody listens on: connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: Path, body: str) -> Path:
    path.write_text(body, encoding="utf-8")
    return path


def lines_by_source(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(connectors\.\w+|writeback\.\w+|sources\.\w+)\s+(.*)$", line)
        if m:
            out[m[1]] = m[2]
    return out


def test_one_plain_verdict_per_source_and_exit_code_1(
    creds: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeServer() as ph, FakeServer() as zd, FakeServer() as se:
        posthog_api(ph, [])
        zendesk_api(zd, [])
        sentry_api(se)
        cfg = write_config(
            tmp_path / "cfg.toml",
            NO_FILES
            + f"""
[connectors.posthog]
base_url = "{ph.url}"
project_id = "1"

[connectors.zendesk]
base_url = "{zd.url}"

[connectors.sentry]
base_url = "{se.url}"
org = "wrong-org"

[connectors.linear]
base_url = "http://127.0.0.1:{closed_port()}"

[connectors.intercom]
base_url = "{ph.url}"

[connectors.sentry_echo]

[connectors.mixpanel]
base_url = "{ph.url}"

[connectors.freshdesk]
base_url = "{ph.url}"
api_key_env = "ACME_FRESHDESK_KEY"
""",
        )
        started = time.perf_counter()
        rc = main(["doctor", "--config", str(cfg)])
        elapsed = time.perf_counter() - started
    out, err = capsys.readouterr()
    assert rc == 1
    assert elapsed < 5
    got = lines_by_source(out)
    assert got["connectors.posthog"].startswith("ok ")
    assert got["connectors.zendesk"].startswith("bad credentials ")
    assert "HTTP 401" in got["connectors.zendesk"]
    assert "ZENDESK_API_TOKEN" in got["connectors.zendesk"]
    assert got["connectors.sentry"].startswith("misconfigured ")
    assert "HTTP 404" in got["connectors.sentry"]
    assert "connectors.sentry.org" in got["connectors.sentry"]
    assert got["connectors.linear"].startswith("unreachable ")
    assert "Connection refused" in got["connectors.linear"]
    assert "connectors.linear.base_url" in got["connectors.linear"]
    assert got["connectors.intercom"].startswith("bad credentials ")
    assert "set INTERCOM_ACCESS_TOKEN" in got["connectors.intercom"]
    # A table that does not validate is reported, and does not hide the others.
    assert got["connectors.sentry_echo"].startswith("misconfigured ")
    assert "unknown connector" in got["connectors.sentry_echo"]
    assert got["connectors.mixpanel"].startswith("misconfigured ")
    assert "project_id" in got["connectors.mixpanel"]
    # A renamed variable is named as configured.
    assert got["connectors.freshdesk"].startswith("bad credentials ")
    assert "set ACME_FRESHDESK_KEY" in got["connectors.freshdesk"]
    assert got["writeback.markdown"].startswith("ok ")
    assert "need attention" in err
    for secret in SECRETS:
        assert secret not in out + err


def test_secret_echoed_by_the_api_is_masked(
    creds: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeServer() as srv:
        srv.route(
            "GET",
            r"/api/0/organizations/.*",
            lambda req: Response.json({"detail": f"bad {req.headers['Authorization']}"}, 404),
        )
        cfg = write_config(
            tmp_path / "cfg.toml",
            NO_FILES + f'[connectors.sentry]\nbase_url = "{srv.url}"\norg = "acme"\n',
        )
        assert main(["doctor", "--config", str(cfg)]) == 1
    out, err = capsys.readouterr()
    line = lines_by_source(out)["connectors.sentry"]
    assert line.startswith("misconfigured ") and "HTTP 404" in line
    assert SENTRY_TOKEN not in out + err


def test_all_ok_exits_0(creds: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exports = tmp_path / "exports"
    exports.mkdir()
    (exports / "events-1.jsonl").write_text("{}\n")
    with FakeServer() as ph:
        posthog_api(ph, [])
        cfg = write_config(
            tmp_path / "cfg.toml",
            f"""
[sources]
posthog_events = "exports/*.jsonl"
zendesk_tickets = ""
github_issues = ""
accounts = ""

[connectors.posthog]
base_url = "{ph.url}"
project_id = "1"
""",
        )
        assert main(["doctor", "--config", str(cfg)]) == 0
        assert [r.path for r in ph.requests] == ["/api/projects/1/"]  # one cheap call
    out, err = capsys.readouterr()
    got = lines_by_source(out)
    assert set(got) == {"connectors.posthog", "writeback.markdown", "sources.posthog_events"}
    assert "1 file(s) match" in got["sources.posthog_events"]
    assert "all 3 source(s) ok" in err


def test_export_globs(creds: None, tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path / "cfg.toml",
        '[sources]\nposthog_events = "nowhere/*.jsonl"\nzendesk_tickets = ""\n',
    )
    settings = load_settings(cfg, environ={})
    checks = {c.name: c for c in doctor.check_file_sources(settings)}
    assert checks["sources.posthog_events"].status == doctor.MISCONFIGURED
    assert "sources.posthog_events" in checks["sources.posthog_events"].fix
    assert "sources.zendesk_tickets" not in checks  # "" = disabled
    # The demo glob is fine while demo mode will generate the files on the next run.
    assert checks["sources.github_issues"].ok
    assert "demo" in checks["sources.github_issues"].detail


def test_github_tracker_needs_label_rights(creds: None) -> None:
    table = {"owner": "acme", "repo": "analytics"}
    with FakeGitHub() as gh:
        ok = doctor.check_tracker("github", {**table, "base_url": gh.url}, OPTS)
        gone = doctor.check_tracker("github", {**table, "base_url": gh.url, "repo": "x"}, OPTS)
        reader = doctor.check_connector("github", {**table, "base_url": gh.url}, OPTS)
    assert ok.ok and reader.ok, (ok, reader)
    assert gone.status == doctor.MISCONFIGURED and "writeback.github.repo" in gone.fix
    read_only = {"admin": False, "maintain": False, "push": False, "triage": False, "pull": True}
    with FakeGitHub(permissions=read_only, can_label=False) as gh:
        check = doctor.check_tracker("github", {**table, "base_url": gh.url}, OPTS)
    assert check.status == doctor.BAD_CREDENTIALS
    assert "GITHUB_TOKEN" in check.fix and "triage" in check.fix


def test_jira_tracker_permissions(creds: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JIRA_EMAIL", "bot@acme.test")
    monkeypatch.setenv("JIRA_API_TOKEN", "jira-test-token-123")
    granted = set(doctor.JIRA_WRITE_PERMISSIONS)

    def permissions(req: Request) -> Response:
        if req.arg("projectKey") != "ABC":
            return Response.json({"errorMessages": ["No project could be found"]}, 404)
        keys = (req.arg("permissions") or "").split(",")
        return Response.json(
            {"permissions": {k: {"key": k, "havePermission": k in granted} for k in keys}}
        )

    with FakeServer() as srv:
        jira_api(srv)
        srv.route("GET", r"/rest/api/3/mypermissions", permissions)
        ok = doctor.check_tracker("jira", {"base_url": srv.url, "project": "ABC"}, OPTS)
        wrong = doctor.check_tracker("jira", {"base_url": srv.url, "project": "XYZ"}, OPTS)
        granted.discard("LINK_ISSUES")
        short = doctor.check_tracker("jira", {"base_url": srv.url, "project": "ABC"}, OPTS)
        srv.assert_clean()
    assert ok.ok, ok
    assert wrong.status == doctor.MISCONFIGURED and "writeback.jira.project" in wrong.fix
    assert short.status == doctor.BAD_CREDENTIALS and "LINK_ISSUES" in short.detail


def test_linear_tracker_team_and_missing_table(creds: None) -> None:
    with FakeServer() as srv:
        linear_api(srv)
        ok = doctor.check_tracker("linear", {"base_url": srv.url, "team_key": "ENG"}, OPTS)
        wrong = doctor.check_tracker("linear", {"base_url": srv.url, "team_key": "NOPE"}, OPTS)
    assert ok.ok, ok
    assert wrong.status == doctor.MISCONFIGURED and "team_key" in wrong.fix
    missing = doctor.check_tracker("linear", None, OPTS)
    assert missing.status == doctor.MISCONFIGURED and "[writeback.linear]" in missing.fix
    invalid = doctor.check_tracker("linear", {"base_url": "http://x"}, OPTS)
    assert invalid.status == doctor.MISCONFIGURED and "team_key" in invalid.detail


def test_env_example_lists_every_variable() -> None:
    text = (PROJECT_ROOT / ".env.example").read_text(encoding="utf-8")
    names = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, re.M))
    for table, model in doctor.settings_models().items():
        for field, var in doctor.env_fields(model).items():
            assert var in names, f"{table}.{field} default {var} is not in .env.example"
    assert set(doctor.credential_env_vars()) <= names
    assert {"FEEDBACK_LOOP_CONFIG", "FEEDBACK_LOOP_HASH_SALT"} <= names
    # Names and comments only: no line sets a value.
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            assert re.fullmatch(r"[A-Z][A-Z0-9_]+=", line), line


def test_configured_writeback_tracker_is_checked(creds: None, tmp_path: Path) -> None:
    """Whatever shape the [writeback.<tracker>] table takes in Settings (a dict or a model),
    run_checks checks the configured tracker instead of the Markdown folder."""
    from tasks.trackers.linear import LinearTrackerSettings

    settings = load_settings(write_config(tmp_path / "cfg.toml", NO_FILES), environ={})
    with FakeServer() as srv:
        linear_api(srv)
        for table in (
            {"base_url": srv.url, "team_key": "ENG"},
            LinearTrackerSettings(base_url=srv.url, team_key="ENG"),
        ):
            writeback = SimpleNamespace(tracker="linear", linear=table, tracker_dir=tmp_path)
            checks = doctor.run_checks(settings.model_copy(update={"writeback": writeback}))
            assert [(c.name, c.status) for c in checks] == [("writeback.linear", doctor.OK)]
    writeback = SimpleNamespace(tracker="linear", tracker_dir=tmp_path)
    (check,) = doctor.run_checks(settings.model_copy(update={"writeback": writeback}))
    assert check.status == doctor.MISCONFIGURED and "[writeback.linear]" in check.fix
