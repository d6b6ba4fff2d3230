"""The canonical staging unions, written out from the vendors that feed them.

Each `sql/staging/<union>__unvalidated.sql` is plain SQL (paste it into the DuckDB CLI) made of
one CTE per vendor of the union's kind (tasks/sources.py VENDORS, in that order) selecting the
union's canonical columns (UNION_COLUMNS) from the vendor's staging model, `unioned` (their
UNION ALL), then the hand-written rest from `sql/staging/unions/<union>.sql`: its leading
comment becomes the file's header, the rest (normalising CTEs and the final select) follows
`unioned`.

So adding a source of an existing kind is its staging model (which must select every canonical
column, in any order) and its declaration (tasks/sources.py); `make generated`
(tasks/generated.py) rewrites the union files with the other files the declarations give, and
tests/test_generated.py fails while a checked-in file differs from what it writes. The
generator is the one command (`python -m tasks.generated [--check]`); this module gives it
union_sql, union_path and stale.
"""

from __future__ import annotations

from pathlib import Path

from tasks.settings import SQL_DIR
from tasks.sources import CANONICAL, VENDORS

# The columns every vendor model of a kind provides, in the union's column order.
UNION_COLUMNS: dict[str, tuple[str, ...]] = {
    "stg_usage_events": (
        "event_id",
        "source",
        "occurred_at",
        "ingested_at",
        "user_key",
        "account_key",
        "event_name",
        "url_path",
        "properties",
        "n_events",
        "type_error",
    ),
    "stg_support_tickets": (
        "ticket_id",
        "source",
        "created_at",
        "updated_at",
        "status",
        "priority",
        "channel",
        "subject",
        "body",
        "tags",
        "requester_key",
        "account_key",
        "is_deleted",
        "url",
        "type_error",
    ),
    "stg_bug_issues": (
        "issue_id",
        "source",
        "url",
        "title",
        "state",
        "state_reason",
        "severity",
        "labels",
        "components",
        "created_at",
        "updated_at",
        "closed_at",
        "votes",
        "is_deleted",
        "type_error",
    ),
    "stg_error_signals": (
        "issue_id",
        "source",
        "url",
        "title",
        "culprit",
        "level",
        "status",
        "n_events",
        "n_users",
        "first_seen_at",
        "last_seen_at",
        "url_path",
        "components",
        "is_deleted",
        "type_error",
    ),
    "stg_accounts": (
        "account_key",
        "arr",
        "plan",
        "segment",
        "updated_at",
        "source",
        "type_error",
    ),
}
PARTS_DIR = SQL_DIR / "staging" / "unions"
GENERATED = (
    "-- Written by `make generated` (tasks/unions.py): a CTE per {kind} vendor of "
    "tasks/sources.py,\n"
    "-- the rest from sql/staging/unions/{name}.sql. Edit those, not this file."
)


def _split_part(text: str) -> tuple[list[str], str]:
    """(header comment lines, the rest) of a hand-written part."""
    lines = text.splitlines()
    n = 0
    while n < len(lines) and lines[n].startswith("--"):
        n += 1
    return lines[:n], "\n".join(lines[n:]).strip("\n")


def union_sql(name: str, vendors=VENDORS) -> str:
    """The text of sql/staging/<name>__unvalidated.sql."""
    kind = next(k for k, union in CANONICAL.items() if union == name)
    feeds = [v for v in vendors if v.kind == kind]
    if not feeds:
        raise ValueError(f"no vendor feeds {name}")
    header, rest = _split_part((PARTS_DIR / f"{name}.sql").read_text(encoding="utf-8"))
    columns = ",\n".join(f"        {c}" for c in UNION_COLUMNS[name])
    ctes = [
        f"{v.source} as (\n    select\n{columns}\n    from staging.{v.staging_model}\n)"
        for v in feeds
    ]
    branches = "\n    union all\n".join(f"    select * from {v.source}" for v in feeds)
    ctes.append(f"unioned as (\n{branches}\n)")
    out = [
        GENERATED.format(kind=kind, name=name),
        *header,
        "with",
        "",
        ",\n\n".join(ctes) + ("" if rest.startswith("select") else ","),
        "",
        rest,
    ]
    return "\n".join(out) + "\n"


def union_path(name: str) -> Path:
    return SQL_DIR / "staging" / f"{name}__unvalidated.sql"


def stale() -> list[str]:
    """The union files that differ from what union_sql writes."""
    return [
        name
        for name in UNION_COLUMNS
        if not union_path(name).exists()
        or union_path(name).read_text(encoding="utf-8") != union_sql(name)
    ]
