"""Score a replay against its world's truth: pure functions over the night table.

A night table is a list of nights, each {"night": 1.., "as_of": "YYYY-MM-DD", "suggestions":
[{"feature_key", "kind", "fingerprint", "priority_rank"}, ...], "tracker": [{"file",
"fingerprint", "status"}, ...]} (tasks/evaluation/replay.py writes it). A suggestion matches a
planted problem by feature and problem family: fix/investigate -> "health", improve ->
"adoption"; the fingerprint format is not relied on. README "Evaluation: planted scenarios"
defines every metric.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date
from itertools import pairwise
from typing import Any

FAMILY_OF_KIND = {"fix": "health", "investigate": "health", "improve": "adoption"}
DETECT_AFTER_NIGHTS = 3  # a problem should be found within 3 nights of its onset
LATENCY_MIN_DROP = 0.20
LATENCY_MIN_DAILY_USERS = 200
MAX_FALSE_ALARMS = 1

Key = tuple[str, str]  # (feature_key, family)


def family_of(kind: str) -> str:
    """The problem family of a suggestion kind (a family name passes through unchanged)."""
    return FAMILY_OF_KIND.get(kind, kind)


def night_keys(night: dict[str, Any]) -> dict[Key, dict[str, Any]]:
    """The night's suggestions by (feature, family); the best-ranked one when several match."""
    out: dict[Key, dict[str, Any]] = {}
    for s in sorted(night["suggestions"], key=lambda s: s["priority_rank"]):
        out.setdefault((s["feature_key"], family_of(s["kind"])), s)
    return out


def onset_night(onset: date, first_as_of: date) -> int:
    """Replay night (1-based) whose data first includes the onset day; 1 if it is earlier."""
    return max(1, (onset - first_as_of).days + 1)


@dataclass
class ProblemScore:
    feature_key: str
    family: str
    expected_kind: str
    onset: str
    onset_night: int  # 1 when the onset is before the replay
    due_night: int  # from here on it should be found: onset night + 3, or night 1
    pairs: int  # (problem, night) pairs from the due night to the last night
    top1: int
    top3: int
    detected_nights: int  # nights from the onset night on with a matching suggestion (any rank)
    right_kind_nights: int  # ... of which with the expected kind
    first_detected_night: int | None
    latency: int | None  # first detection night - onset night; None = never detected
    latency_target: bool  # a >= 20% drop on a feature with >= 200 daily users
    ranks: list[int | None] = field(default_factory=list)  # per night, None = not suggested
    kinds: list[str | None] = field(default_factory=list)


def score_problems(
    problems: list[dict[str, Any]], nights: list[dict[str, Any]]
) -> list[ProblemScore]:
    first_as_of = date.fromisoformat(nights[0]["as_of"])
    last = nights[-1]["night"]
    by_night = [night_keys(n) for n in nights]
    out = []
    for p in problems:
        key = (p["feature_key"], p["family"])
        onset = date.fromisoformat(p["onset"])
        start = onset_night(onset, first_as_of)
        due = start + DETECT_AFTER_NIGHTS if onset >= first_as_of else 1
        hits = [keys.get(key) for keys in by_night]
        ranks = [h["priority_rank"] if h else None for h in hits]
        kinds = [h["kind"] if h else None for h in hits]
        window = [r for n, r in zip(range(1, last + 1), ranks, strict=True) if n >= due]
        since_onset = [
            (n, k) for n, k in zip(range(1, last + 1), kinds, strict=True) if n >= start and k
        ]
        first = since_onset[0][0] if since_onset else None
        drop = p.get("relative_drop") or 0.0
        out.append(
            ProblemScore(
                feature_key=p["feature_key"],
                family=p["family"],
                expected_kind=p["expected_kind"],
                onset=p["onset"],
                onset_night=start,
                due_night=due,
                pairs=len(window),
                top1=sum(1 for r in window if r is not None and r <= 1),
                top3=sum(1 for r in window if r is not None and r <= 3),
                detected_nights=len(since_onset),
                right_kind_nights=sum(1 for _, k in since_onset if k == p["expected_kind"]),
                first_detected_night=first,
                latency=None if first is None else first - start,
                latency_target=drop >= LATENCY_MIN_DROP
                and p.get("baseline_daily_users", 0) >= LATENCY_MIN_DAILY_USERS,
                ranks=ranks,
                kinds=kinds,
            )
        )
    return out


def false_alarms(problems: list[dict[str, Any]], nights: list[dict[str, Any]]) -> list[Key]:
    """Distinct (feature, family) suggested on any night that no planted problem explains."""
    planted = {(p["feature_key"], p["family"]) for p in problems}
    seen = {k for n in nights for k in night_keys(n)}
    return sorted(seen - planted)


def fingerprint_keys(nights: list[dict[str, Any]]) -> dict[str, Key]:
    """Fingerprint -> (feature, family), learnt from the suggestions themselves."""
    out: dict[str, Key] = {}
    for n in nights:
        for s in n["suggestions"]:
            out.setdefault(s["fingerprint"], (s["feature_key"], family_of(s["kind"])))
    return out


