"""The canonical staging unions are written from the vendor list (tasks/unions.py): the checked-in
files are what `make generated` writes, every vendor model gives the canonical columns, and a new
vendor of a kind is one more CTE in that kind's union."""

from __future__ import annotations

import duckdb
import pytest

from tasks import db, sources, transform, unions


def test_checked_in_union_files_are_what_make_generated_writes():
    assert unions.stale() == [], "run `make generated` and commit the result"


def test_every_vendor_model_selects_the_canonical_columns_and_the_unions_build(tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    db.ensure_schema(con)
    transform.build_staging(con, "salt")
    for vendor in sources.VENDORS:
        union = vendor.canonical
        got = {
            c
            for (c,) in con.sql(
                f"select column_name from (describe staging.{vendor.staging_model})"
            ).fetchall()
        }
        missing = set(unions.UNION_COLUMNS[union]) - got
        assert not missing, f"{vendor.staging_model} lacks {sorted(missing)} for {union}"
        cols = [
            c
            for (c,) in con.sql(
                f"select column_name from (describe staging.{union}__unvalidated)"
            ).fetchall()
        ]
        assert cols[: len(unions.UNION_COLUMNS[union])] == list(unions.UNION_COLUMNS[union])


def test_a_new_vendor_of_a_kind_is_one_more_cte_in_its_union():
    before = unions.union_sql("stg_support_tickets")
    helpscout = sources.Vendor("helpscout", "conversations", "tickets", "id")
    after = unions.union_sql("stg_support_tickets", vendors=(*sources.VENDORS, helpscout))
    assert "from staging.stg_helpscout__conversations" in after
    assert after.count(" as (\n    select\n") == before.count(" as (\n    select\n") + 1
    assert "    select * from freshdesk\n    union all\n    select * from helpscout\n)" in after
    # the hand-written rest is the same
    tail = before[before.index("normalised as (") :]
    assert after.endswith(tail)
    # a kind without a vendor has no union to write
    gone = tuple(v for v in sources.VENDORS if v.kind != "errors")
    with pytest.raises(ValueError, match="no vendor feeds stg_error_signals"):
        unions.union_sql("stg_error_signals", vendors=gone)


def test_a_stale_union_file_is_named(tmp_path, monkeypatch, capsys):
    fake_sql = tmp_path / "sql"
    (fake_sql / "staging").mkdir(parents=True)
    for name in unions.UNION_COLUMNS:
        text = unions.union_sql(name)
        (fake_sql / "staging" / f"{name}__unvalidated.sql").write_text(
            text if name != "stg_bug_issues" else text.replace("votes,", ""), encoding="utf-8"
        )
    monkeypatch.setattr(unions, "SQL_DIR", fake_sql)
    assert unions.stale() == ["stg_bug_issues"]
    from tasks import generated

    assert generated.main(["--check"]) == 1  # the one command names it
    out = capsys.readouterr().out
    assert "stg_bug_issues__unvalidated.sql differs" in out and out.count("differs") == 1
