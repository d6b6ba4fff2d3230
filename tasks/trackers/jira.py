"""Jira Cloud tracker: suggestions as issues with an ADF description, label and remote link."""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tasks.clients.http import (
    HttpClient,
    InvalidResponseError,
    NotFoundError,
    RetryPolicy,
    UncertainWriteError,
)
from tasks.clients.jira import jira_http, jql_quote
from tasks.trackers.adf import adf_text, find_marker, markdown_to_adf
from tasks.trackers.base import (
    CLOSE_REASONS,
    TrackerIssue,
    effort_from_labels,
    fingerprint_url,
    lookup_order,
    marker_for,
    positive_number,
)
from tasks.trackers.limits import NO_CAP_S, TimeBudget

log = logging.getLogger(__name__)

ISSUE_FIELDS = "summary,status,resolution,labels,description,updated,timeoriginalestimate"
# Jira caps an issue property value at 32 KB; the body is stored only when it fits.
MAX_PROPERTY_BODY = 30_000
NOT_PLANNED_RESOLUTIONS = ("won't do", "won't fix", "declined", "rejected", "obsolete")
COMPLETED_RESOLUTIONS = ("done", "fixed", "resolved", "complete", "completed")
DUPLICATE_RESOLUTIONS = ("duplicate",)
NOT_PLANNED_STATUS = re.compile(r"won.?t|not planned|declin|reject|cancel|obsolete", re.I)
REOPEN_NAMES = re.compile(r"reopen|to do|todo|backlog|triage|open", re.I)


class JiraTrackerSettings(BaseModel):
    """Where suggestions go in Jira Cloud, and how to find them again."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(..., description="Site URL, e.g. https://acme.atlassian.net")
    project: str = Field(..., description="Project key new issues are created in.")
    issue_type: str = Field("Task", description="Issue type name for new issues.")
    label: str = Field("feedback-loop", description="Label on every issue we write (JQL find).")
    email_env: str = "JIRA_EMAIL"
    token_env: str = "JIRA_API_TOKEN"
    email_block: str | None = None
    token_block: str | None = None
    property_key: str = Field(
        "feedback-loop", description="Issue property holding the fingerprint and Markdown body."
    )
    suggestion_url_base: str = Field(
        "https://feedback-loop.local/suggestion/",
        description="Fingerprint URL = base + fingerprint; the remote link globalId.",
    )
    story_points_field: str | None = Field(
        "customfield_10016",
        description="Custom field holding story points (the effort write-back records); "
        "None to use only labels and the original estimate.",
    )


class JiraWorkflowError(RuntimeError):
    """The issue's workflow offers no way to do what was asked (e.g. no transition to done)."""


def _jira_label(label: str) -> str:
    return re.sub(r"\s+", "-", label.strip())  # Jira labels cannot hold spaces


