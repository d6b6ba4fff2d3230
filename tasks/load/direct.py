"""The direct path: typed JSON lines (PostHog events) and pages with a record_type (PostHog
query pages) land straight in the raw table (_land_direct), and only the rows that need a
decision are taken out again and settled against what raw holds (_settle_direct), all inside
the batch's transaction. A batch that cannot take this path raises _NeedsStaging or
_RepeatsWithinFile and is landed again (batch._load_screened).

With the Parquet raw event store (tasks/rawstore.py), a batch of events first reads back the
archived event days it touches (rawstore.pull_back, inside its transaction), so the settling
sees every stored version as in the warehouse store."""

from __future__ import annotations

from pathlib import Path

import duckdb

from tasks import rawstore
from tasks.contracts import SourceSpec
from tasks.load import parse, purge
from tasks.load.parse import _PAGE_LIST
from tasks.load.purge import _PURGE_MARK


def _lands_direct(spec: SourceSpec) -> bool:
    """JSON lines with typed fields and a text key land straight in the raw table."""
    types = {col: typ.upper() for col, _, typ in spec.fields}
    return spec.fast_lines and types.get(spec.key_column) == "VARCHAR"


def _direct_pages(spec: SourceSpec, paths: list[Path]) -> bool:
    """Pages whose records land straight in the raw table: a spec with record_type, a text
    key, and no page starting with a byte order mark (read_json would read what the staging
    path sets aside)."""
    types = {col: typ.upper() for col, _, typ in spec.fields}
    if not (
        spec.record_type
        and spec.record_fields
        and not spec.sideload
        and _PAGE_LIST.fullmatch(spec.layout)
        and types.get(spec.key_column) == "VARCHAR"
    ):
        return False
    for p in paths:
        with p.open("rb") as f:
            if f.read(3) == b"\xef\xbb\xbf":
                return False
    return True


class _NeedsStaging(Exception):
    """A batch of pages has a record that needs a decision (no usable id, a repeat): landed on
    the staging path instead, which keeps each record's position for its quarantine row."""


class _RepeatsWithinFile(Exception):
    """The batch has an id twice in one file; landed without insertion order it can't tell
    which copy was first."""


def _forget_seen_keys(con: duckdb.DuckDBPyConnection) -> None:
    """_seen_keys (the direct path's hashes of the ids in raw) lives for one load call: raw may
    change between calls."""
    con.execute("drop table if exists _seen_keys")


