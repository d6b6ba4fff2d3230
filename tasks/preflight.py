"""Preflight: every setting, table, credential, catalog and output path, before any loading.

A run that would fail on its configuration fails here, in well under a second, with ONE line
saying what is wrong and how to fix it (a `ConfigError`), before it touches the warehouse, the
tracker or the snapshot. `feedback-loop run` calls it before starting the flow (exit code 2, no
traceback) and the flow calls it first too, for runs started from the Prefect UI.

Checks, in order:

1. cross-field settings: warehouse and snapshot are different files, the DuckDB memory limit
   parses, the report URL template only uses `{as_of}` (the model itself already checked
   types, ranges, unknown keys, weights and an empty salt when the settings were loaded);
2. the feature catalog parses and validates;
3. every `[connectors.<vendor>]` table validates, its URL is an http(s) URL and its credentials
   resolve (environment variable or Prefect Secret block);
4. the write-back tracker: its `[writeback.<name>]` table exists, validates and its credentials
   resolve;
5. every path the run writes can be created and written: warehouse file, analyst snapshot,
   reports, landing (with connectors), Markdown tracker folder, demo output (when the
   demo data is still to be generated) — tested by creating and deleting a temporary file in
   the folder or, when it does not exist yet, in the nearest existing folder above it (so a
   read-only mount is caught even when running as root, and preflight leaves nothing behind);
6. export-file globs match at least one file, unless the source is listed in
   `sources.optional` (or its glob is "" = disabled).
"""

from __future__ import annotations

import glob
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from string import Formatter
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError

from tasks.settings import FILE_SOURCE_NAMES, ConfigError, Settings, describe_errors

# File-source settings key -> the flow's source kind that loads it (`sources` parameter).
_SOURCE_KIND = {
    "posthog_events": "usage",
    "zendesk_tickets": "tickets",
    "github_issues": "bugs",
    "accounts": None,  # loaded on every run
}


def preflight(settings: Settings, *, sources: Iterable[str] | None = None) -> None:
    """Check everything a run needs before it loads anything; ConfigError (one line) if not.

    `sources`: the source kinds this run pulls (usage / tickets / bugs); None = all. Export
    globs and API connectors of the other kinds are still validated but need not match or
    authenticate.
    """
    kinds = None if sources is None else {str(getattr(k, "value", k)) for k in sources}
    check_settings(settings)
    check_catalog(settings)
    check_connectors(settings, kinds)
    check_tracker(settings)
    check_paths(settings)
    check_file_sources(settings, kinds)


# --------------------------------------------------------------------------------- settings
def check_settings(settings: Settings) -> None:
    """Cross-field checks the pydantic model cannot make on its own."""
    if _same_file(settings.duckdb_path, settings.snapshot_path):
        raise ConfigError(
            f"snapshot_path: {settings.snapshot_path} is the warehouse file itself "
            "(duckdb_path); give the analyst snapshot its own file name"
        )
    _check_memory_limit(settings.duckdb_memory_limit)
    if settings.raw_events_store == "parquet" and settings.raw_events_path.startswith("s3://"):
        try:
            import s3fs  # noqa: F401
        except ImportError:
            raise ConfigError(
                "raw_events_path is s3:// but s3fs is not installed: pip install "
                "'feedback-loop[s3]'"
            ) from None
    template = settings.writeback.report_url
    if template:
        names = {f for _, f, _, _ in Formatter().parse(template) if f is not None}
        extra = sorted(n for n in names if n != "as_of")
        if extra:
            shown = ", ".join("{" + n + "}" for n in extra)
            raise ConfigError(
                f"writeback.report_url: unknown placeholder(s) {shown}; only {{as_of}} is filled in"
            )
        try:
            template.format(as_of="2000-01-01")
        except (ValueError, IndexError) as exc:
            raise ConfigError(
                f"writeback.report_url: not a valid template ({exc}); use {{as_of}} for the date"
            ) from None


def _same_file(a: Path, b: Path) -> bool:
    if a == b:
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _check_memory_limit(value: str) -> None:
    import duckdb

    try:
        con = duckdb.connect(":memory:", config={"memory_limit": value})
        con.close()
    except duckdb.Error:
        raise ConfigError(
            f"duckdb_memory_limit: {value!r} is not a memory size DuckDB understands; "
            "use e.g. '4GB', '512MB' or '80%'"
        ) from None


