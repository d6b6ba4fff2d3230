"""Linear tracker: suggestions as issues, found again by their fingerprint-URL attachment."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tasks.clients.http import ClientRequestError, InvalidResponseError, RetryPolicy
from tasks.clients.linear import LinearGraphQL, linear_graphql
from tasks.trackers.base import (
    CLOSE_REASONS,
    TrackerIssue,
    effort_from_labels,
    fingerprint_url,
    lookup_order,
    positive_number,
)
from tasks.trackers.limits import NO_CAP_S, TimeBudget

log = logging.getLogger(__name__)

CLOSED_TYPES = ("completed", "canceled", "duplicate")
OPEN_TYPES = ("unstarted", "backlog")  # where a reopened issue goes, in this order
ISSUE_FIELDS = """
  id identifier url title description archivedAt updatedAt completedAt canceledAt estimate
  state { id name type }
  labels(first: 50) { nodes { id name } }
"""
FIND = f"""
query Find($url: String!) {{
  attachmentsForURL(url: $url) {{
    nodes {{ id url createdAt metadata issue {{ {ISSUE_FIELDS} }} }}
  }}
}}
"""
ISSUE = f"query Issue($id: String!) {{ issue(id: $id) {{ {ISSUE_FIELDS} }} }}"
TEAM = "query Team($key: String!) { teams(filter: {key: {eq: $key}}) { nodes { id key } } }"
LABELS = """
query Labels($names: [String!]) {
  issueLabels(first: 250, filter: {name: {in: $names}}) { nodes { id name team { id } } }
}
"""
LABEL_CREATE = """
mutation LabelCreate($input: IssueLabelCreateInput!) {
  issueLabelCreate(input: $input) { success issueLabel { id name } }
}
"""
ISSUE_CREATE = f"""
mutation IssueCreate($input: IssueCreateInput!) {{
  issueCreate(input: $input) {{ success issue {{ {ISSUE_FIELDS} }} }}
}}
"""
ISSUE_UPDATE = f"""
mutation IssueUpdate($id: String!, $input: IssueUpdateInput!) {{
  issueUpdate(id: $id, input: $input) {{ success issue {{ {ISSUE_FIELDS} }} }}
}}
"""
ATTACH = """
mutation Attach($input: AttachmentCreateInput!) {
  attachmentCreate(input: $input) { success attachment { id url } }
}
"""
COMMENT = """
mutation Comment($input: CommentCreateInput!) {
  commentCreate(input: $input) { success comment { id } }
}
"""
STATES = """
query States($id: String!) {
  issue(id: $id) {
    team { states(filter: {type: {in: ["completed", "canceled"]}}) {
      nodes { id name type position } } }
  }
}
"""
OPEN_STATES = """
query States($id: String!) {
  issue(id: $id) {
    team { states(filter: {type: {in: ["unstarted", "backlog"]}}) {
      nodes { id name type position } } }
  }
}
"""


class LinearTrackerSettings(BaseModel):
    """Where suggestions go in Linear, and how to find them again."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = "https://api.linear.app"
    team_key: str = Field(..., description="Team new issues are created in, e.g. 'ENG'.")
    label: str = Field("feedback-loop", description="Label on every issue we write.")
    api_key_env: str = "LINEAR_API_KEY"
    api_key_block: str | None = None
    suggestion_url_base: str = Field(
        "https://feedback-loop.local/suggestion/",
        description="Fingerprint URL = base + fingerprint; the attachment URL find() looks up.",
    )
    completed_state: str | None = Field(None, description="State name for 'completed' closes.")
    not_planned_state: str | None = Field(None, description="State name for 'not_planned'.")
    reopened_state: str | None = Field(
        None, description="State name a returning problem is reopened into (else first Todo)."
    )
    max_rate_limit_waits: int = Field(5, ge=1)


class LinearWorkflowError(RuntimeError):
    """The team's workflow has no state to close an issue into."""


def _sha(text: str | None) -> str:
    return hashlib.sha256((text or "").encode()).hexdigest()


