"""The optional accounts source: CSV/Parquet landing, merge, quarantine, staging, GX, demo."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pytest

from tasks import contracts, db, load, quality, steps, transform
from tasks.demo_data import ACCOUNTS_FILE, DemoConfig, generate_demo_data
from tasks.demo_data import generate as demo_generate
from tasks.redact import register_duckdb
from tasks.settings import FileSources, Settings
from tests.conftest import github_issue, posthog_event, write_json, write_jsonl

SALT = "accounts-salt"
HEADER = "account_key,arr,plan,segment,name,updated_at"


def write_csv(path: Path, lines: list[str], mtime_s: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    if mtime_s is not None:
        os.utime(path, ns=(mtime_s * 10**9, mtime_s * 10**9))
    return path


def raw_rows(con) -> dict[str, dict]:
    return {
        k: json.loads(p)
        for k, p in con.sql("select account_key, payload from raw.accounts__accounts").fetchall()
    }


def load_quarantine(con) -> list[tuple]:
    return con.sql(
        "select rule, record_key, reason, payload from quality.quarantine "
        "where source = 'accounts' and stage = 'load' order by reason"
    ).fetchall()


def conserved(stats: load.LoadStats) -> bool:
    return stats.records_read == stats.n_landed + stats.n_superseded + stats.n_quarantined


# --- landing ----------------------------------------------------------------------------------


def test_csv_lands_with_case_insensitive_columns_and_staging_casts_them(con, tmp_path):
    write_csv(
        tmp_path / "acc" / "accounts.csv",
        [
            "Account_Key, ARR ,Plan,SEGMENT,Name,Updated_At,owner_email",
            "acct-1,125000.5,Enterprise,Enterprise,Big Co,2026-11-01T00:00:00Z,a@b.example",
            "acct-2,900,starter,SMB,Small Co,,c@d.example",
            "acct-3,0,Pro,Mid-Market,,2026-10-01,",
        ],
    )
    stats = load.load_source(con, contracts.ACCOUNTS, str(tmp_path / "acc" / "*.csv"), "r1")
    assert (stats.records_read, stats.n_inserted, stats.n_quarantined) == (3, 3, 0)
    assert stats.errors == []
    rows = raw_rows(con)
    assert rows["acct-1"] == {
        "account_key": "acct-1",
        "arr": 125000.5,
        "plan": "Enterprise",
        "segment": "Enterprise",
        "name": "Big Co",
        "updated_at": "2026-11-01T00:00:00Z",
    }
    assert "owner_email" not in json.dumps(rows)  # extra columns are ignored

    register_duckdb(con, SALT)
    counts = transform.build_staging(con, SALT)
    assert counts["stg_accounts"] == 3
    cols = con.sql("describe staging.stg_accounts").fetchall()
    assert [(c[0], c[1]) for c in cols] == [
        ("account_key", "VARCHAR"),
        ("arr", "DOUBLE"),
        ("plan", "VARCHAR"),
        ("segment", "VARCHAR"),
        ("updated_at", "TIMESTAMP WITH TIME ZONE"),
        ("source", "VARCHAR"),
    ]
    staged = {
        r[0]: r[1:]
        for r in con.sql(
            "select account_key, arr, plan, segment, updated_at::date, source "
            "from staging.stg_accounts"
        ).fetchall()
    }
    assert staged == {
        "acct-1": (125000.5, "enterprise", "enterprise", date(2026, 11, 1), "accounts"),
        "acct-2": (900.0, "starter", "smb", None, "accounts"),
        "acct-3": (0.0, "pro", "mid_market", date(2026, 10, 1), "accounts"),
    }
    # The name stays in raw and the vendor view; the staging table the scores read has none.
    names = con.sql("select name from staging.stg_accounts__accounts order by 1").fetchall()
    assert names == [("Big Co",), ("Small Co",), (None,)]


def test_parquet_lands_like_csv(con, tmp_path):
    out = tmp_path / "acc" / "accounts.parquet"
    out.parent.mkdir()
    con.execute(f"""
        copy (
            select * from (values
                ('acct-1', 1200.50::decimal(12, 2), 'pro', 'smb',
                 timestamptz '2026-11-01 10:00:00+00'),
                ('acct-2', 99.0::decimal(12, 2), 'starter', 'smb', null)
            ) as t("ACCOUNT_KEY", "Arr", plan, segment, updated_at)
        ) to '{out}' (format parquet)
    """)
    stats = load.load_source(con, contracts.ACCOUNTS, str(tmp_path / "acc" / "*"), "r1")
    assert (stats.records_read, stats.n_inserted, stats.n_quarantined) == (2, 2, 0)
    assert raw_rows(con)["acct-1"]["arr"] == 1200.5
    register_duckdb(con, SALT)
    transform.build_staging(con, SALT)
    got = con.sql(
        "select account_key, arr, updated_at from staging.stg_accounts order by 1"
    ).fetchall()
    assert got == [
        ("acct-1", 1200.5, datetime(2026, 11, 1, 10, tzinfo=UTC)),
        ("acct-2", 99.0, None),
    ]


def test_newest_file_wins_unchanged_files_are_skipped_and_older_never_rolls_back(con, tmp_path):
    folder = tmp_path / "acc"
    pattern = str(folder / "*.csv")
    write_csv(folder / "a.csv", [HEADER, "acct-1,100,pro,smb,,", "acct-2,200,pro,smb,,"], 1_000)
    first = load.load_source(con, contracts.ACCOUNTS, pattern, "r1")
    assert (first.files_loaded, first.n_inserted) == (1, 2)

    again = load.load_source(con, contracts.ACCOUNTS, pattern, "r2")
    assert (again.files_loaded, again.files_skipped, again.records_read) == (0, 1, 0)

    # A newer export: acct-1 changed, acct-3 is new, acct-2 unchanged (and kept).
    write_csv(folder / "b.csv", [HEADER, "acct-1,150,pro,smb,,", "acct-3,50,starter,smb,,"], 2_000)
    newer = load.load_source(con, contracts.ACCOUNTS, pattern, "r3")
    assert (newer.files_loaded, newer.files_skipped) == (1, 1)
    assert (newer.n_inserted, newer.n_updated) == (1, 1)
    assert {k: r["arr"] for k, r in raw_rows(con).items()} == {
        "acct-1": 150.0,
        "acct-2": 200.0,
        "acct-3": 50.0,
    }

    # An older file turning up later (a restored backup) never rolls a row back.
    write_csv(folder / "0-old.csv", [HEADER, "acct-1,1,pro,smb,,"], 500)
    old = load.load_source(con, contracts.ACCOUNTS, pattern, "r4")
    assert (old.n_unchanged, old.n_updated) == (1, 0)
    assert raw_rows(con)["acct-1"]["arr"] == 150.0
    assert con.sql(
        "select count(*) from ops.loaded_files where source = 'accounts'"
    ).fetchall() == [(3,)]


def test_within_one_batch_the_newest_file_wins_and_the_others_are_superseded(con, tmp_path):
    folder = tmp_path / "acc"
    # Named so that name order and time order disagree: time decides.
    write_csv(folder / "z-january.csv", [HEADER, "acct-1,100,pro,smb,,"], 1_000)
    write_csv(folder / "a-february.csv", [HEADER, "acct-1,300,pro,smb,,"], 2_000)
    stats = load.load_source(con, contracts.ACCOUNTS, str(folder / "*.csv"), "r1")
    assert (stats.records_read, stats.n_inserted, stats.n_superseded) == (2, 1, 1)
    assert conserved(stats)
    assert raw_rows(con)["acct-1"]["arr"] == 300.0
    cursor = con.sql("select cursor_at from raw.accounts__accounts").fetchall()[0][0]
    assert cursor == datetime.fromtimestamp(2_000, UTC).isoformat()


def test_bad_rows_are_quarantined_with_reasons_and_every_row_is_accounted_for(con, tmp_path):
    folder = tmp_path / "acc"
    write_csv(
        folder / "accounts.csv",
        [
            HEADER,
            "acct-ok,10,pro,smb,Fine Co,",
            ",20,pro,smb,Keyless Co,",  # no key
            "acct-text,abc,pro,smb,Text Co,",  # not a number
            'acct-money,"$1,200",pro,smb,Money Co,',  # currency formatting
            "acct-empty,,pro,smb,Empty Co,",  # no arr
            "acct-neg,-5,pro,smb,Negative Co,",  # negative
            "acct-inf,inf,pro,smb,Inf Co,",  # not finite
            "acct-dup,30,pro,smb,Dup Co,",  # the same key twice with different values
            "acct-dup,31,pro,smb,Dup Co,",
            "acct-same,40,pro,smb,Same Co,",  # the same row twice: the first copy is kept
            "acct-same,40,pro,smb,Same Co,",
        ],
    )
    stats = load.load_source(con, contracts.ACCOUNTS, str(folder / "*.csv"), "r1")
    assert stats.records_read == 11
    assert stats.quarantine_reasons == {
        "missing_id": 1,
        "invalid_arr": 4,
        "negative_arr": 1,
        "duplicate_key": 2,
        "duplicate_row": 1,
    }
    assert (stats.n_inserted, stats.n_quarantined) == (2, 9)
    assert conserved(stats)  # rows in = accepted + quarantined
    assert set(raw_rows(con)) == {"acct-ok", "acct-same"}

    rows = load_quarantine(con)
    assert len(rows) == stats.n_quarantined
    by_key = {(r[0], r[1]): r[2] for r in rows}
    assert by_key["missing_id", None] == "account_key is empty (accounts.csv #2)"
    assert by_key["invalid_arr", "acct-money"].startswith("arr is not a plain number")
    assert by_key["invalid_arr", "acct-money"].endswith("(accounts.csv #4)")
    assert by_key["negative_arr", "acct-neg"] == "arr is negative (accounts.csv #6)"
    assert "different values" in by_key["duplicate_key", "acct-dup"]
    assert "first copy was kept" in by_key["duplicate_row", "acct-same"]
    # The payload is the row as delivered, without the account's name.
    money = next(json.loads(r[3]) for r in rows if r[1] == "acct-money")
    assert money == {
        "account_key": "acct-money",
        "arr": "$1,200",
        "plan": "pro",
        "segment": "smb",
        "updated_at": None,
    }
    assert not any("Co" in r[3] for r in rows)
    files = con.sql(
        "select n_records, n_quarantined from ops.loaded_files where source = 'accounts'"
    ).fetchall()
    assert files == [(11, 9)]

    # Loading the same rows again (a touched file) quarantines nothing twice.
    f = folder / "accounts.csv"
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    again = load.load_source(con, contracts.ACCOUNTS, str(folder / "*.csv"), "r2")
    assert conserved(again) and again.n_quarantined == 9
    assert len(load_quarantine(con)) == 9


def test_a_file_missing_a_required_column_is_set_aside_with_an_actionable_error(con, tmp_path):
    folder = tmp_path / "acc"
    write_csv(folder / "good.csv", [HEADER, "acct-1,100,pro,smb,,"])
    bad = write_csv(folder / "crm.csv", ["Account_Key,revenue_usd,plan", "acct-2,5,pro"])
    stats = load.load_source(con, contracts.ACCOUNTS, str(folder / "*.csv"), "r1")

    assert set(raw_rows(con)) == {"acct-1"}  # the good file of the same batch landed
    assert stats.quarantine_reasons == {"missing_column": 1} and conserved(stats)
    (error,) = stats.errors
    assert str(bad) in error
    assert "required column arr missing" in error
    assert "columns found: Account_Key, revenue_usd, plan" in error
    assert "sources.accounts" in error
    (row,) = load_quarantine(con)
    assert row[0] == "missing_column" and "arr" in row[2] and row[2].endswith("(crm.csv)")

    # The broken file is not recorded as loaded: the next run reads and reports it again.
    loaded = con.sql("select path from ops.loaded_files where source = 'accounts'").fetchall()
    assert loaded == [(str(folder / "good.csv"),)]
    again = load.load_source(con, contracts.ACCOUNTS, str(folder / "*.csv"), "r2")
    assert (again.files_skipped, again.files_loaded, len(again.errors)) == (1, 1, 1)
    last = con.sql(
        "select last_run_id from quality.quarantine where rule = 'missing_column'"
    ).fetchall()
    assert last == [("r2",)]

    # Fixed: it loads, and is skipped from then on.
    write_csv(bad, ["Account_Key,ARR,plan", "acct-2,5,pro"])
    fixed = load.load_source(con, contracts.ACCOUNTS, str(folder / "*.csv"), "r3")
    assert (fixed.n_inserted, fixed.errors) == (1, [])
    assert set(raw_rows(con)) == {"acct-1", "acct-2"}


def test_an_unreadable_csv_is_set_aside_instead_of_landing_lines_as_keys(con, tmp_path):
    folder = tmp_path / "acc"
    write_csv(folder / "ragged.csv", ["account_key,arr", "acct-1,1", "acct-2,2,3"])
    stats = load.load_source(con, contracts.ACCOUNTS, str(folder / "*.csv"), "r1")
    assert stats.quarantine_reasons == {"unreadable_file": 1}
    assert "ragged.csv" in stats.errors[0] and "could not be read as CSV" in stats.errors[0]
    assert raw_rows(con) == {}


def test_load_step_reports_a_broken_accounts_file_and_loads_every_other_source(
    tmp_path, monkeypatch, caplog
):
    data = tmp_path / "data"
    write_jsonl(data / "ph" / "e.jsonl", [posthog_event("u-1"), posthog_event("u-2")])
    write_json(data / "gh" / "issues-page-001.json", [github_issue(1)])
    write_csv(data / "acc" / "accounts.csv", ["account_key,plan", "acct-1,pro"])
    settings = Settings(
        duckdb_path=tmp_path / "w.duckdb",
        sources=FileSources(
            posthog_events=str(data / "ph" / "*.jsonl"),
            zendesk_tickets="",
            github_issues=str(data / "gh" / "*.json"),
            accounts=str(data / "acc" / "*.csv"),
        ),
    )
    monkeypatch.setattr(steps, "get_run_logger", lambda: logging.getLogger("test-load-step"))
    kinds = [steps.SourceKind.usage, steps.SourceKind.bugs]
    with caplog.at_level(logging.INFO, logger="test-load-step"):
        out = steps.load_sources.fn(settings, kinds, "r1", datetime.now(UTC))
    assert out["posthog"]["n_inserted"] == 2 and out["github"]["n_inserted"] == 1
    assert out["accounts"]["quarantine_reasons"] == {"missing_column": 1}
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "accounts.csv" in errors[0] and "arr" in errors[0] and "ARR weighting" in errors[0]

    # A batch that fails outright is reported the same way; nothing else is lost.
    def broken(con, spec, *a, **kw):
        raise load.LoadError(f"{spec.source}: loading accounts.csv failed, nothing committed")

    monkeypatch.setattr(load, "load_source", broken)
    out = steps.load_sources.fn(settings, [], "r2", datetime.now(UTC))
    assert out["accounts"]["errors"] == ["accounts: loading accounts.csv failed, nothing committed"]
    with duckdb.connect(str(settings.duckdb_path)) as con:
        assert con.sql("select count(*) from raw.posthog__events").fetchall() == [(2,)]


def test_disabled_source_leaves_an_empty_staging_table_to_left_join(con):
    register_duckdb(con, SALT)
    counts = transform.build_staging(con, SALT)
    assert counts["stg_accounts"] == 0
    assert con.sql("select count(*) from staging.stg_accounts").fetchall() == [(0,)]
    got = con.sql(
        "select count(*), count(a.arr) from staging.stg_usage_events as e "
        "left join staging.stg_accounts as a using (account_key)"
    ).fetchall()
    assert got == [(0, 0)]


def test_configured_vendors_counts_accounts_once_its_glob_matches(tmp_path):
    pattern = str(tmp_path / "acc" / "*.csv")
    settings = Settings(sources=FileSources(accounts=pattern))
    assert "accounts" not in quality.configured_vendors(settings)
    write_csv(tmp_path / "acc" / "a.csv", [HEADER])
    assert "accounts" in quality.configured_vendors(settings)
    off = Settings(sources=FileSources(accounts=""))
    assert "accounts" not in quality.configured_vendors(off)


# --- the quality gate ---------------------------------------------------------------------------


def gate(tmp_path: Path, folder: Path, run_id: str, raw_sql: str | None = None):
    """Load the accounts files, build staging and run the input gate with accounts configured."""
    db_path = tmp_path / "w.duckdb"
    started = datetime.now(UTC)
    with db.warehouse(db_path) as con:
        db.ensure_schema(con)
        register_duckdb(con, SALT)
        stats = load.load_source(con, contracts.ACCOUNTS, str(folder / "*"), run_id)
        if raw_sql:
            con.execute(raw_sql)
        transform.build_staging(con, SALT)
    result = quality.check_inputs(
        db_path,
        quality.GateParams(
            run_id=run_id, run_started_at=started, as_of=date(2026, 11, 24), vendors=("accounts",)
        ),
    )
    return stats, result, db_path


def accounts_csv(n: int, *, plan_missing: int = 0) -> list[str]:
    lines = [HEADER]
    for i in range(n):
        plan = "" if i < plan_missing else ("pro" if i % 3 else "enterprise")
        lines.append(f"acct-{i:04d},{(i + 1) * 10.5},{plan},smb,Name {i},2026-11-01T00:00:00Z")
    return lines


def test_gate_passes_clean_accounts(tmp_path):
    folder = tmp_path / "acc"
    write_csv(folder / "accounts.csv", accounts_csv(50))
    _, result, _ = gate(tmp_path, folder, "g1")
    tables = {v.table: v for v in result.verdicts}
    assert tables["stg_accounts"].verdict == "pass", tables["stg_accounts"].reason
    assert tables["raw_accounts__accounts"].verdict == "pass"
    assert tables["stg_accounts"].rows_in == tables["stg_accounts"].rows_accepted == 50
    (source,) = result.sources
    assert source["source_kind"] == "accounts" and source["verdict"] == "pass"
    assert source["table_name"] == "staging.stg_accounts"
    assert result.verdict == "pass"


def test_gate_fails_accounts_without_blocking_when_a_file_lacks_arr(tmp_path):
    folder = tmp_path / "acc"
    write_csv(folder / "accounts.csv", accounts_csv(50))
    write_csv(folder / "export-2.csv", ["account_key,plan", "acct-9999,pro"])
    stats, result, db_path = gate(tmp_path, folder, "g2")
    assert stats.n_inserted == 50 and stats.errors
    stg = next(v for v in result.verdicts if v.table == "stg_accounts")
    assert stg.verdict == "fail"
    assert "export-2.csv" in stg.reason and "arr" in stg.reason
    (source,) = result.sources
    assert source["verdict"] == "fail"
    assert source["is_writeback_blocked"] is False
    assert source["confidence_factor"] == pytest.approx(0.8)
    assert source["reason"].startswith("ARR weighting is off")
    assert quality.run_verdict(result.verdicts) == "warn"  # never Degraded
    with duckdb.connect(str(db_path), read_only=True) as con:
        stored = con.sql(
            "select verdict, is_writeback_blocked from quality.source_status "
            "where run_id = 'g2' and source_kind = 'accounts'"
        ).fetchall()
    assert stored == [("fail", False)]


def test_gate_quarantines_bad_staging_rows_and_warns_on_missing_plans(tmp_path):
    folder = tmp_path / "acc"
    write_csv(folder / "accounts.csv", accounts_csv(200, plan_missing=20))
    # A row the loader would have rejected, written straight into raw: the suite's safety net.
    sneak = """insert into raw.accounts__accounts values ('acct-sneak', null,
        '{"account_key": "acct-sneak", "arr": -1, "plan": "pro", "segment": "smb",
          "name": "Sneaky Co"}', 'x.csv', 'b-1', now())"""
    _, result, db_path = gate(tmp_path, folder, "g3", raw_sql=sneak)
    stg = next(v for v in result.verdicts if v.table == "stg_accounts")
    assert stg.verdict == "warn", stg.reason
    assert (stg.rows_in, stg.rows_accepted, stg.rows_quarantined) == (201, 200, 1)
    assert "plan is set" in stg.reason
    (source,) = result.sources
    assert (source["verdict"], source["confidence_factor"]) == ("warn", pytest.approx(0.9))
    assert source["is_writeback_blocked"] is False
    with duckdb.connect(str(db_path), read_only=True) as con:
        (row,) = con.sql(
            "select record_key, reason, payload from quality.quarantine where stage = 'validate' "
            "and table_name = 'staging.stg_accounts'"
        ).fetchall()
        assert row[:2] == ("acct-sneak", "negative_arr")
        assert "Sneaky" not in row[2] and json.loads(row[2])["arr"] == -1
        left = con.sql("select count(*) from staging.stg_accounts").fetchall()[0][0]
    assert left == 200