# ---------------------------------------------------------------------------------- catalog
def check_catalog(settings: Settings) -> None:
    from tasks.catalog import load_catalog

    load_catalog(settings.catalog_path)


# ------------------------------------------------------------------------ connectors/tracker
def check_connectors(settings: Settings, kinds: set[str] | None = None) -> None:
    """Every `[connectors.*]` table: valid, a usable URL, and (when its kind is pulled) its
    credentials resolve."""
    from tasks.connectors import CONNECTOR_TYPES, connector_settings

    pulled = None
    if kinds is not None:
        pulled = set(kinds) | ({"errors"} if "bugs" in kinds else set())
    for name, vendor_settings in connector_settings(settings).items():
        table = f"connectors.{name}"
        _check_url(table, vendor_settings)
        if pulled is not None:
            import importlib

            kind = CONNECTOR_TYPES[name]
            cls = getattr(importlib.import_module(kind.module), kind.connector_class)
            if getattr(cls, "kind", None) not in pulled:
                continue
        _check_credentials(table, vendor_settings)


def check_tracker(settings: Settings) -> None:
    """The write-back target: its table exists and validates; its credentials resolve. The
    tables of trackers that are not selected are validated too (a typo should not wait for the
    day they are switched on)."""
    import importlib

    from tasks.doctor import TRACKER_TYPES

    wb = settings.writeback
    for name, (module, cls_name, _, _) in TRACKER_TYPES.items():
        raw = getattr(wb, name)
        table = f"writeback.{name}"
        if raw is None:
            if wb.tracker == name:
                raise ConfigError(
                    f"writeback.tracker is {name!r} but there is no [{table}] table; add it "
                    '(README: Connecting real sources) or set writeback.tracker = "markdown"'
                )
            continue
        settings_cls = getattr(importlib.import_module(module), cls_name)
        try:
            tracker_settings = settings_cls.model_validate(raw)
        except ValidationError as exc:
            problems = describe_errors(exc, table, settings_cls)
            raise ConfigError(f"{problems} (fix the [{table}] table)") from None
        _check_url(table, tracker_settings)
        if wb.tracker == name:
            _check_credentials(table, tracker_settings)


def _check_url(table: str, model: BaseModel) -> None:
    """base_url (or the URL a connector derives from subdomain/domain) is http(s)://host."""
    api_url = getattr(model, "api_url", None)
    if callable(api_url):
        try:
            url = api_url()
        except ConfigError as exc:
            raise ConfigError(f"{table}: {str(exc).split(': ', 1)[-1]}") from None
        field = "base_url" if getattr(model, "base_url", "") else "subdomain/domain"
    else:
        url = getattr(model, "base_url", None)
        field = "base_url"
    if url is None:
        return
    parts = urlsplit(str(url))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{table}.{field}: {str(url)!r} is not an http(s) URL; write it like "
            "https://api.example.com"
        )
    try:
        parts.port  # noqa: B018  (raises on a non-numeric port)
    except ValueError:
        raise ConfigError(f"{table}.{field}: {str(url)!r} has an invalid port") from None


def credential_sources(model: BaseModel) -> list[tuple[str, str, str | None]]:
    """(setting, environment variable, Secret block) for every credential `model` needs."""
    auth = getattr(model, "auth", None)
    fields = [f for f in type(model).model_fields if f.endswith("_env")]
    if auth is not None and "oauth_token_env" in fields:  # Zendesk: one of two auth modes
        fields = (
            ["oauth_token_env"]
            if auth == "oauth"
            else [f for f in fields if f != "oauth_token_env"]
        )
    out = []
    for field in fields:
        if field == "email_env" and getattr(model, "email", ""):
            continue  # the email is given in the table itself
        env = getattr(model, field)
        if not env:
            continue
        out.append((field, env, getattr(model, field[: -len("_env")] + "_block", None)))
    return out


