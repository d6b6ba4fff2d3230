"""`feedback-loop doctor`: one cheap authenticated call per configured source, in plain words."""

from __future__ import annotations

import glob
import importlib
import inspect
import logging
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from pydantic import BaseModel, ValidationError

from tasks.clients.http import (
    AuthError,
    ClientRequestError,
    HttpClient,
    HttpError,
    InvalidResponseError,
    NotFoundError,
    RequestBudget,
    RetriesExhaustedError,
    RetryPolicy,
    mask_text,
)
from tasks.connectors import CONNECTOR_TYPES, connector_settings
from tasks.settings import ENV_PREFIX, ConfigError, Settings
from tasks.sources import VENDORS

log = logging.getLogger(__name__)

OK = "ok"
BAD_CREDENTIALS = "bad credentials"
UNREACHABLE = "unreachable"
MISCONFIGURED = "misconfigured"

# A doctor answers in seconds: short timeouts, one quick retry, no waiting out rate limits.
DOCTOR_TIMEOUT: tuple[float, float] = (5.0, 15.0)
DOCTOR_RETRY = RetryPolicy(max_attempts=2, base_delay_s=0.5, max_delay_s=2.0, jitter=0.0)

# Settings that name the account / project / repository a check looks at, per connector (its
# declaration's id_fields); a 404 points at one of these (or at base_url).
_ID_FIELDS: dict[str, tuple[str, ...]] = {
    v.source: v.id_fields for v in VENDORS if v.source in CONNECTOR_TYPES
}

# Write-back trackers: module, settings class, tracker class, settings that locate the target.
TRACKER_TYPES: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "github": (
        "tasks.clients.github",
        "GitHubSettings",
        "tasks.trackers.github:GitHubTracker",
        ("base_url", "owner", "repo"),
    ),
    "jira": (
        "tasks.trackers.jira",
        "JiraTrackerSettings",
        "tasks.trackers.jira:JiraTracker",
        ("base_url", "project"),
    ),
    "linear": (
        "tasks.trackers.linear",
        "LinearTrackerSettings",
        "tasks.trackers.linear:LinearTracker",
        ("base_url", "team_key"),
    ),
}

# What the Jira tracker does: create issues, edit them (description, labels, issue property),
# comment, transition (close) and add the remote link that finds them again.
JIRA_WRITE_PERMISSIONS = (
    "BROWSE_PROJECTS",
    "CREATE_ISSUES",
    "EDIT_ISSUES",
    "ADD_COMMENTS",
    "TRANSITION_ISSUES",
    "LINK_ISSUES",
)

# File sources the loader reads, as [sources] keys.
FILE_SOURCES = ("posthog_events", "zendesk_tickets", "github_issues", "accounts")


@dataclass(frozen=True)
class Check:
    """The verdict on one source: `status` is ok / bad credentials / unreachable /
    misconfigured; `detail` says what happened, `fix` which setting or variable to change."""

    name: str  # the settings table, e.g. "connectors.posthog", "writeback.github"
    target: str  # where it looked (URL and ids, or a glob); never a credential
    status: str
    detail: str
    fix: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == OK


# ---------------------------------------------------------------------------------------------
# Credential variables (also what .env.example must list)


def settings_models() -> dict[str, type[BaseModel]]:
    """Every connector and tracker settings model, by table name."""
    models: dict[str, type[BaseModel]] = {}
    for name, kind in CONNECTOR_TYPES.items():
        models[f"connectors.{name}"] = getattr(
            importlib.import_module(kind.module), kind.settings_class
        )
    for name, (module, cls, _, _) in TRACKER_TYPES.items():
        models[f"writeback.{name}"] = getattr(importlib.import_module(module), cls)
    return models


def env_fields(model: type[BaseModel] | BaseModel) -> dict[str, str]:
    """`*_env` field name -> the variable it names (the default, or the configured value)."""
    cls = model if isinstance(model, type) else type(model)
    out = {}
    for field, info in cls.model_fields.items():
        if not field.endswith("_env"):
            continue
        value = getattr(model, field) if isinstance(model, BaseModel) else info.default
        if isinstance(value, str) and value:
            out[field] = value
    return out


