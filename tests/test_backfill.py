"""Backfill and replay: the `backfill` flow scores a range of past days and writes nothing back;
a backdated `nightly` run writes nothing unless allowed, and never posts a recovery.

One warehouse for the module (real DuckDB, real Prefect flow runs, the Markdown tracker):
a backfill on a fresh warehouse, a normal run, a backdated run, an allowed backdated run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
import yaml

from flows.cli import build_parser, deployment_flow
from tasks import history, steps, writeback
from tasks.demo_data import DemoConfig, generate_demo_data
from tasks.settings import PROJECT_ROOT, load_settings
from tasks.trackers.markdown import MarkdownTracker
from tests.helpers import cli, demo_config, sql
from tests.test_writeback import suggestion

END = date(2026, 11, 24)  # the last day of data: the newest day a normal run scores
# The backfill: the day before the first event (no usage in its window) and the first day.
FIRST, LAST = date(2026, 10, 10), date(2026, 10, 11)
OLD = date(2026, 11, 17)  # the backdated runs' as-of day


_cli, _sql = cli, sql


def _last_run(db: Path) -> dict:
    run_id, kind, status, as_of, summary = _sql(
        db,
        "select run_id, kind, status, as_of_date, summary from ops.runs "
        "order by started_at desc limit 1",
    )[0]
    return {
        "run_id": run_id,
        "kind": kind,
        "status": status,
        "as_of": as_of,
        "summary": json.loads(summary),
    }


def _tracker_state(root: Path) -> dict[str, tuple[int, str]]:
    return {
        p.name: (p.stat().st_mtime_ns, p.read_text(encoding="utf-8"))
        for p in sorted((root / "tracker").glob("*"))
    }


def _ledger(db: Path) -> list[tuple]:
    return _sql(db, "select * from ops.writeback_ledger order by fingerprint")


@pytest.fixture(scope="module")
def world(tmp_path_factory, prefect_api):
    root = tmp_path_factory.mktemp("backfill")
    generate_demo_data(
        DemoConfig(out_dir=root / "demo", end_date=END, days=45, users=400, accounts=40)
    )
    config = demo_config(root / "config.toml")
    db = root / "feedback.duckdb"
    cfg = str(config)
    out: dict = {"root": root, "db": db, "config": config}
    # 1. a backfill on a fresh warehouse, through the CLI
    out["backfill"] = _cli(["backfill", "--from", f"{FIRST}", "--to", f"{LAST}", "--config", cfg])
    out["backfill_run"] = _last_run(db)
    out["backfill_tracker"] = (root / "tracker").exists()
    out["backfill_ledger"] = _ledger(db)
    out["backfill_marts"] = _sql(
        db, "select as_of_date, count(*) from marts.feature_health group by all order by 1"
    )
    out["artifacts"], out["logs"] = _prefect_records(out["backfill_run"]["run_id"], db)
    out["reports_1"] = _reports(root)
    # 2. a normal run (as of the last data day): issues created
    out["normal"] = _cli(["run", "--config", cfg])
    out["normal_run"] = _last_run(db)
    out["tracker_1"], out["ledger_1"] = _tracker_state(root), _ledger(db)
    # 3. a backdated run, not a dry run: nothing written
    out["backdated"] = _cli(["run", "--as-of", f"{OLD}", "--config", cfg])
    out["backdated_run"] = _last_run(db)
    out["tracker_2"], out["ledger_2"] = _tracker_state(root), _ledger(db)
    out["reports_3"] = _reports(root)
    # 4. an open issue whose problem is absent from both days: the newest day would
    # comment on its recovery; the backdated run, allowed to write, must not
    settings = load_settings(config)
    tracker = MarkdownTracker(settings.writeback.tracker_dir)
    with duckdb.connect(str(db)) as con:
        plan = writeback.plan_writeback(con, tracker, [suggestion("health:ghost")], 5)
        writeback.apply_plan(con, tracker, [p for p in plan if p.action == "create"], "seed")
    out["ghost_before"] = (root / "tracker" / "health-ghost.md").read_text(encoding="utf-8")
    out["allowed"] = _cli(
        ["run", "--as-of", f"{OLD}", "--allow-backdated-writeback", "--config", cfg]
    )
    out["allowed_run"] = _last_run(db)
    out["ghost_after"] = (root / "tracker" / "health-ghost.md").read_text(encoding="utf-8")
    # 5. the newest day's write-back step (dry run): it plans the recovery
    out["newest"] = steps.run_write_back(
        settings, END.isoformat(), "newest", True, 5, "pass", logging.getLogger("test")
    )
    # 6. the report with a week of history: the missing days are scored first
    out["tracker_5"], out["ledger_5"] = _tracker_state(root), _ledger(db)
    out["fill"] = _cli(
        ["report", "--fill-history", "--days", "7", "--as-of", f"{END}", "--config", cfg]
    )
    out["fill_days"] = _sql(
        db,
        "select as_of_date, count(*) from marts.feature_health where as_of_date > ? "
        "group by all order by 1",
        [END - timedelta(days=7)],
    )
    out["tracker_6"], out["ledger_6"] = _tracker_state(root), _ledger(db)
    out["reports_6"] = _reports(root)
    return out


def _reports(root: Path) -> dict[str, str]:
    """The report pages by file name, with the as-of date each one shows."""
    return {
        p.name: p.read_text(encoding="utf-8").split("<title>")[1].split("</title>")[0]
        for p in sorted((root / "reports").glob("*.html"))
    }


def _prefect_records(run_id: str, db: Path) -> tuple[dict, list[str]]:
    """The artifacts (by key) and the log messages of the flow run behind ops.runs `run_id`."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )

    flow_run_id = UUID(
        _sql(db, "select flow_run_id from ops.runs where run_id = ?", [run_id])[0][0]
    )

    async def read():
        async with get_client() as client:
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])
                )
            )
            logs = await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
            )
        return {a.key: a for a in artifacts}, [entry.message for entry in logs]

    # Run logs reach the API in batches: wait (bounded) until the flow's last line is there.
    deadline = time.monotonic() + 30
    while True:
        artifacts, logs = asyncio.run(read())
        if any("day(s) scored, snapshot published" in m for m in logs):
            return artifacts, logs
        assert time.monotonic() < deadline, f"the backfill's logs did not arrive: {logs[-5:]}"
        time.sleep(0.5)


