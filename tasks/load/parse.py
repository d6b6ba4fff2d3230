"""How a batch's files become records: the SQL that reads them (read_json, read_csv,
read_text) and parses them with DuckDB's JSON functions, one row per record with its file,
position and typed fields. Besides the SQL builders: _read_pages reads a batch of pages into
temp table _pages before the batch's transaction, and _settle_unparsed turns the fast line
reader's unparsed rows into outcomes (bad lines, or objects without any declared field).

Files DuckDB reads under another name (a gunzipped or UTF-8-cleaned copy from the screen) are
reported by their original path (_ALIASES, set per batch by batch._load_batch)."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import duckdb

from tasks.contracts import SourceSpec
from tasks.db import sql_list, sql_literal


class _Aliases(threading.local):
    """Files DuckDB reads under another name (a gunzipped or UTF-8-cleaned copy): copy ->
    original. Set for the duration of one batch (_load_batch); the SQL reports the original as
    source_file. Per thread: sources pulled in parallel (tasks/extract.py) build their SQL in
    their own threads."""

    def __init__(self) -> None:
        self.map: dict[str, str] = {}


_ALIASES = _Aliases()


def _source_file_sql(col: str = "filename") -> str:
    aliases = _ALIASES.map
    if not aliases:
        return col
    whens = " ".join(f"when {sql_literal(a)} then {sql_literal(o)}" for a, o in aliases.items())
    return f"(case {col} {whens} else {col} end)"


def _readable(path: str) -> Path:
    """The file DuckDB reads for an original path (its copy, if it has one)."""
    return Path(next((a for a, o in _ALIASES.map.items() if o == path), path))


def _read_pages(con: duckdb.DuckDBPyConnection, spec: SourceSpec, paths: list[Path]) -> bool:
    """Pages whose records are one top-level list ('$.results[*]'): read them with read_json
    into temp table _pages (one parse, the list as JSON[]) instead of read_text + a JSON cast +
    json_extract, which also kept every page's parsed text around.

    Run before the batch's transaction, because a page the reader rejects (invalid JSON, the
    list not an array) raises; such a batch, and one with a page the reader would read where
    the staging path would not (byte order mark, not exactly one JSON value), takes the staging
    path, which sets the page aside whole as before. Returns whether _pages holds the batch."""
    m = _PAGE_LIST.fullmatch(spec.layout)
    if not m or spec.sideload or not paths:
        return False
    for p in paths:
        with p.open("rb") as f:
            if f.read(3) == b"\xef\xbb\xbf":
                return False
    largest = max(p.stat().st_size for p in paths)
    try:
        con.execute(f"""
            create or replace temp table _pages as
            select {_source_file_sql()} as source_file, "{m[1]}" as records
            from read_json({sql_list(paths)}, format = 'unstructured', records = true,
                           filename = true, columns = {{'{m[1]}': 'JSON[]'}},
                           maximum_object_size = {max(largest + 1, 16 * 1024 * 1024)})
        """)
    except duckdb.Error:
        con.execute("drop table if exists _pages")
        return False
    n, n_files = con.sql("select count(*), count(distinct source_file) from _pages").fetchall()[0]
    if n == n_files == len(paths):
        return True
    con.execute("drop table if exists _pages")
    return False


_PAGE_LIST = re.compile(r"\$\.([A-Za-z_][A-Za-z0-9_]*)\[\*\]")
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _records_sql(spec: SourceSpec, paths: list[Path], pages_read: bool = False) -> str:
    """One row per source record: file, position, text of a bad record, parsed JSON `j`
    (NULL if invalid), plus the typed fields when the spec has them. `pages_read`: the
    batch's pages are in _pages (see _read_pages)."""
    files = sql_list(paths)
    if pages_read:
        # A JSON null in the list reads as SQL NULL; json_extract gave the JSON value null.
        recs = """
            select source_file, pos, null as text, coalesce(j, 'null'::json) as j,
                   null as parse_error, null::json as page
            from (
                select source_file, unnest(records) as j,
                       generate_subscripts(records, 1) as pos
                from _pages
            )
        """
    elif spec.layout == "lines":
        # Each line is one opaque string, so a single bad line is quarantined instead of failing
        # the file; delimiter/quote are characters valid JSON text never holds raw. pos is the
        # line number (the scan's ordinality; blank lines count).
        recs = f"""
            select {_source_file_sql()} as source_file, pos,
                   case when not json_valid(line) then line end as text,
                   case when json_valid(line) then line::json end as j,
                   case when not json_valid(line) then 'invalid_json' end as parse_error,
                   null::json as page
            from ({_numbered_lines_sql(paths)})
            where line is not null and trim(line) <> ''
        """
    else:
        recs = f"""
            with files as (
                select filename, content, json_valid(content) as ok
                from read_text({files})
            ),
            records as (
                select filename, unnest(l) as j, generate_subscripts(l, 1) as pos
                from (select filename, json_extract(content::json, '{spec.layout}') as l
                      from files where ok)
            ){_sideload_sql(spec)}
            select {_source_file_sql()} as source_file, pos,
                   null as text, j, null as parse_error, page
            from with_page
            union all
            select {_source_file_sql()}, 0, null, null, 'invalid_json_file', null::json
            from files where not ok
        """
    if spec.record_fields:
        pre, exprs = spec.record_fields
        direct = "".join(
            f", case when j is not null then {e} end::{typ} as {col}"
            for (col, _, typ), e in zip(spec.fields, exprs, strict=True)
        )
        # j is not kept: record_sql's object only fed the fields and the not-an-object check,
        # which it always passed.
        return f"""
            with raw_recs as ({recs})
            select * exclude (_r, j), null::json as j{direct}
            from (
                select * exclude (page), case when j is not null then {pre} end as _r
                from raw_recs
            )
        """
    # Text and JSON fields come out of one json_transform (one parse of the record instead of
    # one per field); it agrees with ->> / -> except that a JSON null gives SQL NULL, where
    # -> gave the JSON value null, so a NULL falls back to ->.
    one_parse = {
        key: typ.upper()
        for _, key, typ in spec.fields
        if typ.upper() in ("VARCHAR", "JSON") and _PLAIN_KEY.fullmatch(key)
    }
    typed = ""
    for col, key, typ in spec.fields:
        if key not in one_parse:
            typed += (
                f", case when j is not null then j {'->' if typ == 'JSON' else '->>'} "
                f"{sql_literal(key)} end::{typ} as {col}"
            )
        elif one_parse[key] == "VARCHAR":
            typed += f', _t."{key}" as {col}'
        else:
            typed += (
                f', case when _t."{key}" is not null then _t."{key}" '
                f"else j -> {sql_literal(key)} end::JSON as {col}"
            )
    transform = (
        f", json_transform(j, {sql_literal(json.dumps(one_parse))}) as _t" if one_parse else ""
    )
    return f"""
        with raw_recs as ({recs})
        select * exclude (j{", _t" if one_parse else ""}), j{typed}
        from (
            select *{transform}
            from (
                select * exclude (j, page),
                       case when j is not null then ({spec.record_sql}) end as j
                from raw_recs
            )
        )
    """


