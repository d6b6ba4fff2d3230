"""Feature catalog: read and check features.yaml, publish it as marts.dim_features + rules."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
import polars as pl
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tasks.settings import ConfigError, describe_errors

SIGNALS = ("events", "paths", "ticket_tags", "ticket_keywords", "bug_labels", "bug_components")


class Feature(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    name: str
    owner: str | None = None
    events: list[str] = []
    paths: list[str] = []
    ticket_tags: list[str] = []
    ticket_keywords: list[str] = []
    bug_labels: list[str] = []
    bug_components: list[str] = []
    # Optional expectations and launch date: judged against these instead of the other features.
    launched_on: date | None = Field(None, description="First day of the launch ramp.")
    expected_daily_share: float | None = Field(
        None, gt=0, le=1, description="Expected share of product actives using it on a day."
    )
    expected_stickiness: float | None = Field(
        None, gt=0, le=1, description="Expected DAU/MAU of the feature's users."
    )
    expected_events_per_user: float | None = Field(
        None, gt=0, description="Expected events per user on a day they use it."
    )


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int
    product: str = "product"
    features: list[Feature]

    @field_validator("features")
    @classmethod
    def _unique_keys(cls, features: list[Feature]) -> list[Feature]:
        keys = [f.key for f in features]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise ValueError(f"duplicate feature keys: {', '.join(dupes)}")
        if not features:
            raise ValueError("the catalog lists no features")
        return features


def load_catalog(path: Path) -> Catalog:
    if not path.is_file():
        raise ConfigError(f"feature catalog not found: {path} (set catalog_path in the config)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ConfigError(
                f"{path}: invalid feature catalog: expected a mapping with version and features"
            )
        return Catalog.model_validate(data)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"{path}: not valid YAML{where} ({problem})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the feature catalog ({exc})") from None
    except ValidationError as exc:
        problems = describe_errors(exc, model=Catalog)
        raise ConfigError(f"{path}: invalid feature catalog: {problems}") from None


def publish_catalog(con: duckdb.DuckDBPyConnection, catalog: Catalog) -> None:
    """Write marts.dim_features and marts.feature_rules (one row per feature x signal x pattern)."""
    dim = pl.DataFrame(
        {
            "feature_key": [f.key for f in catalog.features],
            "feature_name": [f.name for f in catalog.features],
            "owner": [f.owner for f in catalog.features],
            "feature_order": list(range(1, len(catalog.features) + 1)),
            "catalog_version": [catalog.version] * len(catalog.features),
            "launched_on": [f.launched_on for f in catalog.features],
            "expected_daily_share": [f.expected_daily_share for f in catalog.features],
            "expected_stickiness": [f.expected_stickiness for f in catalog.features],
            "expected_events_per_user": [f.expected_events_per_user for f in catalog.features],
        },
        schema_overrides={
            "owner": pl.String,
            "launched_on": pl.Date,
            "expected_daily_share": pl.Float64,
            "expected_stickiness": pl.Float64,
            "expected_events_per_user": pl.Float64,
        },
    )
    rules = pl.DataFrame(
        [
            {
                "feature_key": f.key,
                "feature_order": i,
                "signal": signal,
                "pattern": str(pattern).strip().lower(),
            }
            for i, f in enumerate(catalog.features, start=1)
            for signal in SIGNALS
            for pattern in getattr(f, signal)
        ],
        schema={
            "feature_key": pl.String,
            "feature_order": pl.Int64,
            "signal": pl.String,
            "pattern": pl.String,
        },
    )
    con.register("_dim_features", dim)
    con.register("_feature_rules", rules)
    try:
        con.execute("create or replace table marts.dim_features as select * from _dim_features")
        con.execute("create or replace table marts.feature_rules as select * from _feature_rules")
    finally:
        con.unregister("_dim_features")
        con.unregister("_feature_rules")
    from tasks.comments import document

    document(con, "marts", "dim_features")
    document(con, "marts", "feature_rules")