def _check_credentials(table: str, model: BaseModel) -> None:
    from tasks.secrets import resolve_secret

    for field, env, block in credential_sources(model):
        try:
            resolve_secret(env, block)
        except ConfigError as exc:
            raise ConfigError(
                f"{table}: {exc} (the variable is named by {table}.{field})"
            ) from None


# ------------------------------------------------------------------------------------ paths
def output_paths(settings: Settings) -> list[tuple[str, Path, str]]:
    """(setting, path, "file"|"dir") for everything the run writes."""
    wh = settings.duckdb_path
    out: list[tuple[str, Path, str]] = [
        ("duckdb_path", wh, "file"),
        ("snapshot_path", settings.snapshot_path, "file"),
        ("reports dir (next to duckdb_path)", settings.reports_dir, "dir"),
    ]
    if settings.connectors:
        out.append(("landing dir (next to duckdb_path)", settings.landing_dir, "dir"))
    if settings.writeback.tracker == "markdown":
        out.append(("writeback.tracker_dir", settings.writeback.tracker_dir, "dir"))
    if _demo_pending(settings):
        out.append(("demo.out_dir", settings.demo.out_dir, "dir"))
    if settings.raw_events_store == "parquet" and "://" not in settings.raw_events_path:
        from tasks.rawstore import RawStore

        out.append(("raw_events_path", Path(RawStore.from_settings(settings).root), "dir"))
    return out


def check_paths(settings: Settings) -> None:
    for setting, path, kind in output_paths(settings):
        if kind == "file":
            if path.is_dir():
                raise ConfigError(
                    f"{setting}: {path} is a directory; give a file path (e.g. {path / 'x.duckdb'})"
                )
            if path.exists() and not os.access(path, os.W_OK):
                raise ConfigError(f"{setting}: {path} is not writable; fix its permissions")
            _writable_dir(setting, path.parent)
        else:
            _writable_dir(setting, path)


def _writable_dir(setting: str, directory: Path) -> None:
    """`directory` can be written: it, or the nearest folder above it that exists (the run
    creates the rest), takes a temporary file that is created and deleted again. Nothing is
    left behind, so a dry run (which writes no tracker folder) and a failed preflight change
    nothing on disk."""
    existing = next((p for p in (directory, *directory.parents) if p.exists()), None)
    if existing is None:  # pragma: no cover  (the root always exists)
        raise ConfigError(f"{setting}: {directory} cannot be created; fix the path")
    if not existing.is_dir():
        raise ConfigError(
            f"{setting}: cannot create {directory}: {existing} is a file, not a folder; "
            "fix the path"
        )
    try:
        fd, name = tempfile.mkstemp(prefix=".preflight-", dir=existing)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        where = directory if existing == directory else f"{directory} (in {existing})"
        raise ConfigError(
            f"{setting}: {where} is not writable ({reason}); fix the path or its permissions"
        ) from None


# ----------------------------------------------------------------------------- file sources
def _demo_pending(settings: Settings) -> bool:
    """True when this run will generate the demo exports first: the same rule as
    tasks.steps.prepare_demo_data (demo on and no _manifest.json in demo.out_dir yet)."""
    return settings.demo.enabled and not (settings.demo.out_dir / "_manifest.json").exists()


def _inside(pattern: str, folder: Path) -> bool:
    try:
        Path(pattern).resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def check_file_sources(settings: Settings, kinds: set[str] | None = None) -> None:
    """Every export glob of a pulled source matches a file, unless it is optional or ""."""
    demo_pending = _demo_pending(settings)
    for name in FILE_SOURCE_NAMES:
        pattern: str = getattr(settings.sources, name)
        if not pattern or name in settings.sources.optional:
            continue
        kind = _SOURCE_KIND[name]
        if kinds is not None and kind is not None and kind not in kinds:
            continue
        # In demo mode the generator writes these files at the start of the run (after
        # preflight): a glob inside demo.out_dir cannot match yet, so it is not checked here.
        if demo_pending and _inside(pattern, settings.demo.out_dir):
            continue
        if not glob.glob(os.path.expanduser(pattern), recursive=True):
            raise ConfigError(
                f'sources.{name}: no files match {pattern!r}; fix the path, set it to "" '
                "to disable the source, or list it in sources.optional"
            )
