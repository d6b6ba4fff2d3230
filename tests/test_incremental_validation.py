"""Incremental validation: row-level rules judge the rows loaded since the last validated
watermark (quality.validation_state); a changed suite or a full refresh judges every row again.

Small generated demo exports go through the real loader, staging models and the input gate
(real Great Expectations on DuckDB) in two batches: the first days, then the rest.
"""

from __future__ import annotations

import json
import logging
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from tasks import contracts, db, load, quality, transform
from tasks.clients.zendesk import ZENDESK_TICKETS_SPEC
from tasks.demo_data import DemoConfig, generate_demo_data
from tasks.redact import register_duckdb
from tasks.settings import EXPECTATIONS_DIR

END = datetime.now(UTC).date() - timedelta(days=1)  # the gate judges against the run's start
SALT = "incremental-salt"
FILES = (
    (contracts.POSTHOG_EVENTS, "posthog/*.jsonl"),
    (ZENDESK_TICKETS_SPEC, "zendesk/*.json"),
    (contracts.GITHUB_ISSUES, "github/*.json"),
)
VENDORS = ("github", "posthog", "zendesk")
ROW_TABLES = {"stg_usage_events", "stg_support_tickets", "stg_bug_issues"}


def _feed(demo: Path, feed: Path, *, first_batch: bool) -> None:
    """Copy the demo exports into `feed`: two thirds of the days and half the ticket pages, or
    all of them."""
    for sub in ("posthog", "zendesk", "github"):
        files = sorted((demo / sub).glob("*"))
        if first_batch and sub != "github":
            files = files[: len(files) * 2 // 3 if sub == "posthog" else len(files) // 2]
        (feed / sub).mkdir(parents=True, exist_ok=True)
        for f in files:
            if not (feed / sub / f.name).exists():
                shutil.copy2(f, feed / sub / f.name)


def _load(feed: Path, db_path: Path, run_id: str) -> None:
    with db.warehouse(db_path) as con:
        db.ensure_schema(con)
        register_duckdb(con, SALT)
        for spec, pattern in FILES:
            load.load_source(con, spec, str(feed / pattern), run_id)
        transform.build_staging(con, SALT)


def _gate(db_path: Path, run_id: str, **kw) -> dict[str, quality.TableVerdict]:
    gate = quality.check_inputs(
        db_path,
        quality.GateParams(run_id=run_id, run_started_at=datetime.now(UTC), vendors=VENDORS, **kw),
    )
    for v in gate.verdicts:
        assert v.rows_in == v.rows_accepted + v.rows_quarantined, v
    return {v.table: v for v in gate.verdicts}


def _sql(db_path: Path, query: str, params: list | None = None) -> list[tuple]:
    with duckdb.connect(str(db_path), read_only=True) as con:
        return con.execute(query, params or []).fetchall()


def _quarantine(db_path: Path) -> list[tuple]:
    return _sql(
        db_path,
        "select table_name, record_key, rule, reason, payload from quality.quarantine "
        "where stage = 'validate' order by all",
    )


def _staging(db_path: Path) -> dict[str, list[tuple]]:
    """Every row of the canonical (validated) staging tables, as comparable text."""
    out = {}
    for t in sorted(ROW_TABLES):
        columns = [
            c
            for (c,) in _sql(
                db_path,
                "select column_name from information_schema.columns "
                "where table_schema = 'staging' and table_name = ? order by ordinal_position",
                [t],
            )
            if c != "ingested_at"  # when the run loaded the row
        ]
        out[t] = _sql(db_path, f"select {', '.join(columns)} from staging.{t} order by all")
    return out


def _seen(db_path: Path, run_id: str, suite: str) -> set[int]:
    """Rows GX judged per row-level rule of `suite` in `run_id` (its element counts)."""
    rows = _sql(
        db_path,
        "select distinct element_count from quality.dq_results where run_id = ? "
        "and suite_name = ? and expectation_type in "
        "('expect_column_values_to_not_be_null', 'expect_column_values_to_be_in_set', "
        "'expect_column_values_to_be_null')",
        [run_id, suite],
    )
    return {r[0] for r in rows}


@pytest.fixture(scope="module")
def batches(tmp_path_factory):
    """Batch 1 validated (a first, full validation), then batch 2 validated incrementally in
    one warehouse and with a full refresh in a copy of it."""
    root = tmp_path_factory.mktemp("incremental")
    demo = root / "demo"
    generate_demo_data(DemoConfig(out_dir=demo, end_date=END, days=42, users=200, accounts=20))
    feed = root / "feed"
    inc, full = root / "inc.duckdb", root / "full.duckdb"
    _feed(demo, feed, first_batch=True)
    _load(feed, inc, "b1")
    first = _gate(inc, "b1")
    shutil.copy2(inc, full)
    _feed(demo, feed, first_batch=False)
    _load(feed, inc, "b2")
    second = _gate(inc, "b2")
    _load(feed, full, "b2")
    second_full = _gate(full, "b2", full_refresh=True)
    return {
        "root": root,
        "feed": feed,
        "inc": inc,
        "full": full,
        "first": first,
        "second": second,
        "second_full": second_full,
    }


def test_incremental_and_full_validation_give_the_same_quarantine_and_staging(batches):
    first, second, full = batches["first"], batches["second"], batches["second_full"]
    assert {first[t].mode for t in ROW_TABLES} == {"full"}  # the first validation
    assert {second[t].mode for t in ROW_TABLES} == {"incremental"}
    assert {full[t].mode for t in ROW_TABLES} == {"full"}  # --full-refresh
    # The second batch alone was judged: its rows are the table's rows minus the first batch's
    # (tickets updated by batch 2 are judged again, so they count in both).
    usage = "stg_usage_events"
    assert second[usage].rows_in == full[usage].rows_in - first[usage].rows_in > 0
    assert 0 < second["stg_support_tickets"].rows_in < full["stg_support_tickets"].rows_in
    assert _quarantine(batches["inc"]) == _quarantine(batches["full"])
    assert _quarantine(batches["inc"])  # the demo plants bad rows: something to compare
    assert _staging(batches["inc"]) == _staging(batches["full"])
    volume = "select * from quality.volume_daily order by all"
    assert _sql(batches["inc"], volume) == _sql(batches["full"], volume)
    # the per-day counts behind it, kept for the days each batch touched, equal a recount
    counts = "select * from quality.volume_day_counts order by all"
    assert _sql(batches["inc"], counts) == _sql(batches["full"], counts)
    assert len(_sql(batches["inc"], counts)) > 40
    assert {v.table: v.verdict for v in second.values()} == {
        v.table: v.verdict for v in full.values()
    }


def test_no_new_rows_validates_nothing_and_keeps_verdicts_and_quarantine(batches):
    db_path = batches["inc"]
    before = _quarantine(db_path)
    again = _gate(db_path, "b3")
    for t in ROW_TABLES:
        v = again[t]
        assert (v.mode, v.rows_in, v.rows_accepted, v.rows_quarantined) == (
            "incremental",
            0,
            0,
            0,
        ), v
        assert _seen(db_path, "b3", t) == {0}  # GX saw the empty batch, not the table
    assert {t: v.verdict for t, v in again.items()} == {
        t: v.verdict for t, v in batches["second"].items()
    }
    assert _quarantine(db_path) == before
    assert _sql(db_path, "select count(*) from quality.validation_batches where run_id = 'b3'") == [
        (len(again),)
    ]
    # the batch relations are gone again
    assert _sql(
        db_path,
        "select count(*) from duckdb_views() where view_name like '%\\_\\_batch' escape '\\' "
        "union all select count(*) from duckdb_tables() "
        "where table_name like '%\\_\\_batch' escape '\\'",
    ) == [(0,), (0,)]


def test_a_new_bad_row_is_quarantined_without_rereading_old_rows(batches, tmp_path):
    db_path = tmp_path / "w.duckdb"
    shutil.copy2(batches["inc"], db_path)
    feed = tmp_path / "feed"
    shutil.copytree(batches["feed"], feed)
    before = _quarantine(db_path)
    day = f"{END.isoformat()}T09:00:00+00:00"
    good = {"uuid": "incr-good-1", "event": "export_started", "distinct_id": "u-new",
            "timestamp": day, "properties": {"$pathname": "/exports"}}  # fmt: skip
    bad = {**good, "uuid": "incr-bad-1", "distinct_id": None}  # no user: quarantined
    (feed / "posthog" / "zz-late.jsonl").write_text(
        "\n".join(json.dumps(r) for r in (good, bad)) + "\n", encoding="utf-8"
    )
    _load(feed, db_path, "b4")
    run = _gate(db_path, "b4")

    usage = run["stg_usage_events"]
    assert (usage.mode, usage.rows_in, usage.rows_accepted, usage.rows_quarantined) == (
        "incremental",
        2,
        1,
        1,
    )
    assert _seen(db_path, "b4", "stg_usage_events") == {2}  # GX read the two new rows only
    assert run["raw_posthog__events"].rows_in == 2
    assert run["stg_support_tickets"].rows_in == 0
    after = _quarantine(db_path)
    new = [r for r in after if r not in before]
    assert [(r[1], r[3]) for r in new] == [("posthog:incr-bad-1", "missing_user_key")]
    assert set(before) <= set(after)  # earlier quarantine stays
    staged = _sql(
        db_path,
        "select event_id from staging.stg_usage_events where event_id like 'posthog:incr-%'",
    )
    assert staged == [("posthog:incr-good-1",)]

    # The same event re-delivered fixed (a newer version): in the next batch, judged again,
    # it leaves quarantine.
    fixed = {**bad, "distinct_id": "u-fixed", "timestamp": f"{END.isoformat()}T10:00:00+00:00"}
    (feed / "posthog" / "zz-later.jsonl").write_text(json.dumps(fixed) + "\n", encoding="utf-8")
    _load(feed, db_path, "b5")
    run = _gate(db_path, "b5")
    assert run["stg_usage_events"].rows_in == 1
    assert _quarantine(db_path) == before
    assert _sql(
        db_path,
        "select count(*) from staging.stg_usage_events where event_id = 'posthog:incr-bad-1'",
    ) == [(1,)]


def test_a_changed_suite_validates_every_row_again(batches, tmp_path, monkeypatch, caplog):
    db_path = tmp_path / "w.duckdb"
    shutil.copy2(batches["inc"], db_path)
    suites = tmp_path / "expectations"
    shutil.copytree(EXPECTATIONS_DIR, suites)
    path = suites / "stg_support_tickets.json"
    suite = json.loads(path.read_text(encoding="utf-8"))
    suite["expectations"][1]["description"] += " (edited)"
    path.write_text(json.dumps(suite, indent=2), encoding="utf-8")
    monkeypatch.setattr(quality, "EXPECTATIONS_DIR", suites)
    total = _sql(db_path, "select count(*) from staging.stg_support_tickets__unvalidated")[0][0]

    with caplog.at_level(logging.INFO, logger="tasks.quality"):
        run = _gate(db_path, "b6")

    tickets = run["stg_support_tickets"]
    assert (tickets.mode, tickets.rows_in) == ("full", total)
    assert _seen(db_path, "b6", "stg_support_tickets") == {total}
    assert run["stg_usage_events"].mode == "incremental"  # its suite did not change
    assert run["stg_usage_events"].rows_in == 0
    assert "suite stg_support_tickets changed" in caplog.text
    assert _quarantine(db_path) == _quarantine(batches["inc"])
    stored = _sql(
        db_path,
        "select suite_hash from quality.validation_state where table_name = ?",
        ["staging.stg_support_tickets"],
    )
    assert stored == [(quality.suite_hash("stg_support_tickets"),)]
