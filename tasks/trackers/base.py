"""The tracker interface every write-back target implements, and the fingerprint marker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

MARKER_PREFIX = "feedback-loop:fingerprint="
# Closed by a person for these reasons: never reopen, rewrite or recreate.
RESPECTED_CLOSE_REASONS = frozenset({"not_planned", "duplicate", "wontfix", "won't do"})


def marker_for(fingerprint: str) -> str:
    return f"<!-- {MARKER_PREFIX}{fingerprint} -->"


@dataclass(frozen=True)
class TrackerIssue:
    ref: str
    url: str
    state: str  # open | closed
    state_reason: str | None
    body: str
    title: str
    locked: bool = False
    labels: tuple[str, ...] = ()


class Tracker(Protocol):
    name: str

    def find(self, fingerprint: str) -> TrackerIssue | None: ...

    def create(
        self, fingerprint: str, title: str, body: str, labels: list[str]
    ) -> TrackerIssue: ...

    def update(
        self, issue: TrackerIssue, fingerprint: str, title: str, body: str, labels: list[str]
    ) -> TrackerIssue: ...

    def comment(self, issue: TrackerIssue, body: str) -> None: ...

    def close(self, issue: TrackerIssue, reason: str) -> TrackerIssue:
        """reason: 'completed' | 'not_planned'."""
        ...
