"""The analyst snapshot (tasks/db.py publish_snapshot): small tables copied, the raw event tables
kept as Parquet day files read by views of the same name; a publish rewrites only the days that
changed, swaps the file in atomically and answers every query like the live warehouse."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from tasks import db, transform
from tests.test_nightly_e2e import old_duckdb  # noqa: F401  (session fixture: DuckDB 1.1.3)

DAY1 = datetime(2026, 11, 20, 23, 30, tzinfo=UTC)  # a load just before midnight UTC


def _add_events(con, n: int, loaded_at: datetime, start: int = 0, prefix: str = "e") -> None:
    """n PostHog events landed at `loaded_at` (raw.posthog__events as the loader writes it)."""
    con.execute(
        """
        insert into raw.posthog__events
        select ? || i, 'export_started', 'user-' || (i % 7),
               to_json(strftime(?::timestamptz - interval (i % 48) hour, '%Y-%m-%dT%H:%M:%SZ')),
               json_object('$pathname', '/exports',
                           '$groups', json_object('company', 'a' || i % 3)),
               'cursor', 'events.jsonl', 'batch-' || ?, ?::timestamptz
        from range(?, ? + ?) as r (i)
        """,
        [prefix, loaded_at, loaded_at.isoformat(), loaded_at, start, start, n],
    )


@pytest.fixture
def wh(tmp_path: Path):
    """A warehouse with events loaded on two UTC days and the staging views built on them."""
    path = tmp_path / "w.duckdb"
    con = duckdb.connect(str(path))
    db.ensure_schema(con)
    _add_events(con, 300, DAY1)
    _add_events(con, 200, DAY1 + timedelta(hours=1), start=300)  # 00:30 the next day
    transform.build_staging(con, "salt")
    yield {"con": con, "path": path, "snap": tmp_path / "analyst.duckdb"}
    con.close()


def _publish(wh, mode: str = "parquet") -> db.SnapshotStats:
    return db.publish_snapshot(wh["con"], wh["path"], wh["snap"], mode=mode)


def _fingerprint(con, relation: str) -> tuple:
    """Row count and an order-independent digest of every value of every row."""
    return con.sql(
        f"select count(*), md5(coalesce(string_agg(x::varchar, chr(10) order by x::varchar), '')) "
        f"from {relation} as x"
    ).fetchall()[0]


def _files(snap: Path) -> dict[str, tuple[int, int]]:
    """Parquet file (relative) -> (inode, mtime_ns)."""
    folder = db.parquet_dir(snap)
    return {
        p.relative_to(folder).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in folder.rglob("*.parquet")
    }


def _days(files) -> dict[str, str]:
    return {f.split("/")[1]: f for f in files}


EVENT_RELATIONS = [
    "raw.posthog__events",
    "staging.stg_posthog__events",
    "staging.stg_usage_events__unvalidated",
    "staging.stg_usage_events",
]


def _same_as_live(wh, relations=EVENT_RELATIONS) -> None:
    snap = duckdb.connect(str(wh["snap"]), read_only=True)
    try:
        for rel in relations:
            assert _fingerprint(snap, rel) == _fingerprint(wh["con"], rel), rel
            # the same column names and types (a view's columns carry no NOT NULL)
            cols = f"select column_name, column_type from (describe {rel})"
            assert snap.sql(cols).fetchall() == wh["con"].sql(cols).fetchall(), rel
    finally:
        snap.close()


def test_event_tables_are_parquet_views_answering_like_the_warehouse(wh):
    stats = _publish(wh)
    assert stats.parquet_tables == ["raw.posthog__events"]
    assert stats.days_written == 2 and stats.rows_written == 500
    assert sorted(_days(_files(wh["snap"]))) == ["day=2026-11-20", "day=2026-11-21"]
    _same_as_live(wh)
    snap = duckdb.connect(str(wh["snap"]), read_only=True)
    try:
        kinds = dict(
            snap.sql(
                "select table_schema || '.' || table_name, table_type "
                "from information_schema.tables"
            ).fetchall()
        )
        live_tables = [
            r[0]
            for r in wh["con"]
            .sql(
                "select table_schema || '.' || table_name from information_schema.tables "
                "where table_type = 'BASE TABLE' and table_catalog = current_database()"
            )
            .fetchall()
        ]
        # the event table became a view; every other table is still a table, with its rows
        assert kinds["raw.posthog__events"] == "VIEW"
        for rel in live_tables:
            if rel != "raw.posthog__events":
                assert kinds[rel] == "BASE TABLE", rel
                assert _fingerprint(snap, rel) == _fingerprint(wh["con"], rel), rel
        comment = snap.sql(
            "select comment from duckdb_views() where view_name = 'posthog__events'"
        ).fetchall()[0][0]
    finally:
        snap.close()
    assert comment.startswith("grain: one row per PostHog event") and "Parquet" in comment


def test_an_idle_publish_rewrites_no_parquet_day(wh):
    _publish(wh)
    before = _files(wh["snap"])
    again = _publish(wh)
    assert again.days_written == 0 and again.bytes_written == 0 and again.days_kept == 2
    assert _files(wh["snap"]) == before  # same files, same inodes, same mtimes
    _same_as_live(wh)


def test_a_new_day_rewrites_only_that_day(wh):
    _publish(wh)
    before = _files(wh["snap"])
    _add_events(wh["con"], 50, DAY1 + timedelta(days=2), start=500)
    stats = _publish(wh)
    assert (stats.days_written, stats.rows_written, stats.days_kept) == (1, 50, 2)
    after = _files(wh["snap"])
    assert sorted(_days(after)) == ["day=2026-11-20", "day=2026-11-21", "day=2026-11-22"]
    for rel, stamp in before.items():  # the old days' files are untouched
        assert after[rel] == stamp, rel
    _same_as_live(wh)


def test_a_replaced_or_deleted_row_rewrites_the_day_it_left(wh):
    _publish(wh)
    first = _files(wh["snap"])
    day1, day2 = sorted(_days(first).items())
    con = wh["con"]
    # a newer version of event e5 (loaded on day 1) lands today: the loader deletes the old row
    # and inserts the new one; and one day-2 row is deleted outright
    con.execute("delete from raw.posthog__events where event_id in ('e5', 'e310')")
    _add_events(con, 1, DAY1 + timedelta(days=3), start=5)
    stats = _publish(wh)
    assert stats.days_written == 3 and stats.days_kept == 0
    # new files for both days (the old ones stay one more publish, for open readers)
    written = set(_files(wh["snap"])) - set(first)
    assert {f.split("/")[1] for f in written} >= {day1[0], day2[0]}
    _same_as_live(wh)


def test_an_open_reader_of_the_old_snapshot_keeps_working(wh):
    _publish(wh)
    reader = duckdb.connect(str(wh["snap"]), read_only=True)
    try:
        old = _fingerprint(reader, "staging.stg_usage_events")
        _add_events(wh["con"], 40, DAY1 + timedelta(days=2), start=500)
        wh["con"].execute("delete from raw.posthog__events where event_id = 'e310'")  # day 2
        _publish(wh)
        # the old session still reads the old copy and its files, unchanged
        assert _fingerprint(reader, "staging.stg_usage_events") == old
        assert old[0] == 500
    finally:
        reader.close()
    _same_as_live(wh)
    # the replaced day-2 file is kept for the previous snapshot, then deleted by the next publish
    assert len(_days(_files(wh["snap"]))) == 3 and len(_files(wh["snap"])) == 4
    stats = _publish(wh)
    assert stats.files_deleted == 1 and len(_files(wh["snap"])) == 3


def test_rows_added_to_a_published_day_are_one_more_part(wh):
    """A second load on the same UTC day (a run by hand after the nightly) writes only its own
    rows, as one more part file of that day; the old files stay untouched. A day that reached
    MAX_DAY_PARTS, or lost a row, is written again as one file."""
    _publish(wh)
    before = _files(wh["snap"])
    _add_events(wh["con"], 10, DAY1 + timedelta(hours=2), start=500)  # day 2, a later load
    stats = _publish(wh)
    assert (stats.parts_appended, stats.days_written, stats.rows_written) == (1, 0, 10)
    after = _files(wh["snap"])
    assert {rel: after[rel] for rel in before} == before and len(after) == 3
    _same_as_live(wh)
    for i in range(db.MAX_DAY_PARTS - 2):  # up to MAX_DAY_PARTS parts on day 2
        _add_events(wh["con"], 5, DAY1 + timedelta(hours=3 + i), start=600 + 10 * i)
        assert _publish(wh).parts_appended == 1
    day2 = [f for f in _files(wh["snap"]) if "day=2026-11-21" in f]
    assert len(day2) == db.MAX_DAY_PARTS
    _add_events(wh["con"], 5, DAY1 + timedelta(hours=12), start=900)
    stats = _publish(wh)
    assert (stats.parts_appended, stats.days_written) == (0, 1)  # compacted into one file
    _same_as_live(wh)
    _add_events(wh["con"], 5, DAY1 + timedelta(hours=13), start=950)
    wh["con"].execute("delete from raw.posthog__events where event_id = 'e300'")  # day 2 loses one
    stats = _publish(wh)
    assert (stats.parts_appended, stats.days_written) == (0, 1)
    _same_as_live(wh)
    _publish(wh)  # the files of the replaced snapshot go one publish later
    assert len([f for f in _files(wh["snap"]) if "day=2026-11-21" in f]) == 1


def test_the_user_day_rollup_is_parquet_by_activity_day_rewritten_only_where_it_changed(wh):
    """intermediate.int_feature_user_days (history-sized) is a view over one Parquet file per
    activity_date; a publish rewrites only the days whose rows changed (recomputed whole by the
    rollup), found by row count and row digest."""
    con = wh["con"]
    con.execute(
        "create table intermediate.int_feature_user_days as select 'exports' as feature_key, "
        "'user-' || (i % 40) as user_key, 'acct' as account_key, "
        "date '2026-11-01' + (i // 40)::int as activity_date, 1 + i % 3 as n_events "
        "from range(200) as r (i)"
    )
    stats = _publish(wh)
    assert "intermediate.int_feature_user_days" in stats.parquet_tables
    rollup = "intermediate.int_feature_user_days"
    days = sorted(f for f in _files(wh["snap"]) if f.startswith(rollup))
    assert len(days) == 5  # 2026-11-01 .. 05
    _same_as_live(wh, [rollup])
    before = _files(wh["snap"])
    assert _publish(wh).days_written == 0
    # the rollup recomputes 11-03: same row count, one changed value -> only that day is new
    con.execute(
        f"update {rollup} set n_events = n_events + 1 "
        "where activity_date = '2026-11-03' and user_key = 'user-7'"
    )
    stats = _publish(wh)
    assert (stats.days_written, stats.rows_written) == (1, 40)
    changed = {f for f, stamp in _files(wh["snap"]).items() if before.get(f) != stamp}
    assert [f.split("/")[1] for f in changed] == ["day=2026-11-03"]
    _same_as_live(wh, [rollup])
    snap = duckdb.connect(str(wh["snap"]), read_only=True)
    try:
        kind = snap.sql(
            "select table_type from information_schema.tables "
            "where table_name = 'int_feature_user_days'"
        ).fetchall()
    finally:
        snap.close()
    assert kind == [("VIEW",)]


def test_a_missing_parquet_file_is_written_again(wh):
    _publish(wh)
    lost = sorted(_files(wh["snap"]))[0]
    (db.parquet_dir(wh["snap"]) / lost).unlink()
    stats = _publish(wh)
    assert stats.days_written == 1 and stats.days_kept == 1
    _same_as_live(wh)


def test_full_mode_is_one_standalone_file(wh, tmp_path):
    stats = _publish(wh, mode="full")
    assert stats.parquet_tables == [] and not db.parquet_dir(wh["snap"]).exists()
    snap = duckdb.connect(str(wh["snap"]), read_only=True)
    try:
        kind = snap.sql(
            "select table_type from information_schema.tables where table_name = 'posthog__events'"
        ).fetchall()
    finally:
        snap.close()
    assert kind == [("BASE TABLE",)]
    _same_as_live(wh)


def test_duckdb_1_1_and_the_1x_cli_read_the_parquet_views(wh, old_duckdb):  # noqa: F811
    _publish(wh)
    queries = {
        "raw": "select count(*), md5(string_agg(event_id || properties::varchar, ',' "
        "order by event_id)) from raw.posthog__events",
        "staging": "select count(*), count(distinct user_key), min(occurred_at)::date::varchar "
        "from staging.stg_usage_events",
    }
    live = {k: [list(r) for r in wh["con"].sql(q).fetchall()] for k, q in queries.items()}
    script = (
        "import duckdb, json, sys\n"
        "con = duckdb.connect(sys.argv[1], read_only=True)\n"
        "qs = json.loads(sys.argv[2])\n"
        "print(json.dumps({k: [list(r) for r in con.sql(q).fetchall()] for k, q in qs.items()}))\n"
    )
    done = subprocess.run(
        [str(old_duckdb / "bin" / "python"), "-c", script, str(wh["snap"]), json.dumps(queries)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout) == live
    cli = subprocess.run(
        [str(old_duckdb / "bin" / "duckdb"), "-readonly", "-csv", "-noheader", str(wh["snap"])],
        input="select count(*) from staging.stg_usage_events;\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0 and "Error" not in cli.stderr, cli.stderr[-2000:]
    assert cli.stdout.strip() == "500"


# -------------------------------------------------- the demo nightly's snapshot (shared run)
SCHEMAS = ["raw", "staging", "intermediate", "quality", "marts", "ops"]
DIGESTED = [
    "raw.posthog__events",
    "staging.stg_usage_events",
    "staging.stg_support_tickets",
    "intermediate.int_feature_user_days",
    "marts.feature_health",
    "marts.latest_suggestions",
]


def test_the_demo_snapshot_answers_like_the_warehouse_for_every_relation(demo_nightly):
    root = demo_nightly["root"]
    live = duckdb.connect(str(root / "feedback.duckdb"), read_only=True)
    snap = duckdb.connect(str(root / "feedback_analyst.duckdb"), read_only=True)
    try:
        relations = [
            r[0]
            for r in live.execute(
                "select table_schema || '.' || table_name from information_schema.tables "
                "where table_catalog = current_database() and table_schema in ? order by 1",
                [SCHEMAS],
            ).fetchall()
        ]
        assert len(relations) > 50
        skipped = [r for r in relations if r in db.SNAPSHOT_SKIP]
        assert (
            skipped == ["quality.volume_rows"]
            and not snap.sql(
                "select * from information_schema.tables where table_schema || '.' || table_name "
                "= 'quality.volume_rows'"
            ).fetchall()
        )
        for rel in (r for r in relations if r not in db.SNAPSHOT_SKIP):
            if rel == "ops.runs":  # the live row gets the snapshot's own seconds afterwards
                continue
            count = f"select count(*) from {rel}"
            assert snap.sql(count).fetchall() == live.sql(count).fetchall(), rel
        for rel in DIGESTED:
            assert _fingerprint(snap, rel) == _fingerprint(live, rel), rel
        raw_kind = snap.sql(
            "select table_type from information_schema.tables where table_name = 'posthog__events'"
        ).fetchall()
    finally:
        live.close()
        snap.close()
    assert raw_kind == [("VIEW",)]
    # the second (idle) night of the pair wrote no Parquet day: every file predates its run
    second_started = demo_nightly["second"].result()["run_id"]
    folder = db.parquet_dir(root / "feedback_analyst.duckdb")
    manifest = json.loads((folder / "_manifest.json").read_text(encoding="utf-8"))
    files = list(folder.rglob("*.parquet"))
    parts = [p for t in manifest["tables"].values() for d in t["days"].values() for p in d["parts"]]
    assert len(files) == len(parts) > 0
    started = datetime.strptime(second_started.split("-")[0], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    assert all(datetime.fromtimestamp(p.stat().st_mtime, UTC) < started for p in files)