def credential_env_vars() -> list[str]:
    """Every credential variable the settings models read by default, sorted."""
    names = {v for model in settings_models().values() for v in env_fields(model).values()}
    for kind in CONNECTOR_TYPES.values():
        names.update(kind.env_vars)
    return sorted(names)


# ---------------------------------------------------------------------------------------------
# Classification


def _message(exc: HttpError) -> str:
    """The HttpError's own text, without the leading source name and the trailing hint."""
    text = str(exc)
    prefix = f"{exc.source}: "
    if text.startswith(prefix):
        text = text[len(prefix) :]
    if exc.hint and text.endswith(f" — {exc.hint}"):
        text = text[: -len(exc.hint) - 3]
    return text


def _fields(table: str, names: Iterable[str]) -> str:
    return ", ".join(f"{table}.{n}" for n in names)


def classify(exc: BaseException, table: str, id_fields: Iterable[str] = ("base_url",)) -> Check:
    """A failed check as (status, detail, fix); `table` names the settings to fix."""
    ids = tuple(id_fields)
    if isinstance(exc, AuthError):
        why = "refused the credentials" if exc.status != 403 else "denied access (HTTP 403)"
        detail = f"the API {why}: {_message(exc)}"
        return _verdict(table, BAD_CREDENTIALS, detail, exc.hint or "check the credentials")
    if isinstance(exc, ConfigError):
        text = str(exc)
        if text.startswith("missing credential"):
            fix = text.split(":", 1)[1].strip()
            return _verdict(table, BAD_CREDENTIALS, "no credential is set", fix)
        if "secret block" in text:
            return _verdict(table, BAD_CREDENTIALS, "the Secret block could not be loaded", text)
        return _verdict(table, MISCONFIGURED, text, f"edit the [{table}] table")
    if isinstance(exc, NotFoundError):
        fix = f"check {_fields(table, ids)}"
        if exc.hint and not exc.hint.startswith("check the base URL"):
            fix += f" ({exc.hint})"
        detail = f"not found ({_message(exc)}): wrong base URL, account or id?"
        return _verdict(table, MISCONFIGURED, detail, fix)
    if isinstance(exc, RetriesExhaustedError):
        text = _message(exc)
        if "rate limit" in text:
            return _verdict(
                table, UNREACHABLE, f"rate limited: {text}", "try again later (quota used up)"
            )
        fix = f"check {table}.base_url and the network (DNS, proxy, firewall)"
        return _verdict(table, UNREACHABLE, text, fix)
    if isinstance(exc, InvalidResponseError):
        detail = f"the answer is not what the API sends: {_message(exc)}"
        return _verdict(table, MISCONFIGURED, detail, f"check {table}.base_url")
    if isinstance(exc, ClientRequestError):
        return _verdict(
            table, MISCONFIGURED, _message(exc), exc.hint or f"check {_fields(table, ids)}"
        )
    if isinstance(exc, HttpError):  # e.g. a 501 or an uncertain write: the service, not us
        return _verdict(table, UNREACHABLE, _message(exc), "try again later")
    if isinstance(exc, requests.RequestException | OSError):
        fix = f"check {table}.base_url and the network (DNS, proxy, firewall)"
        return _verdict(table, UNREACHABLE, f"{type(exc).__name__}: {exc}", fix)
    return _verdict(
        table, MISCONFIGURED, f"unexpected {type(exc).__name__}: {exc}", f"check [{table}]"
    )


def _verdict(table: str, status: str, detail: str, fix: str) -> Check:
    return Check(name=table, target="", status=status, detail=detail, fix=fix)


# ---------------------------------------------------------------------------------------------
# Running the checks


class _ShortSession(requests.Session):
    """A session whose every request uses the doctor's timeouts, whatever the client asks."""

    def __init__(self, timeout: tuple[float, float]):
        super().__init__()
        self.doctor_timeout = timeout

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        kwargs["timeout"] = self.doctor_timeout
        return super().request(method, url, *args, **kwargs)


