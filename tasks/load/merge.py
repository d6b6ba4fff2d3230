"""The staging path: a batch's records staged in temp tables (_stage_batch: _batch, _rank,
the view _batch_v with each record's id, cursor, rank and reject rule), then merged into the
raw table on the stable id (_merge_raw). Which version of a record wins is fixed by
_VERSION_ORDER, whatever the load order or batch split.

With the Parquet raw event store (tasks/rawstore.py), a batch of events first reads back the
archived event days it touches (rawstore.pull_back, inside its transaction), so the merge sees
every stored version as in the warehouse store."""

from __future__ import annotations

from pathlib import Path

import duckdb

from tasks import rawstore
from tasks.contracts import SourceSpec
from tasks.load import parse

# Which version of a record wins (newest first): the vendor's timestamp (unreadable = oldest),
# then a deletion marker over a live version with the same timestamp (the tombstone wins), then
# the later file by name, then the later position in the file. Independent of load order and
# batch split; _merge_raw applies the same order against the stored row.
_VERSION_ORDER = (
    "try_cast(cursor_at as timestamptz) desc nulls last, is_deleted desc, source_file desc, "
    "pos desc nulls last, rid desc"
)


def _stage_batch(
    con: duckdb.DuckDBPyConnection, spec: SourceSpec, paths: list[Path], pages_read: bool = False
) -> dict:
    """Temp view _batch_v: one row per record with rec_id, cursor_at, rn and reject_rule;
    temp table _bad: lines set aside before parsing (fast path). Returns outcome counts."""
    if spec.fast_lines:
        recs = parse._fast_lines_sql(spec, paths)
        con.execute(f"create or replace temp table _bad as {parse._bad_lines_sql(paths)}")
        not_object = "false"
    else:
        recs = parse._records_sql(spec, paths, pages_read)
        con.execute(
            "create or replace temp table _bad (source_file varchar, pos bigint, text varchar, "
            "reject_rule varchar)"
        )
        # JSON values are valid JSON text, so an object is one whose text starts with '{':
        # the same answer as json_type(j) <> 'OBJECT' without parsing every record again.
        not_object = "j is not null and not starts_with(ltrim(j::varchar, ' \t\n\r'), '{')"
    # With typed fields the record JSON is not needed once the row's columns are derived.
    con.execute(f"""
        create or replace temp table _batch as
        select * {"exclude (j)" if spec.fields else ""},
               case when parse_error is null and not ({not_object}) then {spec.key_expr} end
                   as rec_id,
               case when parse_error is null and not ({not_object}) then {spec.cursor_expr} end
                   as cursor_at,
               coalesce(parse_error is null and not ({not_object}) and ({spec.drop_expr}), false)
                   as is_dropped,
               coalesce(parse_error is null and not ({not_object}) and ({spec.deleted_expr}),
                        false) as is_deleted,
               coalesce({not_object}, false) as not_object
        from ({recs}) as recs
    """)
    # "first" streams rank their copies by the same order: which copy is kept does not depend
    # on how the files were split into batches (_merge_raw applies it across batches).
    order = _VERSION_ORDER
    # Rank only ids that occur more than once: a window over every row would cost a full sort.
    con.execute(f"""
        create or replace temp table _rank as
        with candidates as (
            select rowid as rid, * from _batch
            where rec_id is not null and parse_error is null and not is_dropped
        ),
        repeated as (
            select rec_id from candidates group by rec_id having count(*) > 1
        )
        select rid, row_number() over (partition by rec_id order by {order}) as rn
        from candidates semi join repeated using (rec_id)
    """)
    first = "true" if spec.repeats == "first" else "false"
    con.execute(f"""
        create or replace temp view _batch_v as
        select b.*, coalesce(r.rn, 1) as rn,
               case
                   when b.parse_error = 'invalid_json_file' then 'invalid_json_file'
                   when b.parse_error = 'unparsed' then 'unparsed'
                   when b.parse_error is not null then 'invalid_json'
                   when b.not_object then 'not_an_object'
                   when b.is_dropped then null
                   when b.rec_id is null then 'missing_id'
                   when coalesce(r.rn, 1) > 1 and {first} then 'duplicate'
               end as reject_rule
        from (select rowid as rid, * from _batch) as b
        left join _rank as r on b.rid = r.rid
    """)
    counts = dict(
        con.execute("""
            select coalesce(reject_rule, case when is_dropped then 'dropped'
                                              when rn = 1 then 'accepted'
                                              else 'superseded' end) as outcome, count(*)
            from _batch_v group by all
            union all
            select reject_rule, count(*) from _bad group by all
        """).fetchall()
    )
    return parse._settle_unparsed(spec, counts)


