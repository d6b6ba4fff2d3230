"""COMMENT ON every relation and column, from the documentation in sql/docs/.

One YAML file per schema (sql/docs/<schema>.yml) documents its relations:

    feature_daily:
      comment: "grain: ...; key: ..."       # the relation's comment (optional: DDL tables keep
      columns_as: marts.other                #   theirs next to their CREATE in sql/ddl/)
      columns:                               # columns not listed fall back to columns_as, then
        n_users: "distinct users (count)"    # to sql/docs/columns.yml (names that mean the same
                                             # everywhere)

The vendor views staging.stg_<vendor>__<entity> get a generated comment and their union's
column comments (plus any extra columns listed in staging.yml). `CREATE OR REPLACE` drops
comments, so every place that (re)builds a relation calls `document` right after it; comments
already right are not rewritten. The analyst snapshot (COPY FROM DATABASE) carries them.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field

import duckdb
import yaml

from tasks.settings import SQL_DIR

log = logging.getLogger(__name__)

DOCS_DIR = SQL_DIR / "docs"
SCHEMAS = ("raw", "staging", "intermediate", "marts", "quality", "ops")


@dataclass(frozen=True)
class RelationDoc:
    comment: str | None = None
    columns: dict[str, str] = field(default_factory=dict)
    columns_as: str | None = None


@functools.cache
def glossary() -> dict[str, str]:
    return _read("columns.yml")


@functools.cache
def relation_docs() -> dict[str, RelationDoc]:
    """`schema.name` -> its documentation, generated vendor views included."""
    from tasks.sources import VENDORS

    docs: dict[str, RelationDoc] = {}
    for v in VENDORS:
        union = f"staging.{v.canonical}__unvalidated"
        docs[f"staging.{v.staging_model}"] = RelationDoc(
            comment=f"grain: one row per {v.source} record of {v.raw_table}; key as in {union}. "
            f"The {v.source} rows of {union}, renamed and cast "
            f"(sql/staging/{v.source}/{v.staging_model}.sql); columns as in {union}.",
            columns_as=union,
        )
    for schema in SCHEMAS:
        for name, entry in _read(f"{schema}.yml").items():
            key = f"{schema}.{name}"
            base = docs.get(key, RelationDoc())
            docs[key] = RelationDoc(
                comment=entry.get("comment", base.comment),
                columns={**base.columns, **(entry.get("columns") or {})},
                columns_as=entry.get("columns_as", base.columns_as),
            )
    return docs


def _read(name: str) -> dict:
    path = DOCS_DIR / name
    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.exists() else {}


def column_doc(relation: str, column: str, _seen: frozenset = frozenset()) -> str | None:
    """The comment of `relation.column`: its own entry, else columns_as's, else the glossary."""
    doc = relation_docs().get(relation, RelationDoc())
    if column in doc.columns:
        return doc.columns[column]
    if doc.columns_as and doc.columns_as not in _seen:
        found = column_doc(doc.columns_as, column, _seen | {relation})
        if found:
            return found
    return glossary().get(column)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def document(con: duckdb.DuckDBPyConnection, schema: str, name: str) -> int:
    """Apply the documented comments to `schema.name` and its columns; returns statements run."""
    relation = f"{schema}.{name}"
    doc = relation_docs().get(relation, RelationDoc())
    rows = con.execute(
        "select 'view' as kind, comment from duckdb_views() where schema_name = ? "
        "and view_name = ? and database_name = current_database() "
        "union all select 'table', comment from duckdb_tables() where schema_name = ? "
        "and table_name = ? and database_name = current_database()",
        [schema, name, schema, name],
    ).fetchall()
    if not rows:
        return 0
    kind, current = rows[0]
    statements = []
    if doc.comment and doc.comment != current:
        statements.append(f"comment on {kind} {relation} is {_quote(doc.comment)}")
    for column, comment in con.execute(
        "select column_name, comment from duckdb_columns() where schema_name = ? "
        "and table_name = ? and database_name = current_database() order by column_index",
        [schema, name],
    ).fetchall():
        text = column_doc(relation, column)
        if text and text != comment:
            statements.append(f'comment on column {relation}."{column}" is {_quote(text)}')
    for statement in statements:
        con.execute(statement)
    return len(statements)


def document_schema(con: duckdb.DuckDBPyConnection, schema: str) -> int:
    """`document` every relation of `schema` (the DDL-created tables of raw, ops, quality)."""
    names = con.execute(
        "select table_name from duckdb_tables() where schema_name = ? "
        "and database_name = current_database() union select view_name from duckdb_views() "
        "where schema_name = ? and database_name = current_database() order by 1",
        [schema, schema],
    ).fetchall()
    return sum(document(con, schema, n) for (n,) in names)


def stale_docs(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Documented relations or columns the database does not have (docs that stopped being
    true): `schema.name` or `schema.name.column`."""
    have: dict[str, set[str]] = {}
    for schema, name, column in con.execute(
        "select schema_name, table_name, column_name from duckdb_columns() "
        "where database_name = current_database()"
    ).fetchall():
        have.setdefault(f"{schema}.{name}", set()).add(column)
    stale = []
    for relation, doc in relation_docs().items():
        if relation not in have:
            stale.append(relation)
            continue
        stale += [f"{relation}.{c}" for c in doc.columns if c not in have[relation]]
        if doc.columns_as and doc.columns_as not in have:
            stale.append(f"{relation} (columns_as {doc.columns_as})")
    return sorted(stale)