def test_backfill_scores_every_day_and_writes_nothing_back(world):
    code, out, err = world["backfill"]
    assert code == 0, err
    days = ["2026-10-10", "2026-10-11"]
    for i, day in enumerate(days, start=1):
        assert any(m.startswith(f"day {i}/2 {day}: ") for m in world["logs"])  # progress
        assert day in out  # the table at the end
    run = world["backfill_run"]
    assert (run["kind"], run["status"], run["as_of"]) == ("backfill", "completed", LAST)
    s = run["summary"]
    assert [r["as_of"] for r in s["days"]] == days
    assert all(r["features"] > 0 and r["dq_verdict"] == "pass" for r in s["days"])
    before, first = s["days"]  # a day without usage data has a clear result, not a crash
    assert before["note"] == "no usage data in the window" and first["note"] == ""
    assert "no usage data in the window" in out
    assert s["tracker_writes"] == 0 and s["degraded_reasons"] == []
    # the marts hold one set of rows per backfilled day, and only those
    assert [(d.isoformat(), n) for d, n in world["backfill_marts"]] == [
        (r["as_of"], r["features"]) for r in s["days"]
    ]
    # nothing reached the tracker: no folder, no ledger row
    assert world["backfill_tracker"] is False and world["backfill_ledger"] == []
    table = json.loads(world["artifacts"]["backfill-days"].data)
    assert [r["as_of"] for r in table] == days
    assert {"features", "suggestions", "dq_verdict", "seconds"} <= set(table[0])
    assert (world["root"] / "feedback_analyst.duckdb").exists()


def test_backdated_run_writes_nothing_and_says_why(world):
    assert world["normal"][0] == 0 and world["normal_run"]["kind"] == "manual"
    assert world["tracker_1"], "the normal run created issues"
    code, out, err = world["backdated"]
    assert code == 0, err  # nothing written by design is a clean run, not Degraded
    run = world["backdated_run"]
    assert run["status"] == "completed" and run["as_of"] == OLD
    wb = run["summary"]["writeback"]
    assert wb["status"] == "backdated" and wb["counts"] == {}
    assert wb["backdating"]["newest_scored_day"] == END.isoformat()
    plan = run["summary"]["plan"]
    why = f"backdated run (as_of {OLD} < newest scored day {END}): nothing written"
    assert plan and all(p["action"] == "skip" and why in p["reason"] for p in plan)
    assert run["summary"]["degraded_reasons"] == []
    assert world["tracker_2"] == world["tracker_1"]  # no file created or touched
    assert world["ledger_2"] == world["ledger_1"]
    assert "backdated, nothing written" in err and "backdated run: nothing written" in out


