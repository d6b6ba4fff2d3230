"""The Parquet raw event store (tasks/rawstore.py, raw_events_store = "parquet"): old event days
move out of the warehouse file to Parquet day files, the *_all views read both, marts stay
identical to the warehouse store (incremental and full refresh), a re-delivered old event is
not counted twice, a crash mid-move loses nothing and doubles nothing, retention deletes old
days; the same on S3 through a local moto server."""

from __future__ import annotations

import json
import shutil
from datetime import date, timedelta
from pathlib import Path

import pytest

from tasks import catalog, contracts, db, load, rawstore, transform
from tasks.demo_data import DemoConfig, generate_demo_data
from tasks.redact import register_duckdb
from tasks.settings import DEFAULT_CATALOG, ScoreWeights
from tests.helpers import land_demo

END = date(2026, 11, 24)
TODAY = END + timedelta(days=1)
SALT = "rawstore-salt"
T = "raw.posthog__events"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """Small demo exports, landed once into a warehouse file (copied by each test)."""
    root = tmp_path_factory.mktemp("rawstore")
    files = (
        (contracts.POSTHOG_EVENTS, "posthog/*.jsonl"),
        (contracts.GITHUB_ISSUES, "github/*.json"),
    )
    path = land_demo(root, files, SALT, "run-0", end_date=END, days=42, users=150, accounts=25)
    return {"root": root, "landed": path}


