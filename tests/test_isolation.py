"""Run-level isolation: a failing connector or tracker degrades the run instead of failing it.

Three real `feedback-loop run` invocations (Prefect flow runs) on one small warehouse share one
module fixture: a clean run (exit 0), a run whose first connector (Zendesk) refuses the
credentials while the one after it (Intercom) and the export files load (exit 3, Degraded), and a
run whose GitHub write-back hits a secondary limit longer than the time budget (exit 3,
snapshot published). Killed runs left `running` in ops.runs are marked `crashed`.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from flows.cli import build_parser, main
from tasks.demo_data import DemoConfig, generate_demo_data
from tests.fakes.github import FakeGitHub
from tests.fakes.intercom import conversation, intercom_api
from tests.fakes.server import FakeServer
from tests.fakes.zendesk import zendesk_api
from tests.helpers import sql

END = date(2026, 11, 24)
ZD_TOKEN = "zd-test-token-123"
IC_TOKEN = "ic-test-token-123"


def _config(root: Path, zd_url: str, ic_url: str, tracker: list[str]) -> Path:
    path = root / f"config-{len(list(root.glob('config-*.toml')))}.toml"
    path.write_text(
        "\n".join(
            [
                'duckdb_path = "feedback.duckdb"',
                'snapshot_path = "feedback_analyst.duckdb"',
                "[demo]",
                "enabled = false",
                "[sources]",
                'posthog_events = "demo/posthog/*.jsonl"',
                'zendesk_tickets = ""',
                'github_issues = "demo/github/*.json"',
                'accounts = ""',
                "[connectors.zendesk]",  # first: its failure must not stop Intercom
                f'base_url = "{zd_url}"',
                'email = "agent@acme.test"',
                "start_date = 2026-01-01",
                "[connectors.intercom]",
                f'base_url = "{ic_url}"',
                "start_date = 2026-01-01",
                *tracker,
            ]
        ),
        encoding="utf-8",
    )
    return path


def _cli_run(config: Path) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["run", "--config", str(config)])
    return code, err.getvalue()


_sql = sql


def _last_run(db: Path) -> dict:
    run_id, fr_id, status, summary = _sql(
        db,
        "select run_id, flow_run_id, status, summary from ops.runs "
        "where status <> 'running' and summary->>'as_of' is not null "
        "order by started_at desc limit 1",
    )[0]
    summary = json.loads(summary)
    return {"run_id": run_id, "flow_run_id": fr_id, "status": status, "summary": summary}


def _zendesk_cursor(db: Path) -> str | None:
    rows = _sql(db, "select cursor_value from ops.sync_state where source = 'zendesk'")
    return rows[0][0] if rows else None


def _flow_run_state(flow_run_id: str):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(uuid.UUID(flow_run_id)).state


@pytest.fixture(scope="module")
def world(tmp_path_factory, prefect_api):
    root = tmp_path_factory.mktemp("isolation")
    generate_demo_data(
        DemoConfig(out_dir=root / "demo", end_date=END, days=45, users=400, accounts=40)
    )
    tickets, users = [], {}
    for page in sorted((root / "demo" / "zendesk").glob("*.json")):
        doc = json.loads(page.read_text(encoding="utf-8"))
        tickets += [t for t in doc["tickets"] if isinstance(t.get("id"), int)]
        users.update({u["id"]: u for u in doc.get("users", [])})
    base = int(datetime(2026, 11, 10, tzinfo=UTC).timestamp())
    convs = [
        conversation(f"ic-{i}", base + i * 3600, tags=["exports"], subject="CSV export broken")
        for i in range(4)
    ]
    db = root / "feedback.duckdb"
    out: dict = {"root": root, "db": db}
    with (
        pytest.MonkeyPatch.context() as mp,
        FakeServer() as zd,
        FakeServer() as ic,
        FakeGitHub() as gh,
    ):
        mp.setenv("ZENDESK_API_TOKEN", ZD_TOKEN)
        mp.setenv("INTERCOM_ACCESS_TOKEN", IC_TOKEN)
        mp.setenv("GITHUB_TOKEN", gh.token)
        zd_fake = zendesk_api(zd, tickets, page_size=500, users=list(users.values()))
        intercom_api(ic, convs)
        markdown = ["[writeback]", 'tracker_dir = "tracker"']
        config = _config(root, zd.url, ic.url, markdown)

        # 1. clean
        t0 = time.perf_counter()
        out["clean"] = _cli_run(config)
        out["clean_run"] = _last_run(db)
        out["cursor_1"] = _zendesk_cursor(db)
        out["clean_seconds"] = time.perf_counter() - t0

        # 2. Zendesk refuses the (rotated) credential; Intercom has new conversations.
        zd_fake.token = "rotated-elsewhere-456"
        convs += [
            conversation(f"ic-new-{i}", base + (10 + i) * 3600, tags=["exports"]) for i in range(3)
        ]
        snapshot = root / "feedback_analyst.duckdb"
        mtime_1 = snapshot.stat().st_mtime_ns
        out["failed_source"] = _cli_run(config)
        out["failed_source_run"] = _last_run(db)
        out["cursor_2"] = _zendesk_cursor(db)
        out["suggestions_2"] = _sql(
            db,
            "select fingerprint, is_blocked, list_contains(depends_on, 'tickets') "
            "from marts.backlog_suggestions where as_of_date = ?::date",
            [out["failed_source_run"]["summary"]["as_of"]],
        )
        out["report_2"] = next((root / "reports").glob("*.md")).read_text(encoding="utf-8")
        out["snapshot_moved_2"] = snapshot.stat().st_mtime_ns != mtime_1

        # Rows runs that died left behind: the next run holds the writer lock, so none of them
        # can still be going on.
        now = datetime.now(UTC)
        with duckdb.connect(str(db)) as con:
            con.executemany(
                "insert into ops.runs (run_id, flow_run_id, started_at, status) "
                "values (?, ?, ?, 'running')",
                [
                    ["killed-old", None, now - timedelta(hours=5)],
                    ["killed-fresh", out["clean_run"]["flow_run_id"], now - timedelta(minutes=5)],
                    ["concurrent", None, now - timedelta(minutes=1)],
                ],
            )

        # 3. Zendesk works again; write-back goes to GitHub, whose secondary limit asks for an
        # hour's wait on every write: more than the 15-minute write-back budget.
        zd_fake.token = ZD_TOKEN
        gh.fail_next(403, retry_after=3600, method="POST", times=1000)
        github = [
            "[writeback]",
            'tracker = "github"',
            "[writeback.github]",
            f'base_url = "{gh.url}"',
            f'owner = "{gh.owner}"',
            f'repo = "{gh.repo}"',
        ]
        mtime_2 = snapshot.stat().st_mtime_ns
        t0 = time.perf_counter()
        out["writeback"] = _cli_run(_config(root, zd.url, ic.url, github))
        out["writeback_seconds"] = time.perf_counter() - t0
        out["writeback_run"] = _last_run(db)
        out["report_3"] = next((root / "reports").glob("*.md")).read_text(encoding="utf-8")
        out["snapshot_moved_3"] = snapshot.stat().st_mtime_ns != mtime_2
        out["gh_issues"] = len(gh.issues)
        out["states"] = {
            name: _flow_run_state(out[f"{name}_run"]["flow_run_id"])
            for name in ("clean", "failed_source", "writeback")
        }
        out["runs"] = dict(_sql(db, "select run_id, status from ops.runs"))
        yield out


def test_clean_run_exits_0_and_completes(world):
    code, err = world["clean"]
    assert code == 0, err
    run = world["clean_run"]
    assert run["status"] == "completed"
    assert run["summary"]["degraded_reasons"] == []
    assert run["summary"]["failed_sources"] == {}
    assert run["summary"]["writeback"]["status"] == "ok"
    assert world["states"]["clean"].name == "Completed"
    assert world["cursor_1"]  # Zendesk committed a cursor
    assert "degraded:" not in err


def test_a_failing_connector_does_not_stop_the_others_and_degrades_the_run(world):
    code, err = world["failed_source"]
    assert code == 3, err
    run = world["failed_source_run"]
    s = run["summary"]
    assert run["status"] == "degraded"
    # Not green: a FAILED-type state named Degraded (failure automations and the dashboard see it).
    assert world["states"]["failed_source"].is_failed()
    assert world["states"]["failed_source"].name == "Degraded"
    # Zendesk failed with a one-line masked reason; its cursor did not move.
    assert set(s["failed_sources"]) == {"zendesk"}
    reason = s["failed_sources"]["zendesk"]["reason"]
    assert s["failed_sources"]["zendesk"]["kind"] == "tickets"
    assert reason.startswith("AuthError:") and "\n" not in reason
    assert ZD_TOKEN not in reason and "rotated-elsewhere" not in reason
    assert world["cursor_2"] == world["cursor_1"]
    # The connector after it and the export files still loaded.
    assert s["loads"]["intercom"]["n_inserted"] == 3
    assert {"posthog", "github"} <= set(s["loads"])
    db = world["db"]
    assert _sql(
        db, "select count(*) from raw.intercom__conversations where conversation_id like 'ic-new-%'"
    ) == [(3,)]
    # The gate: a critical load-layer verdict on tickets blocks what depends on tickets only.
    status = dict(
        _sql(
            db,
            "select source_kind, is_writeback_blocked from quality.source_status where run_id = ?",
            [run["run_id"]],
        )
    )
    assert status["tickets"] is True and status["usage"] is False and status["bugs"] is False
    load_rows = _sql(
        db,
        "select verdict, reason from quality.table_status where run_id = ? and layer = 'load'",
        [run["run_id"]],
    )
    assert len(load_rows) == 1 and load_rows[0][0] == "fail" and "zendesk" in load_rows[0][1]
    blocked = world["suggestions_2"]  # as run 2 left them (run 3 rebuilt the marts)
    assert blocked, "the small world should still produce a suggestion"
    assert all(is_blocked == on_tickets for _, is_blocked, on_tickets in blocked), blocked
    assert s["n_blocked"] == sum(1 for _, b, _ in blocked if b)
    # Degraded is said everywhere: reasons, CLI, report; the snapshot was still published.
    assert any(r.startswith("zendesk failed to load: AuthError") for r in s["degraded_reasons"])
    assert "degraded: zendesk failed to load" in " ".join(err.split())
    report = world["report_2"]
    head = report.split("## Loads")[0]
    assert "DEGRADED" in head and "zendesk failed to load" in head
    assert "| zendesk | **FAILED**: AuthError" in report
    assert ZD_TOKEN not in report
    assert world["snapshot_moved_2"]


def test_a_failing_write_back_publishes_the_snapshot_and_exits_3(world):
    code, err = world["writeback"]
    assert code == 3, err
    run = world["writeback_run"]
    s = run["summary"]
    wb = s["writeback"]
    assert wb["tracker"] == "github"
    assert wb["status"] in ("partial", "failed", "uncertain")
    assert wb["counts"].get("not_attempted", 0) + wb["counts"].get("failed", 0) >= 1
    assert world["gh_issues"] == 0  # nothing got through
    assert s["failed_sources"] == {}  # the data run itself was fine
    assert run["status"] == "degraded"
    assert world["states"]["writeback"].name == "Degraded"
    assert world["snapshot_moved_3"]
    assert any(r.startswith(f"write-back to github {wb['status']}") for r in s["degraded_reasons"])
    head = world["report_3"].split("## Loads")[0]
    assert "DEGRADED" in head and f"write-back: **{wb['status'].upper()}" in head
    assert "write-back:" in err and wb["status"].upper() in err
    assert world["writeback_seconds"] < 120  # the hour-long wait was never started


def test_runs_that_died_are_marked_abandoned_by_the_next_run(world):
    runs = world["runs"]  # after run 3 started (start_run marks them first)
    for run_id in ("killed-old", "killed-fresh", "concurrent"):
        assert runs[run_id] == "abandoned", run_id
    assert runs[world["writeback_run"]["run_id"]] == "degraded"
    assert "running" not in runs.values()


def test_only_other_runs_rows_are_abandoned(tmp_path):
    from tasks import db as db_mod
    from tasks.steps import mark_abandoned_runs

    now = datetime.now(UTC)
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        db_mod.ensure_schema(con)
        con.executemany(
            "insert into ops.runs (run_id, started_at, status) values (?, ?, ?)",
            [
                ["dead", now - timedelta(hours=1), "running"],
                ["done", now - timedelta(hours=2), "completed"],
                ["mine", now, "running"],
            ],
        )
        marked = mark_abandoned_runs(con, now, "mine")
        rows = dict(con.sql("select run_id, status from ops.runs").fetchall())
        why = con.sql(
            "select summary->>'abandoned' from ops.runs where run_id = 'dead'"
        ).fetchall()[0]
    assert marked == ["dead"]
    assert rows == {"dead": "abandoned", "done": "completed", "mine": "running"}
    assert "found by run mine" in why[0]


def test_write_back_errors_end_as_failed_not_as_a_run_failure(tmp_path, monkeypatch):
    """An HTTP error escaping the tracker (a refused credential at its check) is a failed
    write-back with a masked one-line error, not an exception."""
    import logging

    from tasks import steps
    from tasks.clients.http import AuthError
    from tasks.settings import load_settings

    cfg = tmp_path / "c.toml"
    cfg.write_text('duckdb_path = "w.duckdb"\n[writeback]\ntracker_dir = "t"\n', encoding="utf-8")
    settings = load_settings(cfg)

    def refuse(_settings):
        raise AuthError("github", "HTTP 401 on GET /repos/a/b?access_token=ghp_secret123456")

    monkeypatch.setattr("tasks.trackers.factory.build_tracker", refuse)
    out = steps.run_write_back(
        settings, "2026-11-24", "r1", False, 5, "pass", logging.getLogger("test")
    )
    assert out["status"] == "failed" and out["plan"] == []
    assert out["error"].startswith("AuthError: github: HTTP 401")
    assert "ghp_secret123456" not in out["error"]


def test_run_help_documents_the_exit_codes():
    run = build_parser()._subparsers._group_actions[0].choices["run"]
    text = " ".join(run.format_help().split())
    for code in ("0 completed clean", "1 the run failed", "2 settings error", "3 Degraded"):
        assert code in text
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    assert "exit code 3" in readme.lower() or "| 3 |" in readme


def test_a_failing_file_source_does_not_stop_the_others(tmp_path, monkeypatch):
    """Export files too: PostHog's batch fails, GitHub's files still load; the failure carries
    its kind and a one-line reason without the contact details the message held."""
    import logging

    from tasks import load, steps
    from tasks.settings import FileSources, Settings
    from tests.conftest import github_issue, write_json

    write_json(tmp_path / "gh" / "issues-1.json", [github_issue(1)])
    (tmp_path / "ph").mkdir()
    (tmp_path / "ph" / "events.jsonl").write_text("{}\n", encoding="utf-8")
    settings = Settings(
        duckdb_path=tmp_path / "w.duckdb",
        sources=FileSources(
            posthog_events=str(tmp_path / "ph" / "*.jsonl"),
            zendesk_tickets="",
            github_issues=str(tmp_path / "gh" / "*.json"),
            accounts="",
        ),
    )
    real = load.load_source

    def posthog_breaks(con, spec, *a, **kw):
        if spec.source == "posthog":
            raise load.LoadError("posthog: loading events.jsonl failed:\nrow of jane@example.com")
        return real(con, spec, *a, **kw)

    monkeypatch.setattr(load, "load_source", posthog_breaks)
    monkeypatch.setattr(steps, "get_run_logger", lambda: logging.getLogger("test-isolation"))
    kinds = [steps.SourceKind.usage, steps.SourceKind.bugs]
    out = steps.load_sources.fn(settings, kinds, "r1", datetime.now(UTC))
    assert out["github"]["n_inserted"] == 1 and not out["github"].get("failed")
    failed = steps.failed_loads(out)
    assert failed == {
        "posthog": {"kind": "usage", "reason": "LoadError: posthog: loading events.jsonl failed:"}
    }
    assert out["posthog"]["errors"] == [failed["posthog"]["reason"]]
    assert "jane@example.com" not in steps.failure_reason(RuntimeError("mail jane@example.com"))
