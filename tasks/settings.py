"""Typed run settings: defaults for the embedded demo, a TOML file, then environment overrides."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SQL_DIR = PROJECT_ROOT / "sql"
EXPECTATIONS_DIR = PROJECT_ROOT / "expectations"
DEFAULT_CATALOG = PROJECT_ROOT / "features.yaml"
ENV_PREFIX = "FEEDBACK_LOOP_"


class ConfigError(Exception):
    """A user-facing configuration problem: the message says what to fix."""


class _Strict(BaseModel):
    # Unknown keys are errors (a typo must not be silently ignored); nan/inf are not numbers.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """The keys allowed in the table at `loc` of `model` (None when it is not a model table)."""
    current: Any = model
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(str(part))
        if field is None:
            return None
        current = field.annotation
        for arg in get_args(current) or ():
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                current = arg
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(current.model_fields)
    return None


def describe_errors(
    exc: ValidationError,
    prefix: str = "",
    model: type[BaseModel] | None = None,
    origins: dict[tuple[str, ...], str] | None = None,
) -> str:
    """One line for a pydantic ValidationError: `key: what is wrong` joined by "; ".

    Unknown keys list the allowed ones; `origins` names where a key was set (an environment
    variable). The offending value is never echoed (it may be a secret typed into the wrong
    key)."""
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        origin = (origins or {}).get(tuple(str(p) for p in loc))
        key = ".".join(str(p) for p in (*([prefix] if prefix else []), *loc)) or "<root>"
        if err["type"] == "extra_forbidden":
            known = _known_keys(model, loc[:-1]) if model is not None else None
            msg = "unknown setting; remove or rename it" + (
                f" (allowed here: {', '.join(known)})" if known else ""
            )
        else:
            msg = err["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, ") :]
        problems.append(f"{key}: {msg}" + (f" (set by {origin})" if origin else ""))
    return "; ".join(problems)


class DemoSettings(_Strict):
    enabled: bool = Field(True, description="Generate demo data when the source files are missing.")
    out_dir: Path = Path("data/demo")
    seed: int = 42
    days: int = Field(90, ge=14, le=730)
    users: int = Field(5000, ge=50)
    accounts: int = Field(500, ge=5)
    events: int | None = Field(None, ge=1000, description="Target event count; None = default.")


FILE_SOURCE_NAMES = ("posthog_events", "zendesk_tickets", "github_issues", "accounts")


class FileSources(_Strict):
    """Where the vendor export files live (globs). Empty string disables a source.

    A glob that matches no file stops the run before loading (preflight), unless the source is
    listed in `optional`."""

    posthog_events: str = "data/demo/posthog/*.jsonl"
    zendesk_tickets: str = "data/demo/zendesk/*.json"
    github_issues: str = "data/demo/github/*.json"
    accounts: str = Field(
        "data/demo/accounts/*.csv",
        description="Optional CSV or Parquet files, one row per account: account_key, arr, plan, "
        "segment (revenue weighting of priorities). README: Accounts.",
    )
    optional: list[str] = Field(
        default_factory=lambda: ["accounts"],
        description="Sources whose glob may match no file (the run then goes on without them); "
        f"any of {', '.join(FILE_SOURCE_NAMES)}.",
    )

    @field_validator("optional")
    @classmethod
    def _known_sources(cls, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in FILE_SOURCE_NAMES]
        if unknown:
            raise ValueError(
                f"unknown source(s) {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(FILE_SOURCE_NAMES)}"
            )
        return names


class ScoreWeights(_Strict):
    adoption: float = 0.15
    engagement: float = 0.10
    retention: float = 0.15
    support: float = 0.20
    bugs: float = 0.20
    trend: float = 0.20

    @field_validator("*")
    @classmethod
    def _non_negative(cls, v: float) -> float:
        if v < 0:
            raise ValueError("weights must be >= 0")
        return v

    @model_validator(mode="after")
    def _some_weight(self) -> ScoreWeights:
        if sum(self.model_dump().values()) <= 0:
            raise ValueError("every weight is 0; give at least one a value > 0")
        return self

    def normalised(self) -> dict[str, float]:
        raw = self.model_dump()
        total = sum(raw.values())
        if total <= 0:
            raise ConfigError("score.weights: at least one weight must be > 0")
        return {k: v / total for k, v in raw.items()}


class DetectionSettings(_Strict):
    """Change detection and hysteresis (README, "Health score"). Defaults were chosen on the
    planted scenarios of `feedback-loop evaluate`; change one and re-run it."""

    drop_z: float = Field(
        3.5, gt=0, le=50, description="Usage-drop scan statistic threshold (robust z)."
    )
    min_drop: float = Field(
        0.10, ge=0, lt=1, description="Smallest relative drop of the last 3 days that counts."
    )
    ticket_z: float = Field(3.0, gt=0, le=50, description="Poisson excess threshold (Anscombe z).")
    min_tickets: int = Field(5, ge=1, description="Fewest tickets (busiest day winsorised).")
    ticket_ratio: float = Field(1.5, ge=1, description="Tickets must reach this x expected.")
    weak_share_ratio: float = Field(
        0.25, gt=0, le=1, description="Weak adoption: 7-day share under this x the reference."
    )
    weak_stickiness_ratio: float = Field(
        0.5, gt=0, le=1, description="Weak engagement: DAU/MAU under this x the catalog value."
    )
    launch_ramp_days: int = Field(
        42, ge=0, le=365, description="Days after launch in which a feature is not judged weak."
    )
    open_after_days: int = Field(
        2, ge=1, le=14, description="Consecutive days of evidence before a problem opens."
    )
    resolve_after_days: int = Field(
        3, ge=1, le=14, description="Consecutive days without evidence before it resolves."
    )


class ScoreSettings(_Strict):
    weights: ScoreWeights = ScoreWeights()
    detection: DetectionSettings = DetectionSettings()
    reach: Literal["arr_weighted", "users"] = Field(
        "arr_weighted",
        description="Priority reach: users weighted by their account's ARR relative to the mean "
        "account (when an accounts source is loaded), or plain users.",
    )


class WritebackSettings(_Strict):
    tracker: Literal["markdown", "github", "jira", "linear"] = Field(
        "markdown", description="Where suggestions are written; its options in [writeback.<name>]."
    )
    tracker_dir: Path = Path("data/tracker")
    max_new_suggestions: int = Field(5, ge=0, le=50)
    on_recovery: Literal["comment", "close", "none"] = Field(
        "comment", description="What to do with an open issue whose problem went away."
    )
    report_url: str | None = Field(
        None,
        description="Link to the run's report in every issue body, a template with {as_of} "
        "(e.g. https://reports.example.com/feedback/{as_of}.html where you publish the files of "
        "<warehouse dir>/reports/). Empty: the local report file.",
    )
    time_budget_seconds: float = Field(
        900.0,
        gt=0,
        description="Longest the tracker write-back may take, rate-limit waits included; a wait "
        "that would overrun it stops write-back as partial and the next run resumes.",
    )
    github: dict[str, Any] | None = None
    jira: dict[str, Any] | None = None
    linear: dict[str, Any] | None = None


class Settings(_Strict):
    duckdb_path: Path = Path("data/feedback.duckdb")
    snapshot_path: Path = Field(
        Path("data/feedback_analyst.duckdb"),
        description="Read-only analyst copy, replaced atomically at the end of every run.",
    )
    snapshot_mode: Literal["parquet", "full"] = Field(
        "parquet",
        description="parquet: the raw event tables stay Parquet day files in <snapshot stem>"
        "_parquet/ next to the snapshot (only new rows written), read by views of the same "
        "name; full: one standalone file with every table copied (cost grows with history).",
    )
    duckdb_memory_limit: str = Field(
        "768MB",
        description="DuckDB memory_limit of every warehouse connection of a run (larger work "
        "spills to disk). 768MB keeps every night at 10M events under 1.5 GiB peak RSS for the "
        "whole process tree (1.44 GiB, the first night's validation; make bench-scale).",
    )
    raw_events_store: Literal["warehouse", "parquet"] = Field(
        "warehouse",
        description="warehouse: the raw event tables keep every event in the DuckDB file. "
        "parquet: after each night's rollups, event days older than raw_events_hot_days move "
        "to Parquet day files under raw_events_path (raw.<vendor>__events_all reads both).",
    )
    raw_events_path: str = Field(
        "",
        description="Where the Parquet event days go in parquet mode: a local folder (default "
        "<warehouse folder>/raw_events) or s3://bucket/prefix (credentials from the standard "
        "AWS environment variables / profile only, never from this file).",
    )
    raw_events_s3_endpoint_url: str = Field(
        "",
        description="S3-compatible endpoint (MinIO, moto, R2...) for an s3:// raw_events_path; "
        "empty = AWS.",
    )
    raw_events_s3_region: str = Field("", description="S3 region; empty = the AWS default.")
    raw_events_hot_days: int = Field(
        3,
        ge=1,
        le=365,
        description="Event days (UTC) kept in the warehouse in parquet mode; older days move "
        "to Parquet after the night's rollups.",
    )
    raw_events_retention_days: int = Field(
        0,
        ge=0,
        description="Parquet mode: delete event days older than this many days (0 = keep "
        "everything). The rollups of deleted days are kept; a full refresh cannot rebuild them.",
    )
    warehouse_wait_minutes: float = Field(
        240,
        ge=0,
        description="How long a run waits for another run (any deployment, the CLI, a backfill) "
        "writing the same warehouse before it gives up; it waits in the AwaitingWarehouse state.",
    )
    lock_wait_seconds: float = Field(
        600,
        ge=0,
        description="How long a run waits for another program's DuckDB lock on the live file "
        "(an analyst's open session) before it fails with a message naming that process.",
    )
    catalog_path: Path = DEFAULT_CATALOG
    window_days: int = Field(
        28, ge=7, le=120, description="Default scoring window of a run (flow/CLI may override)."
    )
    hash_salt: SecretStr = Field(
        SecretStr("feedback-loop-demo-salt"),
        description="Salt for requester hashes. Set FEEDBACK_LOOP_HASH_SALT in production.",
    )
    demo: DemoSettings = DemoSettings()
    sources: FileSources = FileSources()
    score: ScoreSettings = ScoreSettings()
    writeback: WritebackSettings = WritebackSettings()
    connectors: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="API connectors, one [connectors.<vendor>] table each (tasks/connectors.py).",
    )
    max_parallel_pulls: int = Field(
        4,
        ge=1,
        le=16,
        description="Sources pulled at the same time (each a pull-<source> task run): their "
        "fetching and landing overlap, their warehouse commits take turns. 1 = one after another.",
    )

    @model_validator(mode="after")
    def _raw_events(self) -> Settings:
        scheme = self.raw_events_path.split("://", 1)[0] if "://" in self.raw_events_path else ""
        if scheme not in ("", "s3", "file"):
            raise ValueError(
                f"raw_events_path: {scheme}:// is not supported (a local folder or s3://bucket/…)"
            )
        if 0 < self.raw_events_retention_days <= self.raw_events_hot_days:
            raise ValueError(
                "raw_events_retention_days must be 0 (keep everything) or more than "
                f"raw_events_hot_days ({self.raw_events_hot_days})"
            )
        return self

    @field_validator("hash_salt")
    @classmethod
    def _salted(cls, v: SecretStr) -> SecretStr:
        if not v.get_secret_value().strip():
            raise ValueError("must not be empty (requester hashes would be unsalted); set a secret")
        return v

    @property
    def reports_dir(self) -> Path:
        """Per as-of date the run summary (`<as_of>.md`) and the HTML report (`<as_of>.html`,
        linked from the issue bodies; `latest.html`)."""
        return self.duckdb_path.parent / "reports"

    def report_link(self, as_of: str) -> str:
        if self.writeback.report_url:
            return self.writeback.report_url.format(as_of=as_of)
        return (self.reports_dir / f"{as_of}.html").resolve().as_uri()

    @property
    def landing_dir(self) -> Path:
        """Where connector pages wait (briefly) between fetch and commit."""
        return self.duckdb_path.parent / "landing"

    def resolve_paths(self, base: Path) -> Settings:
        """Make relative paths absolute against `base` (the config file's folder or the cwd)."""

        def fix(p: Path) -> Path:
            return p if p.is_absolute() else (base / p).resolve()

        def fix_glob(g: str) -> str:
            return g if (not g or os.path.isabs(g)) else str(base / g)

        return self.model_copy(
            update={
                "duckdb_path": fix(self.duckdb_path),
                "snapshot_path": fix(self.snapshot_path),
                "catalog_path": fix(self.catalog_path),
                "raw_events_path": (
                    self.raw_events_path
                    if "://" in self.raw_events_path or not self.raw_events_path
                    else str(fix(Path(self.raw_events_path)))
                ),
                "demo": self.demo.model_copy(update={"out_dir": fix(self.demo.out_dir)}),
                "sources": self.sources.model_copy(
                    update={
                        "posthog_events": fix_glob(self.sources.posthog_events),
                        "zendesk_tickets": fix_glob(self.sources.zendesk_tickets),
                        "github_issues": fix_glob(self.sources.github_issues),
                        "accounts": fix_glob(self.sources.accounts),
                    }
                ),
                "writeback": self.writeback.model_copy(
                    update={"tracker_dir": fix(self.writeback.tracker_dir)}
                ),
            }
        )


# Variables with the prefix that are not settings: the settings file itself, the production
# switch (tasks.runtime) and the optional Presidio recogniser (tasks.redact).
_NOT_SETTINGS = {ENV_PREFIX + n for n in ("CONFIG", "REQUIRE_CONFIG", "PRESIDIO")}


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """FEEDBACK_LOOP_DUCKDB_PATH=x -> {"duckdb_path": x}; FEEDBACK_LOOP_WRITEBACK__TRACKER_DIR=y ->
    {"writeback": {"tracker_dir": y}} (double underscore = nesting)."""
    out: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name in _NOT_SETTINGS:
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in over.items():
        merged[k] = (
            _merge(merged[k], v) if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
        )
    return merged


def load_settings(
    config_path: str | Path | None = None, environ: dict[str, str] | None = None
) -> Settings:
    """Settings from defaults < TOML file < FEEDBACK_LOOP_* environment variables.

    Relative paths in a config file are relative to that file; otherwise to the working directory.
    """
    environ = dict(os.environ) if environ is None else environ
    config_path = config_path or environ.get(ENV_PREFIX + "CONFIG")
    data: dict[str, Any] = {}
    base = Path.cwd()
    if config_path:
        path = Path(config_path).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the config file ({exc})") from None
        base = path.resolve().parent
    data = _merge(data, _env_overrides(environ))
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        where = f" in {config_path}" if config_path else ""
        origins = {
            tuple(name[len(ENV_PREFIX) :].lower().split("__")): name
            for name in environ
            if name.startswith(ENV_PREFIX)
        }
        problems = describe_errors(exc, model=Settings, origins=origins)
        raise ConfigError(f"invalid settings{where}: {problems}") from None
    return settings.resolve_paths(base)
