"""Validate DuckDB tables against Great Expectations suites, run inside DuckDB.

Column rules are GX's own expectations; rules over a whole table (freshness, volume, schema drift,
mart invariants) are `unexpected_rows_expectation`s: a SQL query that returns the offending rows.
GX substitutes `{batch}` with `(SELECT * FROM <table> WHERE true) AS subselect`, or without the
alias when the query has a JOIN (then alias it yourself); queries over the quality.* relations
name their table in a literal instead. Every run-time parameter is both a GX `$PARAMETER` and a
DuckDB variable on the validation's connections, so queries can read getvariable('reference_at').
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from tasks.db import WarehouseLockedError
from tasks.db import connect as db_connect

log = logging.getLogger(__name__)

SEVERITIES = ("critical", "warning")
UNEXPECTED_ROWS = "unexpected_rows_expectation"
# Rows of a failing unexpected-rows query kept as evidence (their `detail` column, if any).
SAMPLE_ROWS = 20
# GX and duckdb-engine versions the result-buffering patch below was verified against
# (tests/test_validation.py pins them; re-verify before upgrading either).
TESTED_GX_VERSION = "1.24.1"
TESTED_DUCKDB_ENGINE_VERSION = "0.17.0"
# Parameter every suite may reference as {"$PARAMETER": "max_allowed_at"}: the latest credible
# timestamp. Computed per call (now + 1 day) unless the caller passes it, e.g. run start + 1 day
# so that a re-run of the same night applies the same bound.
MAX_ALLOWED_AT = "max_allowed_at"
FUTURE_TOLERANCE = timedelta(days=1)
# Failing keys are complete for row-level rules; for other rules a sample is enough to diagnose.
SAMPLE_KEYS = 100
# Keys of a row-level rule listed in Python at most; beyond that the caller quarantines with
# `failing_keys_query` inside DuckDB (a mass failure must not pull millions of keys into Python).
KEY_LIST_LIMIT = 100_000
# Size of GX's own display lists (partial_unexpected_list); keys never come from those lists.
PARTIAL_UNEXPECTED_COUNT = 20
# Uniqueness failures are reported, never row-level quarantined by this module: which of two
# duplicates is the right one is the loader's decision, not a data-quality rule's.
UNIQUENESS_TYPES = frozenset(
    {
        "expect_column_values_to_be_unique",
        "expect_compound_columns_to_be_unique",
        "expect_column_proportion_of_unique_values_to_be_between",
    }
)

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_GETVARIABLE = re.compile(r"getvariable\(\s*'([A-Za-z_][A-Za-z0-9_]*)'\s*\)")
_PATCH_MARK = "_feedback_loop_buffers_duckdb_results"


class SuiteError(ValueError):
    """An expectation suite file is malformed or needs a parameter that was not given."""


class ValidationRuntimeError(RuntimeError):
    """GX could not evaluate the suite (broken engine, missing table) — not a data failure."""


class WarehouseInUseError(RuntimeError):
    """This process still holds the DuckDB file open with a different configuration."""


@dataclass
class ExpectationOutcome:
    """One expectation's result, flattened for `quality.dq_results` and quarantine."""

    table: str
    expectation_type: str
    column: str | None
    kwargs: dict[str, Any]  # as in the suite, with $PARAMETER references resolved
    severity: str
    success: bool
    unexpected_count: int | None
    unexpected_percent: float | None  # of non-null values, as GX reports it
    element_count: int | None
    observed_value: Any
    row_level: bool
    quarantine_reason: str | None
    # Distinct non-null keys of failing rows, sorted. Complete for row-level rules; a sample of
    # at most SAMPLE_KEYS for the others (see failing_keys_complete).
    failing_keys: list[str] = field(default_factory=list)
    failing_keys_complete: bool = True
    # Row-level rules that failed on some rows: SQL selecting the failing rows, key first, over
    # the unqualified table (run it with search_path = the validated schema). Set-based
    # quarantine uses it, so it never depends on the size of failing_keys.
    failing_keys_query: str | None = None
    # Failing rows whose key is NULL cannot be listed by key; quarantine them with `key IS NULL`.
    null_key_count: int = 0
    description: str | None = None  # what the rule means, from the suite
    # Evidence of a failing unexpected-rows rule: the `detail` column of its first rows.
    details: list[str] = field(default_factory=list)
    # meta.reason_column: a column of the validated table whose value is each failing row's
    # quarantine reason (e.g. type_error = 'wrong_type:updated_at'), else quarantine_reason.
    reason_column: str | None = None

    @property
    def label(self) -> str:
        """Human-readable name of the rule: its description, else type(column)."""
        return self.description or f"{self.expectation_type}({self.column or ''})"