def _sideload_sql(spec: SourceSpec) -> str:
    """CTE `with_page`: each record with `page` = {<name>: [the side-loaded items it refers to]}
    (e.g. Zendesk's include=users: requester, submitter, assignee, CCs, followers), so
    record_sql can use them without copying whole pages. The record fields holding the keys are
    scalars or lists of keys."""
    if not spec.sideload:
        return ",\n            with_page as (select *, null::json as page from records)"
    name, path, item_key, record_fields = spec.sideload
    fields = (record_fields,) if isinstance(record_fields, str) else tuple(record_fields)
    refs = ", ".join(
        f"case when json_type(j, '$.{f}') = 'ARRAY' then json_extract_string(j, '$.{f}[*]') "
        f"else [j ->> '{f}'] end"
        for f in fields
    )
    return f""",
            side as (
                select filename, unnest(json_extract(content::json, '{path}')) as item
                from files where ok
            ),
            side_keyed as (
                select filename, item ->> '{item_key}' as side_key, any_value(item) as item
                from side group by all
            ),
            records_refs as (
                select *, list_sort(list_distinct(flatten([{refs}]))) as _refs from records
            ),
            ref_items as (
                select r.filename, r._refs, list(s.item order by s.side_key) as items
                from (select distinct filename, _refs, unnest(_refs) as ref from records_refs) r
                join side_keyed s on r.filename = s.filename and r.ref = s.side_key
                group by all
            ),
            with_page as (
                select records_refs.* exclude (_refs),
                       case when ref_items.items is not null
                            then json_object('{name}', to_json(ref_items.items)) end as page
                from records_refs
                left join ref_items
                    on records_refs.filename = ref_items.filename
                    and records_refs._refs = ref_items._refs
            )"""


