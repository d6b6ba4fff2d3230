"""Every checked-in file that follows from the source declarations, written by one command.

A vendor is declared once: `DECLARATION = declare(...)` in its `tasks/clients/<vendor>.py`
(found by listing the package: a new module needs no registration), or in tasks/sources.py
FILE_ONLY for a vendor without a client module. From those declarations this writes:

- tasks/sources.json: the registry tasks/sources.py reads VENDORS from (and with it
  tasks/connectors.py CONNECTOR_TYPES, the doctor's id fields, tasks/rawstore.py EVENT_TABLES);
- sql/ddl/raw_<source>.sql: the raw table, its comment, and for an event table its history view;
- expectations/raw_<source>__<stream>.json: the raw suite (RAW_SUITE's rules), unless the vendor
  declares a hand-written one;
- expectations/<canonical>.json: only the value set of the `source` rule (the vendors of the
  kind); the rest of those suites is hand-written and kept as it is;
- sql/docs/raw.yml: the raw tables' column comments and the history views' comments;
- .env.example from its marker line on: the connectors' credential variables;
- sql/staging/<canonical>__unvalidated.sql: the staging unions (tasks/unions.py).

tests/test_generated.py fails while a checked-in file differs from what this module writes.

    python -m tasks.generated          # write the files (make generated)
    python -m tasks.generated --check  # exit 1 and name the files that differ
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from pathlib import Path

from tasks import unions
from tasks.settings import EXPECTATIONS_DIR, PROJECT_ROOT, SQL_DIR
from tasks.sources import CANONICAL, FILE_ONLY, REGISTRY, Vendor, sort_vendors

CLIENTS_PACKAGE = "tasks.clients"
MARK = "Written by `make generated` (tasks/generated.py)"
# The loader's bookkeeping columns, last in every raw table.
LOADER_COLUMNS = (
    ("_source_file", "varchar"),
    ("_batch_id", "varchar not null"),
    ("_loaded_at", "timestamptz not null"),
)
# Freshness rule of a generated raw suite: the newest record may be this many days older than
# the end of the as-of day (a warning per vendor; the staging suite judges the whole kind).
FRESHNESS_DAYS = {"usage": 2, "tickets": 3, "bugs": 14, "errors": 7}
COMMENT_WIDTH = 100


def declarations() -> tuple[Vendor, ...]:
    """FILE_ONLY and the DECLARATION of every tasks/clients module that has one, in VENDORS
    order (tasks/sources.py sort_vendors)."""
    package = importlib.import_module(CLIENTS_PACKAGE)
    found = list(FILE_ONLY)
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{CLIENTS_PACKAGE}.{info.name}")
        declared = getattr(module, "DECLARATION", None)
        if declared is not None:
            found.append(declared)
    check(found)
    return sort_vendors(found)


def check(vendors) -> None:
    """A declaration the generator cannot write from (ValueError naming it)."""
    seen: dict[str, Vendor] = {}
    for v in vendors:
        where = f"{v.source} ({v.declared_in})"
        if v.source in seen:
            raise ValueError(f"{where}: {v.source} is declared twice")
        seen[v.source] = v
        if v.kind not in CANONICAL:
            raise ValueError(f"{where}: kind {v.kind!r} is none of {', '.join(CANONICAL)}")
        if not v.title or not v.grain.startswith("grain: "):
            raise ValueError(f"{where}: declare a title and a grain ('grain: one row per ...')")
        if v.raw_key not in dict(v.column_docs):
            raise ValueError(f"{where}: column_docs must document the key {v.raw_key}")
        if v.raw_suite and v.kind not in FRESHNESS_DAYS:
            raise ValueError(f"{where}: no raw suite template for kind {v.kind}")
        if v.env_vars and not v.env_help:
            raise ValueError(f"{where}: declare env_help for {', '.join(v.env_vars)}")
        if v.env_vars and not any(v.kind in kinds for _, kinds in ENV_SECTIONS):
            raise ValueError(f"{where}: no .env.example section for kind {v.kind}")


# ---------------------------------------------------------------------------------------------
# The files
# ---------------------------------------------------------------------------------------------


def registry_json(vendors) -> str:
    """tasks/sources.json: a note that it is written, then one object per vendor, a field a line."""

    def dump(value) -> str:
        return json.dumps(value, ensure_ascii=False)

    objects = [
        "    {\n"
        + ",\n".join(f"      {dump(k)}: {dump(val)}" for k, val in v.as_json().items())
        + "\n    }"
        for v in vendors
    ]
    note = f"{MARK} from the declarations: edit those, not this file"
    return "{\n" + f'  "note": {dump(note)},\n  "vendors": [\n' + ",\n".join(objects) + "\n  ]\n}\n"


def ddl_path(v: Vendor) -> Path:
    return SQL_DIR / "ddl" / f"raw_{v.source}.sql"


def _wrap(text: str, width: int) -> list[str]:
    """`text` split at single spaces into lines of at most `width` characters (greedy; a word
    longer than `width` stands alone)."""
    lines, line = [], ""
    for word in text.split(" "):
        joined = f"{line} {word}" if line else word
        if line and len(joined) > width:
            lines.append(line)
            line = word
        else:
            line = joined
    return [*lines, line]


def _sql_comment(text: str, width: int = COMMENT_WIDTH) -> str:
    """`text` as an SQL string literal, split into adjacent literals of at most `width`."""
    lines = _wrap(text.replace("'", "''"), width - 3)
    return "\n".join([f"'{line} '" for line in lines[:-1]] + [f"'{lines[-1]}'"])


def ddl_sql(v: Vendor) -> str:
    """sql/ddl/raw_<source>.sql: the raw table (and the history view of an event table)."""
    columns = [(v.raw_key, f"{v.key_type} not null"), *v.raw_columns, *LOADER_COLUMNS]
    body = ",\n".join(f"    {name} {ddl_type}" for name, ddl_type in columns)
    out = [
        f"-- {MARK} from the declaration of {v.source} in",
        f"-- {v.declared_in}: edit that, not this file. Idempotent.",
        "create schema if not exists raw;",
        "",
        f"create table if not exists {v.raw_table} (",
        body,
        ");",
        f"comment on table {v.raw_table} is",
        _sql_comment(v.grain) + ";",
    ]
    if v.event_day_sql:
        out += [
            "",
            "-- Its full history (warehouse rows, plus Parquet day files in the parquet store; "
            "tasks/rawstore.py).",
            f"create view if not exists {v.raw_table}_all as select * from {v.raw_table};",
        ]
    return "\n".join(out) + "\n"


def raw_suite_path(v: Vendor) -> Path:
    return EXPECTATIONS_DIR / f"raw_{v.source}__{v.stream}.json"


RAW_CONVENTIONS = (
    "severity: critical fails the source (its dependent suggestions are not written back, the "
    "run is Degraded), warning lowers the confidence of scores that use it and says why. Raw "
    "rows are never quarantined here (the loader did that): every rule is table-level. Queries "
    "may read getvariable('reference_at') (end of the run's as-of day), "
    "getvariable('max_allowed_at') (run start + 1 day) and quality.schema_drift "
    "(tasks/quality.py, sql/quality/schema_drift.sql)."
)
RAW_BATCH = (
    "Validated per run on the new batch: the rows loaded (or updated) since the last validated "
    "watermark (quality.validation_state, tasks/quality.py). Rules that need the whole table "
    "read it through the batch's keys (duplicates) or per-run rollups "
    "(quality.validation_batches: newest record; quality.schema_drift)."
)


def _rule(query: str, severity: str, description: str, note: str | None = None) -> dict:
    meta: dict = {"row_level": False}
    if note:
        meta["note"] = note
    return {
        "type": "unexpected_rows_expectation",
        "kwargs": {"unexpected_rows_query": query},
        "severity": severity,
        "description": description,
        "meta": meta,
    }


def raw_suite(v: Vendor) -> dict:
    """The raw suite of a vendor: rows exist, one row per key, a cursor, freshness, drift."""
    t, key, days = v.raw_table, v.raw_key, FRESHNESS_DAYS[v.kind]

    def drift(change: str, severity: str, description: str) -> dict:
        query = (
            f"select field, detail from quality.schema_drift where raw_table = '{t}' "
            f"and change = '{change}'"
        )
        return _rule(query, severity, description)

    return {
        "name": f"raw_{v.source}__{v.stream}",
        "meta": {
            "owner": "feedback-loop",
            "table": t,
            "source": v.source,
            "source_kind": v.kind,
            "grain": f"one row per {v.source} record (latest version)",
            "key": key,
            "conventions": RAW_CONVENTIONS,
            "newest_record": "try_cast(cursor_at as timestamptz)",
            "batch": RAW_BATCH,
        },
        "expectations": [
            _rule(
                f"select '{t} holds no records' as detail where not exists (select 1 from {t})",
                "critical",
                f"{v.source} delivered records (a source returning zero rows fails)",
                "the whole table (not only the new batch): a night without new records is "
                "judged by freshness",
            ),
            _rule(
                f"select {key}, printf('%s appears %d times', {key}::varchar, count(*)) as detail "
                f"from {t} where {key} in (select {key} from {{batch}}) group by {key} "
                "having count(*) > 1",
                "critical",
                f"duplicates: one row per stable id ({key})",
                "the loader merges on the id; this is the safety net: the new batch's keys "
                "against the whole table (a semi-join, not a scan of every key)",
            ),
            {
                "type": "expect_column_values_to_not_be_null",
                "kwargs": {"column": "cursor_at", "mostly": 0.99},
                "severity": "warning",
                "description": "records carry the source cursor (their updated/event time)",
                "meta": {"row_level": False},
            },
            _rule(
                "select b.newest_record_at as newest_at, printf('newest %s record at %s, more "
                f"than {days} days before %s', '{v.source}', "
                "coalesce(b.newest_record_at::varchar, 'none'), getvariable('reference_at')) as "
                "detail from (select 1) as one left join quality.validation_batches as b on "
                f"b.run_id = getvariable('run_id') and b.table_name = '{t}' where "
                "b.newest_record_at is null or b.newest_record_at < "
                f"getvariable('reference_at')::timestamptz - interval {days} day",
                "warning",
                f"freshness: the newest {v.source} record is at most {days} days older than the "
                "end of the as-of day",
                "a warning per vendor: another vendor of the same kind may still be current; the "
                "staging suite fails critically when the whole kind is stale",
            ),
            drift(
                "missing",
                "critical",
                "schema drift: a top-level field the source always sent is missing from its "
                "latest delivery (renamed or dropped)",
            ),
            drift("retyped", "critical", "schema drift: a top-level field changed its JSON type"),
            drift(
                "new",
                "warning",
                "schema drift: a new top-level field appeared (accepted into the baseline after "
                "this run)",
            ),
        ],
    }


def _json(doc: dict) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def staging_suite_path(canonical: str) -> Path:
    return EXPECTATIONS_DIR / f"{canonical}.json"


def staging_suite(canonical: str, vendors) -> str:
    """The hand-written staging suite with the value set of its `source` rule set to the
    vendors of its kind."""
    kind = next(k for k, union in CANONICAL.items() if union == canonical)
    doc = json.loads(staging_suite_path(canonical).read_text(encoding="utf-8"))
    rules = [
        e
        for e in doc["expectations"]
        if e["type"] == "expect_column_values_to_be_in_set" and e["kwargs"]["column"] == "source"
    ]
    if len(rules) != 1:
        raise ValueError(f"{canonical}.json: expected one value-set rule on source")
    rules[0]["kwargs"]["value_set"] = [v.source for v in vendors if v.kind == kind]
    return _json(doc)


RAW_DOCS = SQL_DIR / "docs" / "raw.yml"


def raw_docs(vendors) -> str:
    """sql/docs/raw.yml: the raw tables' column comments, then the history views'."""
    out = [
        f"# {MARK} from the source declarations",
        "# (tasks/sources.py): edit those, not this file. The raw tables' column comments (their",
        "# table comments are in sql/ddl/raw_*.sql), then the history views'. Shared columns",
        "# (cursor_at, payload, _source_file, ...) are in columns.yml.",
    ]
    quote = lambda text: json.dumps(text, ensure_ascii=False)  # noqa: E731 - YAML double quotes
    for v in vendors:
        out.append(f"{v.source}__{v.stream}:")
        if len(v.column_docs) == 1:
            ((column, doc),) = v.column_docs
            out.append(f"  columns: {{{column}: {quote(doc)}}}")
        else:
            out.append("  columns:")
            out += [f"    {column}: {quote(doc)}" for column, doc in v.column_docs]
    for v in vendors:
        if v.event_day_sql:
            comment = (
                f"grain: one row per {v.title} event, the full history; key: {v.raw_key}. "
                f"{v.raw_table} plus, with raw_events_store = parquet, its older event days as "
                "Parquet files (ops.raw_event_files); staging reads this."
            )
            out += [
                f"{v.source}__{v.stream}_all:",
                f"  comment: {quote(comment)}",
                f"  columns_as: {v.raw_table}",
            ]
    return "\n".join(out) + "\n"


ENV_EXAMPLE = PROJECT_ROOT / ".env.example"
# The connectors' credential variables in .env.example: a section per group of kinds.
ENV_SECTIONS = (
    ("Usage events", ("usage",)),
    ("Support tickets", ("tickets",)),
    ("Bugs and errors (read) and the write-back tracker", ("bugs", "errors")),
)
ENV_RULE = "# " + "-" * 93
ENV_WIDTH = 98  # comment lines of .env.example


def _comment_lines(text: str, width: int = COMMENT_WIDTH) -> list[str]:
    """`text` as `# ` comment lines of at most `width` characters."""
    return [f"# {line}" for line in _wrap(text, width - 2)]


def env_example(vendors) -> str:
    """.env.example: the hand-written head up to the line marking the generated part, then
    every connector's env_help and credential variables, a section per group of kinds."""
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    at = text.find(f"# {MARK}")
    if at < 0:
        raise ValueError(f".env.example: no line starting '# {MARK}' marks the generated part")
    out = [
        text[:at].rstrip("\n"),
        "",
        f"# {MARK} from here on: each connector's",
        "# credential variables (the defaults of its settings' *_env fields) under its env_help.",
    ]
    for title, kinds in ENV_SECTIONS:
        feeds = [v for v in vendors if v.kind in kinds and v.env_vars]
        if not feeds:
            continue
        out += ["", ENV_RULE, f"# {title}", ENV_RULE]
        for v in feeds:
            out += ["", *_comment_lines(v.env_help, ENV_WIDTH), *(f"{var}=" for var in v.env_vars)]
    return "\n".join(out) + "\n"