def test_allowed_backdated_run_never_plans_a_recovery_the_newest_day_does(world):
    code, _, err = world["allowed"]
    assert code == 0, err
    run = world["allowed_run"]
    plan = {p["fingerprint"]: p for p in run["summary"]["plan"]}
    assert run["summary"]["writeback"]["status"] == "ok"
    assert not {p["action"] for p in plan.values()} & {"comment", "close", "reopen"}
    ghost = plan["health:ghost"]
    assert ghost["action"] == "skip" and "this run is backdated" in ghost["reason"]
    assert world["ghost_after"] == world["ghost_before"]
    assert any(p["action"] in ("create", "update") for p in plan.values())  # it may write
    newest = {p["fingerprint"]: p for p in world["newest"]["plan"]}
    assert newest["health:ghost"]["action"] == "comment"
    assert world["newest"]["backdating"]["is_backdated"] is False


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--from", "2026-11-05", "--to", "2026-11-01"], "end 2026-11-01 is before start"),
        (["--from", "2025-01-01", "--to", "2026-11-01"], "at most 400"),
        (["--from", "2026-11-01", "--to", "2026-11-02", "--window-days", "3"], "out of range"),
    ],
)
def test_backfill_argument_errors_are_one_line_and_exit_2(argv, says):
    code, out, err = _cli(["backfill", *argv])
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error:") and says in err


def test_day_range_is_inclusive_and_bounded():
    assert history.day_range(FIRST, date(2026, 10, 12)) == [FIRST, LAST, date(2026, 10, 12)]
    assert history.day_range(FIRST, FIRST) == [FIRST]
    assert len(history.day_range(date(2025, 1, 1), date(2026, 2, 4))) == 400
    with pytest.raises(ValueError, match="at most 400"):
        history.day_range(date(2025, 1, 1), date(2026, 2, 5))
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    with pytest.raises(ValueError, match="in the future"):
        history.day_range(tomorrow - timedelta(days=3), tomorrow)


def test_serve_builds_each_deployment_from_its_own_flow():
    spec = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    by_name = {d["name"]: d for d in spec["deployments"]}
    assert {n: deployment_flow(d).name for n, d in by_name.items()} == {
        "nightly": "nightly",
        "manual": "nightly",
        "backfill": "backfill",
        "extract": "extract",
    }
    assert not by_name["backfill"].get("schedules")
    assert not by_name["extract"].get("schedules")  # started by the nightly only
    assert by_name["extract"]["work_pool"] == by_name["nightly"]["work_pool"]
    assert by_name["backfill"]["tags"] == ["feedback-loop", "backfill"]
    assert by_name["backfill"]["work_pool"] == by_name["nightly"]["work_pool"]
    backfill = build_parser().parse_args(["backfill", "--from", "2026-11-01", "--to", "2026-11-02"])
    assert (backfill.start, backfill.load) == (date(2026, 11, 1), True)


def test_backfill_and_backdated_runs_write_their_day_but_latest_stays_the_newest(world):
    assert world["reports_1"] == {
        f"{LAST}.html": f"Feedback loop report {LAST}",
        "latest.html": f"Feedback loop report {LAST}",  # the newest day scored so far
    }
    # the normal run (END) then the backdated run (OLD): OLD gets its page, latest stays END
    assert world["reports_3"] == {
        f"{LAST}.html": f"Feedback loop report {LAST}",
        f"{OLD}.html": f"Feedback loop report {OLD}",
        f"{END}.html": f"Feedback loop report {END}",
        "latest.html": f"Feedback loop report {END}",
    }
    code, out, _ = world["normal"]
    assert code == 0 and f"report: {world['root'] / 'reports' / f'{END}.html'}" in out


def test_report_fill_history_scores_the_missing_days_then_draws_them(world):
    code, out, err = world["fill"]
    assert code == 0, err
    week = [END - timedelta(days=i) for i in range(6, -1, -1)]
    # END was scored by the normal run, the six days before it by the fill (OLD lies before)
    assert [d for d, _ in world["fill_days"]] == week
    assert "scoring 6 missing day(s)" in " ".join(err.split())
    assert "7 of 7 days scored" in " ".join(err.split())
    assert world["tracker_6"] == world["tracker_5"] and world["ledger_6"] == world["ledger_5"]
    assert world["reports_6"]["latest.html"] == f"Feedback loop report {END}"
    page = (world["root"] / "reports" / f"{END}.html").read_text(encoding="utf-8")
    assert "Health: 7 of the last 7 days are scored" in page and "more can be" not in page
