"""Documented data: after one real demo nightly every relation and column carries a comment (in
the warehouse and in the analyst snapshot), and `feedback-loop docs` writes a data dictionary
from those comments with lineage derived from the models' SQL."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import duckdb
import pytest

from tasks.comments import stale_docs
from tasks.datadocs import Column, Relation, references, to_html
from tasks.db import PARQUET_DAY_TABLES, SNAPSHOT_SKIP
from tests.helpers import cli

SCHEMAS = ["raw", "staging", "intermediate", "marts", "quality", "ops"]


@pytest.fixture(scope="module")
def run(demo_nightly):
    """The session's demo nightly (tests/conftest.py): its warehouse, snapshot and settings."""
    root = demo_nightly["root"]
    return {
        "root": root,
        "config": demo_nightly["config"],
        "db": root / "feedback.duckdb",
        "snapshot": root / "feedback_analyst.duckdb",
    }


def _comments(path) -> dict[str, str | None]:
    """`schema.relation` and `schema.relation.column` -> comment, for SCHEMAS."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        rels = con.execute(
            "select schema_name || '.' || table_name, comment from duckdb_tables() "
            "where database_name = current_database() and schema_name in ? union all "
            "select schema_name || '.' || view_name, comment from duckdb_views() "
            "where database_name = current_database() and schema_name in ? and not internal",
            [SCHEMAS, SCHEMAS],
        ).fetchall()
        cols = con.execute(
            "select schema_name || '.' || table_name || '.' || column_name, comment "
            "from duckdb_columns() where database_name = current_database() and schema_name in ?",
            [SCHEMAS],
        ).fetchall()
        return dict(rels + cols)
    finally:
        con.close()


def test_every_relation_and_column_has_a_comment(run):
    comments = _comments(run["db"])
    assert len([k for k in comments if k.count(".") == 1]) > 50  # the whole warehouse is there
    missing = sorted(k for k, v in comments.items() if not (v or "").strip())
    assert not missing, f"{len(missing)} relations/columns without a comment:\n" + "\n".join(
        missing
    )


def test_docs_name_only_what_exists(run):
    con = duckdb.connect(str(run["db"]), read_only=True)
    try:
        assert stale_docs(con) == []
    finally:
        con.close()


def test_the_snapshot_keeps_the_comments(run):
    """Every relation and column comment, as in the warehouse; the raw event tables and the
    feature x user x day rollup, views over Parquet files in the snapshot (tasks/db.py
    publish_snapshot), add where their rows are."""
    snap, live = _comments(run["snapshot"]), _comments(run["db"])
    live = {k: v for k, v in live.items() if ".".join(k.split(".")[:2]) not in SNAPSHOT_SKIP}
    assert snap.keys() == live.keys()
    parquet = {
        k
        for k in live
        if k.count(".") == 1
        and ((k.startswith("raw.") and "__events" in k) or k in PARQUET_DAY_TABLES)
    }
    con = duckdb.connect(str(run["snapshot"]), read_only=True)
    try:
        views = {
            f"{s}.{v}"
            for s, v in con.sql(
                "select schema_name, view_name from duckdb_views() "
                "where schema_name in ('raw', 'intermediate')"
            ).fetchall()
        }
    finally:
        con.close()
    assert {"raw.posthog__events", "intermediate.int_feature_user_days"} <= views <= parquet
    for key, comment in live.items():
        if key in views:
            assert snap[key].startswith(comment) and "Parquet files" in snap[key], key
        else:
            assert snap[key] == comment, key


def test_comments_say_grain_key_and_units(run):
    comments = _comments(run["db"])
    for rel in ("marts.feature_health", "marts.feature_daily", "staging.stg_support_tickets"):
        assert "grain:" in comments[rel] and "key:" in comments[rel], rel
    assert "0-100" in comments["marts.feature_health.health_score"]
    assert "salted hash" in comments["staging.stg_support_tickets.requester_key"]
    assert "stg_usage_events__unvalidated" in comments["staging.stg_posthog__events"]


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()
        self.hrefs: list[str] = []
        self.srcs: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if "href" in a:
            self.hrefs.append(a["href"])
        if "src" in a:
            self.srcs.append(a["src"])


def test_docs_command_writes_markdown_and_offline_html(run, tmp_path):
    code, _, err = cli(["docs", "--config", str(run["config"]), "--out", str(tmp_path)])
    assert code == 0, err
    assert "0 columns without a comment" in " ".join(err.split())
    comments = _comments(run["snapshot"])  # the default reads the snapshot
    relations = [k for k in comments if k.count(".") == 1]
    md = (tmp_path / "data_dictionary.md").read_text(encoding="utf-8")
    page = (tmp_path / "data_dictionary.html").read_text(encoding="utf-8")

    for key in (k for k in comments if k.count(".") == 2):
        rel, col = key.rsplit(".", 1)
        assert f"| `{col}` |" in md.split(f"### {rel}\n", 1)[1].split("\n### ", 1)[0], key
    parser = _Page()
    parser.feed(page)
    for rel in relations:
        assert "rel-" + rel.replace(".", "-") in parser.ids, rel
    assert not [u for u in parser.hrefs + parser.srcs if re.match(r"(?i)\s*(https?:)?//", u)]
    assert not re.search(r"(?i)(src|href)\s*=\s*[\"']?\s*(https?:)?//", page)
    assert all(h.startswith("#") for h in parser.hrefs)
    # lineage: the model's own SQL names its inputs, and the page links them both ways
    section = page.split('id="rel-marts-feature_health"', 1)[1].split("</section>", 1)[0]
    upstream = section.split("upstream:", 1)[1].split("downstream:", 1)[0]
    assert 'href="#rel-marts-feature_health_components"' in upstream
    assert 'href="#rel-intermediate-int_feature_metrics"' in upstream
    daily = md.split("### marts.feature_daily\n", 1)[1].split("\n### ", 1)[0]
    assert "[marts.feature_health_components]" not in daily.split("- downstream:")[0]


def test_docs_html_escapes_names_and_comments(tmp_path):
    rel = Relation("marts", "x", "table", "<b>a & 'b'</b>", 1, [Column("c", "INT", "<i>")])
    page = to_html([rel], tmp_path / "w.duckdb")
    assert "&lt;b&gt;a &amp; &#x27;b&#x27;&lt;/b&gt;" in page and "<i>" not in page


def test_docs_lineage_reads_sql_without_comments():
    sql = "-- from marts.not_this\nselect * from marts.feature_daily join Staging.stg_x on true"
    assert references(sql) == {"marts.feature_daily", "staging.stg_x"}


def test_docs_without_a_warehouse_is_one_line_exit_2(tmp_path):
    code, _, err = cli(["docs", "--db", str(tmp_path / "nope.duckdb")])
    assert code == 2
    assert "no warehouse at" in err and len(err.strip().splitlines()) == 1