def _copy(world: dict, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.duckdb"
    shutil.copy(world["landed"], path)
    return path


def _build(con, full_refresh: bool = False) -> None:
    """The nightly's staging and scoring steps (as tasks/steps.py runs them)."""
    register_duckdb(con, SALT)
    transform.build_staging(con, SALT)
    catalog.publish_catalog(con, catalog.load_catalog(DEFAULT_CATALOG))
    transform.build_marts(
        con,
        transform.ScoreParams(
            END, 28, ScoreWeights().normalised(), "run-1", full_refresh=full_refresh
        ),
    )


def _hashes(con) -> dict[str, tuple]:
    """Rows (as text, sorted) per intermediate and mart table."""
    tables = [
        f"{s}.{t}"
        for s, t in con.execute(
            "select table_schema, table_name from information_schema.tables "
            "where table_schema in ('intermediate', 'marts') and table_type = 'BASE TABLE' "
            "order by 1, 2"
        ).fetchall()
    ]
    return {
        t: con.sql(
            f"select count(*), md5(coalesce(string_agg(r, chr(10) order by r), '')) "
            f"from (select (x)::varchar as r from {t} as x)"
        ).fetchall()[0]
        for t in tables
    }


def _store(root: Path | str, **kw) -> rawstore.RawStore:
    return rawstore.RawStore(mode="parquet", root=str(root), **kw)


def _day_sql() -> str:
    return rawstore.EVENT_TABLES[T][1]


def _counts(con) -> tuple[int, int, int]:
    """(rows in the warehouse table, rows in the history view, distinct ids in the view)."""
    return con.sql(
        f"select (select count(*) from {T}), count(*), count(distinct event_id) "
        f"from {rawstore.history(T)}"
    ).fetchall()[0]


def _parquet_files(folder: Path) -> set[str]:
    return {str(p) for p in folder.rglob("*.parquet")}


def _manifest_files(con) -> set[str]:
    return {f for (f,) in con.sql("select file from ops.raw_event_files").fetchall()}


def test_old_days_move_to_parquet_and_the_marts_stay_identical(world, tmp_path):
    with db.warehouse(_copy(world, tmp_path, "wh")) as con:
        _build(con)
        _build(con)
        expected = _hashes(con)
        n_events = con.sql(f"select count(*) from {T}").fetchall()[0][0]
    folder = tmp_path / "raw_events"
    store = _store(folder, hot_days=3)
    with db.warehouse(_copy(world, tmp_path, "pq")) as con:
        _build(con)
        st = rawstore.archive(con, store, today=TODAY)
        assert st.days_written >= 35 and st.rows_moved > 0
        hot, total, distinct = _counts(con)
        assert total == distinct == n_events  # every event once, none lost
        assert hot == n_events - st.rows_moved and hot > 0
        # the warehouse table holds only the hot window, the files the rest
        oldest_hot = con.sql(f"select min({_day_sql()}) from {T}").fetchall()[0][0]
        assert oldest_hot >= TODAY - timedelta(days=3)
        assert con.sql("select max(day) from ops.raw_event_files").fetchall()[0][0] < (
            TODAY - timedelta(days=3)
        )
        n_in_files = con.sql(
            f"select count(*) from read_parquet('{folder}/{T}/day=*/*.parquet')"
        ).fetchall()[0][0]
        assert n_in_files == st.rows_moved
        assert _parquet_files(folder) == _manifest_files(con)
        columns = "select column_name, data_type from duckdb_columns() where table_name = ?"
        assert (
            con.execute(columns, [T.split(".")[1] + "_all"]).fetchall()
            == con.execute(columns, [T.split(".")[1]]).fetchall()
        )
        # run twice: the same rows, no file written again
        again = rawstore.archive(con, store, today=TODAY)
        assert (again.days_written, again.rows_moved, again.files_deleted) == (0, 0, 0)
        assert _counts(con) == (hot, total, distinct)
        # the night's steps again over warehouse rows + Parquet: identical marts
        _build(con)
        assert _hashes(con) == expected
        _build(con, full_refresh=True)
        assert _hashes(con) == expected


def _redelivery(world: dict, tmp_path: Path) -> Path:
    """A late export file: an event of an archived day delivered again unchanged, and a new
    event of that day."""
    src = sorted((world["root"] / "demo/posthog").glob("*.jsonl"))[0]
    first = json.loads(src.read_text(encoding="utf-8").splitlines()[0])
    late = dict(first, uuid="late-0001")
    path = tmp_path / "late" / "late.jsonl"
    path.parent.mkdir()
    path.write_text(json.dumps(first) + "\n" + json.dumps(late) + "\n", encoding="utf-8")
    return path


def test_a_redelivered_old_event_is_not_counted_twice(world, tmp_path):
    late = _redelivery(world, tmp_path)
    with db.warehouse(_copy(world, tmp_path, "wh")) as con:
        _build(con)
        load.load_source(con, contracts.POSTHOG_EVENTS, str(late), "run-2")
        _build(con)
        expected = _hashes(con)
        n_events = con.sql(f"select count(*) from {T}").fetchall()[0][0]
    folder = tmp_path / "raw_events"
    store = _store(folder, hot_days=3)
    with db.warehouse(_copy(world, tmp_path, "pq")) as con:
        _build(con)
        rawstore.archive(con, store, today=TODAY)
        day = con.sql(
            f"select {_day_sql()} from {rawstore.history(T)} where event_id = ?",
            # the re-delivered event's id
            params=[json.loads(late.read_text().splitlines()[0])["uuid"]],
        ).fetchall()[0][0]
        assert con.execute(
            "select count(*) from ops.raw_event_files where day = ?", [day]
        ).fetchall()[0][0]
        stats = load.load_source(con, contracts.POSTHOG_EVENTS, str(late), "run-2")
        assert (stats.n_inserted, stats.n_unchanged) == (1, 1)
        # the day came back into the warehouse table for the merge, and left the manifest
        assert not con.execute(
            "select count(*) from ops.raw_event_files where day = ?", [day]
        ).fetchall()[0][0]
        _hot, total, distinct = _counts(con)
        assert total == distinct == n_events
        _build(con)
        assert _hashes(con) == expected
        rawstore.archive(con, store, today=TODAY)  # the day goes back out, once
        assert _counts(con)[1:] == (n_events, n_events)
        assert _parquet_files(folder) == _manifest_files(con)
        assert con.sql(
            "select count(*) = count(distinct (table_name, day)) from ops.raw_event_files"
        ).fetchall()[0][0]


def test_a_crash_between_writing_and_recording_the_files_doubles_nothing(world, tmp_path):
    folder = tmp_path / "raw_events"
    store = _store(folder, hot_days=3)
    with db.warehouse(_copy(world, tmp_path, "pq")) as con:
        _build(con)
        before = _counts(con)
        with pytest.raises(RuntimeError, match="simulated crash"):
            rawstore.archive(con, store, today=TODAY, fail_before_commit=True)
        assert _parquet_files(folder)  # the files were written ...
        assert not _manifest_files(con)  # ... but not recorded: no view reads them
        assert _counts(con) == before
        _build(con)
        st = rawstore.archive(con, store, today=TODAY)  # the next run does the move
        assert st.files_deleted > 0  # the dead run's files
        hot, total, distinct = _counts(con)
        assert (total, distinct) == before[1:] and hot < before[0]
        assert _parquet_files(folder) == _manifest_files(con)


def test_retention_deletes_old_days_and_keeps_their_rollups(world, tmp_path):
    folder = tmp_path / "raw_events"
    with db.warehouse(_copy(world, tmp_path, "pq")) as con:
        _build(con)
        rawstore.archive(con, _store(folder, hot_days=3), today=TODAY)
        rollup = "intermediate.int_feature_user_days"
        horizon = TODAY - timedelta(days=20)
        old_rows = con.execute(
            f"select * from {rollup} where activity_date < ? order by all", [horizon]
        ).fetchall()
        assert old_rows
        st = rawstore.archive(con, _store(folder, hot_days=3, retention_days=20), today=TODAY)
        assert st.days_expired > 0 and st.files_deleted == st.days_expired
        assert con.sql("select min(day) from ops.raw_event_files").fetchall()[0][0] == horizon
        assert not con.execute(
            f"select count(*) from {rawstore.history(T)} where {_day_sql()} < ?", [horizon]
        ).fetchall()[0][0]
        assert _parquet_files(folder) == _manifest_files(con)
        assert rawstore.expired_before(con) == horizon
        for full in (False, True):  # incremental and full refresh keep the expired days' rows
            _build(con, full_refresh=full)
            assert (
                con.execute(
                    f"select * from {rollup} where activity_date < ? order by all", [horizon]
                ).fetchall()
                == old_rows
            )


@pytest.fixture
def s3_server(monkeypatch):
    """A moto S3 server on 127.0.0.1 (random port) with one bucket; fake credentials in the
    standard AWS variables (s3fs reads them from the environment)."""
    boto3 = pytest.importorskip("boto3")
    server = pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    srv = server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    url = f"http://{host}:{port}"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(Bucket="events")
    yield url
    srv.stop()


def test_the_same_landing_and_reading_on_s3(world, tmp_path, s3_server, monkeypatch):
    store = _store("s3://events/raw", hot_days=3, endpoint_url=s3_server, region="us-east-1")
    monkeypatch.setattr(rawstore, "_ACTIVE", store)  # as activate(settings) does for a run
    late = _redelivery(world, tmp_path)
    path = _copy(world, tmp_path, "pq")
    with db.warehouse(path) as con:
        _build(con)
        n_events = con.sql(f"select count(*) from {T}").fetchall()[0][0]
        st = rawstore.archive(con, store, today=TODAY)
        assert st.days_written >= 35
        files = _manifest_files(con)
        assert files and all(
            f.startswith("s3://events/raw/raw.posthog__events/day=") for f in files
        )
        fs = store.filesystem()
        assert {f"s3://{p}" for p in fs.glob("events/raw/**/*.parquet")} == files
        stats = load.load_source(con, contracts.POSTHOG_EVENTS, str(late), "run-2")
        assert (stats.n_inserted, stats.n_unchanged) == (1, 1)
        assert _counts(con)[1:] == (n_events + 1, n_events + 1)
    # a new connection (CLI query, report, snapshot) reads the S3 files through db.connect
    with db.warehouse(path) as con:
        _build(con)
        rawstore.archive(con, store, today=TODAY)
        assert _counts(con)[1:] == (n_events + 1, n_events + 1)
        assert {f"s3://{p}" for p in fs.glob("events/raw/**/*.parquet")} == _manifest_files(con)


def test_the_nightly_flow_in_the_parquet_store(tmp_path, prefect_api):
    """Real nightly runs, twice: the archive stage moves the old days, the second night moves
    nothing, the marts hold the same rows, and the analyst snapshot reads the full history."""
    from flows.nightly import nightly
    from tests.helpers import demo_config, sql

    end = date.today() - timedelta(days=1)
    generate_demo_data(
        DemoConfig(out_dir=tmp_path / "demo", end_date=end, days=42, users=100, accounts=20)
    )
    config = demo_config(tmp_path / "config.toml")
    text = config.read_text(encoding="utf-8")
    config.write_text(
        'raw_events_store = "parquet"\nraw_events_hot_days = 2\n' + text, encoding="utf-8"
    )
    wh, snap = tmp_path / "feedback.duckdb", tmp_path / "feedback_analyst.duckdb"
    folder = tmp_path / "raw_events"  # the default: next to the warehouse
    marts = (  # every column but the run's id
        "select count(*), sum(hash(f::varchar)) from "
        "(select * exclude (run_id) from marts.feature_health) as f"
    )

    def run() -> dict:
        # a world this small may trip the volume check (Degraded): not what this test judges
        state = nightly(config_path=str(config), return_state=True)
        assert state.name in ("Completed", "Degraded"), state.message
        summary = state.result(raise_on_failure=False)
        assert not summary["failed_sources"] and "archive_raw" in summary["timings"]
        return summary

    run()
    after_first = sql(wh, marts)
    n_events = sql(wh, f"select count(*) from {rawstore.history(T)}")[0][0]
    assert sql(wh, f"select count(*) from {T}")[0][0] < n_events / 10
    assert sql(wh, f"select min({_day_sql()}) from {T}")[0][0] >= date.today() - timedelta(2)
    files = {f for (f,) in sql(wh, "select file from ops.raw_event_files")}
    assert files and files == _parquet_files(folder)

    run()
    assert sql(wh, marts) == after_first
    assert {f for (f,) in sql(wh, "select file from ops.raw_event_files")} == files
    assert sql(wh, f"select count(*), count(distinct event_id) from {rawstore.history(T)}")[0] == (
        n_events,
        n_events,
    )
    # the analyst snapshot's history view reads the same files
    assert sql(snap, f"select count(*) from {rawstore.history(T)}")[0][0] == n_events


def test_the_staged_merge_path_reads_archived_days_back_too(con, tmp_path):
    """Mixpanel lands through the staging path (_merge_raw), not the direct one."""
    from tasks.clients.mixpanel import MIXPANEL_EVENTS

    def event(name: str, day: date, insert_id: str) -> dict:
        ts = int((day - date(1970, 1, 1)).total_seconds()) + 3600
        props = {"time": ts, "distinct_id": "u1", "$insert_id": insert_id}
        return {"event": name, "properties": props}

    old, new = TODAY - timedelta(days=10), TODAY - timedelta(days=1)
    first = tmp_path / "in" / "a.jsonl"
    first.parent.mkdir()
    first.write_text(
        "\n".join(json.dumps(e) for e in (event("open", old, "i1"), event("open", new, "i2"))),
        encoding="utf-8",
    )
    load.load_source(con, MIXPANEL_EVENTS, str(first), "r1")
    table = "raw.mixpanel__events"
    st = rawstore.archive(con, _store(tmp_path / "raw_events", hot_days=3), today=TODAY)
    assert (st.days_written, st.rows_moved) == (1, 1)
    late = tmp_path / "in" / "b.jsonl"
    late.write_text(
        "\n".join(json.dumps(e) for e in (event("open", old, "i1"), event("save", old, "i3"))),
        encoding="utf-8",
    )
    stats = load.load_source(con, MIXPANEL_EVENTS, str(late), "r2")
    assert (stats.n_inserted, stats.n_unchanged) == (1, 1)
    view = rawstore.history(table)
    assert con.sql(f"select count(*), count(distinct event_id) from {view}").fetchall() == [(3, 3)]
    assert con.sql("select count(*) from ops.raw_event_files").fetchall() == [(0,)]
    rawstore.archive(con, _store(tmp_path / "raw_events", hot_days=3), today=TODAY)
    assert con.sql(f"select count(*) from {table}").fetchall() == [(1,)]
    assert con.sql(f"select count(*), count(distinct event_id) from {view}").fetchall() == [(3, 3)]


def test_settings_of_the_raw_event_store(tmp_path):
    from tasks.settings import ConfigError, load_settings

    cfg = tmp_path / "s.toml"
    cfg.write_text('raw_events_store = "parquet"\n', encoding="utf-8")
    s = load_settings(cfg, environ={})
    assert rawstore.RawStore.from_settings(s).root == str(tmp_path / "data" / "raw_events")
    cfg.write_text('raw_events_path = "gs://b/x"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="not supported"):
        load_settings(cfg, environ={})
    cfg.write_text("raw_events_hot_days = 5\nraw_events_retention_days = 5\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="more than raw_events_hot_days"):
        load_settings(cfg, environ={})


def test_the_warehouse_file_is_compacted_after_the_move(world, tmp_path):
    """DuckDB keeps freed blocks in the file; the compaction gives them back, nothing else
    changes (rows, views, primary keys, comments: the next night builds the same marts)."""
    path = _copy(world, tmp_path, "pq")
    with db.warehouse(path) as con:
        # a heavy old day: 200k more events of one user, each with 128 random characters
        pad = " || ".join(f"md5((r.range * 4 + {i})::varchar)" for i in range(4))
        con.execute(
            f"insert into {T} by name select 'bulk-' || r.range as event_id, "
            f"e.* exclude (event_id) replace (json_object('pad', {pad}) as properties) "
            f"from (select * from {T} where {_day_sql()} = ? limit 1) as e, range(200000) as r",
            [END - timedelta(days=20)],
        )
        rawstore.archive(con, _store(tmp_path / "raw_events", hot_days=3), today=TODAY)
        counts = _counts(con)
    assert rawstore.compact(path) is None  # not worth it by default (under 64 MiB free)
    shutil.copy(path, tmp_path / "uncompacted.duckdb")
    before, after = rawstore.compact(path, min_free_bytes=0)
    assert after < before / 2 and path.stat().st_size == after
    assert not path.with_name(path.name + ".compact").exists()
    with db.warehouse(path):  # another connection of this process open: never swapped
        assert rawstore.compact(path, min_free_bytes=0, min_free_share=0.0) is None
    marts = {}
    for p in (path, tmp_path / "uncompacted.duckdb"):
        with db.warehouse(p) as con:
            assert _counts(con) == counts
            _build(con)
            _build(con)  # twice: rollup_state's primary key (insert or replace) still holds
            marts[p] = _hashes(con)
    assert marts[path] == marts[tmp_path / "uncompacted.duckdb"]
