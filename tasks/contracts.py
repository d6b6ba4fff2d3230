"""The contracts between the connectors and the loader: how each raw table lands (SourceSpec
and the file sources' specs), what a connector hands over (LandedPage) and what it provides
(Connector).

Both sides import this module and it imports nothing of theirs, so the dependencies run one way:
tasks/clients/* -> tasks/contracts.py <- tasks/load/ (tests/test_architecture.py checks it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from tasks.db import sql_literal

# ---------------------------------------------------------------------------------------------
# How a raw table lands
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceSpec:
    """How one vendor export lands: the facts as data, the SQL below uses them."""

    source: str
    stream: str
    raw_table: str
    key_column: str
    # SQL expression over `j` (the record JSON) giving the stable id; NULL = missing id.
    key_expr: str
    cursor_expr: str
    # SQL predicate over `j` for records that are not ours to keep (e.g. GitHub pull requests).
    drop_expr: str = "false"
    # "newest" = repeats of an id in one batch are versions (latest cursor wins);
    # "first" = repeats are duplicate deliveries of an immutable record: the copy that wins by
    # _VERSION_ORDER is kept (in any batch split), the other copies of one batch are quarantined.
    repeats: str = "newest"
    # "lines": one JSON record per line; otherwise a JSONPath to the record list in each file.
    layout: str = "lines"
    # SQL predicate over `j`: the record is a deletion marker (tombstone). On a cursor tie the
    # deleted version wins (see _VERSION_ORDER).
    deleted_expr: str = "false"
    # SQL over `j` giving the JSON stored as raw payload: reshape records, redact ticket text.
    record_sql: str = "j"
    # High-volume streams keep typed columns instead of one payload JSON: raw column ->
    # (top-level JSON key, DuckDB type). JSON lines with `fields` are read by read_json with
    # explicit columns (DuckDB's fastest path); key_expr/cursor_expr then refer to the raw
    # column names instead of `j`.
    fields: tuple[tuple[str, str, str], ...] = ()
    # The typed fields straight from the raw record `j`, in place of record_sql + a parse of
    # the object it builds: (SQL over `j` computed once per record as `_r`, e.g. one multi-path
    # json_extract_string, then per field of `fields` an SQL over `_r`). For record_sql that
    # always builds an object; the expressions must give exactly what record_sql's object gave
    # (tests/test_load.py compares them).
    record_fields: tuple[str, tuple[str, ...]] | None = None
    # Pages ('$.<list>[*]') with record_fields: the DuckDB type each record of the list reads as
    # (e.g. "VARCHAR[]": one text per array item), standing in for record_fields' `_r`. Pages
    # are then parsed once and their records land straight in the raw table (_land_direct);
    # a batch the type does not fit, or with a record that needs a decision, takes the staging
    # path. It must give what `_r` gives on every record it reads (tests/test_load.py).
    record_type: str | None = None
    # A list beside the records in each page that record_sql may consult, as `page`:
    # (name, JSONPath of the list, the item's key field, the record field(s) holding keys: each
    # a scalar key or a list of keys).
    sideload: tuple[str, str, str, str | tuple[str, ...]] | None = None
    # layout "table": CSV or Parquet files, one record per row, read by _read_tables into `j`
    # (an object of the row's known `columns`, as text; names matched case-insensitively, other
    # columns ignored). A file without a `required` column, or one DuckDB cannot read, is set
    # aside whole and read again next run. `checks`: (rule, SQL predicate over `j` that rejects
    # the row, reason). The cursor is the file's modification time, so the newest file wins; a key
    # repeated within one file is quarantined (every copy when they differ, the later copies when
    # they are the same row). `private` fields stay in raw and are never copied to quarantine.
    columns: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    checks: tuple[tuple[str, str, str], ...] = ()
    private: tuple[str, ...] = ()

    @property
    def payload_columns(self) -> list[str]:
        return [f[0] for f in self.fields] if self.fields else ["payload"]

    @property
    def fast_lines(self) -> bool:
        return bool(self.fields) and self.layout == "lines"


POSTHOG_EVENTS = SourceSpec(
    source="posthog",
    stream="events",
    raw_table="raw.posthog__events",
    key_column="event_id",
    # = nullif(trim(event_id), ''): trim leaves an id that starts and ends with a visible ASCII
    # character as it is, and skipping its Unicode scan for those (nearly every id) cut a
    # sixth off the cost of landing an event.
    key_expr=(
        "case when left(event_id, 1) between '!' and '~' and right(event_id, 1) between '!' "
        "and '~' then event_id else nullif(trim(event_id), '') end"
    ),
    cursor_expr="event_time ->> '$'",
    repeats="first",
    layout="lines",
    fields=(
        ("event_id", "uuid", "VARCHAR"),
        ("event", "event", "VARCHAR"),
        ("distinct_id", "distinct_id", "VARCHAR"),
        ("event_time", "timestamp", "JSON"),
        ("properties", "properties", "JSON"),
    ),
)
ZENDESK_TICKETS = SourceSpec(
    source="zendesk",
    stream="tickets",
    raw_table="raw.zendesk__tickets",
    key_column="ticket_id",
    key_expr=(
        "case when json_type(j, '$.id') in ('UBIGINT', 'BIGINT') then (j ->> 'id')::bigint end"
    ),
    cursor_expr="j ->> 'updated_at'",
    layout="$.tickets[*]",
    deleted_expr="j ->> 'status' = 'deleted'",
    # Every person the page side-loads for a ticket, so their names can be redacted.
    sideload=(
        "users",
        "$.users[*]",
        "id",
        (
            "requester_id",
            "submitter_id",
            "assignee_id",
            "collaborator_ids",
            "follower_ids",
            "email_cc_ids",
        ),
    ),
)
GITHUB_ISSUES = SourceSpec(
    source="github",
    stream="issues",
    raw_table="raw.github__issues",
    key_column="node_id",
    key_expr="nullif(trim(j ->> 'node_id'), '')",
    cursor_expr="j ->> 'updated_at'",
    drop_expr="json_exists(j, '$.pull_request')",
    layout="$[*]",
)
_ARR = "try_cast(trim(j ->> 'arr') as double)"
ACCOUNTS = SourceSpec(
    source="accounts",
    stream="accounts",
    raw_table="raw.accounts__accounts",
    key_column="account_key",
    key_expr="nullif(trim(j ->> 'account_key'), '')",
    cursor_expr="cursor_at",  # the file's modification time (see SourceSpec.columns)
    layout="table",
    record_sql=(
        "json_merge_patch(j, json_object('account_key', nullif(trim(j ->> 'account_key'), ''), "
        f"'arr', {_ARR}))"
    ),
    columns=("account_key", "arr", "plan", "segment", "name", "updated_at"),
    required=("account_key", "arr"),
    checks=(
        (
            "invalid_arr",
            f"{_ARR} is null or not isfinite({_ARR})",
            "arr is not a plain number (write 1200.50: no currency symbol, no thousands separator)",
        ),
        ("negative_arr", f"{_ARR} < 0", "arr is negative"),
    ),
    private=("name",),
)
SPECS = {s.source: s for s in (POSTHOG_EVENTS, ZENDESK_TICKETS, GITHUB_ISSUES, ACCOUNTS)}


# Rules that set a whole file/page aside: it is quarantined without its text (it may hold
# personal data; the row carries its sha256 and size), recorded in ops.loaded_files as rejected
# and not read again until its size, mtime and hash change.
WHOLE_FILE_RULES = (
    "undecodable_file",
    "html_file",
    "invalid_json_file",
    "unexpected_page_shape",
    "error_page",
)


def payload_text(spec: SourceSpec, alias: str = "") -> str:
    """The record as JSON text, for quarantine rows and change detection."""
    p = f"{alias}." if alias else ""
    if not spec.fields:
        return f"{p}j::varchar"
    pairs = ", ".join(f"{sql_literal(key)}, {p}{col}" for col, key, _ in spec.fields)
    return f"json_object({pairs})::varchar"


# ---------------------------------------------------------------------------------------------
# What a connector provides
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LandedPage:
    """One page as the vendor sent it (or NDJSON of its records) and the state after it."""

    body: bytes
    state: dict[str, Any]
    n_records: int
    # The connector parsed the body as strict JSON (RFC 8259, UTF-8) and found the record list
    # its spec.layout names as a list: the loader's own JSON shape pass is skipped for it (the
    # byte screen still runs). False: the loader checks the shape itself.
    shape_checked: bool = False


class Connector(Protocol):
    source: str
    stream: str
    kind: str  # usage | tickets | bugs | errors
    spec: SourceSpec

    def pages(self, state: dict[str, Any] | None, window_end: datetime) -> Iterator[LandedPage]:
        """Pages in order from `state` (None: the configured start) up to `window_end`."""
        ...

    def check(self) -> None:
        """One cheap authenticated call; raises an HttpError subclass when it fails."""
        ...