class JiraTracker:
    name = "jira"

    def __init__(
        self,
        settings: JiraTrackerSettings,
        *,
        http: HttpClient | None = None,
        sleep: Callable[[float], None] = time.sleep,
        retry: RetryPolicy | None = None,
        time_budget: TimeBudget | None = None,
    ):
        self.settings = settings
        self.base_url = settings.base_url.rstrip("/")
        # Every wait (429 Retry-After, backoff) must fit the write-back time budget, else
        # BudgetExhausted stops write-back politely; Retry-After is never cut short by a cap.
        self.budget = time_budget or TimeBudget(sleep=sleep, source="jira")
        self.http = http or jira_http(
            "jira",
            settings.base_url,
            email_env=settings.email_env,
            token_env=settings.token_env,
            email_block=settings.email_block,
            token_block=settings.token_block,
            sleep=self.budget.sleep,
            retry=retry or RetryPolicy(max_delay_s=NO_CAP_S),
        )
        # fingerprint -> issue id. Filled by one labelled-issue scan and by our own creates,
        # because JQL search is eventually consistent and lags a fresh create.
        self._index: dict[str, str] | None = None
        self._created: dict[str, str] = {}

    # --- find ---------------------------------------------------------------------------

    def find(self, fingerprint: str) -> TrackerIssue | None:
        """By fingerprint, then (canonical) by the legacy fingerprints of the same problem."""
        for fp in lookup_order(fingerprint):
            issue_id = self._created.get(fp) or self._scan().get(fp)
            if issue_id is None:
                continue
            try:
                doc = self.http.get_json(
                    f"/rest/api/3/issue/{issue_id}",
                    params={"fields": self._fields(), "properties": self.settings.property_key},
                )
            except NotFoundError:  # deleted since the scan
                self._created.pop(fp, None)
                if self._index is not None:
                    self._index.pop(fp, None)
                continue
            # Migrated to `fingerprint` since the scan still counts; anything else does not.
            if self._fingerprint_of(doc) in (fp, fingerprint):
                return self._to_issue(doc)
        return None

    def _fields(self) -> str:
        extra = self.settings.story_points_field
        return f"{ISSUE_FIELDS},{extra}" if extra else ISSUE_FIELDS

    def _scan(self) -> dict[str, str]:
        """Every issue carrying our label, by fingerprint (oldest wins; duplicates logged)."""
        if self._index is not None:
            return self._index
        index: dict[str, str] = {}
        token: str | None = None
        seen_tokens: set[str] = set()
        while True:
            body: dict[str, Any] = {
                "jql": f"labels = {jql_quote(self.settings.label)} ORDER BY created ASC",
                "fields": ["description", "created"],
                "properties": [self.settings.property_key],
                "maxResults": 100,
            }
            if token:
                body["nextPageToken"] = token
            page = self.http.post_json("/rest/api/3/search/jql", body, read=True)
            if not isinstance(page, dict) or not isinstance(page.get("issues"), list):
                raise InvalidResponseError("jira", "search page has no 'issues' list")
            for doc in page["issues"]:
                fp = self._fingerprint_of(doc)
                if fp is None:
                    continue
                if fp in index:
                    log.warning(
                        "jira: fingerprint %s is on issues %s and %s; using the older one",
                        fp,
                        index[fp],
                        doc.get("id"),
                    )
                    continue
                index[fp] = str(doc["id"])
            token = page.get("nextPageToken")
            if not token or page.get("isLast") is True or token in seen_tokens:
                break
            seen_tokens.add(token)
        self._index = index
        return index

    def _fingerprint_of(self, doc: dict[str, Any]) -> str | None:
        prop = (doc.get("properties") or {}).get(self.settings.property_key)
        if isinstance(prop, dict) and isinstance(prop.get("fingerprint"), str):
            return prop["fingerprint"]
        return find_marker((doc.get("fields") or {}).get("description"))

    def _to_issue(self, doc: dict[str, Any]) -> TrackerIssue:
        fields = doc.get("fields") or {}
        prop = (doc.get("properties") or {}).get(self.settings.property_key) or {}
        visible = adf_text(fields.get("description"))
        stored = prop.get("body_md") if isinstance(prop, dict) else None
        # Report the Markdown we wrote while the description still reads the same, so an
        # unchanged suggestion hashes equal; a person's edit makes it differ (and it updates).
        if isinstance(stored, str) and adf_text(self._adf(stored, prop.get("fingerprint"))) == (
            visible
        ):
            body = stored
        else:
            body = visible
        category = ((fields.get("status") or {}).get("statusCategory") or {}).get("key")
        state = "closed" if category == "done" else "open"
        labels = tuple(fields.get("labels") or ())
        effort, source = self._effort(fields, labels)
        return TrackerIssue(
            ref=str(doc["id"]),
            url=f"{self.base_url}/browse/{doc.get('key')}",
            state=state,
            state_reason=_state_reason(fields.get("resolution")) if state == "closed" else None,
            body=body,
            title=fields.get("summary") or "",
            labels=labels,
            fingerprint=self._fingerprint_of(doc),
            updated_at=_jira_time(fields.get("updated")),
            effort=effort,
            effort_source=source,
        )

    def _effort(
        self, fields: dict[str, Any], labels: tuple[str, ...]
    ) -> tuple[float | None, str | None]:
        """An effort:N label, else story points, else the original estimate in hours."""
        if (n := effort_from_labels(labels)) is not None:
            return n, "label"
        sp = self.settings.story_points_field
        if sp and (n := positive_number(fields.get(sp))) is not None:
            return n, "story_points"
        if (n := positive_number(fields.get("timeoriginalestimate"))) is not None:
            return n / 3600.0, "original_estimate_hours"
        return None, None

    # --- write ----------------------------------------------------------------------------

    def _adf(self, body: str, fingerprint: str | None) -> dict[str, Any]:
        if fingerprint and marker_for(fingerprint) not in body:
            body = f"{body.rstrip()}\n\n{marker_for(fingerprint)}"
        return markdown_to_adf(body)

    def _property(self, fingerprint: str, body: str) -> list[dict[str, Any]]:
        value: dict[str, Any] = {"fingerprint": fingerprint}
        if len(body.encode()) <= MAX_PROPERTY_BODY:
            value["body_md"] = body
        else:
            log.warning("jira: body of %s is too large to keep as an issue property", fingerprint)
        return [{"key": self.settings.property_key, "value": value}]

    def _labels(self, labels: list[str]) -> list[str]:
        return list(dict.fromkeys(_jira_label(x) for x in [self.settings.label, *labels] if x))

    def create(self, fingerprint: str, title: str, body: str, labels: list[str]) -> TrackerIssue:
        # A retried create (task retry, crash before the ledger write) finds the first one.
        existing = self.find(fingerprint)
        if existing is not None:
            log.info("jira: %s already exists as %s; not creating again", fingerprint, existing.ref)
            if existing.state == "closed":
                return existing
            return self.update(existing, fingerprint, title, body, labels)
        payload = {
            "fields": {
                "project": {"key": self.settings.project},
                "issuetype": {"name": self.settings.issue_type},
                "summary": title,
                "description": self._adf(body, fingerprint),
                "labels": self._labels(labels),
            },
            "properties": self._property(fingerprint, body),
        }
        try:
            created = self.http.post_json(
                "/rest/api/3/issue", payload, ok_statuses=(200, 201), idempotent=False
            )
        except UncertainWriteError:
            # The create may have landed: look before anything else. Search lags, so when it
            # is not visible yet this fails and the pending ledger row heals it next run.
            self._index = None
            landed = self.find(fingerprint)
            if landed is None:
                raise
            log.warning(
                "jira: create of %s landed as %s despite the error", fingerprint, landed.ref
            )
            self._link(landed.ref, fingerprint, title)
            return landed
        if not isinstance(created, dict) or not created.get("id"):
            raise InvalidResponseError("jira", "create issue answered without an id")
        issue_id, key = str(created["id"]), created.get("key")
        self._created[fingerprint] = issue_id
        self._link(issue_id, fingerprint, title)
        return TrackerIssue(
            ref=issue_id,
            url=f"{self.base_url}/browse/{key}",
            state="open",
            state_reason=None,
            body=body,
            title=title,
            labels=tuple(self._labels(labels)),
        )

    def _link(self, issue_id: str, fingerprint: str, title: str) -> None:
        """Remote link with globalId = fingerprint URL: Jira upserts it in place on repeat."""
        url = fingerprint_url(self.settings.suggestion_url_base, fingerprint)
        self.http.request(
            "POST",
            f"/rest/api/3/issue/{issue_id}/remotelink",
            json={
                "globalId": url,
                "application": {"type": "feedback-loop", "name": "feedback-loop"},
                "relationship": "suggested by",
                "object": {"url": url, "title": f"feedback-loop: {title}"[:255]},
            },
            ok_statuses=(200, 201),
        )

    def update(
        self, issue: TrackerIssue, fingerprint: str, title: str, body: str, labels: list[str]
    ) -> TrackerIssue:
        """One PUT with only what changed; labels are added, never replaced (people's stay)."""
        payload: dict[str, Any] = {}
        fields: dict[str, Any] = {}
        if title != issue.title:
            fields["summary"] = title
        # A legacy fingerprint (fix:x for health:x) is rewritten even when the text is the same.
        moved = issue.fingerprint is not None and issue.fingerprint != fingerprint
        if moved or body != issue.body:
            fields["description"] = self._adf(body, fingerprint)
            payload["properties"] = self._property(fingerprint, body)
        missing = [x for x in self._labels(labels) if x not in issue.labels]
        if fields:
            payload["fields"] = fields
        if missing:
            payload["update"] = {"labels": [{"add": x} for x in missing]}
        if not payload:
            return issue
        self.http.request("PUT", f"/rest/api/3/issue/{issue.ref}", json=payload, ok_statuses=(204,))
        if moved:
            self._created[fingerprint] = issue.ref
            if self._index is not None and self._index.get(issue.fingerprint or "") == issue.ref:
                self._index.pop(issue.fingerprint or "")
            self._link(issue.ref, fingerprint, title)
        return dataclasses.replace(
            issue,
            title=title,
            body=body,
            labels=tuple(dict.fromkeys([*issue.labels, *missing])),
            fingerprint=fingerprint,
        )

    def comment(self, issue: TrackerIssue, body: str) -> None:
        self.http.request(
            "POST",
            f"/rest/api/3/issue/{issue.ref}/comment",
            json={"body": markdown_to_adf(body)},
            ok_statuses=(200, 201),
            idempotent=False,
        )

    def close(self, issue: TrackerIssue, reason: str) -> TrackerIssue:
        """Take the transition into a 'done' status category (names differ per workflow)."""
        if reason not in CLOSE_REASONS:
            raise ValueError(f"close reason must be one of {CLOSE_REASONS}, not {reason!r}")
        transitions = self._transitions(issue)
        done = [
            t
            for t in transitions
            if ((t.get("to") or {}).get("statusCategory") or {}).get("key") == "done"
        ]
        if not done:
            names = ", ".join(str(t.get("name")) for t in transitions) or "none"
            raise JiraWorkflowError(
                f"jira: {issue.url} has no transition into a done status (available: {names})"
            )
        transition, resolution = _pick_transition(done, reason)
        payload: dict[str, Any] = {"transition": {"id": str(transition["id"])}}
        if resolution is not None:
            payload["fields"] = {"resolution": resolution}
        self.http.request(
            "POST",
            f"/rest/api/3/issue/{issue.ref}/transitions",
            json=payload,
            ok_statuses=(204,),
            idempotent=False,  # a repeated transition may not exist from the new status
        )
        got = _state_reason(resolution) if resolution else reason
        return dataclasses.replace(issue, state="closed", state_reason=got)

    def reopen(self, issue: TrackerIssue) -> TrackerIssue:
        """Take a transition out of the done category, preferring one back to 'To Do'."""
        transitions = self._transitions(issue)
        back = [
            t
            for t in transitions
            if ((t.get("to") or {}).get("statusCategory") or {}).get("key") not in ("done", None)
        ]
        if not back:
            names = ", ".join(str(t.get("name")) for t in transitions) or "none"
            raise JiraWorkflowError(
                f"jira: {issue.url} has no transition out of its done status (available: {names})"
            )

        def score(t: dict[str, Any]) -> int:
            to = t.get("to") or {}
            named = f"{t.get('name', '')} {to.get('name', '')}"
            return 2 * (to.get("statusCategory", {}).get("key") == "new") + bool(
                REOPEN_NAMES.search(named)
            )

        transition = max(back, key=score)  # first of equals: the workflow's own order
        self.http.request(
            "POST",
            f"/rest/api/3/issue/{issue.ref}/transitions",
            json={"transition": {"id": str(transition["id"])}},
            ok_statuses=(204,),
            idempotent=False,
        )
        return dataclasses.replace(issue, state="open", state_reason=None, closed_at=None)

    def _transitions(self, issue: TrackerIssue) -> list[dict[str, Any]]:
        doc = self.http.get_json(
            f"/rest/api/3/issue/{issue.ref}/transitions",
            params={"expand": "transitions.fields"},
        )
        transitions = doc.get("transitions") if isinstance(doc, dict) else None
        if not isinstance(transitions, list):
            raise InvalidResponseError("jira", "transitions answer has no 'transitions' list")
        return transitions