@dataclass
class TableValidation:
    table: str
    suite_name: str
    success: bool  # every expectation passed
    max_severity_failure: str | None  # 'critical' | 'warning' | None
    outcomes: list[ExpectationOutcome]
    seconds: float
    params: dict[str, Any] = field(default_factory=dict)  # parameter values actually used
    schema: str = ""

    def quarantine(self) -> dict[str, list[str]]:
        """Row-level failures as {quarantine_reason: keys}; NULL keys are counted, not listed."""
        out: dict[str, set[str]] = {}
        for o in self.outcomes:
            if o.row_level and o.failing_keys:
                out.setdefault(o.quarantine_reason or o.expectation_type, set()).update(
                    o.failing_keys
                )
        return {reason: sorted(keys) for reason, keys in out.items()}

    @property
    def null_key_rows(self) -> int:
        """Rows failing a row-level rule with a NULL key (the key not-null rule, typically)."""
        return max((o.null_key_count for o in self.outcomes if o.row_level), default=0)


def load_suite(path: Path) -> dict[str, Any]:
    """Read and check a suite file: GX 1.x JSON plus our `severity` and `meta` conventions."""
    path = Path(path)
    try:
        suite = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SuiteError(f"{path}: cannot read suite ({exc})") from None
    if not isinstance(suite, dict) or not suite.get("name"):
        raise SuiteError(f"{path}: a suite needs a 'name'")
    expectations = suite.get("expectations")
    if not isinstance(expectations, list) or not expectations:
        raise SuiteError(f"{path}: 'expectations' must be a non-empty list")
    for i, exp in enumerate(expectations):
        where = f"{path}: expectation #{i} ({exp.get('type', '?')})"
        if not isinstance(exp.get("type"), str) or not isinstance(exp.get("kwargs"), dict):
            raise SuiteError(f"{where}: needs 'type' and 'kwargs'")
        if exp.get("severity") not in SEVERITIES:
            raise SuiteError(f"{where}: severity must be one of {SEVERITIES}")
        meta = exp.get("meta") or {}
        if not isinstance(meta.get("row_level"), bool):
            raise SuiteError(f"{where}: meta.row_level must be true or false")
        if meta["row_level"] and exp["type"] in UNIQUENESS_TYPES:
            raise SuiteError(f"{where}: uniqueness failures are reported, not quarantined")
        if meta["row_level"] and not meta.get("quarantine_reason"):
            raise SuiteError(f"{where}: a row-level rule needs meta.quarantine_reason")
        reason_column = meta.get("reason_column")
        if reason_column is not None and not (
            meta["row_level"]
            and isinstance(reason_column, str)
            and _IDENTIFIER.match(reason_column)
        ):
            raise SuiteError(f"{where}: meta.reason_column must name a column of a row-level rule")
        if exp.get("description") is not None and not isinstance(exp["description"], str):
            raise SuiteError(f"{where}: description must be a string")
        if exp["type"] == UNEXPECTED_ROWS:
            if not isinstance(exp["kwargs"].get("unexpected_rows_query"), str):
                raise SuiteError(f"{where}: needs an unexpected_rows_query (SQL)")
            if meta["row_level"]:
                raise SuiteError(f"{where}: an unexpected-rows rule is table-level (row_level)")
    return suite


