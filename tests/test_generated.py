"""A vendor is declared once, in its client module (tasks/sources.py declare); `make generated`
(tasks/generated.py) writes every checked-in file that follows from the declarations, and this
test fails while one of them differs from what it writes. A new usage source is one declaration:
its raw table, raw suite, source value, docs, union CTE, connector type, doctor id fields and
event-table day all follow."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
from dataclasses import replace

import duckdb
import pytest
from pydantic import BaseModel

import tasks.clients
from tasks import connectors, doctor, generated, rawstore, sources, unions
from tasks.contracts import SourceSpec
from tasks.settings import EXPECTATIONS_DIR, SQL_DIR


def test_checked_in_generated_files_are_what_make_generated_writes():
    assert generated.stale() == [], "run `make generated` and commit the result"
    assert generated.main(["--check"]) == 0


def test_the_registry_read_at_import_is_the_declarations():
    assert generated.declarations() == sources.VENDORS
    assert list(sources.BY_SOURCE) == [v.source for v in sources.VENDORS]


def test_every_client_module_with_a_connector_declares_it():
    for info in pkgutil.iter_modules(tasks.clients.__path__):
        module = importlib.import_module(f"tasks.clients.{info.name}")
        connectors_here = [
            c
            for _, c in inspect.getmembers(module, inspect.isclass)
            if c.__module__ == module.__name__
            and all(hasattr(c, a) for a in ("source", "stream", "kind", "spec", "pages"))
            and isinstance(getattr(c, "source", None), str)
        ]
        if not connectors_here:
            assert not hasattr(module, "DECLARATION"), info.name
            continue
        declared = module.DECLARATION
        assert declared.connector_class in {c.__name__ for c in connectors_here}, info.name
        assert connectors.CONNECTOR_TYPES[declared.source].module == module.__name__


def test_connector_types_come_from_the_declarations():
    mixpanel = sources.BY_SOURCE["mixpanel"]
    assert connectors.CONNECTOR_TYPES["mixpanel"] == connectors.ConnectorType(
        "tasks.clients.mixpanel",
        "MixpanelSettings",
        "MixpanelConnector",
        ("MIXPANEL_SERVICE_ACCOUNT_USERNAME", "MIXPANEL_SERVICE_ACCOUNT_SECRET"),
    )
    # the credential variables are the defaults of the settings' *_env fields, in field order
    assert connectors.CONNECTOR_TYPES["zendesk"].env_vars == (
        "ZENDESK_EMAIL",
        "ZENDESK_API_TOKEN",
        "ZENDESK_OAUTH_TOKEN",
    )
    assert doctor._ID_FIELDS["mixpanel"] == mixpanel.id_fields == ("base_url", "project_id")
    assert rawstore.EVENT_TABLES["raw.mixpanel__events"] == ("event_id", mixpanel.event_day_sql)
    assert set(connectors.CONNECTOR_TYPES) == {v.source for v in sources.VENDORS} - {"accounts"}
    assert {t for t in rawstore.EVENT_TABLES} == {
        v.raw_table for v in sources.VENDORS if v.kind == "usage"
    }
    # typed columns of a high-volume spec come from its fields; the key types as declared
    assert sources.BY_SOURCE["posthog"].raw_columns[:2] == (
        ("event", "varchar"),
        ("distinct_id", "varchar"),
    )
    assert sources.BY_SOURCE["zendesk"].raw_key_from_id.endswith("as bigint)")
    assert sources.BY_SOURCE["accounts"].raw_key_from_id == "{k}"


# A usage source that is not in the project: its module would hold these three and DECLARATION.
class SnowplowSettings(BaseModel):
    base_url: str = "https://snowplow.test"
    app_id: str = "web"
    api_key_env: str = "SNOWPLOW_API_KEY"


class SnowplowConnector:
    source = "snowplow"
    stream = "events"
    kind = "usage"
    spec = SourceSpec(
        source="snowplow",
        stream="events",
        raw_table="raw.snowplow__events",
        key_column="event_id",
        key_expr="nullif(trim(j ->> 'event_id'), '')",
        cursor_expr="j ->> 'collector_tstamp'",
    )

    def pages(self, state, window_end):  # pragma: no cover - never called here
        return iter(())


SNOWPLOW = sources.declare(
    SnowplowConnector,
    SnowplowSettings,
    title="Snowplow",
    order=4,
    grain="grain: one row per Snowplow event; key: event_id (the tracker's uuid). Merged on "
    "event_id.",
    column_docs={"event_id": "Snowplow event uuid; unique"},
    env_help="[connectors.snowplow]: an API key of the collector's project.",
    event_day_sql="timezone('UTC', try_cast(payload ->> 'collector_tstamp' as timestamptz))::date",
    id_fields=("base_url", "app_id"),
)


def test_a_new_usage_source_is_one_declaration(tmp_path):
    before = generated.outputs(sources.VENDORS)
    vendors = sources.sort_vendors((*sources.VENDORS, SNOWPLOW))
    after = generated.outputs(vendors)

    ddl = SQL_DIR / "ddl" / "raw_snowplow.sql"
    suite = EXPECTATIONS_DIR / "raw_snowplow__events.json"
    assert set(after) - set(before) == {ddl, suite}
    changed = {p for p in before if before[p] != after[p]}
    assert changed == {
        sources.REGISTRY,
        EXPECTATIONS_DIR / "stg_usage_events.json",
        SQL_DIR / "docs" / "raw.yml",
        unions.union_path("stg_usage_events"),
        generated.ENV_EXAMPLE,
    }

    # the raw table (with its history view) builds, with the loader's columns
    con = duckdb.connect()
    con.execute(after[ddl])
    cols = con.sql("select column_name from (describe raw.snowplow__events)").fetchall()
    assert [c for (c,) in cols] == [
        "event_id",
        "cursor_at",
        "payload",
        "_source_file",
        "_batch_id",
        "_loaded_at",
    ]
    assert con.sql("select count(*) from raw.snowplow__events_all").fetchall() == [(0,)]
    comment = con.sql(
        "select comment from duckdb_tables() where table_name = 'snowplow__events'"
    ).fetchall()
    assert comment == [(SNOWPLOW.grain,)]

    # its raw suite is the mixpanel suite with the names changed
    mixpanel = before[EXPECTATIONS_DIR / "raw_mixpanel__events.json"]
    assert after[suite] == mixpanel.replace("mixpanel", "snowplow")
    usage = json.loads(after[EXPECTATIONS_DIR / "stg_usage_events.json"])
    (rule,) = [e for e in usage["expectations"] if e["type"] == "expect_column_values_to_be_in_set"]
    assert rule["kwargs"]["value_set"] == ["posthog", "amplitude", "mixpanel", "snowplow"]
    docs = after[SQL_DIR / "docs" / "raw.yml"]
    assert 'snowplow__events:\n  columns: {event_id: "Snowplow event uuid; unique"}\n' in docs
    assert 'snowplow__events_all:\n  comment: "grain: one row per Snowplow event' in docs
    env = after[generated.ENV_EXAMPLE]
    assert (
        "MIXPANEL_SERVICE_ACCOUNT_SECRET=\n\n"
        "# [connectors.snowplow]: an API key of the collector's project.\nSNOWPLOW_API_KEY=\n\n"
    ) in env
    union = after[unions.union_path("stg_usage_events")]
    assert "    select * from mixpanel\n    union all\n    select * from snowplow\n)" in union

    # the registry tasks/sources.py would read carries the connector, doctor and rawstore facts
    registry = tmp_path / "sources.json"
    registry.write_text(after[sources.REGISTRY], encoding="utf-8")
    (read,) = [v for v in sources.read_registry(registry) if v.source == "snowplow"]
    assert read == SNOWPLOW
    assert (read.module, read.settings_class, read.connector_class) == (
        __name__,
        "SnowplowSettings",
        "SnowplowConnector",
    )
    assert read.env_vars == ("SNOWPLOW_API_KEY",) and read.id_fields == ("base_url", "app_id")
    assert (
        read.event_day_sql and read.raw_key_from_id == sources.BY_SOURCE["mixpanel"].raw_key_from_id
    )


def test_a_changed_declaration_names_the_files_it_changes():
    mixpanel = sources.BY_SOURCE["mixpanel"]
    changed = replace(mixpanel, grain="grain: one row per Mixpanel event; key: event_id.")
    vendors = tuple(changed if v is mixpanel else v for v in sources.VENDORS)
    assert generated.stale(vendors) == [sources.REGISTRY, SQL_DIR / "ddl" / "raw_mixpanel.sql"]
    # a vendor gone: its DDL file (written by the generator) is named to be deleted
    gone = tuple(v for v in sources.VENDORS if v is not mixpanel)
    assert SQL_DIR / "ddl" / "raw_mixpanel.sql" in generated.stale(gone)


def test_a_declaration_the_generator_cannot_write_is_refused():
    with pytest.raises(ValueError, match="declared twice"):
        generated.check((*sources.VENDORS, sources.BY_SOURCE["mixpanel"]))
    with pytest.raises(ValueError, match="kind 'metrics'"):
        generated.check((replace(SNOWPLOW, kind="metrics"),))
    with pytest.raises(ValueError, match="must document the key event_id"):
        generated.check((replace(SNOWPLOW, column_docs=(("payload", "the record"),)),))
    with pytest.raises(ValueError, match="declare a title and a grain"):
        generated.check((replace(SNOWPLOW, grain="one row per event"),))
    with pytest.raises(ValueError, match="declare env_help for SNOWPLOW_API_KEY"):
        generated.check((replace(SNOWPLOW, env_help=""),))


def test_long_table_comments_are_split_into_literals_of_at_most_100_characters():
    text = "grain: " + " ".join(["it's"] * 60)
    literal = generated._sql_comment(text)
    assert all(len(line) <= 100 for line in literal.splitlines())
    assert duckdb.sql(f"select {literal}").fetchall() == [(text,)]