def _jira_time(value: Any) -> datetime | None:
    """Jira's `2026-11-25T13:00:00.000+0100`."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _state_reason(resolution: Any) -> str:
    name = str((resolution or {}).get("name") or "").strip().lower()
    if name in NOT_PLANNED_RESOLUTIONS or name in ("cannot reproduce", "incomplete"):
        return "not_planned"
    if name == "duplicate":
        return "duplicate"
    return "completed"


def _resolution_values(transition: dict[str, Any]) -> tuple[list[dict[str, Any]], bool] | None:
    field = (transition.get("fields") or {}).get("resolution")
    if not isinstance(field, dict):
        return None  # not on the transition screen: Jira would reject a resolution
    return list(field.get("allowedValues") or []), bool(field.get("required"))


def _pick_transition(
    done: list[dict[str, Any]], reason: str
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The transition and resolution ({'name': ...} or None) that best say `reason`."""
    wanted = {
        "not_planned": NOT_PLANNED_RESOLUTIONS,
        "duplicate": DUPLICATE_RESOLUTIONS + NOT_PLANNED_RESOLUTIONS,
    }.get(reason, COMPLETED_RESOLUTIONS)

    def resolution_for(t: dict[str, Any]) -> dict[str, Any] | None:
        values = _resolution_values(t)
        if values is None:
            return None
        allowed, required = values
        by_name = {str(v.get("name", "")).lower(): v for v in allowed}
        for name in wanted:
            if name in by_name:
                return {"name": by_name[name]["name"]}
        if required and allowed:
            return {"name": allowed[0]["name"]}
        return None

    def score(t: dict[str, Any]) -> int:
        status_name = f"{t.get('name', '')} {(t.get('to') or {}).get('name', '')}"
        says_not_planned = bool(NOT_PLANNED_STATUS.search(status_name))
        res = resolution_for(t)
        res_ok = res is not None and res["name"].lower() in wanted
        if reason in ("not_planned", "duplicate"):
            return 2 * res_ok + says_not_planned
        return 2 * res_ok + (not says_not_planned)

    best = max(done, key=score)  # max keeps the first of equals: the workflow's own order
    return best, resolution_for(best)
