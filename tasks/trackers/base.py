"""The tracker interface every write-back target implements, the fingerprint marker, and the
identity of a problem: one fingerprint per feature problem, not per suggestion kind."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from urllib.parse import quote

MARKER_PREFIX = "feedback-loop:fingerprint="
# Closed by a person for these reasons: never reopen, rewrite or recreate.
RESPECTED_CLOSE_REASONS = frozenset({"not_planned", "duplicate", "wontfix", "won't do"})
CLOSE_REASONS = ("completed", "not_planned", "duplicate")

# Suggestion kind -> the feature problem it is about. An `investigate` (a support spike) that
# becomes a `fix` (a bug cluster) is the same health problem, so the same issue, retitled.
PROBLEM_OF_KIND = {"fix": "health", "investigate": "health", "improve": "adoption"}
PROBLEMS = frozenset(PROBLEM_OF_KIND.values())
_EFFORT_LABEL = re.compile(r"effort\s*[:=]\s*(\d+(?:\.\d+)?)", re.I)


def fingerprint_url(base: str, fingerprint: str) -> str:
    """The web link a tracker without a hidden-marker field stores for a suggestion (Jira's
    remote link, Linear's attachment): `base` + the quoted fingerprint."""
    return base.rstrip("/") + "/" + quote(fingerprint, safe=":-_.~")


def marker_for(fingerprint: str) -> str:
    return f"<!-- {MARKER_PREFIX}{fingerprint} -->"


def problem_fingerprint(kind: str, feature_key: str) -> str:
    """`health:<feature>` for fix/investigate, `adoption:<feature>` for improve."""
    try:
        return f"{PROBLEM_OF_KIND[kind]}:{feature_key}"
    except KeyError:
        raise ValueError(f"unknown suggestion kind {kind!r}") from None


def canonical_fingerprint(fingerprint: str) -> str:
    """A legacy per-kind fingerprint (`fix:x`, `investigate:x`, `improve:x`) as the problem's
    (`health:x`, `adoption:x`); a canonical (or unknown) one is returned unchanged."""
    prefix, sep, feature = fingerprint.partition(":")
    if sep and prefix in PROBLEM_OF_KIND:
        return f"{PROBLEM_OF_KIND[prefix]}:{feature}"
    return fingerprint


def legacy_fingerprints(canonical: str) -> list[str]:
    """The per-kind fingerprints earlier versions wrote for this problem (most specific first)."""
    prefix, sep, feature = canonical.partition(":")
    if not sep or prefix not in PROBLEMS:
        return []
    return [f"{kind}:{feature}" for kind, problem in PROBLEM_OF_KIND.items() if problem == prefix]


def legacy_kind(fingerprint: str) -> str | None:
    """The kind a legacy fingerprint names (`fix:x` -> `fix`); None for a canonical one."""
    prefix, sep, _ = fingerprint.partition(":")
    return prefix if sep and prefix in PROBLEM_OF_KIND else None


def lookup_order(fingerprint: str) -> list[str]:
    """What find() looks for, in order: the fingerprint itself, then its legacy forms."""
    return [fingerprint, *legacy_fingerprints(fingerprint)]


def effort_from_labels(labels: Iterable[str]) -> float | None:
    """`effort:N` (N a positive number) on an issue, in any tracker; the first one wins."""
    for label in labels:
        m = _EFFORT_LABEL.fullmatch(str(label).strip())
        if m and float(m[1]) > 0:
            return float(m[1])
    return None


def positive_number(value: object) -> float | None:
    """A tracker's estimate field as a positive float, or None (unset, zero, not a number)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


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
    # The fingerprint the issue's marker carries (may be a legacy one), when the tracker says.
    fingerprint: str | None = None
    updated_at: datetime | None = None
    # When it was closed, if the tracker tells (GitHub, Linear): a close later than the one
    # feedback-loop recorded was made by a person.
    closed_at: datetime | None = None
    # What the team estimated: an `effort:N` label, Markdown `effort:`, Jira story points or
    # original estimate (hours), Linear estimate. effort_source says which.
    effort: float | None = None
    effort_source: str | None = None


class Tracker(Protocol):
    """Optional beyond these: `use_ledger(rows)` — plan_writeback hands a tracker that has it the
    ledger rows at the start of each run, so it can look known issues up by their ref (GitHub)."""

    name: str

    def find(self, fingerprint: str) -> TrackerIssue | None:
        """The issue carrying this fingerprint's marker, else (for a canonical fingerprint) one
        carrying a legacy marker of the same problem; None if there is none."""
        ...

    def create(
        self, fingerprint: str, title: str, body: str, labels: list[str]
    ) -> TrackerIssue: ...

    def update(
        self, issue: TrackerIssue, fingerprint: str, title: str, body: str, labels: list[str]
    ) -> TrackerIssue:
        """Rewrite title/body; the marker becomes `fingerprint`'s (migrating a legacy one)."""
        ...

    def comment(self, issue: TrackerIssue, body: str) -> None: ...

    def close(self, issue: TrackerIssue, reason: str) -> TrackerIssue:
        """reason: 'completed' | 'not_planned' | 'duplicate'."""
        ...

    def reopen(self, issue: TrackerIssue) -> TrackerIssue:
        """Back to an open state (only ever for an issue feedback-loop itself closed)."""
        ...