@dataclass(frozen=True)
class _Options:
    timeout: tuple[float, float]
    retry: RetryPolicy
    sleep: Callable[[float], None]


def _build(cls: type, settings: BaseModel, opts: _Options, session: requests.Session) -> Any:
    """Construct a connector/tracker with the doctor's session, retry and sleep where it takes
    them, then shorten the timeouts and retries of the HTTP clients it built eagerly."""
    params = inspect.signature(cls).parameters
    # **kwargs (an ApiConnector subclass passing them on to tasks/clients/base.py): all of them
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    offered: dict[str, Any] = {
        "session": session,
        "retry": opts.retry,
        "sleep": opts.sleep,
        # A private, roomy budget: the vendor budgets are per process and could make us wait.
        "budget": RequestBudget(10_000, 1.0),
    }
    obj = cls(settings, **{k: v for k, v in offered.items() if takes_all or k in params})
    _tune(obj, opts)
    return obj


def _tune(obj: Any, opts: _Options) -> None:
    from tasks.clients.linear import LinearGraphQL

    for value in list(vars(obj).values()):
        if isinstance(value, LinearGraphQL):
            value.max_waits = 0  # a GraphQL RATELIMITED answer fails at once
            value = value.http
        if isinstance(value, HttpClient):
            value.timeout = opts.timeout
            value.retry = opts.retry
            value.budget = None


def _target(settings: BaseModel, id_fields: Iterable[str]) -> str:
    api_url = getattr(settings, "api_url", None)
    base = ""
    if callable(api_url):
        try:
            base = api_url()
        except ConfigError:
            base = ""
    base = base or str(getattr(settings, "base_url", "") or "")
    ids = [
        f"{f}={getattr(settings, f)}"
        for f in id_fields
        if f not in ("base_url", "subdomain", "domain") and getattr(settings, f, None)
    ]
    return mask_text(" ".join([mask_text(base), *ids]).strip())


def _timed(name: str, run: Callable[[], Check]) -> Check:
    started = time.perf_counter()
    try:
        check = run()
    except Exception as exc:  # a bug in a check must not hide the other sources
        log.debug("doctor: %s check raised", name, exc_info=True)
        check = classify(exc, name)
    seconds = round(time.perf_counter() - started, 2)
    return Check(check.name or name, check.target, check.status, check.detail, check.fix, seconds)


def _invalid(table: str, problems: str) -> Check:
    return Check(table, "", MISCONFIGURED, f"invalid settings: {problems}", f"edit [{table}]")


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())


def _failed(exc: BaseException, table: str, target: str, ids: Iterable[str]) -> Check:
    verdict = classify(exc, table, ids)
    detail = verdict.detail
    # The target column already shows the base URL: keep only the path in the message.
    base = target.split(" ", 1)[0]
    if base.startswith(("http://", "https://")):
        detail = detail.replace(base.rstrip("/"), "")
    return Check(table, target, verdict.status, detail, verdict.fix)


def check_connector(name: str, raw: dict[str, Any], opts: _Options) -> Check:
    table = f"connectors.{name}"
    ids = _ID_FIELDS.get(name, ("base_url",))
    try:
        # One table at a time, so an invalid one does not hide the others.
        only = Settings.model_construct(connectors={name: raw})
        vendor_settings = connector_settings(only)[name]
    except ConfigError as exc:
        return _invalid(table, str(exc).removeprefix(f"{table}: "))
    target = _target(vendor_settings, ids)
    kind = CONNECTOR_TYPES[name]
    cls = getattr(importlib.import_module(kind.module), kind.connector_class)
    session = _ShortSession(opts.timeout)
    try:
        connector = _build(cls, vendor_settings, opts, session)
        connector.check()
    except Exception as exc:
        return _failed(exc, table, target, ids)
    finally:
        session.close()
    return Check(table, target, OK, "authenticated call answered")


