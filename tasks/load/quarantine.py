"""The load stage's quarantine rows, written in the batch's transaction: what the screen set
aside (_quarantine_screened: whole files without their text, non-UTF-8 lines) and the records
a batch rejected (_quarantine_load_rejects, with REJECT_REASONS; bad lines redacted first)."""

from __future__ import annotations

import json

import duckdb

from tasks import redact, screening
from tasks.contracts import SourceSpec, payload_text
from tasks.db import sql_literal
from tasks.quality import record_quarantine


def _quarantine_screened(
    con: duckdb.DuckDBPyConnection,
    spec: SourceSpec,
    run_id: str,
    rejects: list[screening.Reject],
    pages: bool = False,
) -> int:
    """Quarantine the screen's rejects (inside the batch's transaction); returns how many.
    Whole files are keyed by path (a page: by its position) and content hash, lines by file and
    line number, so each rejected file and line is its own row."""
    if not rejects:
        return 0
    con.execute(
        "create or replace temp table _screened (source_file varchar, file_key varchar, "
        "pos bigint, rule varchar, detail varchar, payload varchar, sha256 varchar)"
    )
    con.executemany(
        "insert into _screened values (?, ?, ?, ?, ?, ?, ?)",
        [
            [
                r.path,
                "page" if pages else r.path,
                r.pos,
                r.rule,
                r.detail,
                json.dumps({"sha256": r.sha256, "size_bytes": r.size}) if r.whole else r.payload,
                r.sha256,
            ]
            for r in rejects
        ],
    )
    table = sql_literal(spec.raw_table)
    con.execute(f"""
        create or replace temp table _rejects as
        select md5(concat_ws('|', 'load', {table}, rule, file_key, coalesce(pos::varchar, ''),
                             coalesce(sha256, payload, ''))) as quarantine_id,
               'load' as stage, {sql_literal(spec.source)} as source, {table} as table_name,
               null::varchar as record_key, rule,
               detail || ' (' || regexp_extract(source_file, '[^/]+$')
                   || coalesce(' #' || pos, '') || ')' as reason,
               payload, source_file
        from _screened
    """)
    record_quarantine(con, "_rejects", "load", [spec.raw_table], run_id)
    return len(rejects)


REJECT_REASONS = {
    "invalid_json": "line is not valid JSON",
    "invalid_json_file": "export page is not valid JSON; the whole page was set aside",
    "not_an_object": "record is valid JSON but not an object",
    "missing_id": "record has no usable stable id",
    "duplicate": "same id delivered twice in one batch; the newest copy was kept "
    "(vendor timestamp, then the later file and line)",
    "duplicate_key": "the key appears more than once in this file with different values; "
    "no copy was used",
    "duplicate_row": "the same row appears again in this file; the first copy was kept",
    "missing_column": "a required column is missing; the file was set aside",
    "unreadable_file": "the file could not be read; it was set aside",
    # Set by the screen (screening.screen_files), with what is wrong and where in the reason:
    "invalid_utf8": "line is not valid UTF-8",
    "undecodable_file": "file is binary, corrupt gzip or (a page) not UTF-8; set aside whole",
    "html_file": "file is an HTML/XML document; set aside whole",
    "unexpected_page_shape": "page lacks the vendor's record list; set aside whole",
    "error_page": "page is an error body, not data; set aside whole",
}


def _quarantine_load_rejects(
    con: duckdb.DuckDBPyConnection, spec: SourceSpec, run_id: str, rejects: str = "_batch_v"
) -> int:
    """Quarantine the rejected records of `rejects` (_batch_v, or _rej on the direct path) and
    the bad lines in _bad; returns how many."""
    reasons = " ".join(
        f"when {sql_literal(rule)} then {sql_literal(text)}"
        for rule, text in REJECT_REASONS.items()
    )
    _redact_bad_lines(con)
    payload = f"coalesce(text, {payload_text(spec)})"
    # Table layouts say per row what to fix (which column a file lacks, which check failed).
    detail = "reject_detail" if spec.layout == "table" else "null::varchar"
    con.execute(f"""
        create or replace temp table _rejects as
        with rejected as (
            select source_file, pos, rec_id, reject_rule, {payload} as payload,
                   {detail} as detail
            from {rejects} where reject_rule is not null and reject_rule <> 'unparsed'
            union all
            select source_file, pos, null, reject_rule, text, null from _bad
        )
        -- One row per rejected record: the key holds the file and the line/position, and for
        -- identical rejects without a position (copies of one line) the copy's index.
        , numbered as (
            select *, row_number() over (
                       partition by source_file, pos, reject_rule, rec_id::varchar, payload
                   ) as copy_no
            from rejected
        )
        select md5(concat_ws('|', 'load', {sql_literal(spec.raw_table)}, reject_rule,
                             coalesce(rec_id::varchar, ''), payload, source_file,
                             coalesce(pos::varchar, ''), copy_no::varchar)) as quarantine_id,
               'load' as stage, {sql_literal(spec.source)} as source,
               {sql_literal(spec.raw_table)} as table_name, rec_id::varchar as record_key,
               reject_rule as rule,
               coalesce(detail, case reject_rule {reasons} end)
                   || ' (' || regexp_extract(source_file, '[^/]+$')
                   || coalesce(' #' || pos, '') || ')' as reason,
               payload, source_file
        from numbered
    """)
    record_quarantine(con, "_rejects", "load", [spec.raw_table], run_id)
    return (
        con.sql(
            f"select count(*) from {rejects} where reject_rule is not null "
            "and reject_rule <> 'unparsed'"
        ).fetchall()[0][0]
        + con.sql("select count(*) from _bad").fetchall()[0][0]
    )


def _redact_bad_lines(con: duckdb.DuckDBPyConnection) -> None:
    """Lines set aside before parsing never went through the record redaction; the quarantine
    keeps only their redacted text (e-mails, phones, cards, names in their forms, tokens).
    Bad lines are few: they are redacted in Python and only changed ones written back."""
    changed = [
        (red, rowid)
        for rowid, text in con.sql("select rowid, text from _bad where text is not null").fetchall()
        if (red := redact.redact_text(text)) != text
    ]
    if changed:
        con.executemany("update _bad set text = ? where rowid = ?", changed)