def _fast_lines_sql(spec: SourceSpec, paths: list[Path]) -> str:
    """JSON lines with declared fields: DuckDB's read_json with explicit columns (one typed
    parse, no per-line JSON values kept). Unparseable lines come back as all-NULL rows; their
    text is collected by _bad_lines_sql."""
    cols = ", ".join(f"{sql_literal(key)}: {sql_literal(typ)}" for _, key, typ in spec.fields)
    select = ", ".join(f'"{key}" as {col}' for col, key, _ in spec.fields)
    all_null = " and ".join(f'"{key}" is null' for _, key, _ in spec.fields)
    return f"""
        select {_source_file_sql()} as source_file, null::bigint as pos, null::varchar as text,
               null::json as j, case when {all_null} then 'unparsed' end as parse_error,
               {select}
        from read_json({sql_list(paths)}, format = 'newline_delimited', ignore_errors = true,
                       filename = true, columns = {{{cols}}})
    """


def _numbered_lines_sql(paths: list[Path]) -> str:
    """Every line of the files as (filename, line, pos = line number). The scan's ordinality is
    deterministic and contiguous per file (files are read in list order), unlike a row_number()
    without ORDER BY; blank lines are rows (line NULL), so numbers match the file."""
    return f"""
        select filename, line, o - min(o) over (partition by filename) + 1 as pos
        from read_csv({sql_list(paths)}, columns = {{'line': 'VARCHAR'}}, delim = '\x1f',
                      quote = '', escape = '', header = false, auto_detect = false,
                      filename = true, strict_mode = false) with ordinality as t(line, filename, o)
    """


def _bad_lines_sql(paths: list[Path]) -> str:
    """Lines that are not JSON objects, with their text and line number (cheap: validity only,
    no parse; only files with such lines are read)."""
    return f"""
        select {_source_file_sql()} as source_file, pos, line as text,
               case when not json_valid(line) then 'invalid_json' else 'not_an_object' end
                   as reject_rule
        from ({_numbered_lines_sql(paths)})
        where line is not null and trim(line) <> ''
          and (not json_valid(line) or left(ltrim(line), 1) <> '{{')
    """


def _direct_pages_sql(spec: SourceSpec, paths: list[Path]) -> str:
    """The records of a batch of pages with their typed fields, in _fast_lines_sql's columns:
    one read_json of the list as `record_type`[] (one parse; a record the type does not fit
    fails the read), `_r` per record, the fields as record_fields computes them from `_r`."""
    m = _PAGE_LIST.fullmatch(spec.layout)
    assert m is not None and spec.record_fields is not None and spec.record_type
    _, exprs = spec.record_fields
    fields = ", ".join(
        f"({e})::{typ} as {col}" for (col, _, typ), e in zip(spec.fields, exprs, strict=True)
    )
    largest = max(p.stat().st_size for p in paths)
    return f"""
        select source_file, null::bigint as pos, null::varchar as text, null::json as j,
               null::varchar as parse_error, {fields}
        from (
            select {_source_file_sql()} as source_file, unnest("{m[1]}") as _r
            from read_json({sql_list(paths)}, format = 'unstructured', records = true,
                           filename = true, columns = {{'{m[1]}': '{spec.record_type}[]'}},
                           maximum_object_size = {max(largest + 1, 16 * 1024 * 1024)})
        )
    """


def _settle_unparsed(spec: SourceSpec, counts: dict) -> dict:
    """Fast path: unparsed rows are the bad lines (their text is in _bad); any excess are
    valid JSON objects with none of the declared fields."""
    unparsed = counts.pop("unparsed", 0)
    n_bad = sum(v for k, v in counts.items() if k in ("invalid_json", "not_an_object"))
    if spec.fast_lines and unparsed > n_bad:
        counts["missing_id"] = counts.get("missing_id", 0) + unparsed - n_bad
    return counts