def _tracker_table(settings: Settings, name: str) -> Any:
    wb = settings.writeback
    raw = getattr(wb, name, None)
    if raw is None and isinstance(getattr(wb, "model_extra", None), dict):
        raw = wb.model_extra.get(name)
    return raw


def check_tracker(name: str, raw: Any, opts: _Options) -> Check:
    """The write-back tracker `name` configured by `raw` (its [writeback.<name>] table)."""
    table = f"writeback.{name}"
    if name not in TRACKER_TYPES:
        known = ", ".join(["markdown", *TRACKER_TYPES])
        return Check(
            "writeback.tracker",
            name,
            MISCONFIGURED,
            f"unknown tracker {name!r}",
            f"set writeback.tracker to one of: {known}",
        )
    module, cls_name, tracker_path, ids = TRACKER_TYPES[name]
    if raw is None:
        return Check(
            table,
            "",
            MISCONFIGURED,
            f"writeback.tracker = {name!r} but there is no [{table}] table",
            f"add a [{table}] table (see README, Connecting real sources)",
        )
    settings_cls = getattr(importlib.import_module(module), cls_name)
    try:
        if isinstance(raw, settings_cls):
            tracker_settings = raw
        else:
            data = raw.model_dump() if isinstance(raw, BaseModel) else raw
            tracker_settings = settings_cls.model_validate(data)
    except ValidationError as exc:
        return _invalid(table, _problems(exc))
    target = _target(tracker_settings, ids)
    mod_name, cls_attr = tracker_path.split(":")
    tracker_cls = getattr(importlib.import_module(mod_name), cls_attr)
    session = _ShortSession(opts.timeout)
    try:
        tracker = _build(tracker_cls, tracker_settings, opts, session)
        detail = _probe_tracker(name, tracker, tracker_settings)
    except Exception as exc:
        return _failed(exc, table, target, ids)
    finally:
        session.close()
    return Check(table, target, OK, detail)


def _probe_tracker(name: str, tracker: Any, s: Any) -> str:
    """One call that proves the tracker can be written to; the tracker's own check() if any."""
    if callable(getattr(tracker, "check", None)):
        tracker.check()
        return "authenticated; the token may create and label issues"
    if name == "jira":
        # One call: authenticates, proves the project exists, and lists what we may do in it.
        doc = tracker.http.get_json(
            "/rest/api/3/mypermissions",
            params={"projectKey": s.project, "permissions": ",".join(JIRA_WRITE_PERMISSIONS)},
        )
        perms = doc.get("permissions") if isinstance(doc, dict) else None
        if not isinstance(perms, dict):
            raise InvalidResponseError("jira", "mypermissions answer has no 'permissions'")
        missing = [
            key
            for key in JIRA_WRITE_PERMISSIONS
            if not (isinstance(perms.get(key), dict) and perms[key].get("havePermission"))
        ]
        if missing:
            raise AuthError(
                "jira",
                f"the account lacks {', '.join(missing)} in project {s.project}",
                status=403,
                hint=f"give the account in {s.email_env} these permissions in project "
                f"{s.project} (Project settings -> Permissions), or use an account that has them",
            )
        return f"authenticated; may create, edit, comment and close issues in {s.project}"
    if name == "linear":
        tracker.team_id()  # authenticates and proves the team key
        return f"authenticated; team {s.team_key} found"
    raise AssertionError(f"no probe for tracker {name}")


def check_markdown_tracker(tracker_dir: Path) -> Check:
    table = "writeback.tracker_dir"
    here = tracker_dir
    while not here.exists() and here != here.parent:
        here = here.parent
    if here.is_dir() and os.access(here, os.W_OK | os.X_OK):
        detail = "writable" if here == tracker_dir else f"will be created (in {here})"
        return Check("writeback.markdown", str(tracker_dir), OK, detail)
    return Check(
        "writeback.markdown",
        str(tracker_dir),
        MISCONFIGURED,
        f"{here} is not a writable folder",
        f"set {table} to a folder this user may write to",
    )


