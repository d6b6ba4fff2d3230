"""Source registry: which vendor feeds which canonical staging table, via which raw table.

A vendor is declared once, where it is implemented: `DECLARATION = declare(...)` in its
`tasks/clients/<vendor>.py` (the connector class and settings model give its source, stream,
kind, raw key, raw columns, connector type and credential variables), or, for a vendor without a
client module, in FILE_ONLY below. `make generated` (tasks/generated.py) collects the
declarations into tasks/sources.json, which VENDORS is read from, and writes every checked-in
file that follows from them (raw DDL, raw suites, the staging suites' source sets, raw docs, the
staging unions); tests/test_generated.py fails while one of them differs.

VENDORS is read from that file rather than from the client modules so that this module stays a
leaf of the import graph: the clients import it to declare themselves, and modules below the
clients (tasks/comments.py under tasks/db.py) read VENDORS without importing any client.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CANONICAL = {
    "usage": "stg_usage_events",
    "tickets": "stg_support_tickets",
    "bugs": "stg_bug_issues",
    "errors": "stg_error_signals",
    "accounts": "stg_accounts",
}

# The raw columns between the key and the loader's bookkeeping columns of a table that keeps each
# record as one payload JSON (a SourceSpec without typed `fields`).
PAYLOAD_COLUMNS: tuple[tuple[str, str], ...] = (
    ("cursor_at", "varchar"),
    ("payload", "json not null"),
)

REGISTRY = Path(__file__).with_name("sources.json")


def _after_prefix(cast: str = "varchar") -> str:
    return "try_cast(substr({k}, strpos({k}, ':') + 1) as " + cast + ")"


@dataclass(frozen=True)
class Vendor:
    source: str
    stream: str
    kind: str  # usage | tickets | bugs | errors | accounts
    raw_key: str  # key column of the raw table
    key_type: str = "varchar"  # its DuckDB type
    # Canonical ids carry the vendor ('zendesk:123'); account keys do not: they must equal the
    # account_key the usage events carry.
    id_prefix: bool = True
    title: str = ""  # the vendor as people write it ("PostHog"), for comments and docs
    # Place among the vendors of its kind: its CTE in the union, its value in the staging suite's
    # source set. A new vendor takes the next number.
    order: int = 0
    grain: str = ""  # the raw table's comment: "grain: one row per ...; key: ..."
    # Raw columns after the key, before _source_file/_batch_id/_loaded_at: (name, DDL type).
    raw_columns: tuple[tuple[str, str], ...] = PAYLOAD_COLUMNS
    # Column comments of the raw table (sql/docs/raw.yml): (column, comment); the key at least.
    column_docs: tuple[tuple[str, str], ...] = ()
    # An event table: SQL over its columns giving the event's UTC day (NULL = no readable time;
    # the row stays in the warehouse). Such a table gets a raw.<table>_all history view and its
    # days can move to Parquet (tasks/rawstore.py EVENT_TABLES).
    event_day_sql: str | None = None
    # The raw suite expectations/raw_<source>__<stream>.json is written from the template in
    # tasks/generated.py; False: it is hand-written.
    raw_suite: bool = True
    # The API connector ([connectors.<source>]): module, settings model and connector class
    # names, the credential variables (the defaults of the settings' *_env fields) and the
    # settings that name what a check looks at (the doctor's hint on a 404). None: files only.
    module: str | None = None
    settings_class: str | None = None
    connector_class: str | None = None
    env_vars: tuple[str, ...] = ()
    id_fields: tuple[str, ...] = ()
    # What the credential variables hold and where to get them (.env.example, above them).
    env_help: str = ""

    @property
    def raw_table(self) -> str:
        return f"raw.{self.source}__{self.stream}"

    @property
    def staging_model(self) -> str:
        return f"stg_{self.source}__{self.stream}"

    @property
    def canonical(self) -> str:
        return CANONICAL[self.kind]

    @property
    def raw_key_from_id(self) -> str:
        """SQL template turning a canonical staging id {k} (e.g. 'zendesk:123') into the raw key."""
        return _after_prefix(self.key_type) if self.id_prefix else "{k}"

    @property
    def declared_in(self) -> str:
        """The file holding this declaration."""
        return self.module.replace(".", "/") + ".py" if self.module else "tasks/sources.py"

    def as_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> Vendor:
        def tuples(value: Any) -> Any:
            return tuple(tuples(v) for v in value) if isinstance(value, list) else value

        return cls(**{name: tuples(value) for name, value in row.items()})


def declare(
    connector: Any,
    settings: Any,
    *,
    title: str,
    order: int,
    grain: str,
    column_docs: dict[str, str],
    key_type: str = "varchar",
    event_day_sql: str | None = None,
    env_help: str,
    id_fields: tuple[str, ...] = ("base_url",),
) -> Vendor:
    """The declaration of an API connector's vendor, from its connector class (source, stream,
    kind, spec) and settings model (pydantic; its *_env fields' defaults are the credential
    variables), plus what only the module knows (see Vendor)."""
    spec = connector.spec
    if (spec.source, spec.stream) != (connector.source, connector.stream):
        raise ValueError(f"{connector.__name__}: its spec lands {spec.raw_table}")
    raw_columns = PAYLOAD_COLUMNS
    if spec.fields:  # typed columns instead of a payload (the high-volume path)
        typed = tuple((c, t.lower()) for c, _, t in spec.fields if c != spec.key_column)
        raw_columns = (*typed, ("cursor_at", "varchar"))
    return Vendor(
        source=connector.source,
        stream=connector.stream,
        kind=connector.kind,
        raw_key=spec.key_column,
        key_type=key_type,
        title=title,
        order=order,
        grain=grain,
        raw_columns=raw_columns,
        column_docs=tuple(column_docs.items()),
        event_day_sql=event_day_sql,
        module=connector.__module__,
        settings_class=settings.__name__,
        connector_class=connector.__name__,
        env_vars=tuple(
            f.default for name, f in settings.model_fields.items() if name.endswith("_env")
        ),
        id_fields=id_fields,
        env_help=env_help,
    )


# Vendors without a client module, declared here.
FILE_ONLY = (
    # Optional revenue and segments per account: CSV/Parquet files only (spec
    # tasks/contracts.py ACCOUNTS). Its raw suite is hand-written: the source is
    # advisory (a failure lowers confidence, never blocks write-back) and has no cursor rule.
    Vendor(
        "accounts",
        "accounts",
        "accounts",
        "account_key",
        id_prefix=False,
        title="accounts",
        order=1,
        grain="grain: one row per account; key: account_key (as the usage events carry it). "
        "Merged on account_key, the newest file wins (cursor_at = the file's modification "
        "time). payload: the known columns (arr a number); name is kept here and in staging only.",
        column_docs=(("account_key", "account key as the usage events carry it; unique"),),
        raw_suite=False,
    ),
)


def sort_vendors(vendors) -> tuple[Vendor, ...]:
    """By kind (CANONICAL's order), then the declared order within the kind."""
    kinds = list(CANONICAL)
    return tuple(sorted(vendors, key=lambda v: (kinds.index(v.kind), v.order, v.source)))


def read_registry(path: Path = REGISTRY) -> tuple[Vendor, ...]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    return tuple(Vendor.from_json(row) for row in doc["vendors"])


VENDORS = read_registry()
BY_SOURCE = {v.source: v for v in VENDORS}


def vendors_of(kind: str) -> list[Vendor]:
    return [v for v in VENDORS if v.kind == kind]