def _land_direct(
    con: duckdb.DuckDBPyConnection,
    spec: SourceSpec,
    paths: list[Path],
    batch_id: str,
    ordered: bool = False,
    pages: bool = False,
) -> tuple[dict, dict, dict[str, tuple[int, int]]]:
    """The staging path's outcome, with the records written once: read_json streams straight
    into the raw table (staging them in a temp table first nearly doubled the cost — the
    persistent write is most of it), and only the few rows that need a decision are taken out
    again, all inside the batch's transaction.

    Rows whose key needs a decision — unparsed, no usable id, dropped, or an id the key_expr
    changes — land under a marker batch id with their original key text (NOT NULL: '' plus a
    second marker for a missing key) and move to _irr. Repeats within the batch and ids already
    in raw are then settled on the rows concerned: a repeat that loses is deleted (and
    quarantined as before), an unchanged re-delivery is deleted, an update replaces the old row.
    Returns (outcome counts, merge counts, per-file counts) as the staging path does, leaving
    the rejects in _rej and the bad lines in _bad.

    The insert runs without preserve_insertion_order (unless `ordered`): keeping the order
    serialised DuckDB's parallel insert and cost about a third more. Row ids then follow the
    read order only within each thread's chunks, so the first copy of a repeated id is found
    by file (files are read in name order); an id repeated within one file raises
    _RepeatsWithinFile and the batch is landed again with `ordered`.

    `pages`: the records come from pages (_direct_pages_sql); a batch with any record that
    needs a decision or any repeated id raises _NeedsStaging before anything is deleted.

    Cost to know: deleting a row landed in the same transaction makes DuckDB re-append the
    whole batch at commit instead of adopting the blocks it already wrote (about 1 s per
    million rows), so a batch with any such row costs about what the staging path did.
    """
    t, k = spec.raw_table, spec.key_column
    others = [c for c in spec.payload_columns if c != k]
    mark_text, mark_null = f"{batch_id}!", f"{batch_id}!null"
    derived = f"""
        select *, case when parse_error is null then {spec.key_expr} end as rec_id,
               case when parse_error is null then {spec.cursor_expr} end as cursor_at,
               coalesce(parse_error is null and ({spec.drop_expr}), false) as is_dropped
    """
    regular = f"parse_error is null and rec_id is not null and not is_dropped and rec_id = {k}"
    source = parse._direct_pages_sql(spec, paths) if pages else parse._fast_lines_sql(spec, paths)
    # Hashes of every id in raw before this batch, kept over the batches of one load call
    # (see _seen_keys): per batch, a miss there proves an id new without scanning raw.
    con.execute(f"create temp table if not exists _seen_keys as select hash({k}) as h from {t}")
    keep_order = con.sql("select current_setting('preserve_insertion_order')").fetchall()[0][0]
    con.execute(f"set preserve_insertion_order = {'true' if ordered else 'false'}")
    try:
        n_read = con.execute(
            f"""
            insert into {t} ({k}, {", ".join(others)}, cursor_at, _source_file, _batch_id,
                             _loaded_at)
            select case when {regular} then rec_id else coalesce({k}, '') end,
                   {", ".join(others)}, cursor_at, source_file,
                   case when {regular} then $1 when {k} is null then $2 else $3 end, now()
            from ({derived} from ({source}) as recs) as s
            """,
            [batch_id, mark_null, mark_text],
        ).fetchall()[0][0]
    finally:
        con.execute(f"set preserve_insertion_order = {'true' if keep_order else 'false'}")
    # Parquet event store: the archived days this batch touches come back first (their ids join
    # _seen_keys), so the settling below sees the stored versions as in the warehouse store.
    _, day_sql = rawstore.EVENT_TABLES.get(t, (None, None))
    if day_sql:
        rawstore.pull_back(
            con,
            t,
            f"select distinct {day_sql} from {t} where _batch_id in (?, ?, ?)",
            [batch_id, mark_null, mark_text],
            seen_keys=True,
        )
    con.execute(
        f"""create or replace temp table _landed as
            select _source_file as source_file, count(*) as n from {t}
            where _batch_id = ? group by all""",
        [batch_id],
    )
    n_regular = con.sql("select coalesce(sum(n), 0)::bigint from _landed").fetchall()[0][0]
    if pages and n_read > n_regular:
        raise _NeedsStaging
    # The rows that need a decision, with the key as it was read.
    all_null = " and ".join(f"{c} is null" for c in spec.payload_columns)
    con.execute(
        f"""
        create or replace temp table _irr as
        {derived} from (
            select *, case when {all_null} then 'unparsed' end as parse_error
            from (
                select rowid as rid, _source_file as source_file, null::bigint as pos,
                       null::varchar as text, null::json as j,
                       case when _batch_id = $1 then null else {k} end as {k}, {", ".join(others)}
                from {t} where $3 and _batch_id in ($1, $2)
            )
        )
        """,
        [mark_null, mark_text, n_read > n_regular],
    )
    # The marker rows stay in raw until the batch has committed (_purge_after_commit): deleting
    # a row landed in the same transaction makes DuckDB re-append the whole batch at commit.
    if n_read > n_regular:
        purge._note_purge(con, t, batch_id)
    # _VERSION_ORDER without the deletion marker (typed-field streams have none), for "first"
    # streams too: the copy kept is the one a split into other batches would keep.
    order = (
        "try_cast(cursor_at as timestamptz) desc nulls last, source_file desc, pos desc, rid desc"
    )
    # The batch's candidate ids as hashes: grouping and probing 8-byte hashes is several times
    # cheaper than the ids themselves; only hashes that repeat (or are already in raw) are
    # looked at by id.
    con.execute(
        f"""
        create or replace temp table _bh as
        select hash({k}) as h from {t} where _batch_id = $1
        union all
        select hash(rec_id) from _irr
        where parse_error is null and rec_id is not null and not is_dropped
        """,
        [batch_id],
    )
    con.execute(
        "create or replace temp table _bh_rep as select h from _bh group by h having count(*) > 1"
    )
    if pages and con.sql("select count(*) from _bh_rep").fetchall()[0][0]:
        raise _NeedsStaging
    # Rank only ids that occur more than once: a window over every row would cost a full sort.
    # rid is the row id the record landed with, i.e. its position in the batch.
    con.execute(
        f"""
        create or replace temp table _rank as
        with candidates as (
            select rowid as rid, {k} as rec_id, cursor_at, _source_file as source_file,
                   null::bigint as pos, false as irr
            from {t} where _batch_id = $1 and hash({k}) in (select h from _bh_rep)
            union all
            select rid, rec_id, cursor_at, source_file, pos, true from _irr
            where parse_error is null and rec_id is not null and not is_dropped
        ),
        repeated as (
            select rec_id from candidates group by rec_id having count(*) > 1
        )
        select rid, irr, row_number() over (partition by rec_id order by {order}) as rn
        from candidates semi join repeated using (rec_id)
        """,
        [batch_id],
    )
    if not ordered:
        # Ties the order would break: two copies of an id from the same file — unless every
        # copy landed as it was read and they are equal in every column: then either copy
        # lands the same row and quarantines the same payload (an exact repeat of a line, the
        # usual case), and landing the batch again in order would only cost a second read.
        same = ", ".join(f"{c}::varchar" for c in others)
        tied = con.execute(
            f"""
            select count(*) from (
                select 1 from (
                    select {k} as rec_id, _source_file as source_file, false as irr,
                           row({same}, cursor_at) as payload
                    from {t}
                    where _batch_id = $1 and rowid in (select rid from _rank where not irr)
                    union all
                    select rec_id, source_file, true, null from _irr
                    where rid in (select rid from _rank where irr)
                ) group by rec_id, source_file
                having count(*) > 1 and (bool_or(irr) or count(distinct payload) > 1)
            )
            """,
            [batch_id],
        ).fetchall()[0][0]
        if tied:
            raise _RepeatsWithinFile
    first = spec.repeats == "first"
    loser = "duplicate" if first else "superseded"
    con.execute(f"""
        create or replace temp table _irr_out as
        select i.*, coalesce(r.rn, 1) as rn,
               case
                   when i.parse_error is not null then 'unparsed'
                   when i.is_dropped then null
                   when i.rec_id is null then 'missing_id'
                   when coalesce(r.rn, 1) > 1 and {first} then 'duplicate'
               end as reject_rule
        from _irr as i left join (select rid, rn from _rank where irr) as r using (rid)
    """)
    pairs = ", ".join(others)
    con.execute(
        f"""
        create or replace temp table _rej as
        select b._source_file as source_file, null::bigint as pos, b.{k} as rec_id,
               'duplicate' as reject_rule, null::varchar as text, b.{k}, {pairs}
        from {t} as b
        where {first} and b._batch_id = $1
          and b.rowid in (select rid from _rank where not irr and rn > 1)
        union all
        select source_file, pos, rec_id, reject_rule, text, {k}, {pairs} from _irr_out
        where reject_rule is not null and reject_rule <> 'unparsed'
        """,
        [batch_id],
    )
    n_lost = con.sql("select count(*) from _rank where not irr and rn > 1").fetchall()[0][0]
    if n_lost:  # tombstoned here, deleted once the batch has committed (_purge_after_commit)
        purge._note_purge(con, t, batch_id)
        con.execute(
            f"""update {t} set _batch_id = $2 where _batch_id = $1
                and rowid in (select rid from _rank where not irr and rn > 1)""",
            [batch_id, f"{batch_id}{_PURGE_MARK}"],
        )
    counts = dict(
        con.execute("""
            select coalesce(reject_rule, case when is_dropped then 'dropped'
                                              when rn = 1 then 'accepted'
                                              else 'superseded' end) as outcome, count(*)
            from _irr_out group by all
        """).fetchall()
    )
    counts["accepted"] = counts.get("accepted", 0) + n_regular - n_lost
    if n_lost:
        counts[loser] = counts.get(loser, 0) + n_lost
    counts = {c: n for c, n in counts.items() if n}
    # Bad lines are unparsed rows; only files with such rows are read again for their text.
    unparsed_files = [
        parse._readable(f)
        for (f,) in con.sql(
            "select distinct source_file from _irr_out where reject_rule = 'unparsed'"
        ).fetchall()
    ]
    if unparsed_files:
        con.execute(f"create or replace temp table _bad as {parse._bad_lines_sql(unparsed_files)}")
    else:
        con.execute(
            "create or replace temp table _bad (source_file varchar, pos bigint, text varchar, "
            "reject_rule varchar)"
        )
    for rule, n in con.sql("select reject_rule, count(*) from _bad group by all").fetchall():
        counts[rule] = counts.get(rule, 0) + n
    merged = _settle_direct(con, spec, batch_id)
    per_file = {
        path: (n, bad)
        for path, n, bad in con.execute("""
            select source_file, sum(n)::bigint, sum(bad)::bigint from (
                select source_file, n, 0 as bad from _landed
                union all
                select source_file,
                       count(*) filter (where reject_rule is distinct from 'unparsed'), 0
                from _irr_out group by all
                union all
                select source_file, 0, count(*) from _rej group by all
                union all
                select source_file, count(*), count(*) from _bad group by all
            ) group by all
        """).fetchall()
    }
    return parse._settle_unparsed(spec, counts), merged, per_file


