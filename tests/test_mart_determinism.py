"""Deterministic marts: the same raw rows give byte-identical intermediate and mart tables,
whatever DuckDB's thread count and whatever order the raw rows were inserted in (float
aggregates are summed exactly; every row pick has a full tie-break); the same files land the same
raw rows and load quarantine (line numbers included) in any thread count and batch split."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pytest

from tasks import catalog, contracts, db, load, transform
from tasks.clients.zendesk import ZENDESK_TICKETS_SPEC
from tasks.demo_data import ACCOUNTS_FILE
from tasks.redact import register_duckdb
from tasks.settings import DEFAULT_CATALOG, ScoreWeights
from tests.helpers import land_demo

END = date(2026, 11, 24)
SALT = "determinism-salt"
FILES = (
    (contracts.POSTHOG_EVENTS, "posthog/*.jsonl"),
    (ZENDESK_TICKETS_SPEC, "zendesk/*.json"),
    (contracts.GITHUB_ISSUES, "github/*.json"),
    (contracts.ACCOUNTS, ACCOUNTS_FILE),
)
RAW_KEYS = {
    "raw.posthog__events": "event_id",
    "raw.zendesk__tickets": "ticket_id",
    "raw.github__issues": "node_id",
    "raw.accounts__accounts": "account_key",
}


@pytest.fixture(scope="module")
def landed(tmp_path_factory) -> Path:
    """A warehouse file with the demo data landed in raw.* (loaded once for the module)."""
    root = tmp_path_factory.mktemp("determinism")
    return land_demo(root, FILES, SALT, "run-load", end_date=END, days=45, users=200, accounts=30)


def _build_and_hash(landed: Path, work: Path, threads: int, shuffle_seed: str | None) -> dict:
    path = work / f"w-{threads}-{shuffle_seed}.duckdb"
    shutil.copy(landed, path)
    with db.warehouse(path) as con:
        con.execute(f"set threads = {threads}")
        register_duckdb(con, SALT)
        db.ensure_schema(con)
        if shuffle_seed is not None:  # the same rows, inserted in another order
            for table, key in RAW_KEYS.items():
                con.execute(
                    f"create or replace temp table _shuffled as select * from {table} "
                    f"order by md5({key}::varchar || '{shuffle_seed}')"
                )
                con.execute(f"delete from {table}")
                con.execute(f"insert into {table} select * from _shuffled")
                con.execute("drop table _shuffled")
        transform.build_staging(con, SALT)
        catalog.publish_catalog(con, catalog.load_catalog(DEFAULT_CATALOG))
        transform.build_marts(
            con, transform.ScoreParams(END, 28, ScoreWeights().normalised(), "run-1")
        )
        tables = [
            f"{s}.{t}"
            for s, t in con.execute(
                "select table_schema, table_name from information_schema.tables "
                "where table_schema in ('intermediate', 'marts') and table_type = 'BASE TABLE' "
                "order by 1, 2"
            ).fetchall()
        ]
        out = {}
        for table in tables:
            # Every column's text (doubles print their shortest round-trip form, so a last-bit
            # difference shows), rows sorted: the row order of a table is not part of its value.
            out[table] = con.sql(
                f"select count(*), md5(coalesce(string_agg(r, chr(10) order by r), '')) "
                f"from (select (t)::varchar as r from {table} as t)"
            ).fetchall()[0]
    return out


def test_marts_are_identical_across_threads_and_insertion_order(landed, tmp_path):
    one = _build_and_hash(landed, tmp_path, threads=1, shuffle_seed=None)
    four = _build_and_hash(landed, tmp_path, threads=4, shuffle_seed="a")
    assert "marts.feature_health" in one and "marts.backlog_suggestions" in one
    assert one["marts.feature_health"][0] > 0 and one["marts.feature_daily"][0] > 0
    assert set(one) == set(four)
    assert sorted(t for t in one if one[t] != four[t]) == []


def _load_and_dump(demo: Path, path: Path, threads: int, split: bool) -> dict:
    """Land the demo files with `threads` DuckDB threads, in one batch per source or (`split`)
    one batch per file, newest file first; return raw tables and load quarantine as sorted text
    (load bookkeeping columns left out)."""
    with db.warehouse(path) as con:
        con.execute(f"set threads = {threads}")
        db.ensure_schema(con)
        register_duckdb(con, SALT)
        for spec, pattern in FILES:
            files = sorted(demo.glob(pattern))
            groups = [[f] for f in reversed(files)] if split else [files]
            for i, group in enumerate(groups):
                # A glob over exactly this group's files (a later group's files are not yet
                # visible to the loader: it reads every pending file matching the pattern).
                stage = path.parent / f"{path.stem}-{spec.source}"
                for f in group:
                    target = stage / f.relative_to(demo)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(f, target)
                load.load_source(con, spec, str(stage / pattern), f"run-{i}")
        out = {}
        for table in RAW_KEYS:
            out[table] = sorted(
                str(r).replace(str(path.parent), "<W>")
                for r in con.sql(
                    f"select * exclude (_batch_id, _loaded_at, _source_file), "
                    f"regexp_extract(_source_file, '[^/]+$') from {table}"
                ).fetchall()
            )
        out["quality.quarantine"] = sorted(
            str(r)
            for r in con.sql(
                "select source, table_name, record_key, rule, reason, payload, "
                "regexp_extract(source_file, '[^/]+$') from quality.quarantine"
            ).fetchall()
        )
    return out


def test_raw_and_load_quarantine_are_identical_across_threads_and_batch_splits(landed, tmp_path):
    """The same files give the same raw rows and the same quarantine rows (reasons with their
    line/position numbers included) with 4 threads in one batch as with 1 thread in one batch
    per file, loaded newest first."""
    demo = landed.parent / "demo"
    four = _load_and_dump(demo, tmp_path / "a" / "w.duckdb", threads=4, split=False)
    split = _load_and_dump(demo, tmp_path / "b" / "w.duckdb", threads=1, split=True)
    assert all(four[t] for t in RAW_KEYS)
    assert any("#" in r for r in four["quality.quarantine"])  # positions are part of the reasons
    assert sorted(t for t in four if four[t] != split[t]) == []