def _staged_file_counts(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[int, int]]:
    """Records and quarantined records per file of a staged batch (_batch_v and _bad)."""
    return {
        path: (n, bad)
        for path, n, bad in con.execute("""
            select source_file, sum(n)::bigint, sum(bad)::bigint from (
                select source_file,
                       count(*) filter (where reject_rule is distinct from 'unparsed') as n,
                       count(reject_rule) filter (where reject_rule <> 'unparsed') as bad
                from _batch_v group by all
                union all
                select source_file, count(*), count(*) from _bad group by all
            ) group by all
        """).fetchall()
    }


def _merge_raw(con: duckdb.DuckDBPyConnection, spec: SourceSpec, batch_id: str) -> dict[str, int]:
    """Merge accepted records on the stable id; a newer cursor (or changed payload) wins."""
    t, k = spec.raw_table, spec.key_column
    cols = spec.payload_columns
    src = cols if spec.fields else ["j"]
    accepted = "from _batch_v where rn = 1 and reject_rule is null and not is_dropped"
    _, day_sql = rawstore.EVENT_TABLES.get(t, (None, None))
    if day_sql:  # Parquet event store: the archived days the batch touches come back first
        as_raw = ", ".join(f"{s} as {c}" for s, c in zip(src, cols, strict=True))
        rawstore.pull_back(con, t, f"select distinct {day_sql} from (select {as_raw} {accepted})")
    overlap = con.execute(
        f"select count(*) from (select rec_id {accepted}) b semi join {t} r on r.{k} = b.rec_id"
    ).fetchall()[0][0]
    values = ", ".join(v for v, c in zip(src, cols, strict=True) if c != k)
    if overlap == 0:
        # First sight of every id in the batch (the common case): insert straight through.
        n = con.execute(
            f"""insert into {t} ({k}, {", ".join(c for c in cols if c != k)}, cursor_at,
                                 _source_file, _batch_id, _loaded_at)
                select rec_id, {values}, cursor_at, source_file, ?, now()
                {accepted}""",
            [batch_id],
        ).fetchall()[0][0]
        return {"inserted": n, "updated": 0, "unchanged": 0}
    same = (
        " and ".join(f"b.{c}::varchar is not distinct from r.{c}::varchar" for c in cols if c != k)
        if spec.fields
        else "b.j::varchar = r.payload::varchar"
    )
    # The stored row loses only to a later version in _VERSION_ORDER (timestamp, deleted, file):
    # the same outcome whatever order or batches the files came in.
    deleted = "false" if spec.fields else spec.deleted_expr
    bt, rt = "try_cast(b.cursor_at as timestamptz)", "try_cast(r.cursor_at as timestamptz)"
    older = f"""(
        coalesce({bt} < {rt}, {bt} is null and {rt} is not null)
        or ({bt} is not distinct from {rt}
            and (b.is_deleted::int < r._is_deleted::int
                 or (b.is_deleted = r._is_deleted and b.source_file < r._source_file)))
    )"""
    con.execute(f"""
        create or replace temp table _accepted as
        select b.*,
               case when r.{k} is null then 'inserted'
                    when {same} then 'unchanged'
                    when {older} then 'unchanged'
                    else 'updated' end as outcome
        from (select * {accepted}) b
        left join (
            select * exclude (j), coalesce({deleted}, false) as _is_deleted
            from (select *, {"null::json" if spec.fields else "payload"} as j from {t}
                  where {k} in (select rec_id {accepted}))
        ) r on r.{k} = b.rec_id
    """)
    assign = ", ".join(f"{c} = a.{s}" for s, c in zip(src, cols, strict=True) if c != k)
    con.execute(
        f"""
        update {t} set {assign}, cursor_at = a.cursor_at,
                       _source_file = a.source_file, _batch_id = ?, _loaded_at = now()
        from _accepted a where a.outcome = 'updated' and {t}.{k} = a.rec_id
    """,
        [batch_id],
    )
    con.execute(
        f"""
        insert into {t} ({k}, {", ".join(c for c in cols if c != k)}, cursor_at, _source_file,
                         _batch_id, _loaded_at)
        select rec_id, {", ".join(s for s, c in zip(src, cols, strict=True) if c != k)}, cursor_at,
               source_file, ?, now()
        from _accepted where outcome = 'inserted'
    """,
        [batch_id],
    )
    out = dict(con.sql("select outcome, count(*) from _accepted group by all").fetchall())
    return {k2: out.get(k2, 0) for k2 in ("inserted", "updated", "unchanged")}