def suite_parameters(suite: dict[str, Any]) -> set[str]:
    """Names of the $PARAMETER references a suite makes."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if set(node) == {"$PARAMETER"}:
                found.add(node["$PARAMETER"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for exp in suite["expectations"]:
        walk(exp["kwargs"])
    return found


def suite_variables(suite: dict[str, Any]) -> set[str]:
    """Names of the DuckDB variables (getvariable('<name>')) the suite's SQL reads: a missing
    variable is NULL, which would make a freshness rule silently pass, so they are required."""
    found: set[str] = set()
    for exp in suite["expectations"]:
        query = exp["kwargs"].get("unexpected_rows_query")
        if isinstance(query, str):
            found.update(_GETVARIABLE.findall(query))
    return found


def default_params(now: datetime | None = None) -> dict[str, Any]:
    """Run-time parameters: `max_allowed_at` = now (UTC) + 1 day, as ISO 8601."""
    now = now or datetime.now(UTC)
    return {MAX_ALLOWED_AT: (now + FUTURE_TOLERANCE).isoformat()}


def validate_table(
    db_path: Path,
    schema: str,
    table: str,
    key_column: str,
    suite_path: Path,
    params: dict[str, Any] | None = None,
    *,
    memory_limit: str | None = None,
    lock_timeout_s: float | None = None,
) -> TableValidation:
    """Validate `schema.table` in the DuckDB file against a suite; every check runs in DuckDB.

    The caller must have closed its own connection to `db_path` (or hold it with the same
    configuration); the file is released again before this returns. `params` override
    `default_params()`; each is also set as a DuckDB variable (getvariable('<name>')) on the
    validation's connections. Raises ValidationRuntimeError when GX could not evaluate a rule,
    so a broken engine is never mistaken for bad data.
    """
    started = time.perf_counter()
    for name in (schema, table, key_column):
        if not _IDENTIFIER.match(name):
            raise ValueError(f"not a plain SQL identifier: {name!r}")
    suite = load_suite(suite_path)
    resolved = {**default_params(), **(params or {})}
    missing = (suite_parameters(suite) | suite_variables(suite)) - set(resolved)
    if missing:
        raise SuiteError(f"{suite_path}: no value for parameter(s) {sorted(missing)}")

    gx = _import_gx()
    with _duckdb_engine_kwargs(
        Path(db_path),
        schema,
        read_only=True,
        memory_limit=memory_limit,
        lock_timeout_s=lock_timeout_s,
        variables=resolved,
    ) as (connection_string, engine_kwargs, register_engine):
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = _progress_bars_off()
        try:
            datasource = context.data_sources.add_sql(
                name="warehouse", connection_string=connection_string, kwargs=engine_kwargs
            )
            register_engine(datasource.get_engine())
            # No schema_name (deprecated in GX 1.14): the connection's search_path carries it.
            asset = datasource.add_table_asset(name=table, table_name=table)
        except Exception as exc:
            # GX wraps connection errors; surface ours (file in use / locked) unwrapped.
            cause = exc.__cause__
            if isinstance(cause, (WarehouseInUseError, WarehouseLockedError)):
                raise cause from None
            raise ValidationRuntimeError(f"cannot read {schema}.{table}: {exc}") from exc
        batch = asset.add_batch_definition_whole_table(name="whole_table").get_batch()
        execution_engine = datasource.get_execution_engine()
        register_engine(execution_engine.engine)

        configs = [_with_position(exp, i) for i, exp in enumerate(suite["expectations"])]
        with _quiet_stdout():
            gx_suite = gx.ExpectationSuite(name=suite["name"], expectations=configs)
        if len(gx_suite.expectations) != len(configs):
            # GX drops an invalid expectation with only a log line; a silently shorter suite
            # would pass data it was meant to check.
            raise SuiteError(f"{suite_path}: GX rejected an expectation (see the log above)")
        with _quiet_stdout():
            result = batch.validate(
                gx_suite,
                result_format={
                    # BASIC + the uncapped unexpected-index query: GX's index *lists* stop at
                    # partial_unexpected_count on SQL, so complete keys are read with that query.
                    "result_format": "BASIC",
                    "unexpected_index_column_names": [key_column],
                    "return_unexpected_index_query": True,
                    "partial_unexpected_count": PARTIAL_UNEXPECTED_COUNT,
                },
                expectation_parameters=resolved,
            )
        _raise_on_gx_exceptions(result, f"{schema}.{table}")
        outcomes = [
            _outcome(r, table, key_column, resolved, execution_engine.engine)
            for r in sorted(result.results, key=lambda r: r.expectation_config.meta["_position"])
        ]

    failed = [o for o in outcomes if not o.success]
    max_severity = None
    if failed:
        max_severity = "critical" if any(o.severity == "critical" for o in failed) else "warning"
    seconds = time.perf_counter() - started
    log.info(
        "validated %s.%s with %s: %d/%d expectations passed (%s) in %.2fs",
        schema,
        table,
        suite["name"],
        len(outcomes) - len(failed),
        len(outcomes),
        max_severity or "ok",
        seconds,
    )
    return TableValidation(
        table=table,
        suite_name=suite["name"],
        success=not failed,
        max_severity_failure=max_severity,
        outcomes=outcomes,
        seconds=seconds,
        params=resolved,
        schema=schema,
    )


# --- GX plumbing ------------------------------------------------------------------------------


def _import_gx() -> Any:
    """Import GX (4–5 s, so only when validating) with telemetry off and the DuckDB fix in place."""
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    import great_expectations as gx

    if gx.__version__ != TESTED_GX_VERSION:
        log.warning(
            "great_expectations %s is not the tested %s; re-run tests/test_validation.py",
            gx.__version__,
            TESTED_GX_VERSION,
        )
    install_duckdb_result_buffering()
    return gx


def install_duckdb_result_buffering() -> None:
    """Make GX's SQL engine read DuckDB results before it closes the connection. Idempotent.

    GX returns the cursor from inside `with get_connection()` and reads it after the block; the
    close rolls back and duckdb-engine drops the pending result, so every metric came back empty
    (GX issues #10738, #11579). Buffering inside the block keeps the rows. Metric results are
    small aggregates or LIMITed lists; other dialects keep GX's own code path.
    """
    from great_expectations.execution_engine import SqlAlchemyExecutionEngine

    original = SqlAlchemyExecutionEngine.execute_query
    if getattr(original, _PATCH_MARK, False):
        return

    @functools.wraps(original)
    def execute_query(self: Any, query: Any) -> Any:
        if self.engine.dialect.name != "duckdb":
            return original(self, query)
        with self.get_connection() as connection:
            result = self._execute_query_with_recovery(connection, query)
            return result.freeze()() if result.returns_rows else result

    setattr(execute_query, _PATCH_MARK, True)
    SqlAlchemyExecutionEngine.execute_query = execute_query


@contextmanager
def _quiet_stdout() -> Iterator[None]:
    """GX prints (not logs) a hint for unexpected-rows queries without {batch}; ours read the
    quality.* relations by name on purpose. Anything printed goes to the debug log instead."""
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        yield
    for line in buffer.getvalue().splitlines():
        if line.strip():
            log.debug("GX: %s", line)


def _progress_bars_off() -> Any:
    from great_expectations.data_context.types.base import ProgressBarsConfig

    return ProgressBarsConfig(globally=False)


@contextmanager
def _duckdb_engine_kwargs(
    db_path: Path,
    schema: str,
    *,
    read_only: bool,
    memory_limit: str | None,
    lock_timeout_s: float | None,
    variables: dict[str, Any] | None = None,
) -> Iterator[tuple[str, dict[str, Any], Callable[[Any], None]]]:
    """SQLAlchemy engine settings whose DuckDB connections are all closed on exit.

    Connections come from our own `creator` rather than duckdb-engine's, because duckdb-engine
    adds a `custom_user_agent` setting, and DuckDB refuses a second same-process connection to
    a file with different settings. Each connection gets `search_path = <schema>`: GX's column
    listing falls back to an unqualified `SELECT * FROM <table>` on DuckDB (duckdb-engine's
    reflection queries pg_collation, which DuckDB lacks under SQLAlchemy 2.1).
    """
    import duckdb_engine

    if not db_path.is_file():
        raise FileNotFoundError(f"no DuckDB file at {db_path}")
    opened: list[duckdb.DuckDBPyConnection] = []
    engines: list[Any] = []

    def creator() -> Any:
        con = _open_duckdb(db_path, read_only, memory_limit, lock_timeout_s)
        opened.append(con)
        con.execute(f"set search_path = '{schema}'")
        for name, value in (variables or {}).items():
            if _IDENTIFIER.match(name) and isinstance(value, (str, int, float)):
                con.execute(f"set variable {name} = ?", [value])
        return duckdb_engine.ConnectionWrapper(con)

    try:
        yield "duckdb:///" + str(db_path), {"creator": creator}, engines.append
    finally:
        for engine in engines:
            try:
                engine.dispose()
            except Exception:  # closing must not hide the real error
                log.debug("engine dispose failed", exc_info=True)
        for con in opened:
            con.close()
        log.debug("closed %d DuckDB connection(s) to %s", len(opened), db_path)


def _open_duckdb(
    db_path: Path, read_only: bool, memory_limit: str | None, lock_timeout_s: float | None
) -> duckdb.DuckDBPyConnection:
    try:
        return db_connect(
            db_path, read_only=read_only, memory_limit=memory_limit, lock_timeout_s=lock_timeout_s
        )
    except duckdb.ConnectionException as exc:
        if "different configuration" not in str(exc) or not read_only:
            raise
    # This process still holds the file read-write: share that database instance if its
    # settings match ours (same memory_limit), otherwise the caller must close it first.
    try:
        return db_connect(
            db_path, read_only=False, memory_limit=memory_limit, lock_timeout_s=lock_timeout_s
        )
    except duckdb.ConnectionException as exc:
        raise WarehouseInUseError(
            f"{db_path} is open in this process with other settings; close that connection "
            "before validating (DuckDB allows one configuration per file per process)"
        ) from exc


def _with_position(exp: dict[str, Any], position: int) -> dict[str, Any]:
    """A GX expectation config carrying its suite position (GX may reorder results)."""
    config = {
        "type": exp["type"],
        "kwargs": exp["kwargs"],
        "severity": exp["severity"],
        "meta": {**(exp.get("meta") or {}), "_position": position},
    }
    if exp.get("description"):
        config["description"] = exp["description"]
    return config


def _raise_on_gx_exceptions(result: Any, where: str) -> None:
    problems = []
    for r in result.results:
        info = r.exception_info or {}
        # exception_info is either one {raised_exception, exception_message} dict or a dict of
        # them keyed by metric id.
        entries = [info] if "raised_exception" in info else list(info.values())
        for entry in entries:
            if isinstance(entry, dict) and entry.get("raised_exception"):
                problems.append(f"{r.expectation_config.type}: {entry.get('exception_message')}")
    if problems:
        raise ValidationRuntimeError(
            f"GX could not evaluate {len(problems)} rule(s) on {where}: " + "; ".join(problems)
        )


def _outcome(
    r: Any, table: str, key_column: str, params: dict[str, Any], engine: Any
) -> ExpectationOutcome:
    from great_expectations.util import convert_to_json_serializable

    config = r.expectation_config
    meta = config.meta or {}
    kwargs = {k: v for k, v in config.kwargs.items() if k != "batch_id"}
    kwargs = _resolve_parameters(kwargs, params)
    res = r.result or {}
    row_level = bool(meta.get("row_level")) and config.type not in UNIQUENESS_TYPES
    outcome = ExpectationOutcome(
        table=table,
        expectation_type=config.type,
        column=kwargs.get("column"),
        kwargs=convert_to_json_serializable(kwargs),
        severity=str(getattr(config.severity, "value", config.severity)),
        success=bool(r.success),
        unexpected_count=res.get("unexpected_count"),
        unexpected_percent=res.get("unexpected_percent"),
        element_count=res.get("element_count"),
        observed_value=convert_to_json_serializable(res.get("observed_value")),
        row_level=row_level,
        quarantine_reason=meta.get("quarantine_reason") if row_level else None,
        description=config.description,
        reason_column=meta.get("reason_column") if row_level else None,
    )
    if config.type == UNEXPECTED_ROWS and not outcome.success:
        outcome.details = _unexpected_rows_details(engine, config.kwargs, table)
        outcome.observed_value = {"unexpected_rows": outcome.observed_value}
        if outcome.details:
            outcome.observed_value["details"] = outcome.details
        return outcome
    query = res.get("unexpected_index_query")
    if config.type in UNIQUENESS_TYPES and not outcome.success and outcome.column == key_column:
        # The aggregate uniqueness rule has no row query: list the duplicated keys (complete).
        outcome.failing_keys, _, _, _ = _failing_keys(
            engine, _duplicates_query(table, key_column), KEY_LIST_LIMIT
        )
    elif outcome.unexpected_count and query:
        limit = KEY_LIST_LIMIT if row_level else SAMPLE_KEYS
        keys, null_rows, n_rows, n_keys = _failing_keys(engine, query, limit)
        outcome.failing_keys, outcome.null_key_count = keys, null_rows
        outcome.failing_keys_complete = row_level and len(keys) == n_keys
        if row_level:
            outcome.failing_keys_query = query.strip().rstrip(";")
        if row_level and n_rows != outcome.unexpected_count:
            raise ValidationRuntimeError(
                f"{table} {config.type}({outcome.column}): GX counted "
                f"{outcome.unexpected_count} failing rows but its row query returned {n_rows}"
            )
    return outcome


def _unexpected_rows_details(engine: Any, kwargs: dict[str, Any], table: str) -> list[str]:
    """The `detail` column (else the whole row) of the first rows an unexpected-rows query
    returned, re-run on the validation's connection: GX's BASIC result only counts them."""
    query = kwargs["unexpected_rows_query"]
    if "{batch}" in query:
        # As GX substitutes it (QueryMetricProvider): aliased unless the query joins.
        from great_expectations.expectations.metrics.query_metric_provider import (
            _query_has_join_clause,
        )

        batch = f'(select * from "{table}")'
        query = query.replace(
            "{batch}", batch if _query_has_join_clause(query) else batch + " as subselect"
        )
    raw = engine.raw_connection()
    try:
        rel = raw.driver_connection.sql(
            f"select * from ({query}) as unexpected limit {SAMPLE_ROWS}"
        )
        rows = rel.fetchall()
        cols = rel.columns
    finally:
        raw.close()
    if "detail" in cols:
        i = cols.index("detail")
        return [str(r[i]) for r in rows]
    return [", ".join(f"{c}={v}" for c, v in zip(cols, r, strict=True)) for r in rows]


def _resolve_parameters(node: Any, params: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if set(node) == {"$PARAMETER"}:
            return params[node["$PARAMETER"]]
        return {k: _resolve_parameters(v, params) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve_parameters(v, params) for v in node]
    return node


def _duplicates_query(table: str, column: str) -> str:
    return (
        f'select "{column}" from "{table}" where "{column}" is not null '
        f"group by all having count(*) > 1"
    )


def _failing_keys(engine: Any, query: str, limit: int) -> tuple[list[str], int, int, int]:
    """(first `limit` distinct non-null keys, rows with a NULL key, failing rows, distinct
    non-null keys) of GX's unexpected-index query, counted inside DuckDB.

    GX selects the index column first, then the checked column (which may be the same name), so
    the key is read by position. Runs on one of the validation's own DuckDB connections.
    """
    inner = query.strip().rstrip(";")
    failing = f"(select #1 as k from ({inner}) as failing) as failing"
    raw = engine.raw_connection()
    try:
        con = raw.driver_connection
        n_rows, null_rows, n_keys = con.sql(
            f"select count(*), count(*) filter (where k is null), count(distinct k) from {failing}"
        ).fetchall()[0]
        keys = (
            con.sql(
                f"select distinct k from {failing} where k is not null order by k limit {limit}"
            )
            .to_arrow_table()
            .column("k")
            .to_pylist()
        )
    finally:
        raw.close()
    return [str(k) for k in keys], null_rows, n_rows, n_keys
