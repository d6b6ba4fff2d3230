"""GitHub Issues tracker: one issue per fingerprint, found again by its hidden marker and label."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import requests

from tasks.clients.github import GitHubSettings, check_repository, make_client
from tasks.clients.http import (
    AuthError,
    HttpClient,
    InvalidResponseError,
    RequestBudget,
    expect_json,
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
from tasks.trackers.limits import PoliteClient, TimeBudget

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
    >= 1 s apart, <= 80 per minute and <= 500 per hour. Share one per token.

    The 1 s is kept with a margin (`min_interval_s`, 1.1 s) and measured on the monotonic clock
    from the *completion* of the previous write, not from when it was sent: GitHub sees the
    requests arrive, and a send-to-send gap of 1.0 s arrived 0.996 s apart."""

    def __init__(
        self,
        *,
        min_interval_s: float = 1.1,
        per_minute: int = 80,
        per_hour: int = 500,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.lock = threading.RLock()
        self.min_interval_s = float(min_interval_s)
        self.clock, self.sleep = clock, sleep
        self._done: float | None = None
        self.budget = RequestBudget(
            per_minute,
            60.0,
            extra_windows=[(per_hour, 3600.0)],
            min_interval_s=min_interval_s,
            clock=clock,
            sleep=sleep,
        )

    def wait_turn(self) -> None:
        """Before a write (holding `lock`): min_interval_s after the last one completed."""
        if self._done is None or not self.min_interval_s:
            return
        wait = self._done + self.min_interval_s - self.clock()
        if wait > 0:
            self.sleep(wait)

    def completed(self) -> None:
        """After a write's answer arrived (or it failed): the spacing counts from now."""
        self._done = self.clock()


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
    """Issues in one repository. Every write is paced by a `WritePacer`; rate-limit answers to
    reads and writes are waited out per GitHub's rules within a `TimeBudget` (`PoliteClient`).

    Lookup: after `use_ledger(rows)` (plan_writeback calls it each run), a fingerprint the
    ledger knows is looked up by its issue number (one GET, the marker verified); only a
    fingerprint the ledger does not know (new, or a create whose outcome was unknown) needs the
    list of labelled issues, read at most once per run."""

    name = "github"
    # create() sends one POST (after a read-only check): an error other than an uncertain one
    # means no issue was made, so apply_plan may drop the pending ledger row it wrote.
    create_is_one_request = True

    def __init__(
        self,
        settings: GitHubSettings,
        *,
        client: HttpClient | None = None,
        pacer: WritePacer | None = None,
        time_budget: TimeBudget | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.pacer = pacer or _shared_pacer(settings)
        # Waits run on the pacer's clock unless told otherwise, so an injected clock covers both.
        self.budget = time_budget or TimeBudget(clock=self.pacer.clock, sleep=self.pacer.sleep)
        self.http = client or make_client(
            settings, access="Issues read and write", sleep=self.budget.sleep
        )
        self.client = PoliteClient(self.http, self.budget, wall_clock=wall_clock)
        self._writable_checked = False
        self._known: dict[str, str] | None = None  # fingerprint -> issue number (ledger)
        self._listing: dict[int, dict[str, Any]] | None = None  # this run's labelled issues
        self.n_lists = 0  # list requests (pages) sent, for the lookup-cost figures
        self._etags: dict[int, tuple[str, dict[str, Any]]] = {}  # number -> (ETag, issue)

    # -- reading -----------------------------------------------------------------------------
    def check(self) -> dict[str, Any]:
        """The repository exists, has issues, and the token may label (else find() breaks).

        One call with the HTTP layer's own short retries (what `doctor` needs: an answer in
        seconds); before the first write the same check waits out rate limits politely."""
        return self._check(self.http)

    def _check(self, client: Any) -> dict[str, Any]:
        repo = check_repository(client, self.settings)
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

    def use_ledger(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Start a run: the ledger's fingerprint -> issue number, and no cached listing."""
        known: dict[str, str] = {}
        for row in rows:
            ref = row.get("issue_ref")
            if ref and str(ref).isdigit():
                known[str(row["fingerprint"])] = str(ref)
        self._known, self._listing, self._etags = known, None, {}

    def list_issues(self) -> list[dict[str, Any]]:
        """Every issue (open or closed) with our label. The search API lags, so never search."""
        s = self.settings
        params = {"labels": s.label, "state": "all", "per_page": s.per_page}
        out: list[dict[str, Any]] = []
        pages = iter_link_pages(
            self.client, f"{s.repo_path}/issues", params, expect=expect_json(list)
        )
        for resp in pages:
            self.n_lists += 1
            items = resp.parsed
            out += [it for it in items if isinstance(it, dict) and "pull_request" not in it]
        return out

    def find(self, fingerprint: str) -> GitHubIssue | None:
        """The fingerprint's marker first, then (canonical) its legacy markers."""
        if self._known is None:  # not started from a ledger: one listing per call, as before
            issues = self.list_issues()
            for fp in lookup_order(fingerprint):
                found = self._pick(fp, issues)
                if found is not None:
                    return found
            return None
        for fp in lookup_order(fingerprint):
            found = self._find_exact(fp)
            if found is not None:
                return found
        return None

    def _find_exact(self, fingerprint: str) -> GitHubIssue | None:
        assert self._known is not None
        ref = self._known.get(fingerprint)
        if ref is not None:
            item = self._get_if_ours(ref, fingerprint)
            if item is not None:
                return self._issue(item)
            # The ledger's issue is gone, moved, unlabelled or carries another marker now:
            # whatever else carries the marker is in the listing.
        found = self._pick(fingerprint, list(self._cached_listing().values()))
        if found is not None:
            self._known[fingerprint] = found.ref  # re-read fresh by number from now on
        return found

    def _cached_listing(self) -> dict[int, dict[str, Any]]:
        if self._listing is None:
            self._listing = {int(it["number"]): it for it in self.list_issues() if "number" in it}
        return self._listing

    def _get_if_ours(self, ref: str, fingerprint: str) -> dict[str, Any] | None:
        """GET the issue by number; None unless it is here (not deleted, not transferred),
        labelled with ours and carrying exactly this fingerprint's marker."""
        item = self._get_item(int(ref), ok_statuses=(200, 404, 410))
        if item is None:  # gone, or moved to another repository
            return None
        labels = {name.lower() for name in _label_names(item.get("labels"))}
        if self.settings.label.lower() not in labels or "pull_request" in item:
            return None
        if marker_for(fingerprint) not in (item.get("body") or "").replace("\r\n", "\n"):
            return None
        return item

    def _remember(self, item: dict[str, Any], fingerprint: str | None = None) -> None:
        """A write's answer keeps this run's cache true (a second find sees the new issue)."""
        if self._listing is not None and "number" in item:
            self._listing[int(item["number"])] = item
        if self._known is not None and fingerprint is not None and "number" in item:
            self._known[fingerprint] = str(item["number"])

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
        self._remember(item, fingerprint)
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
        self._remember(item, fingerprint)
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
        item = self._get_item(int(ref), here_only=False)
        if item is None:  # a 304 to a request that was not conditional: not GitHub's way
            raise InvalidResponseError("github", f"GET issue #{int(ref)} answered without it")
        return self._issue(item)

    def _get_item(
        self, number: int, ok_statuses: tuple[int, ...] = (200,), *, here_only: bool = True
    ) -> dict[str, Any] | None:
        """GET one issue; a re-read in the same run is conditional (If-None-Match), and GitHub's
        304 for an unchanged issue does not count against the primary rate limit. None when
        the answer is not the issue here (404/410 when allowed, or with `here_only` a redirect
        to another repository)."""
        cached = self._etags.get(number)
        headers = {"If-None-Match": cached[0]} if cached else None
        resp = self.client.request(
            "GET",
            f"{self.settings.repo_path}/issues/{number}",
            ok_statuses=(*ok_statuses, 304),
            headers=headers,
            expect=expect_json(dict),
        )
        if resp.status_code == 304 and cached:
            return cached[1]
        if resp.status_code != 200 or (here_only and resp.history):
            return None
        item = _json_object(resp)
        etag = resp.headers.get("ETag")
        if etag:
            self._etags[number] = (etag, item)
        return item

    def _write(
        self, method: str, path: str, payload: dict[str, Any], ok: int, *, idempotent: bool = True
    ) -> dict[str, Any]:
        # The lock makes writes serial across threads; the pacer spaces them from the previous
        # write's completion, its budget (also taken by retries) keeps the per-minute/-hour caps.
        with self.pacer.lock:
            self.pacer.wait_turn()
            try:
                resp = self.client.request(
                    method,
                    path,
                    json=payload,
                    ok_statuses=(ok,),
                    idempotent=idempotent,
                    extra_budget=self.pacer.budget,
                    # a garbled answer to a write: UncertainWriteError (it may have applied)
                    expect=expect_json(dict),
                )
            finally:
                self.pacer.completed()
        item = _json_object(resp)
        self._remember(item)
        return item

    def _ensure_writable(self) -> None:
        if not self._writable_checked:
            self._check(self.client)

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