def check_file_sources(settings: Settings) -> list[Check]:
    """Do the export-file globs match files? Empty globs are disabled sources: not listed."""
    out = []
    demo_dir = os.path.realpath(settings.demo.out_dir)
    for key in FILE_SOURCES:
        pattern = getattr(settings.sources, key)
        if not pattern:
            continue
        name = f"sources.{key}"
        n = len(glob.glob(os.path.expanduser(pattern), recursive=True))
        if n:
            out.append(Check(name, pattern, OK, f"{n} file(s) match"))
        elif key in settings.sources.optional:  # preflight lets an optional source be empty
            out.append(Check(name, pattern, OK, "no files (listed in sources.optional)"))
        elif settings.demo.enabled and os.path.realpath(pattern).startswith(demo_dir):
            out.append(
                Check(name, pattern, OK, "no files yet: the next run generates the demo data")
            )
        else:
            out.append(
                Check(
                    name,
                    pattern,
                    MISCONFIGURED,
                    "no file matches the glob",
                    f'set {name} to a glob that matches your export files, or "" to disable it',
                )
            )
    return out


def run_checks(
    settings: Settings,
    *,
    timeout: tuple[float, float] = DOCTOR_TIMEOUT,
    retry: RetryPolicy = DOCTOR_RETRY,
    sleep: Callable[[float], None] = time.sleep,
    max_workers: int = 8,
) -> list[Check]:
    """Every configured source, checked concurrently; results in settings order."""
    opts = _Options(timeout=timeout, retry=retry, sleep=sleep)
    jobs: list[tuple[str, Callable[[], Check]]] = []
    for name, raw in settings.connectors.items():
        jobs.append((f"connectors.{name}", lambda n=name, r=raw: check_connector(n, dict(r), opts)))
    tracker = settings.writeback.tracker
    if tracker == "markdown":
        jobs.append(
            ("writeback.markdown", lambda: check_markdown_tracker(settings.writeback.tracker_dir))
        )
    else:
        raw = _tracker_table(settings, tracker)
        jobs.append((f"writeback.{tracker}", lambda: check_tracker(tracker, raw, opts)))
    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(jobs)))) as pool:
        futures = [pool.submit(_timed, name, run) for name, run in jobs]
        checks = [f.result() for f in futures]
    checks += check_file_sources(settings)
    return [_scrub(c, settings) for c in checks]


def _secret_values(settings: Settings) -> set[str]:
    """Current values of every credential variable in play, and the hash salt."""
    names = set(credential_env_vars())
    for raw in settings.connectors.values():
        names.update(v for k, v in raw.items() if k.endswith("_env") and isinstance(v, str))
    raw = _tracker_table(settings, settings.writeback.tracker)
    if isinstance(raw, BaseModel):
        names.update(env_fields(raw).values())
    elif isinstance(raw, dict):
        names.update(v for k, v in raw.items() if k.endswith("_env") and isinstance(v, str))
    values = {os.environ.get(n, "") for n in names}
    values.add(os.environ.get(ENV_PREFIX + "HASH_SALT", ""))
    values.add(settings.hash_salt.get_secret_value())
    return {v for v in values if v}


def _scrub(check: Check, settings: Settings) -> Check:
    """Last line of defence: no credential value reaches the report, whatever an error said."""
    secrets = _secret_values(settings)
    return Check(
        check.name,
        mask_text(check.target, secrets),
        check.status,
        mask_text(check.detail, secrets),
        mask_text(check.fix, secrets),
        check.seconds,
    )


def format_lines(checks: list[Check]) -> list[str]:
    """One aligned plain line per source: name, status, target, what happened, what to fix."""
    if not checks:
        return []
    w_name = max(len(c.name) for c in checks)
    w_status = max(len(c.status) for c in checks)
    lines = []
    for c in checks:
        where = f"{c.target}: " if c.target else ""
        text = f"{c.name:<{w_name}}  {c.status:<{w_status}}  {where}{c.detail}"
        if c.fix and not c.ok:
            text += f" — fix: {c.fix}"
        lines.append(text)
    return lines