def test_gate_fails_a_configured_accounts_source_without_rows(tmp_path):
    folder = tmp_path / "acc"
    write_csv(folder / "accounts.csv", [HEADER])
    _, result, _ = gate(tmp_path, folder, "g4")
    (source,) = result.sources
    assert source["verdict"] == "fail" and not source["is_writeback_blocked"]
    assert "accounts were loaded" in source["reason"]


# --- demo data ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    generate_demo_data(
        DemoConfig(out_dir=out, end_date=date(2026, 11, 24), days=45, users=400, accounts=60)
    )
    return out


def test_demo_accounts_cover_every_account_key_in_the_demo_events(demo, tmp_path):
    con = duckdb.connect()
    event_keys = {
        k
        for (k,) in con.sql(f"""
            select distinct json_extract_string(line, '$.properties."$groups".company')
            from read_csv('{demo}/posthog/*.jsonl', columns = {{'line': 'VARCHAR'}},
                          delim = '\x1f', quote = '', escape = '', header = false)
            where json_valid(line)
        """).fetchall()
    }
    event_keys.discard(None)
    rows = con.sql(f"select * from read_csv('{demo / ACCOUNTS_FILE}')").fetchall()
    cols = con.sql(f"select * from read_csv('{demo / ACCOUNTS_FILE}')").columns
    assert cols == ["account_key", "name", "arr", "plan", "segment", "updated_at"]
    keys = [r[0] for r in rows]
    assert len(keys) == len(set(keys)) == 60
    assert event_keys and event_keys <= set(keys)
    assert {r[3] for r in rows} == {"starter", "pro", "enterprise"}
    assert {r[4] for r in rows} == {"smb", "mid_market", "enterprise"}
    arr = sorted((r[2] for r in rows), reverse=True)
    assert min(arr) > 0
    assert sum(arr[:6]) / sum(arr) > 0.35  # a few large accounts hold much of the revenue
    assert arr[len(arr) // 2] < sum(arr) / len(arr) / 2  # the typical account is small

    # The file loads cleanly through the real loader.
    with duckdb.connect(str(tmp_path / "w.duckdb")) as wh:
        db.ensure_schema(wh)
        stats = load.load_source(wh, contracts.ACCOUNTS, str(demo / "accounts" / "*.csv"), "r1")
    assert (stats.n_inserted, stats.n_quarantined, stats.errors) == (60, 0, [])


def test_demo_accounts_are_deterministic_and_leave_the_other_files_alone(
    demo, tmp_path, monkeypatch
):
    cfg = {"end_date": date(2026, 11, 24), "days": 45, "users": 400, "accounts": 60}
    generate_demo_data(DemoConfig(out_dir=tmp_path / "again", **cfg))
    generate_demo_data(DemoConfig(out_dir=tmp_path / "seed7", seed=7, **cfg))
    # The same data set without the accounts writer: every other file is byte-identical.
    monkeypatch.setattr(demo_generate, "_accounts", lambda *a: 0)  # the entry point's writer
    generate_demo_data(DemoConfig(out_dir=tmp_path / "without", **cfg))

    def digests(root: Path) -> dict[str, str]:
        return {
            str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    ours, again, seed7 = digests(demo), digests(tmp_path / "again"), digests(tmp_path / "seed7")
    assert ours == again
    assert ours[ACCOUNTS_FILE] != seed7[ACCOUNTS_FILE]
    without = digests(tmp_path / "without")
    assert set(ours) - set(without) == {ACCOUNTS_FILE}
    assert {k: ours[k] for k in without} == without