class LinearTracker:
    name = "linear"

    def __init__(
        self,
        settings: LinearTrackerSettings,
        *,
        gql: LinearGraphQL | None = None,
        sleep: Callable[[float], None] = time.sleep,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
        time_budget: TimeBudget | None = None,
    ):
        self.settings = settings
        # Every wait (429 Retry-After, the x-ratelimit-*-reset of a RATELIMITED answer, backoff)
        # must fit the write-back time budget, else BudgetExhausted stops write-back politely.
        self.budget = time_budget or TimeBudget(sleep=sleep, source="linear")
        if gql is None:
            gql = linear_graphql(
                settings.base_url,
                api_key_env=settings.api_key_env,
                api_key_block=settings.api_key_block,
                max_waits=settings.max_rate_limit_waits,
                sleep=self.budget.sleep,
                retry=retry or RetryPolicy(max_delay_s=NO_CAP_S),
                clock=clock,
            )
            gql.max_delay_s = NO_CAP_S  # a reset an hour away is waited (or stops), not cut
        self.gql = gql
        self._team_id: str | None = None
        self._label_ids: dict[str, str] = {}

    def _url(self, fingerprint: str) -> str:
        return fingerprint_url(self.settings.suggestion_url_base, fingerprint)

    def _issue_id(self, fingerprint: str) -> str:
        """A deterministic id (UUID v4 layout) per team and fingerprint: a retried issueCreate
        after a lost answer collides with the first instead of making a second issue."""
        digest = hashlib.sha256(f"feedback-loop:{self.settings.team_key}:{fingerprint}".encode())
        return str(uuid.UUID(bytes=digest.digest()[:16], version=4))

    # --- find ---------------------------------------------------------------------------

    def find(self, fingerprint: str) -> TrackerIssue | None:
        """By the fingerprint URL, then (canonical) by the legacy URLs of the same problem."""
        for fp in lookup_order(fingerprint):
            found = self._find_one(fp)
            if found is not None:
                return found
        return None

    def _find_one(self, fingerprint: str) -> TrackerIssue | None:
        data, _ = self.gql.execute(FIND, {"url": self._url(fingerprint)})
        conn = data.get("attachmentsForURL")
        if not isinstance(conn, dict) or not isinstance(conn.get("nodes"), list):
            raise InvalidResponseError("linear", "attachmentsForURL answer has no nodes")
        hits = [
            n for n in conn["nodes"] if isinstance(n, dict) and isinstance(n.get("issue"), dict)
        ]
        if not hits:
            return None
        hits.sort(key=lambda n: str(n.get("createdAt") or ""))
        if len(hits) > 1:
            refs = ", ".join(str(n["issue"].get("identifier")) for n in hits)
            log.warning(
                "linear: fingerprint %s is attached to %s; using the oldest", fingerprint, refs
            )
        meta = hits[0].get("metadata") if isinstance(hits[0].get("metadata"), dict) else {}
        return self._to_issue(hits[0]["issue"], meta, fingerprint)

    def _to_issue(
        self, issue: dict[str, Any], meta: dict[str, Any], fingerprint: str | None = None
    ) -> TrackerIssue:
        description = issue.get("description") or ""
        stored = meta.get("body_md")
        # Linear re-serialises Markdown; while the description is what it was right after our
        # write, report the Markdown we sent, so an unchanged suggestion hashes equal.
        body = (
            stored
            if isinstance(stored, str) and meta.get("description_sha256") == _sha(description)
            else description
        )
        state = issue.get("state") or {}
        state_type = str(state.get("type") or "").lower()
        closed = state_type in CLOSED_TYPES
        reason = None
        if closed:
            if state_type == "duplicate" or str(state.get("name", "")).lower() == "duplicate":
                reason = "duplicate"
            else:
                reason = "completed" if state_type == "completed" else "not_planned"
        labels = tuple(
            str(n.get("name")) for n in (issue.get("labels") or {}).get("nodes") or [] if n
        )
        effort, source = effort_from_labels(labels), "label"
        if effort is None:
            effort, source = positive_number(issue.get("estimate")), "linear_estimate"
        closed_at = issue.get("completedAt") or issue.get("canceledAt") if closed else None
        return TrackerIssue(
            ref=str(issue["id"]),
            url=str(issue.get("url") or ""),
            state="closed" if closed else "open",
            state_reason=reason,
            body=body,
            title=str(issue.get("title") or ""),
            labels=labels,
            fingerprint=fingerprint,
            updated_at=_time(issue.get("updatedAt")),
            closed_at=_time(closed_at),
            effort=effort,
            effort_source=source if effort is not None else None,
        )

    # --- helpers ----------------------------------------------------------------------------

    def team_id(self) -> str:
        if self._team_id is None:
            data, _ = self.gql.execute(TEAM, {"key": self.settings.team_key})
            nodes = (data.get("teams") or {}).get("nodes") or []
            if not nodes:
                raise ClientRequestError(
                    "linear",
                    f"no team with key {self.settings.team_key!r}",
                    hint="check writeback linear team_key",
                )
            self._team_id = str(nodes[0]["id"])
        return self._team_id

    def label_ids(self, names: list[str]) -> list[str]:
        """Ids of workspace or team labels by name; missing ones are created on the team."""
        wanted = list(dict.fromkeys(n for n in [self.settings.label, *names] if n))
        missing = [n for n in wanted if n.lower() not in self._label_ids]
        if missing:
            team = self.team_id()
            data, _ = self.gql.execute(LABELS, {"names": missing})
            for node in (data.get("issueLabels") or {}).get("nodes") or []:
                owner = (node.get("team") or {}).get("id")
                if owner in (None, team):
                    self._label_ids.setdefault(str(node["name"]).lower(), str(node["id"]))
            for name in missing:
                if name.lower() in self._label_ids:
                    continue
                made, _ = self.gql.execute(
                    LABEL_CREATE, {"input": {"name": name, "teamId": team}}, idempotent=False
                )
                label = (made.get("issueLabelCreate") or {}).get("issueLabel") or {}
                if not label.get("id"):
                    raise InvalidResponseError("linear", f"label {name!r} was not created")
                self._label_ids[name.lower()] = str(label["id"])
        return [self._label_ids[n.lower()] for n in wanted]

    def _attach(self, issue: dict[str, Any], fingerprint: str, title: str, body: str) -> None:
        """Same URL on the same issue updates the attachment in place (idempotent)."""
        meta = {
            "fingerprint": fingerprint,
            "body_md": body,
            "description_sha256": _sha(issue.get("description")),
        }
        data, _ = self.gql.execute(
            ATTACH,
            {
                "input": {
                    "issueId": issue["id"],
                    "url": self._url(fingerprint),
                    "title": "feedback-loop suggestion",
                    "subtitle": title[:200],
                    "metadata": meta,
                }
            },
        )
        if not (data.get("attachmentCreate") or {}).get("success"):
            raise InvalidResponseError("linear", "attachmentCreate did not succeed")

    @staticmethod
    def _payload_issue(data: dict[str, Any], field: str) -> dict[str, Any]:
        result = data.get(field) or {}
        issue = result.get("issue")
        if not result.get("success") or not isinstance(issue, dict) or not issue.get("id"):
            raise InvalidResponseError("linear", f"{field} did not succeed")
        return issue

    # --- write ----------------------------------------------------------------------------

    def create(self, fingerprint: str, title: str, body: str, labels: list[str]) -> TrackerIssue:
        existing = self.find(fingerprint)
        if existing is not None:
            log.info(
                "linear: %s already exists as %s; not creating again", fingerprint, existing.url
            )
            if existing.state == "closed":
                return existing
            return self.update(existing, fingerprint, title, body, labels)
        issue_id = self._issue_id(fingerprint)
        label_ids = self.label_ids(labels)
        try:
            data, _ = self.gql.execute(
                ISSUE_CREATE,
                {
                    "input": {
                        "id": issue_id,
                        "teamId": self.team_id(),
                        "title": title,
                        "description": body,
                        "labelIds": label_ids,
                    }
                },
            )
            issue = self._payload_issue(data, "issueCreate")
        except ClientRequestError:
            # The id is taken: an earlier create landed but its answer (or the attachment) was
            # lost. Adopt that issue instead of failing or duplicating.
            data, _ = self.gql.execute(ISSUE, {"id": issue_id})
            issue = data.get("issue")
            if not isinstance(issue, dict):
                raise
            log.info("linear: adopting %s created by an earlier attempt", issue.get("identifier"))
        self._attach(issue, fingerprint, title, body)
        meta = {"body_md": body, "description_sha256": _sha(issue.get("description"))}
        return self._to_issue(issue, meta, fingerprint)

    def update(
        self, issue: TrackerIssue, fingerprint: str, title: str, body: str, labels: list[str]
    ) -> TrackerIssue:
        """One issueUpdate with only what changed; labels are added, never replaced."""
        wanted = self.label_ids(labels)
        have = {self._label_ids.get(n.lower()) for n in issue.labels}
        patch: dict[str, Any] = {}
        if title != issue.title:
            patch["title"] = title
        if body != issue.body:
            patch["description"] = body
        added = [i for i in wanted if i not in have]
        if added:
            patch["addedLabelIds"] = added
        # Found by a legacy URL (fix:x for health:x): attach the canonical one as well.
        moved = issue.fingerprint is not None and issue.fingerprint != fingerprint
        if not patch and not moved:
            return issue
        if patch:
            data, _ = self.gql.execute(ISSUE_UPDATE, {"id": issue.ref, "input": patch})
            updated = self._payload_issue(data, "issueUpdate")
        else:
            data, _ = self.gql.execute(ISSUE, {"id": issue.ref})
            updated = data.get("issue")
            if not isinstance(updated, dict):
                raise InvalidResponseError("linear", f"issue {issue.ref} could not be read")
        if "description" in patch or moved:
            self._attach(updated, fingerprint, title, body)
        meta = {"body_md": body, "description_sha256": _sha(updated.get("description"))}
        return self._to_issue(updated, meta, fingerprint)

    def comment(self, issue: TrackerIssue, body: str) -> None:
        data, _ = self.gql.execute(
            COMMENT, {"input": {"issueId": issue.ref, "body": body}}, idempotent=False
        )
        if not (data.get("commentCreate") or {}).get("success"):
            raise InvalidResponseError("linear", "commentCreate did not succeed")

    def close(self, issue: TrackerIssue, reason: str) -> TrackerIssue:
        """Move the issue into its team's completed (or, for not_planned, canceled) state."""
        if reason not in CLOSE_REASONS:
            raise ValueError(f"close reason must be one of {CLOSE_REASONS}, not {reason!r}")
        states = self._states(STATES, issue)
        if not states:
            raise LinearWorkflowError(f"linear: {issue.url}: its team has no closed state")
        want_type = "completed" if reason == "completed" else "canceled"
        want_name = {
            "completed": self.settings.completed_state,
            "not_planned": self.settings.not_planned_state,
            "duplicate": "duplicate",
        }[reason]

        def rank(s: dict[str, Any]) -> tuple[int, int, int, float]:
            name = str(s.get("name") or "").lower()
            return (
                0 if want_name and name == want_name.lower() else 1,
                0 if s.get("type") == want_type else 1,
                # "Duplicate" is canceled too, but only the state for a duplicate
                1 if (name == "duplicate") != (reason == "duplicate") else 0,
                float(s.get("position") or 0),
            )

        target = min(states, key=rank)
        if target.get("type") != want_type:
            log.warning("linear: no %s state on the team; using %s", want_type, target.get("name"))
        data, _ = self.gql.execute(
            ISSUE_UPDATE, {"id": issue.ref, "input": {"stateId": target["id"]}}
        )
        updated = self._payload_issue(data, "issueUpdate")
        closed = self._to_issue(updated, {}, issue.fingerprint)
        return dataclasses.replace(closed, body=issue.body)

    def reopen(self, issue: TrackerIssue) -> TrackerIssue:
        """Move the issue into its team's first unstarted (else backlog) state."""
        states = self._states(OPEN_STATES, issue)
        if not states:
            raise LinearWorkflowError(f"linear: {issue.url}: its team has no unstarted state")
        want = (self.settings.reopened_state or "").lower()

        def rank(s: dict[str, Any]) -> tuple[int, int, float]:
            kind = str(s.get("type") or "")
            return (
                0 if want and str(s.get("name") or "").lower() == want else 1,
                OPEN_TYPES.index(kind) if kind in OPEN_TYPES else len(OPEN_TYPES),
                float(s.get("position") or 0),
            )

        target = min(states, key=rank)
        data, _ = self.gql.execute(
            ISSUE_UPDATE, {"id": issue.ref, "input": {"stateId": target["id"]}}
        )
        reopened = self._to_issue(self._payload_issue(data, "issueUpdate"), {}, issue.fingerprint)
        return dataclasses.replace(reopened, body=issue.body)

    def _states(self, query: str, issue: TrackerIssue) -> list[dict[str, Any]]:
        data, _ = self.gql.execute(query, {"id": issue.ref})
        nodes = (((data.get("issue") or {}).get("team") or {}).get("states") or {}).get("nodes")
        return [s for s in nodes or [] if isinstance(s, dict)]


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
