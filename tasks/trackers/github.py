"""GitHub Issues tracker: one issue per fingerprint, found again by its hidden marker and label."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import requests

from tasks.clients.github import GitHubSettings, check_repository, make_client, parse_page
from tasks.clients.http import (
    AuthError,
    HttpClient,
    InvalidResponseError,
    RequestBudget,
    iter_link_pages,
)
from tasks.trackers.base import (
    CLOSE_REASONS,
    MARKER_PREFIX,
    TrackerIssue,
    effort_from_labels,
    lookup_order,
    marker_for,
)

log = logging.getLogger(__name__)

_MARKER = re.compile(rf"<!-- {re.escape(MARKER_PREFIX)}(\S+) -->")
# Roles that may label issues; without one GitHub silently drops labels on create/update.
_LABEL_ROLES = ("admin", "maintain", "push", "triage")


@dataclass(frozen=True)
class GitHubIssue(TrackerIssue):
    """A TrackerIssue whose `ref` is the issue number; `node_id` is the id stable across
    transfers (what the raw table keys on)."""

    number: int = 0
    node_id: str = ""


class WritePacer:
    """GitHub's limits for content-creating requests (create, comment, edit): one at a time,
    >= 1 s apart, <= 80 per minute and <= 500 per hour. Share one per token."""

    def __init__(
        self,
        *,
        min_interval_s: float = 1.0,
        per_minute: int = 80,
        per_hour: int = 500,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.lock = threading.Lock()
        self.budget = RequestBudget(
            per_minute,
            60.0,
            extra_windows=[(per_hour, 3600.0)],
            min_interval_s=min_interval_s,
            clock=clock,
            sleep=sleep,
        )


_PACERS: dict[tuple[str, str, str | None], WritePacer] = {}


def _shared_pacer(settings: GitHubSettings) -> WritePacer:
    key = (settings.base_url, settings.token_env, settings.token_block)
    if key not in _PACERS:
        _PACERS[key] = WritePacer()
    return _PACERS[key]


def visible_body(body: str | None) -> str:
    """The body as feedback-loop rendered it: marker removed, browser CRLF edits normalised."""
    text = (body or "").replace("\r\n", "\n")
    return _MARKER.sub("", text).strip("\n").rstrip()


def body_with_marker(body: str, fingerprint: str) -> str:
    return f"{visible_body(body)}\n\n{marker_for(fingerprint)}\n"


def _label_names(labels: Any) -> tuple[str, ...]:
    out = []
    for label in labels or ():
        name = label.get("name") if isinstance(label, dict) else label
        if isinstance(name, str):
            out.append(name)
    return tuple(out)


def _merge_labels(existing: tuple[str, ...], wanted: list[str]) -> list[str]:
    """Existing labels first, then the missing wanted ones; GitHub label names ignore case."""
    have = {name.lower() for name in existing}
    merged = list(existing)
    for name in wanted:
        if name.lower() not in have:
            merged.append(name)
            have.add(name.lower())
    return merged


class GitHubTracker:
    """Issues in one repository. Reads are plain; every write is paced by a `WritePacer`."""

    name = "github"

    def __init__(
        self,
        settings: GitHubSettings,
        *,
        client: HttpClient | None = None,
        pacer: WritePacer | None = None,
    ) -> None:
        self.settings = settings
        self.client = client or make_client(settings, access="Issues read and write")
        self.pacer = pacer or _shared_pacer(settings)
        self._writable_checked = False

    # -- reading -----------------------------------------------------------------------------
    def check(self) -> dict[str, Any]:
        """The repository exists, has issues, and the token may label (else find() breaks)."""
        repo = check_repository(self.client, self.settings)
        perms = repo.get("permissions")
        if isinstance(perms, dict) and not any(perms.get(role) for role in _LABEL_ROLES):
            raise AuthError(
                "github",
                f"the token can read but not label issues in {self.settings.full_name}; GitHub "
                f"would silently drop the {self.settings.label!r} label that finds issues again",
                status=403,
                hint=self.settings.auth_hint("triage (or write)"),
            )
        if not isinstance(perms, dict):
            log.warning(
                "github: %s did not say what the token may do; labels are verified after create",
                self.settings.full_name,
            )
        self._writable_checked = True
        return repo

    def list_issues(self) -> list[dict[str, Any]]:
        """Every issue (open or closed) with our label. The search API lags, so never search."""
        s = self.settings
        params = {"labels": s.label, "state": "all", "per_page": s.per_page}
        out: list[dict[str, Any]] = []
        for i, resp in enumerate(iter_link_pages(self.client, f"{s.repo_path}/issues", params)):
            items = parse_page(resp, f"GET {s.repo_path}/issues?labels={s.label} page {i + 1}")
            out += [it for it in items if isinstance(it, dict) and "pull_request" not in it]
        return out

    def find(self, fingerprint: str) -> GitHubIssue | None:
        """One listing; the fingerprint's marker first, then (canonical) its legacy markers."""
        issues = self.list_issues()
        for fp in lookup_order(fingerprint):
            found = self._pick(fp, issues)
            if found is not None:
                return found
        return None

    def _pick(self, fingerprint: str, issues: list[dict[str, Any]]) -> GitHubIssue | None:
        marker = marker_for(fingerprint)
        matches = [it for it in issues if marker in (it.get("body") or "")]
        if not matches:
            return None
        if len(matches) > 1:
            log.warning(
                "github: %d issues carry fingerprint %s: %s",
                len(matches),
                fingerprint,
                ", ".join(f"#{it.get('number')}" for it in matches),
            )
        # A copy a person closed as duplicate is not the one to keep; otherwise the oldest.
        keep = sorted(
            matches, key=lambda it: (it.get("state_reason") == "duplicate", it.get("number") or 0)
        )[0]
        return self._issue(keep)

    # -- writing -----------------------------------------------------------------------------
    def create(self, fingerprint: str, title: str, body: str, labels: list[str]) -> GitHubIssue:
        self._ensure_writable()
        wanted = _merge_labels((self.settings.label,), labels)
        payload = {"title": title, "body": body_with_marker(body, fingerprint), "labels": wanted}
        # Not idempotent: after a 5xx/timeout that may have created the issue the HTTP layer
        # raises UncertainWriteError instead of posting a twin; the next run finds it by marker.
        item = self._write(
            "POST", f"{self.settings.repo_path}/issues", payload, 201, idempotent=False
        )
        issue = self._issue(item)
        self._verify_labels(issue, wanted)
        return issue

    def update(
        self, issue: TrackerIssue, fingerprint: str, title: str, body: str, labels: list[str]
    ) -> GitHubIssue:
        """PATCH only what changed; labels in a PATCH replace the set, so send the union."""
        current = issue if isinstance(issue, GitHubIssue) else self._get(issue.ref)
        changes: dict[str, Any] = {}
        if title != current.title:
            changes["title"] = title
        # A legacy marker (fix:x for health:x) is rewritten even when the text is the same.
        moved = current.fingerprint is not None and current.fingerprint != fingerprint
        if moved or visible_body(body) != visible_body(current.body):
            changes["body"] = body_with_marker(body, fingerprint)
        wanted = [self.settings.label, *labels]
        if len(_merge_labels(current.labels, wanted)) != len(current.labels):
            # The set we send replaces the issue's: merge with its labels as they are now, not
            # as they were when it was found, so a label a person just added is not dropped.
            fresh = self._get(current.ref)
            changes["labels"] = _merge_labels(fresh.labels, wanted)
        if not changes:
            return current
        self._ensure_writable()
        item = self._write("PATCH", self._issue_path(current), changes, 200)
        updated = self._issue(item)
        if "labels" in changes:
            self._verify_labels(updated, changes["labels"])
        return updated

    def comment(self, issue: TrackerIssue, body: str) -> None:
        if issue.locked:
            # A person locked the conversation; even with the rights to, a bot does not talk on.
            log.warning("github: #%s is locked; comment not posted", issue.ref)
            return
        path = f"{self._issue_path(issue)}/comments"
        self._write("POST", path, {"body": body}, 201, idempotent=False)

    def close(self, issue: TrackerIssue, reason: str) -> GitHubIssue:
        if reason not in CLOSE_REASONS:
            raise ValueError(f"close reason must be one of {CLOSE_REASONS}, not {reason!r}")
        current = issue if isinstance(issue, GitHubIssue) else self._get(issue.ref)
        if current.state == "closed":
            return current  # never overwrite the reason a person (or an earlier run) chose
        item = self._write(
            "PATCH", self._issue_path(current), {"state": "closed", "state_reason": reason}, 200
        )
        return self._issue(item)

    def reopen(self, issue: TrackerIssue) -> GitHubIssue:
        current = issue if isinstance(issue, GitHubIssue) else self._get(issue.ref)
        if current.state == "open":
            return current
        item = self._write(
            "PATCH", self._issue_path(current), {"state": "open", "state_reason": "reopened"}, 200
        )
        return self._issue(item)

    # -- internals ---------------------------------------------------------------------------
    def _issue_path(self, issue: TrackerIssue) -> str:
        return f"{self.settings.repo_path}/issues/{int(issue.ref)}"

    def _get(self, ref: str) -> GitHubIssue:
        resp = self.client.request("GET", f"{self.settings.repo_path}/issues/{int(ref)}")
        return self._issue(_json_object(resp))

    def _write(
        self, method: str, path: str, payload: dict[str, Any], ok: int, *, idempotent: bool = True
    ) -> dict[str, Any]:
        # The lock makes writes serial across threads; the budget (also taken by retries, and
        # paused by a rate-limit answer) spaces them out.
        with self.pacer.lock:
            resp = self.client.request(
                method,
                path,
                json=payload,
                ok_statuses=(ok,),
                idempotent=idempotent,
                extra_budget=self.pacer.budget,
            )
        return _json_object(resp)

    def _ensure_writable(self) -> None:
        if not self._writable_checked:
            self.check()

    def _verify_labels(self, issue: GitHubIssue, wanted: list[str]) -> None:
        have = {name.lower() for name in issue.labels}
        missing = [name for name in wanted if name.lower() not in have]
        if not missing:
            return
        tracking = self.settings.label.lower() in {m.lower() for m in missing}
        (log.error if tracking else log.warning)(
            "github: #%s: label(s) %s were not applied — GitHub drops labels silently without "
            "triage/write access to %s%s",
            issue.ref,
            ", ".join(missing),
            self.settings.full_name,
            "; without the tracking label find() cannot see this issue again" if tracking else "",
        )

    def _issue(self, item: dict[str, Any]) -> GitHubIssue:
        try:
            number = int(item["number"])
            labels = _label_names(item.get("labels"))
            marker = _MARKER.search((item.get("body") or "").replace("\r\n", "\n"))
            effort = effort_from_labels(labels)
            return GitHubIssue(
                ref=str(number),
                url=str(item["html_url"]),
                state=str(item["state"]),
                state_reason=item.get("state_reason"),
                body=visible_body(item.get("body")),
                title=str(item.get("title") or ""),
                locked=bool(item.get("locked")),
                labels=labels,
                fingerprint=marker.group(1) if marker else None,
                updated_at=_timestamp(item.get("updated_at")),
                closed_at=_timestamp(item.get("closed_at")),
                effort=effort,
                effort_source="label" if effort is not None else None,
                number=number,
                node_id=str(item.get("node_id") or ""),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidResponseError(
                "github", f"issue object without {exc}: not what GitHub documents"
            ) from None


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _json_object(resp: requests.Response) -> dict[str, Any]:
    try:
        item = json.loads(resp.content)
    except ValueError:
        raise InvalidResponseError(
            "github", "answer is not valid JSON", status=resp.status_code, url=resp.url
        ) from None
    if not isinstance(item, dict):
        raise InvalidResponseError(
            "github", "expected a JSON object", status=resp.status_code, url=resp.url
        )
    return item