def _settle_direct(
    con: duckdb.DuckDBPyConnection, spec: SourceSpec, batch_id: str
) -> dict[str, int]:
    """Merge the batch's landed rows (and its accepted _irr rows) with the ids already in raw."""
    t, k = spec.raw_table, spec.key_column
    others = [c for c in spec.payload_columns if c != k]
    cols = ", ".join(others)
    accepted_irr = "from _irr_out where reject_rule is null and not is_dropped and rn = 1"
    batch = f"""
        select rowid as rid, false as irr, {k} as rec_id, {cols}, cursor_at,
               _source_file as source_file
        from {t} where _batch_id = $1
        union all
        select rid, true, rec_id, {cols}, cursor_at, source_file {accepted_irr}
    """
    overlap = con.sql("select count(*) from _bh semi join _seen_keys using (h)").fetchall()[0][0]
    con.execute("insert into _seen_keys select h from _bh")
    if overlap:  # a hash seen before: the exact check on the ids
        overlap = con.execute(
            f"""select count(*) from ({batch}) as b
                semi join (select {k} from {t} where not starts_with(_batch_id, $1)) as r
                    on r.{k} = b.rec_id""",
            [batch_id],
        ).fetchall()[0][0]
    insert_irr = f"""
        insert into {t} ({k}, {cols}, cursor_at, _source_file, _batch_id, _loaded_at)
        select rec_id, {cols}, cursor_at, source_file, $1, now() {accepted_irr}
    """
    if overlap == 0:
        # First sight of every id in the batch (the common case): nothing to merge.
        con.execute(insert_irr, [batch_id])
        n = con.execute(f"select count(*) from {t} where _batch_id = ?", [batch_id]).fetchall()
        return {"inserted": n[0][0], "updated": 0, "unchanged": 0}
    same = " and ".join(f"b.{c}::varchar is not distinct from r.{c}::varchar" for c in others)
    # The stored row loses only to a later version in _VERSION_ORDER (timestamp, then file), as
    # in _merge_raw: the same row whatever order or batches the files came in.
    bt, rt = "try_cast(b.cursor_at as timestamptz)", "try_cast(r.cursor_at as timestamptz)"
    older = f"""(
        coalesce({bt} < {rt}, {bt} is null and {rt} is not null)
        or ({bt} is not distinct from {rt} and b.source_file < r._source_file)
    )"""
    con.execute(
        f"""
        create or replace temp table _accepted as
        select b.rid, b.irr, r.old_rid,
               case when r.{k} is null then 'inserted'
                    when {same} then 'unchanged'
                    when {older} then 'unchanged'
                    else 'updated' end as outcome
        from ({batch}) as b
        left join (select rowid as old_rid, * from {t} where not starts_with(_batch_id, $1))
            as r on r.{k} = b.rec_id
        """,
        [batch_id],
    )
    # An unchanged re-delivery leaves the stored row as it was; an update replaces it with the
    # batch's row (the same values an in-place update would write).
    n_same = con.execute(
        f"""update {t} set _batch_id = $2 where _batch_id = $1
            and rowid in (select rid from _accepted where outcome = 'unchanged' and not irr)""",
        [batch_id, f"{batch_id}{_PURGE_MARK}"],
    ).fetchall()[0][0]
    if n_same:
        purge._note_purge(con, t, batch_id)
    con.execute(
        f"""delete from {t} where not starts_with(_batch_id, $1)
            and rowid in (select old_rid from _accepted where outcome = 'updated')""",
        [batch_id],
    )
    con.execute(
        f"{insert_irr} and rid not in "
        "(select rid from _accepted where irr and outcome = 'unchanged')",
        [batch_id],
    )
    out = dict(con.sql("select outcome, count(*) from _accepted group by all").fetchall())
    return {k2: out.get(k2, 0) for k2 in ("inserted", "updated", "unchanged")}