def outputs(vendors: tuple[Vendor, ...] | None = None) -> dict[Path, str]:
    """Every generated file and its text."""
    vendors = declarations() if vendors is None else vendors
    out: dict[Path, str] = {REGISTRY: registry_json(vendors)}
    for v in vendors:
        out[ddl_path(v)] = ddl_sql(v)
        if v.raw_suite:
            out[raw_suite_path(v)] = _json(raw_suite(v))
    for canonical in CANONICAL.values():
        if any(v.canonical == canonical for v in vendors):
            out[staging_suite_path(canonical)] = staging_suite(canonical, vendors)
    out[RAW_DOCS] = raw_docs(vendors)
    out[ENV_EXAMPLE] = env_example(vendors)
    for name in unions.UNION_COLUMNS:
        out[unions.union_path(name)] = unions.union_sql(name, vendors)
    return out


def orphans(written: dict[Path, str]) -> list[Path]:
    """Raw DDL files this module wrote once that no declaration writes any more."""
    return [
        p
        for p in sorted((SQL_DIR / "ddl").glob("raw_*.sql"))
        if p not in written and MARK in p.read_text(encoding="utf-8")
    ]


def stale(vendors: tuple[Vendor, ...] | None = None) -> list[Path]:
    """The generated files that differ from what this module writes (or should be gone)."""
    written = outputs(vendors)
    differ = [
        p for p, text in written.items() if not p.exists() or p.read_text(encoding="utf-8") != text
    ]
    return differ + orphans(written)


def _rel(p: Path) -> str:
    return str(p.relative_to(PROJECT_ROOT)) if p.is_relative_to(PROJECT_ROOT) else str(p)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write (or --check) the files the declarations give.")
    p.add_argument("--check", action="store_true", help="exit 1 when a generated file is stale")
    args = p.parse_args(argv)
    if args.check:
        paths = stale()
        for path in paths:
            print(f"{_rel(path)} differs from what tasks/generated.py writes: run make generated")  # noqa: T201
        return 1 if paths else 0
    written = outputs()
    for path, text in written.items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {_rel(path)}")  # noqa: T201
    for path in orphans(written):
        path.unlink()
        print(f"deleted {_rel(path)} (no declaration writes it)")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
