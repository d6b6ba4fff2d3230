"""Tabular files (layout "table": accounts as CSV or Parquet): each file read into temp table
_tab before the batch's transaction (a file DuckDB cannot read, or one lacking a required
column, is set aside with what to fix), then staged as _batch_v with row checks and repeats
settled (_stage_tables), for the merge (merge._merge_raw)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from tasks.contracts import SourceSpec
from tasks.db import sql_literal
from tasks.load import report

_PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
_DELIMITERS = (",", ";", "\t", "|")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _mtime_cursor(mtime_ns: int) -> str:
    """A file's modification time as an ISO 8601 UTC timestamp, to the microsecond."""
    seconds, ns = divmod(mtime_ns, 10**9)
    at = datetime.fromtimestamp(seconds, UTC) + timedelta(microseconds=ns // 1000)
    return at.isoformat()


def _table_reader(con: duckdb.DuckDBPyConnection, path: Path) -> tuple[str, list[str]]:
    """(table function reading `path`, its column names). CSV: every value as text, a header
    row, no rows skipped. Raises duckdb.Error when the file cannot be read."""
    if path.name.lower().endswith(_PARQUET_SUFFIXES):
        reader = f"read_parquet({sql_literal(path)})"
    else:
        reader = f"read_csv({sql_literal(path)}, all_varchar = true, header = true, skip = 0)"
    names = con.sql(f"select * from {reader}").columns
    if len(names) == 1 and not reader.startswith("read_parquet"):
        # The sniffer found no consistent delimiter (rows with different numbers of fields) and
        # read each line as one value: read again with the delimiter the header shows, so
        # DuckDB says which line is wrong instead of landing whole lines as keys.
        delim = next((d for d in _DELIMITERS if d in names[0]), None)
        if delim is not None:
            reader = reader[:-1] + f", delim = {sql_literal(delim)})"
            names = con.sql(f"select * from {reader}").columns
    return reader, names


def _read_tables(
    con: duckdb.DuckDBPyConnection, spec: SourceSpec, batch: list[tuple[Path, int, int]]
) -> dict[str, str]:
    """Temp table _tab: one row per table-file row (source_file, pos, cursor_at, text, j,
    parse_error, detail), `j` the row's known columns as text under lower-case names and `text`
    the same without the private ones. A file lacking a required column or unreadable is one
    row with parse_error set. Returns {path: what to fix} for the files set aside."""
    con.execute(
        "create or replace temp table _tab (source_file varchar, pos bigint, cursor_at varchar, "
        "text varchar, j json, parse_error varchar, detail varchar)"
    )
    set_aside: dict[str, str] = {}
    for path, _, mtime_ns in batch:
        file, cursor = sql_literal(path), sql_literal(_mtime_cursor(mtime_ns))
        try:
            reader, names = _table_reader(con, path)
            by_name: dict[str, str] = {}
            for name in names:
                by_name.setdefault(name.strip().lower(), name)
            missing = [c for c in spec.required if c not in by_name]
            if missing:
                found = ", ".join(names) or "none"
                set_aside[str(path)] = (
                    f"required column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                    f"missing (columns found: {found}); add "
                    f"{'them' if len(missing) > 1 else 'it'} (names are case-insensitive) or point "
                    f"sources.{spec.source} at the right files. The file was set aside and is "
                    "read again next run"
                )
                con.execute(
                    f"""insert into _tab select {file}, null, {cursor},
                               json_object('file', {file}, 'columns', ?::varchar[])::varchar,
                               null, 'missing_column', ?""",
                    [names, set_aside[str(path)]],
                )
                continue
            kept = [c for c in spec.columns if c in by_name]

            def obj(cols: list[str], names: dict[str, str] = by_name) -> str:
                pairs = ", ".join(f"{sql_literal(c)}, {_ident(names[c])}::varchar" for c in cols)
                return f"json_object({pairs})"

            public = [c for c in kept if c not in spec.private]
            con.execute(f"""
                insert into _tab
                select {file}, row_number() over (), {cursor}, {obj(public)}::varchar,
                       {obj(kept)}, null, null
                from {reader}
            """)
        except duckdb.Error as exc:
            set_aside[str(path)] = (
                f"could not be read as {'Parquet' if 'parquet' in path.name.lower() else 'CSV'} "
                f"({report._safe_text(exc)}); fix or replace the file (CSV: a header row, "
                "and every row with as many fields as the header). It was set aside and is read "
                "again next run"
            )
            con.execute(
                f"""insert into _tab select {file}, null, {cursor},
                           json_object('file', {file})::varchar, null, 'unreadable_file', ?""",
                [set_aside[str(path)]],
            )
    return set_aside


def _stage_tables(con: duckdb.DuckDBPyConnection, spec: SourceSpec) -> dict:
    """_stage_batch for table files (rows in _tab): temp view _batch_v with rec_id, cursor_at
    (the file's time), rn, reject_rule and reject_detail (what to fix). Returns outcome counts.

    Row checks come first, then repeats within one file (all copies rejected when they differ,
    the later copies when they are the same row), then the newest file wins across files."""
    con.execute(
        "create or replace temp table _bad (source_file varchar, pos bigint, text varchar, "
        "reject_rule varchar)"
    )
    checks = " ".join(f"when {pred} then {sql_literal(rule)}" for rule, pred, _ in spec.checks)
    check_rule = f"case {checks} end" if checks else "null::varchar"
    con.execute(f"""
        create or replace temp table _batch as
        select source_file, pos, cursor_at, text, parse_error, detail, rec_id, check_rule,
               false as is_dropped, false as is_deleted,
               case when parse_error is null then ({spec.record_sql}) end as j
        from (
            select *,
                   case when parse_error is null then {spec.key_expr} end as rec_id,
                   case when parse_error is null then {check_rule} end as check_rule
            from _tab
        )
    """)
    valid = "parse_error is null and rec_id is not null and check_rule is null"
    con.execute(f"""
        create or replace temp table _dups as
        with candidates as (
            select rowid as rid, * from _batch where {valid}
        ),
        repeated as (
            select rec_id, source_file, count(distinct j::varchar) as n_versions
            from candidates group by all having count(*) > 1
        )
        select rid,
               case when n_versions > 1 then 'duplicate_key'
                    when row_number() over (partition by rec_id, source_file
                                            order by pos, rid) > 1 then 'duplicate_row'
               end as dup_rule
        from candidates join repeated using (rec_id, source_file)
    """)
    con.execute(f"""
        create or replace temp table _rank as
        with candidates as (
            select b.rid, b.rec_id, b.cursor_at, b.source_file, b.pos
            from (select rowid as rid, * from _batch where {valid}) as b
            anti join (select rid from _dups where dup_rule is not null) as d using (rid)
        ),
        repeated as (
            select rec_id from candidates group by rec_id having count(*) > 1
        )
        select rid, row_number() over (
                   partition by rec_id
                   order by try_cast(cursor_at as timestamptz) desc nulls last,
                            source_file desc, pos desc, rid desc) as rn
        from candidates semi join repeated using (rec_id)
    """)
    details = " ".join(
        f"when {sql_literal(rule)} then {sql_literal(reason)}" for rule, _, reason in spec.checks
    )
    con.execute(f"""
        create or replace temp view _batch_v as
        with ruled as (
            select b.*, coalesce(r.rn, 1) as rn,
                   case
                       when b.parse_error is not null then b.parse_error
                       when b.rec_id is null then 'missing_id'
                       when b.check_rule is not null then b.check_rule
                       else d.dup_rule
                   end as reject_rule
            from (select rowid as rid, * from _batch) as b
            left join _dups as d on b.rid = d.rid
            left join _rank as r on b.rid = r.rid
        )
        select *,
               case
                   when parse_error is not null then detail
                   when reject_rule = 'missing_id' then {sql_literal(spec.key_column + " is empty")}
                   {f"else case reject_rule {details} end" if details else ""}
               end as reject_detail
        from ruled
    """)
    return dict(
        con.execute("""
            select coalesce(reject_rule, case when rn = 1 then 'accepted'
                                              else 'superseded' end) as outcome, count(*)
            from _batch_v group by all
        """).fetchall()
    )
