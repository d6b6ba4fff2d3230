"""The data dictionary (`feedback-loop docs`): every relation and column of the warehouse with the
database's own comments, row counts and lineage, as Markdown and a self-contained HTML page.

Read-only: it reads DuckDB's catalog (duckdb_tables/views/columns) of the warehouse or the analyst
snapshot, so it runs while the nightly writer works on the other file. Comments come from the
database (applied from sql/docs/ by tasks/comments.py), never from the YAML directly, so the page
shows what analysts see.

Lineage is derived, not declared: the relations named (`<schema>.<name>`) in the SQL that builds
each relation — a view's definition as DuckDB stores it, a table's sql/<schema>/<name>.sql — plus
the few tables Python builds (PYTHON_BUILT). SQL comments are ignored.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from tasks.settings import SQL_DIR

SCHEMAS = ("raw", "staging", "intermediate", "marts", "quality", "ops")
_REF = re.compile(r"\b(raw|staging|intermediate|marts|quality|ops)\.([a-z_0-9]+)\b", re.I)
_LINE_COMMENT = re.compile(r"--[^\n]*")
# Tables written by Python code rather than one SQL model: what their rows are read from.
PYTHON_BUILT = {
    "intermediate.int_tracker_effort": ("ops.writeback_ledger",),
    "ops.rollup_state": ("staging.stg_usage_events__unvalidated", "marts.feature_rules"),
    "ops.rollup_quarantined_keys": ("quality.quarantine",),
    "ops.rollup_load_days": ("staging.stg_usage_events__unvalidated",),
    "quality.volume_day_counts": ("quality.volume_rows",),
}
LINEAGE_NOTE = (
    "Lineage is derived from the SQL that builds each relation: the `schema.name` references "
    "in a view's definition (as DuckDB stores it) or in a table's model file "
    "`sql/<schema>/<name>.sql` (SQL comments ignored), plus a short list of tables built by "
    "Python code (tasks/datadocs.py PYTHON_BUILT). Raw tables are loaded from the sources; "
    "tables without a model file (ops, quality results) are written by the flow's tasks and show "
    "no upstream."
)


@dataclass
class Column:
    name: str
    type: str
    comment: str | None


@dataclass
class Relation:
    schema: str
    name: str
    kind: str  # table | view
    comment: str | None
    rows: int | None
    columns: list[Column] = field(default_factory=list)
    upstream: list[str] = field(default_factory=list)
    downstream: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def anchor(self) -> str:
        return anchor(self.key)


def anchor(key: str) -> str:
    return "rel-" + key.replace(".", "-")


def model_sql(schema: str, name: str) -> str | None:
    """The model file that builds table `schema.name`, if there is one."""
    for path in (SQL_DIR / schema / f"{name}.sql",):
        if path.exists():
            return path.read_text(encoding="utf-8")
    return None


def references(sql: str) -> set[str]:
    """`schema.name` of every relation the SQL names (comments stripped)."""
    return {f"{s.lower()}.{n.lower()}" for s, n in _REF.findall(_LINE_COMMENT.sub("", sql))}


def collect(con: duckdb.DuckDBPyConnection) -> list[Relation]:
    """Every relation of SCHEMAS with its comment, row count, columns and lineage."""
    schemas = list(SCHEMAS)
    rows = con.execute(
        "select schema_name, table_name, 'table', comment, null from duckdb_tables() "
        "where database_name = current_database() and schema_name in ? "
        "union all select schema_name, view_name, 'view', comment, sql from duckdb_views() "
        "where database_name = current_database() and schema_name in ? and not internal "
        "order by 1, 2",
        [schemas, schemas],
    ).fetchall()
    rels = {}
    view_sql = {}
    for schema, name, kind, comment, sql in rows:
        rel = Relation(schema, name, kind, comment, None)
        rels[rel.key] = rel
        if sql:
            view_sql[rel.key] = sql
    for schema, name, column, dtype, comment in con.execute(
        "select schema_name, table_name, column_name, data_type, comment from duckdb_columns() "
        "where database_name = current_database() and schema_name in ? "
        "order by schema_name, table_name, column_index",
        [schemas],
    ).fetchall():
        key = f"{schema}.{name}"
        if key in rels:
            rels[key].columns.append(Column(column, dtype, comment))
    for rel in rels.values():
        rel.rows = con.execute(f'select count(*) from "{rel.schema}"."{rel.name}"').fetchall()[0][0]
        sql = view_sql.get(rel.key) or model_sql(rel.schema, rel.name)
        refs = references(sql) if sql else set(PYTHON_BUILT.get(rel.key, ()))
        rel.upstream = sorted(r for r in refs if r in rels and r != rel.key)
    for rel in rels.values():
        for up in rel.upstream:
            rels[up].downstream.append(rel.key)
    for rel in rels.values():
        rel.downstream.sort()
    return list(rels.values())


def counts(rels: list[Relation]) -> dict[str, int]:
    cols = [c for r in rels for c in r.columns]
    return {
        "relations": len(rels),
        "uncommented_relations": sum(1 for r in rels if not r.comment),
        "columns": len(cols),
        "uncommented_columns": sum(1 for c in cols if not c.comment),
    }


# ------------------------------------------------------------------------------------ Markdown
def _md(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|") if text is not None else ""


def _md_links(keys: list[str]) -> str:
    return ", ".join(f"[{k}](#{anchor(k)})" for k in keys) or "—"


def to_markdown(rels: list[Relation], source: Path) -> str:
    c = counts(rels)
    out = [
        "# Data dictionary",
        "",
        f"Generated by `feedback-loop docs` from the comments of `{source}` (DuckDB's catalog): "
        f"{c['relations']} relations, {c['columns']} columns, "
        f"{c['uncommented_columns']} without a comment.",
        "",
        LINEAGE_NOTE,
        "",
    ]
    for schema in SCHEMAS:
        members = [r for r in rels if r.schema == schema]
        if not members:
            continue
        out += [f"## {schema}", ""]
        out += [f"- [{r.key}](#{r.anchor}) ({r.kind}) — {_md(r.comment)}" for r in members]
        out.append("")
        for r in members:
            out += [
                f'<a id="{r.anchor}"></a>',
                "",
                f"### {r.key}",
                "",
                f"*{r.kind}, {r.rows:,} rows.* {_md(r.comment) or '(no comment)'}",
                "",
                f"- upstream: {_md_links(r.upstream)}",
                f"- downstream: {_md_links(r.downstream)}",
                "",
                "| column | type | comment |",
                "|---|---|---|",
            ]
            out += [f"| `{col.name}` | {_md(col.type)} | {_md(col.comment)} |" for col in r.columns]
            out.append("")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------- HTML
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2430}
header{background:#1d2430;color:#fff;padding:12px 24px}header p{margin:4px 0;color:#c9d1dc}
main{display:flex}nav{width:300px;flex:none;height:calc(100vh - 90px);overflow:auto;
padding:12px;border-right:1px solid #dde3ea;position:sticky;top:0}
nav input{width:100%;box-sizing:border-box;padding:5px;margin-bottom:8px}
nav a{display:block;text-decoration:none;color:#24538f;font-size:13px;padding:1px 0}
nav h3{margin:10px 0 2px;font-size:12px;text-transform:uppercase;color:#6a7687}
#content{padding:12px 24px;flex:1;min-width:0}
section{border:1px solid #dde3ea;border-radius:6px;padding:10px 14px;margin:0 0 16px}
section h2{margin:0 0 4px;font-size:17px}.kind{font-size:12px;color:#6a7687;font-weight:normal}
table{border-collapse:collapse;width:100%;margin-top:6px}
td,th{border-bottom:1px solid #eef1f5;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f5f7fa}td.n{font-family:ui-monospace,monospace;white-space:nowrap}
td.t{color:#6a7687;font-family:ui-monospace,monospace;font-size:12px}
.missing{color:#b3261e}.lineage{font-size:13px}.lineage a{margin-right:6px}
"""
_SCRIPT = """
document.getElementById('filter').addEventListener('input', function (e) {
  var q = e.target.value.toLowerCase();
  document.querySelectorAll('section[data-text]').forEach(function (s) {
    var show = s.getAttribute('data-text').indexOf(q) >= 0;
    s.style.display = show ? '' : 'none';
    var link = document.querySelector('nav a[href="#' + s.id + '"]');
    if (link) { link.style.display = show ? '' : 'none'; }
  });
});
"""