def _key_of(fingerprint: str | None, known: dict[str, Key]) -> Key | None:
    if fingerprint is None:
        return None
    if fingerprint in known:
        return known[fingerprint]
    prefix, sep, feature = fingerprint.partition(":")  # an issue no suggestion explains
    return (feature, family_of(prefix)) if sep else None


def flaps(nights: list[dict[str, Any]]) -> dict[str, int]:
    """Per feature-problem ("feature/family") and per issue file ("issue:<file>"): how often a
    suggestion came back after a night without it, or a closed issue was open again."""
    out: dict[str, int] = {}
    present = [set(night_keys(n)) for n in nights]
    for key in sorted(set().union(*present)):
        seen, gone, count = False, False, 0
        for keys in present:
            if key in keys:
                count += seen and gone
                seen, gone = True, False
            elif seen:
                gone = True
        if count:
            out[f"{key[0]}/{key[1]}"] = count
    status: dict[str, list[str]] = {}
    for n in nights:
        for issue in n["tracker"]:
            status.setdefault(issue["file"], []).append(issue["status"])
    for file, states in status.items():
        reopened = sum(1 for a, b in pairwise(states) if a == "closed" and b != "closed")
        if reopened:
            out[f"issue:{file}"] = reopened
    return out


def issues_per_problem(nights: list[dict[str, Any]]) -> dict[str, int]:
    """Tracker issue files at the end, counted per feature-problem ("feature/family")."""
    known = fingerprint_keys(nights)
    out: dict[str, int] = {}
    for issue in nights[-1]["tracker"] if nights else []:
        key = _key_of(issue["fingerprint"], known)
        name = f"{key[0]}/{key[1]}" if key else f"unknown:{issue['file']}"
        out[name] = out.get(name, 0) + 1
    return out


@dataclass
class WorldScore:
    world: str
    expected: str
    silent: bool  # the noise-only world: no suggestion at all
    problems: list[ProblemScore]
    false_alarms: list[str]
    flaps: dict[str, int]
    issues: dict[str, int]
    n_suggestions: int  # suggestion rows over all nights
    recall1: float | None
    recall3: float | None
    right_kind: float | None
    targets: dict[str, bool]
    misses: list[str]

    @property
    def ok(self) -> bool:
        return not self.misses

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ok": self.ok}


def _share(num: int, den: int) -> float | None:
    return None if den == 0 else num / den


def score_world(truth: dict[str, Any], nights: list[dict[str, Any]]) -> WorldScore:
    problems = truth["problems"]
    scored = score_problems(problems, nights)
    alarms = [f"{f}/{fam}" for f, fam in false_alarms(problems, nights)]
    flapped = flaps(nights)
    issues = issues_per_problem(nights)
    pairs = sum(p.pairs for p in scored)
    silent = bool(truth.get("silent"))
    n_suggestions = sum(len(n["suggestions"]) for n in nights)
    targets: dict[str, bool] = {}
    misses: list[str] = []

    def check(name: str, ok: bool, why: str) -> None:
        targets[name] = ok
        if not ok:
            misses.append(why)

    if scored:
        top3 = sum(p.top3 for p in scored)
        check("recall@3", pairs > 0 and top3 == pairs, f"recall@3 {top3}/{pairs} < 100%")
    if silent:
        check("silent", n_suggestions == 0, f"{n_suggestions} suggestion(s) on a noise-only world")
    else:
        check(
            "false_alarms",
            len(alarms) <= MAX_FALSE_ALARMS,
            f"{len(alarms)} false alarms > {MAX_FALSE_ALARMS}: {', '.join(alarms)}",
        )
    for p in scored:
        if p.latency_target:
            ok = p.latency is not None and p.latency <= DETECT_AFTER_NIGHTS
            late = "never" if p.latency is None else f"{p.latency} nights after onset"
            check(f"latency {p.feature_key}", ok, f"{p.feature_key}: detected {late}")
    check("flaps", not flapped, "flaps: " + ", ".join(f"{k} x{v}" for k, v in flapped.items()))
    planted = {f"{p.feature_key}/{p.family}" for p in scored}
    bad = {k: issues.get(k, 0) for k in planted if issues.get(k, 0) != 1}
    bad |= {k: n for k, n in issues.items() if n > 1}
    check(
        "one_issue",
        not bad,
        "one issue per problem: " + "; ".join(f"{k}: {n} issue(s)" for k, n in sorted(bad.items())),
    )
    return WorldScore(
        world=truth["world"],
        expected=truth["expected"],
        silent=silent,
        problems=scored,
        false_alarms=alarms,
        flaps=flapped,
        issues=issues,
        n_suggestions=n_suggestions,
        recall1=_share(sum(p.top1 for p in scored), pairs),
        recall3=_share(sum(p.top3 for p in scored), pairs),
        right_kind=_share(
            sum(p.right_kind_nights for p in scored), sum(p.detected_nights for p in scored)
        ),
        targets=targets,
        misses=misses,
    )