def _h(text: object) -> str:
    return html.escape("" if text is None else str(text), quote=True)


def _html_links(keys: list[str]) -> str:
    return " ".join(f'<a href="#{_h(anchor(k))}">{_h(k)}</a>' for k in keys) or "—"


def to_html(rels: list[Relation], source: Path) -> str:
    c = counts(rels)
    nav, body = [], []
    for schema in SCHEMAS:
        members = [r for r in rels if r.schema == schema]
        if members:
            nav.append(f"<h3>{_h(schema)}</h3>")
            nav += [f'<a href="#{_h(r.anchor)}">{_h(r.name)}</a>' for r in members]
    for r in rels:
        search = " ".join([r.key, r.comment or ""] + [col.name for col in r.columns]).lower()
        comment = _h(r.comment) if r.comment else '<span class="missing">(no comment)</span>'
        cols = "".join(
            f'<tr><td class="n">{_h(col.name)}</td><td class="t">{_h(col.type)}</td><td>'
            + (_h(col.comment) if col.comment else '<span class="missing">(no comment)</span>')
            + "</td></tr>"
            for col in r.columns
        )
        body.append(
            f'<section id="{_h(r.anchor)}" data-text="{_h(search)}">'
            f'<h2>{_h(r.key)} <span class="kind">{_h(r.kind)}, {r.rows:,} rows</span></h2>'
            f"<p>{comment}</p>"
            f'<p class="lineage"><b>upstream:</b> {_html_links(r.upstream)}<br>'
            f"<b>downstream:</b> {_html_links(r.downstream)}</p>"
            "<table><thead><tr><th>column</th><th>type</th><th>comment</th></tr></thead>"
            f"<tbody>{cols}</tbody></table></section>"
        )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Data dictionary — {_h(source.name)}</title><style>{_CSS}</style></head><body>"
        f"<header><b>Data dictionary</b><p>From the comments of {_h(source)}: "
        f"{c['relations']} relations, {c['columns']} columns, {c['uncommented_columns']} "
        f"without a comment.</p><p>{_h(LINEAGE_NOTE)}</p></header><main><nav>"
        '<input id="filter" type="search" placeholder="filter relations and columns" '
        'aria-label="filter">'
        + "".join(nav)
        + '</nav><div id="content">'
        + "".join(body)
        + f"</div></main><script>{_SCRIPT}</script></body></html>\n"
    )


def write_dictionary(db_path: Path, out_dir: Path, lock_timeout_s: float = 5.0) -> dict:
    """Read `db_path` read-only and write data_dictionary.md and .html into `out_dir`; returns
    the counts and the paths written."""
    from tasks.db import connect

    con = connect(db_path, read_only=True, lock_timeout_s=lock_timeout_s)
    try:
        rels = collect(con)
    finally:
        con.close()
    out_dir.mkdir(parents=True, exist_ok=True)
    md, page = out_dir / "data_dictionary.md", out_dir / "data_dictionary.html"
    md.write_text(to_markdown(rels, db_path), encoding="utf-8")
    page.write_text(to_html(rels, db_path), encoding="utf-8")
    return {**counts(rels), "markdown": md, "html": page}
