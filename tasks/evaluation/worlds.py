"""Planted worlds for the scenario suite: seeded, vectorised, in the vendors' export formats.

Each world is ~100 days of one product: a population of users with individual activity
propensities, weekday seasonality, 5-7 features of different sizes, Poisson ticket arrivals
proportional to feature usage (with priorities), a trickle of ordinary bugs with severity labels,
and at most two planted problems (or none). Files are written per day, so a replay can make the
data visible night by night:

    posthog/events-YYYY-MM-DD.jsonl          the day's events (PostHog export lines)
    zendesk/tickets-YYYY-MM-DD-pNN.json      ticket versions updated that day (cursor-export pages)
    github/issues-YYYY-MM-DD-pNN.json        issues changed that day, state as of that day
    features.yaml                            the world's feature catalog
    truth.json                               what was planted (and the realised numbers)

Record shapes follow tasks/demo_data/, so the loader and staging accept them unchanged.
"""

from __future__ import annotations

import base64
import json
import shutil
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml

from tasks.demo_data import b62
from tasks.demo_data.posthog import _uuid4

GENERATOR_VERSION = 1
DEFAULT_END = date(2026, 11, 22)
DEFAULT_USERS = 8000
DEFAULT_SEED = 20260
HISTORY_DAYS = 100
REPLAY_NIGHTS = 14
BUG_LEAD_DAYS = 45  # ordinary issues start this many days before the first usage day

_DAY_S = 86_400
_ZENDESK_HOST = "https://acme-eval.zendesk.com"
_EXPORT_URL = f"{_ZENDESK_HOST}/api/v2/incremental/tickets/cursor.json"
_GH_REPO = "acme/product"
_REQUESTER_BASE = 9_100_000_000
_ORG_BASE = 9_200_000_000
_BASE_ACTIVE = 0.30  # daily chance a median-ish user is active on a weekday
_WEEKDAY = (1.0, 1.02, 1.03, 1.0, 0.93, 0.45, 0.38)  # Monday first
_USE_EVENTS = 1.5  # mean feature events after the page view, per use
_GENERIC_EVENTS = 1.3  # mean unmapped events per active user-day (at least one: the visit)
_UNMAPPED_TICKETS = 1.2  # tickets per 1,000 daily active users that map to no feature
_HOURS = np.array(
    [1, 1, 1, 1, 1, 2, 3, 5, 7, 9, 10, 10, 10, 11, 12, 12, 11, 10, 8, 6, 4, 3, 2, 1], dtype=float
)
_HOURS /= _HOURS.sum()

# --------------------------------------------------------------------------------------------
# Feature archetypes: names, signals and the words tickets use (substring-safe keywords)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Archetype:
    name: str
    stem: str  # event names <stem>_viewed / _created / _updated
    path: str
    tag: str
    keywords: tuple[str, ...]
    label: str  # how tickets and bugs call it; contains a keyword
    owner: str


ARCHETYPES: dict[str, Archetype] = {
    a[0]: Archetype(*a[1:])
    for a in (
        ("dashboards", "Dashboards", "dashboard", "/dashboards", "dashboards",
         ("dashboard", "widget"), "Dashboard", "team-viz"),
        ("reports", "Scheduled reports", "report", "/reports", "reports", ("report",),
         "Report", "team-viz"),
        ("exports", "Data exports", "export", "/exports", "exports", ("export", "csv"),
         "Export", "team-data"),
        ("search", "Search", "search", "/search", "search", ("search",), "Search",
         "team-discovery"),
        ("alerts", "Alerts", "alert", "/alerts", "alerts", ("alert",), "Alert", "team-viz"),
        ("sharing", "Sharing & invites", "share", "/share", "sharing", ("share", "invite"),
         "Share link", "team-collab"),
        ("integrations", "Integrations", "integration", "/integrations", "integrations",
         ("integration", "sync"), "Integration", "team-data"),
        ("billing", "Billing", "invoice", "/billing", "billing", ("invoice", "billing"),
         "Invoice", "team-growth"),
        ("notebooks", "Notebooks", "notebook", "/notebooks", "notebooks", ("notebook",),
         "Notebook", "team-discovery"),
        ("ai_assistant", "AI assistant", "assistant", "/assistant", "ai-assistant",
         ("assistant",), "Assistant", "team-discovery"),
    )
}  # fmt: skip

# Ticket subject endings: none contains any archetype keyword.
_PHRASES = (
    "is slow",
    "shows an error",
    "does not load",
    "shows wrong numbers",
    "cannot save changes",
    "question about permissions",
    "how do I configure it?",
    "stuck at loading",
)
_PROBLEM_PHRASES = (
    "broken since the last release",
    "fails with an error every time",
    "stopped working for our team",
    "returns a 500 error",
)
_UNMAPPED_SUBJECTS = (
    ("Cannot log in", ["login"]),
    ("Password reset link not working", ["login"]),
    ("Two-factor code not accepted", ["2fa"]),
    ("Question about data retention", ["account"]),
    ("Change account owner", ["account"]),
    ("SSO question", ["sso"]),
    ("API rate limit question", []),
)
_EXTRA_TAGS = ("enterprise", "pro_plan", "starter_plan", "vip", "eu_region")
_FIRST = ("Jane", "John", "Maria", "Ahmed", "Wei", "Priya", "Lucas", "Sofia", "Noah", "Emma")
_LAST = ("Cooper", "Smith", "Garcia", "Khan", "Chen", "Patel", "Silva", "Rossi", "Novak", "Okafor")
_BUG_PHRASES = (
    "layout breaks on small screens",
    "timezone ignored in totals",
    "filter resets after navigation",
    "tooltip overlaps the legend",
    "slow with many items",
    "wrong default sort order",
    "error toast shows twice",
)
_SEVERITIES = ("critical", "high", "medium", "low")
_LOGINS = ("mara-dev", "tkowalski", "jchen", "priya-eng", "lucas-sre", "okafor", "sofia-qa")


# --------------------------------------------------------------------------------------------
# World specifications
# --------------------------------------------------------------------------------------------


@dataclass
class FeatureDef:
    key: str
    share: float  # share of daily active users using it on a day (organic, weekday profile = 1)
    adopt: float | None = None  # share of users who use it at all; default from the share
    ticket_rate: float = 3.0  # organic tickets per 1,000 daily feature users
    tickets_per_day: float | None = None  # overrides ticket_rate: mean organic tickets a day
    weekday: tuple[float, ...] | None = None  # per-feature weekday profile (Monday first)
    launch_days_before_end: int | None = None  # launched then, adoption ramps over RAMP_DAYS


RAMP_DAYS = 20


@dataclass
class PlantedBug:
    feature: str
    day: int  # day index of creation
    severity: str  # critical | high
    title: str


@dataclass
class Problem:
    feature_key: str
    family: str  # health | adoption
    expected_kind: str  # fix | investigate | improve
    onset_day: int  # day index (onset date = start + onset_day)
    relative_drop: float | None = None
    description: str = ""


@dataclass
class WorldSpec:
    name: str
    challenge: str
    expected: str  # what a good detector does, in words
    features: list[FeatureDef]
    days: int
    weekday: tuple[float, ...] = _WEEKDAY
    product_mult: np.ndarray | None = None  # (days,) product-wide activity multiplier
    usage_mult: dict[str, np.ndarray] = field(default_factory=dict)  # feature -> (days,)
    loss: dict[str, np.ndarray] = field(default_factory=dict)  # feature -> share lost by day
    ticket_mult: dict[str, np.ndarray] = field(default_factory=dict)
    ticket_total: dict[str, tuple[int, int, float]] = field(default_factory=dict)
    bugs: list[PlantedBug] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    silent: bool = False  # nothing at all may be suggested (the noise-only world)


def _ones(days: int) -> np.ndarray:
    return np.ones(days)


def _from(days: int, start: int, value: float, base: float = 1.0) -> np.ndarray:
    out = np.full(days, base)
    out[start:] = value
    return out


def _quiet_popular(d: int) -> WorldSpec:
    onset = d - 1 - 7
    w = WorldSpec(
        "quiet_popular",
        "a popular feature (~35% of daily actives) quietly loses ~29% of its daily users from 7 "
        "days before the end; tickets run at ~2.5x their normal rate; an s1 bug opens at onset",
        "fix on reports",
        [
            FeatureDef("dashboards", 0.55),
            FeatureDef("reports", 0.35, ticket_rate=2.5),
            FeatureDef("search", 0.22),
            FeatureDef("alerts", 0.12),
            FeatureDef("sharing", 0.07),
            FeatureDef("billing", 0.05, ticket_rate=6.0),
        ],
        d,
    )
    w.loss["reports"] = _from(d, onset, 0.29, 0.0)
    w.ticket_mult["reports"] = _from(d, onset, 2.5)
    w.bugs.append(PlantedBug("reports", onset, "critical", "Scheduled reports render blank PDFs"))
    w.problems.append(Problem("reports", "health", "fix", onset, 0.29, "usage drop + s1 bug"))
    return w


def _short_regression(d: int) -> WorldSpec:
    onset = d - 1 - 5
    w = WorldSpec(
        "short_regression",
        "a mid-size feature (>=200 daily users) regresses from 5 days before the end: daily "
        "users -46%, ~45 tickets vs ~4 expected over the period, s1 bugs at onset",
        "fix on exports",
        [
            FeatureDef("dashboards", 0.50),
            FeatureDef("exports", 0.15, tickets_per_day=0.67),
            FeatureDef("search", 0.25),
            FeatureDef("alerts", 0.10),
            FeatureDef("integrations", 0.08),
            FeatureDef("sharing", 0.06),
            FeatureDef("billing", 0.04, ticket_rate=6.0),
        ],
        d,
    )
    w.loss["exports"] = _from(d, onset, 0.46, 0.0)
    w.ticket_total["exports"] = (onset, d, 45.0)
    w.bugs += [
        PlantedBug("exports", onset, "critical", "CSV export times out for tables over 100k rows"),
        PlantedBug("exports", onset, "critical", "Export worker crashes since the writer change"),
    ]
    w.problems.append(Problem("exports", "health", "fix", onset, 0.46, "sharp regression"))
    return w


def _weak_adoption(d: int) -> WorldSpec:
    w = WorldSpec(
        "weak_adoption",
        "a mature feature used by ~2% of daily actives (reached occasionally by many users over "
        "28 days); the other features 10-35%",
        "improve on ai_assistant",
        [
            FeatureDef("dashboards", 0.35),
            FeatureDef("search", 0.25),
            FeatureDef("reports", 0.18),
            FeatureDef("alerts", 0.12),
            FeatureDef("sharing", 0.10),
            FeatureDef("ai_assistant", 0.02, adopt=0.7),
        ],
        d,
    )
    w.problems.append(Problem("ai_assistant", "adoption", "improve", 0, None, "weak adoption"))
    return w


def _busy_healthy(d: int) -> WorldSpec:
    return WorldSpec(
        "busy_healthy",
        "a steady busy feature with ~6 tickets a day for months, nothing changing",
        "nothing",
        [
            FeatureDef("dashboards", 0.50),
            FeatureDef("integrations", 0.30, tickets_per_day=6.0),
            FeatureDef("search", 0.20),
            FeatureDef("alerts", 0.12),
            FeatureDef("sharing", 0.08),
            FeatureDef("billing", 0.05, ticket_rate=6.0),
        ],
        d,
    )


def _old_spike(d: int) -> WorldSpec:
    day = d - 1 - 25
    w = WorldSpec(
        "old_spike",
        "a one-day spike (tickets x10, usage x2) on one feature 25 days before the end, before "
        "the replay",
        "nothing",
        [
            FeatureDef("dashboards", 0.50),
            FeatureDef("exports", 0.20, tickets_per_day=1.5),
            FeatureDef("search", 0.22),
            FeatureDef("alerts", 0.10),
            FeatureDef("sharing", 0.07),
        ],
        d,
    )
    w.usage_mult["exports"] = _ones(d)
    w.usage_mult["exports"][day] = 2.0
    w.ticket_mult["exports"] = _ones(d)
    w.ticket_mult["exports"][day] = 10.0
    return w


def _holiday_dip(d: int) -> WorldSpec:
    w = WorldSpec(
        "holiday_dip",
        "a product-wide dip of ~40% of all usage for 3 consecutive days inside the replay; "
        "tickets dip with it",
        "nothing",
        [
            FeatureDef("dashboards", 0.50),
            FeatureDef("reports", 0.25),
            FeatureDef("search", 0.20),
            FeatureDef("alerts", 0.12),
            FeatureDef("integrations", 0.08),
            FeatureDef("billing", 0.05, ticket_rate=6.0),
        ],
        d,
    )
    w.product_mult = _ones(d)
    w.product_mult[d - 1 - 9 : d - 1 - 6] = 0.6
    return w


def _weekly_seasonality(d: int) -> WorldSpec:
    return WorldSpec(
        "weekly_seasonality",
        "strong weekly seasonality (weekends at ~25% of weekdays) and one feature used almost "
        "only on Mondays",
        "nothing",
        [
            FeatureDef("dashboards", 0.50),
            FeatureDef("reports", 0.45, weekday=(1.0, 0.05, 0.04, 0.04, 0.04, 0.02, 0.02)),
            FeatureDef("search", 0.22),
            FeatureDef("alerts", 0.12),
            FeatureDef("sharing", 0.08),
        ],
        d,
        weekday=(1.0, 1.0, 1.0, 1.0, 1.0, 0.25, 0.25),
    )


def _slow_decline(d: int) -> WorldSpec:
    start = d - 42
    w = WorldSpec(
        "slow_decline",
        "a feature with >=200 daily users declines steadily over the last 6 weeks to ~60% of its "
        "level; tickets and bugs unchanged",
        "investigate on notebooks",
        [
            FeatureDef("dashboards", 0.50),
            FeatureDef("notebooks", 0.16),
            FeatureDef("search", 0.22),
            FeatureDef("alerts", 0.12),
            FeatureDef("sharing", 0.07),
            FeatureDef("billing", 0.05, ticket_rate=6.0),
        ],
        d,
    )
    loss = np.zeros(d)
    loss[start:] = 0.4 * np.arange(1, d - start + 1) / (d - start)
    w.loss["notebooks"] = loss
    w.problems.append(
        Problem("notebooks", "health", "investigate", start, 0.4, "slow decline, no tickets/bugs")
    )
    return w


def _new_feature_ramp(d: int) -> WorldSpec:
    return WorldSpec(
        "new_feature_ramp",
        "a feature launched 20 days before the end (catalog launched_on) ramps from 0 to ~8% of "
        "daily actives",
        "nothing (not weak adoption)",
        [
            FeatureDef("dashboards", 0.50),
            FeatureDef("search", 0.25),
            FeatureDef("alerts", 0.12),
            FeatureDef("sharing", 0.08),
            FeatureDef("billing", 0.05, ticket_rate=6.0),
            FeatureDef("ai_assistant", 0.08, launch_days_before_end=20),
        ],
        d,
    )


def _noise_only(d: int) -> WorldSpec:
    w = WorldSpec(
        "noise_only",
        "nothing planted; features of similar magnitude (within 4x of each other's daily share)",
        "nothing",
        [
            FeatureDef("dashboards", 0.30),
            FeatureDef("search", 0.24),
            FeatureDef("reports", 0.18),
            FeatureDef("alerts", 0.14),
            FeatureDef("sharing", 0.10),
            FeatureDef("billing", 0.085),
        ],
        d,
    )
    w.silent = True
    return w


def _two_problems(d: int) -> WorldSpec:
    onset = d - 1 - 6
    w = WorldSpec(
        "two_problems",
        "a regression (-35% daily users from 6 days before the end, s2 bug, tickets x3) on one "
        "feature and a support spike without usage change (tickets x4) on another",
        "fix on exports, investigate on integrations",
        [
            FeatureDef("dashboards", 0.50),
            FeatureDef("exports", 0.18),
            FeatureDef("integrations", 0.15, tickets_per_day=1.5),
            FeatureDef("search", 0.20),
            FeatureDef("alerts", 0.10),
            FeatureDef("billing", 0.05, ticket_rate=6.0),
        ],
        d,
    )
    w.loss["exports"] = _from(d, onset, 0.35, 0.0)
    w.ticket_mult["exports"] = _from(d, onset, 3.0)
    w.ticket_mult["integrations"] = _from(d, onset, 4.0)
    w.bugs.append(PlantedBug("exports", onset, "high", "Exports of filtered views lose rows"))
    w.problems += [
        Problem("exports", "health", "fix", onset, 0.35, "regression + s2 bug + tickets x3"),
        Problem("integrations", "health", "investigate", onset, None, "support spike x4"),
    ]
    return w


WORLDS: dict[str, Callable[[int], WorldSpec]] = {
    "quiet_popular": _quiet_popular,
    "short_regression": _short_regression,
    "weak_adoption": _weak_adoption,
    "busy_healthy": _busy_healthy,
    "old_spike": _old_spike,
    "holiday_dip": _holiday_dip,
    "weekly_seasonality": _weekly_seasonality,
    "slow_decline": _slow_decline,
    "new_feature_ramp": _new_feature_ramp,
    "noise_only": _noise_only,
    "two_problems": _two_problems,
}


def world_spec(name: str, days: int = HISTORY_DAYS) -> WorldSpec:
    if name not in WORLDS:
        raise KeyError(f"unknown world {name!r}; known: {', '.join(WORLDS)}")
    return WORLDS[name](days)


# --------------------------------------------------------------------------------------------
# Simulation
# --------------------------------------------------------------------------------------------


def _rng(seed: int, world: str, stream: int, *more: int) -> np.random.Generator:
    return np.random.default_rng(
        np.random.SeedSequence([seed, zlib.crc32(world.encode()), stream, *more])
    )


_S_POP, _S_DAY, _S_TICKETS, _S_BUGS = 1, 2, 3, 4


class _Population:
    """Users (activity propensity, signup/churn, account) and their per-feature habits."""

    def __init__(self, spec: WorldSpec, n_users: int, seed: int, start: date):
        rng = _rng(seed, spec.name, _S_POP)
        d, f = spec.days, len(spec.features)
        self.n, self.days, self.start = n_users, d, start
        n_acct = max(5, n_users // 10)
        acct_w = rng.lognormal(0.0, 1.0, n_acct)
        self.account = rng.choice(n_acct, size=n_users, p=acct_w / acct_w.sum())
        activity = rng.lognormal(-0.5 * 0.8**2, 0.8, n_users)
        self.p_base = np.minimum(_BASE_ACTIVE * activity, 0.95)
        late = rng.random(n_users) < 0.08
        self.signup = np.where(late, rng.integers(1, d, n_users), 0)
        leaves = rng.random(n_users) < 0.06
        self.churn = np.where(leaves, np.maximum(rng.integers(1, d, n_users), self.signup + 14), d)
        day_rng = _rng(seed, spec.name, _S_DAY)
        self.day_mult = np.clip(day_rng.normal(1.0, 0.04, d), 0.88, 1.12)
        wd = np.array([(start + timedelta(days=i)).weekday() for i in range(d)])
        self.weekday_idx = wd
        prod = spec.product_mult if spec.product_mult is not None else np.ones(d)
        self.day_factor = np.array(spec.weekday)[wd] * self.day_mult * prod

        # Feature habits: adopters with an individual intensity, calibrated to the target share.
        self.q = np.zeros((n_users, f))
        for j, fd in enumerate(spec.features):
            adopt = fd.adopt if fd.adopt is not None else float(np.clip(fd.share / 0.3, 0.1, 0.95))
            is_adopter = rng.random(n_users) < adopt
            intensity = rng.lognormal(-0.5 * 0.6**2, 0.6, n_users)
            level = fd.share / adopt
            for _ in range(4):  # the cap at 0.95 bends the mean: a few fixed-point steps
                qj = np.where(is_adopter, np.minimum(level * intensity, 0.95), 0.0)
                got = float(self.p_base @ qj) / float(self.p_base.sum())
                level *= fd.share / max(got, 1e-9)
            self.q[:, j] = np.where(is_adopter, np.minimum(level * intensity, 0.95), 0.0)

        # Per-feature weekday profile, launch ramp (discovery day) and planted user loss.
        self.f_weekday = np.ones((7, f))
        self.discover = np.zeros((n_users, f), dtype=np.int64)
        self.leave = np.full((n_users, f), d, dtype=np.int64)
        for j, fd in enumerate(spec.features):
            if fd.weekday is not None:
                self.f_weekday[:, j] = fd.weekday
            if fd.launch_days_before_end is not None:
                launch = d - 1 - fd.launch_days_before_end
                self.discover[:, j] = launch + rng.integers(0, RAMP_DAYS, n_users)
            if fd.key in spec.loss:
                self.leave[:, j] = self._leave_days(rng, spec.loss[fd.key], j)
        self.usage_mult = np.ones((d, f))
        for j, fd in enumerate(spec.features):
            if fd.key in spec.usage_mult:
                self.usage_mult[:, j] = spec.usage_mult[fd.key]

    def _leave_days(self, rng: np.random.Generator, loss: np.ndarray, j: int) -> np.ndarray:
        """Adopters in random order leave the feature once the planted loss share reaches them,
        so the share of expected daily use lost follows `loss` (an exact share, not coin flips)."""
        w = self.p_base * self.q[:, j]
        out = np.full(self.n, self.days, dtype=np.int64)
        idx = rng.permutation(np.flatnonzero(w > 0))
        cum = np.cumsum(w[idx]) / w[idx].sum()
        mid = cum - w[idx] / w[idx].sum() / 2
        out[idx] = np.searchsorted(np.maximum.accumulate(loss), mid, side="left")
        return out

    def p_active(self, day: int) -> np.ndarray:
        alive = (self.signup <= day) & (day < self.churn)
        return np.where(alive, np.minimum(self.p_base * self.day_factor[day], 0.95), 0.0)

    def q_day(self, day: int, planted: bool) -> np.ndarray:
        q = self.q * self.f_weekday[self.weekday_idx[day]] * (day >= self.discover)
        if planted:
            q = q * self.usage_mult[day] * (day < self.leave)
        return np.minimum(q, 0.95)


class _Kinds:
    """Event kinds: (name, path) per feature (first = page view) plus unmapped ones."""

    def __init__(self, keys: list[str]):
        names, paths = [], []
        self.first: list[int] = []
        self.rest: list[np.ndarray] = []
        self.rest_cum = np.cumsum([0.55, 0.2, 0.25])
        for key in keys:
            a = ARCHETYPES[key]
            self.first.append(len(names))
            names.append("$pageview")
            paths.append(a.path)
            ids = []
            for suffix, path in (
                ("viewed", a.path),
                ("created", f"{a.path}/new"),
                ("updated", a.path),
            ):
                ids.append(len(names))
                names.append(f"{a.stem}_{suffix}")
                paths.append(path)
            self.rest.append(np.array(ids))
        generic = (("$pageview", "/home", 0.4), ("$pageview", "/settings", 0.1),
                   ("user_logged_in", "/login", 0.25), ("$autocapture", "/home", 0.25))  # fmt: skip
        self.generic = np.arange(len(names), len(names) + len(generic))
        self.generic_cum = np.cumsum([g[2] for g in generic])
        names += [g[0] for g in generic]
        paths += [g[1] for g in generic]
        self.name = pl.Series(names, dtype=pl.String)
        self.path = pl.Series(paths, dtype=pl.String)


def _pick(ids: np.ndarray, cum: np.ndarray, u: np.ndarray) -> np.ndarray:
    return ids[np.minimum(np.searchsorted(cum / cum[-1], u, side="right"), len(ids) - 1)]


def _events_day(
    pop: _Population,
    kinds: _Kinds,
    rng: np.random.Generator,
    day: int,
    user_ids: pl.Series,
    accounts: pl.Series,
) -> tuple[pl.Series, np.ndarray, int]:
    """One day's events as PostHog JSON lines; returns (lines, users per feature, users with
    any event)."""
    active = np.flatnonzero(rng.random(pop.n) < pop.p_active(day))
    n_a, n_f = len(active), pop.q.shape[1]
    use = rng.random((n_a, n_f)) < pop.q_day(day, planted=True)[active]
    ua, fa = np.nonzero(use)
    g_user = np.concatenate([active[ua], active])
    g_feat = np.concatenate([fa, np.full(n_a, -1)])
    g_n = np.concatenate(
        [1 + rng.poisson(_USE_EVENTS, len(ua)), 1 + rng.poisson(_GENERIC_EVENTS - 1, n_a)]
    )
    sess = np.zeros(pop.n, dtype=np.int64)
    sess[active] = rng.choice(24, n_a, p=_HOURS) * 3_600_000_000 + rng.integers(
        0, 3_600_000_000, n_a
    )
    g_off = np.where(g_feat < 0, 0, rng.integers(0, 45 * 60_000_000, len(g_n)))
    ev_group = np.repeat(np.arange(len(g_n)), g_n)
    n = len(ev_group)
    starts = np.cumsum(g_n) - g_n
    pos = np.arange(n) - starts[ev_group]
    feat = g_feat[ev_group]
    gaps = rng.exponential(30_000_000.0, n).astype(np.int64) + 1
    cs = np.cumsum(gaps)
    in_use = cs - cs[np.minimum(starts, max(n - 1, 0))][ev_group] if n else cs
    us = np.minimum(sess[g_user[ev_group]] + g_off[ev_group] + in_use, _DAY_S * 1_000_000 - 1)
    kind = np.empty(n, dtype=np.int64)
    u = rng.random(n)
    gen = feat < 0
    kind[gen] = _pick(kinds.generic, kinds.generic_cum, u[gen])
    for j in range(n_f):
        m = feat == j
        first = m & (pos == 0)
        kind[first] = kinds.first[j]
        rest = m & (pos > 0)
        kind[rest] = _pick(kinds.rest[j], kinds.rest_cum, u[rest])
    order = np.argsort(us, kind="stable")
    user = g_user[ev_group][order]
    day_us = int(datetime.combine(pop.start, datetime.min.time(), UTC).timestamp()) * 1_000_000
    df = pl.DataFrame(
        {
            "uuid": _uuid4(rng, n),
            "event": kinds.name.gather(kind[order]),
            "did": user_ids.gather(user),
            "ts": pl.Series(us[order] + day_us + day * _DAY_S * 1_000_000)
            .cast(pl.Datetime("us"))
            .dt.strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00"),
            "path": kinds.path.gather(kind[order]),
            "acct": accounts.gather(user),
        }
    )
    lines = df.select(
        pl.concat_str(
            [
                pl.lit('{"uuid":"'), pl.col("uuid"), pl.lit('","event":"'), pl.col("event"),
                pl.lit('","distinct_id":"'), pl.col("did"), pl.lit('","timestamp":"'),
                pl.col("ts"), pl.lit('","properties":{"$pathname":"'), pl.col("path"),
                pl.lit('","$browser":"Chrome","$lib":"web","$groups":{"company":"'),
                pl.col("acct"), pl.lit('"}}}'),
            ]
        ).alias("line")
    )["line"]  # fmt: skip
    return lines, use.sum(axis=0), len(np.unique(g_user[g_n > 0]))


# --------------------------------------------------------------------------------------------
# Tickets (Zendesk)
# --------------------------------------------------------------------------------------------


def _zts(ts: int) -> str:
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cursor(ts: int, ticket_id: int) -> str:
    return base64.urlsafe_b64encode(f"{ts}.{ticket_id}".encode()).decode().rstrip("=")


def _ticket_rates(
    spec: WorldSpec, expected_users: np.ndarray
) -> tuple[np.ndarray, dict[str, float]]:
    """lambda[f, d]: organic rate (proportional to the feature's organic daily users) times the
    planted multiplier; returns it with the multipliers actually used."""
    d = spec.days
    lam = np.zeros((len(spec.features), d))
    used: dict[str, float] = {}
    for j, fd in enumerate(spec.features):
        e = expected_users[j]
        if fd.tickets_per_day is not None:
            live = e > 0
            rate = fd.tickets_per_day * live.sum() / max(e.sum(), 1e-9)
        else:
            rate = fd.ticket_rate / 1000.0
        base = rate * e
        mult = spec.ticket_mult.get(fd.key, np.ones(d)).copy()
        if fd.key in spec.ticket_total:
            lo, hi, total = spec.ticket_total[fd.key]
            m = total / max(base[lo:hi].sum(), 1e-9)
            mult[lo:hi] = m
            used[fd.key] = round(float(m), 2)
        lam[j] = base * mult
    return lam, used


def _tickets(
    spec: WorldSpec,
    pop: _Population,
    seed: int,
    expected_users: np.ndarray,
    expected_dau: np.ndarray,
) -> tuple[list[dict[str, Any]], dict[str, Any], np.ndarray]:
    """All ticket versions (dicts in Zendesk's export shape) up to the end of the last day."""
    rng = _rng(seed, spec.name, _S_TICKETS)
    lam, used = _ticket_rates(spec, expected_users)
    base_lam = lam.copy()
    for j, fd in enumerate(spec.features):
        mult = spec.ticket_mult.get(fd.key)
        if fd.key in spec.ticket_total:
            lo, hi, _ = spec.ticket_total[fd.key]
            base_lam[j, lo:hi] /= used[fd.key]
        elif mult is not None:
            base_lam[j] /= mult
    lam = np.vstack([lam, _UNMAPPED_TICKETS / 1000.0 * expected_dau])
    base_lam = np.vstack([base_lam, lam[-1]])
    counts = rng.poisson(lam)
    f_idx, d_idx = np.nonzero(counts)
    reps = counts[f_idx, d_idx]
    feat = np.repeat(f_idx, reps)
    day = np.repeat(d_idx, reps)
    n = len(feat)
    start_ts = int(datetime.combine(pop.start, datetime.min.time(), UTC).timestamp())
    end_ts = start_ts + spec.days * _DAY_S - 1
    created = (
        start_ts + day * _DAY_S + rng.choice(24, n, p=_HOURS) * 3600 + rng.integers(0, 3600, n)
    )
    order = np.argsort(created, kind="stable")
    feat, day, created = feat[order], day[order], created[order]
    # Tickets above the organic rate are the planted problem's: more urgent, problem wording.
    excess = 1.0 - base_lam[feat, day] / np.maximum(lam[feat, day], 1e-12)
    is_problem = rng.random(n) < excess
    pr = rng.random(n)
    normal_cum = np.array([0.04, 0.22, 0.68, 0.85])  # urgent, high, normal, low, else none
    problem_cum = np.array([0.2, 0.6, 0.95, 1.0])
    prio_idx = np.where(
        is_problem, np.searchsorted(problem_cum, pr), np.searchsorted(normal_cum, pr)
    )
    prio_names = np.array(["urgent", "high", "normal", "low", None], dtype=object)
    requester = rng.choice(pop.n, n, p=pop.p_base / pop.p_base.sum())
    tagged = rng.random(n) < 0.8
    extra_tag = rng.random(n) < 0.3
    extra_pick = rng.integers(0, len(_EXTRA_TAGS), n)
    phrase = rng.integers(0, 1 << 30, n)
    channel = rng.choice(["email", "web", "chat", "api"], n, p=[0.5, 0.3, 0.12, 0.08])
    has_v2 = rng.random(n) < 0.7
    has_v3 = rng.random(n) < 0.3
    gap2 = 3600 + rng.exponential(1.5 * _DAY_S, n).astype(np.int64)
    gap3 = 3600 + rng.exponential(3.0 * _DAY_S, n).astype(np.int64)
    upd1 = created + rng.integers(0, 900, n)
    st1 = rng.random(n)
    st2 = rng.random(n)
    deleted = rng.random(n) < 0.01
    n_feat = len(spec.features)
    versions: list[dict[str, Any]] = []
    for i in range(n):
        tid = 40_001 + i
        f = int(feat[i])
        user = int(requester[i])
        acct = int(pop.account[user])
        if f == n_feat:
            subject, tags = _UNMAPPED_SUBJECTS[int(phrase[i]) % len(_UNMAPPED_SUBJECTS)]
            tags = list(tags)
        else:
            a = ARCHETYPES[spec.features[f].key]
            words = _PROBLEM_PHRASES if is_problem[i] else _PHRASES
            subject = f"{a.label} {words[int(phrase[i]) % len(words)]}"
            tags = [a.tag] if tagged[i] else []
        if extra_tag[i]:
            tags.append(_EXTRA_TAGS[int(extra_pick[i])])
        first, last = _FIRST[user % len(_FIRST)], _LAST[(user // 7) % len(_LAST)]
        base = {
            "url": f"{_ZENDESK_HOST}/api/v2/tickets/{tid}.json",
            "id": tid,
            "external_id": None,
            "via": {"channel": str(channel[i]), "source": {"from": {}, "to": {}, "rel": None}},
            "created_at": _zts(created[i]),
            "type": "incident" if is_problem[i] else "question",
            "subject": subject,
            "raw_subject": subject,
            "description": f"Hi, this is {first} {last}. {subject}. Can you help?",
            "priority": prio_names[prio_idx[i]],
            "requester_id": _REQUESTER_BASE + user + 1,
            "submitter_id": _REQUESTER_BASE + user + 1,
            "organization_id": _ORG_BASE + acct + 1,
            "group_id": 9_000_000_201,
            "collaborator_ids": [],
            "follower_ids": [],
            "has_incidents": False,
            "is_public": True,
            "due_at": None,
            "tags": tags,
            "custom_fields": [],
            "satisfaction_rating": None,
        }
        chain = [(int(upd1[i]), "new" if st1[i] < 0.4 else "open", None)]
        if has_v2[i]:
            t2 = int(upd1[i] + gap2[i])
            chain.append((t2, "solved" if st2[i] < 0.6 else "pending", 9_000_000_101))
            if has_v3[i]:
                chain.append((int(t2 + gap3[i]), "closed", 9_000_000_101))
        chain = [c for c in chain if c[0] <= end_ts]
        for k, (ts, status, agent) in enumerate(chain):
            v = dict(base, updated_at=_zts(ts), generated_timestamp=ts, assignee_id=agent)
            v["status"] = "deleted" if deleted[i] and k == len(chain) - 1 else status
            versions.append(v)
    per_day = np.zeros((spec.days, n_feat + 1), dtype=np.int64)
    np.add.at(per_day, (day, feat), 1)
    stats = {
        "tickets": n,
        "ticket_versions": len(versions),
        "planted_ticket_multipliers": used,
    }
    return versions, stats, per_day


def _sideloaded_users(page: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for rid in sorted({v["requester_id"] for v in page}):
        user = rid - _REQUESTER_BASE - 1
        first, last = _FIRST[user % len(_FIRST)], _LAST[(user // 7) % len(_LAST)]
        out.append(
            {
                "id": rid,
                "name": f"{first} {last}",
                "email": f"{first.lower()}.{last.lower()}{user}@example.com",
                "role": "end-user",
            }
        )
    return out


def _by_update_day(
    versions: list[dict[str, Any]], order: tuple[str, str]
) -> dict[str, list[dict[str, Any]]]:
    """Record versions grouped by the UTC day of their `updated_at`, in `order` within a day."""
    by_day: dict[str, list[dict[str, Any]]] = {}
    for v in sorted(versions, key=lambda v: (v[order[0]], v[order[1]])):
        by_day.setdefault(v["updated_at"][:10], []).append(v)
    return by_day


def _write_zendesk(out: Path, versions: list[dict[str, Any]]) -> int:
    """Cursor-export pages per day of update: a nightly pull reads that day's changes."""
    (out / "zendesk").mkdir(parents=True, exist_ok=True)
    by_day = _by_update_day(versions, ("generated_timestamp", "id"))
    n_pages = 0
    prev: str | None = None
    for day, items in sorted(by_day.items()):
        pages = [items[i : i + 100] for i in range(0, len(items), 100)]
        for p, page in enumerate(pages, start=1):
            after = _cursor(page[-1]["generated_timestamp"], page[-1]["id"])
            doc = {
                "tickets": page,
                "users": _sideloaded_users(page),
                "after_cursor": after,
                "before_cursor": prev,
                "after_url": f"{_EXPORT_URL}?cursor={after}",
                "before_url": None,
                "end_of_stream": p == len(pages),
            }
            prev = after
            path = out / "zendesk" / f"tickets-{day}-p{p:02d}.json"
            path.write_text(json.dumps(doc, ensure_ascii=False) + "\n", encoding="utf-8")
            n_pages += 1
    return n_pages


# --------------------------------------------------------------------------------------------
# Issues (GitHub)
# --------------------------------------------------------------------------------------------


def _label(name: str) -> dict[str, Any]:
    lid = 5_000_000_000 + zlib.crc32(name.encode()) % 900_000_000
    return {
        "id": lid,
        "node_id": f"LA_kwDOEval{b62(lid, 8)}",
        "url": f"https://api.github.com/repos/{_GH_REPO}/labels/{name.replace(':', '%3A')}",
        "name": name,
        "color": "d73a4a" if name == "bug" else "c5def5",
        "default": name in ("bug", "enhancement"),
        "description": None,
    }


def _issues(spec: WorldSpec, pop: _Population, seed: int) -> list[dict[str, Any]]:
    """Issue lifecycles: ordinary bugs and requests per feature, chores, and the planted bugs."""
    rng = _rng(seed, spec.name, _S_BUGS)
    start_ts = int(datetime.combine(pop.start, datetime.min.time(), UTC).timestamp())
    end_ts = start_ts + spec.days * _DAY_S - 1
    lead = BUG_LEAD_DAYS * _DAY_S
    items: list[dict[str, Any]] = []
    for fd in spec.features:
        a = ARCHETYPES[fd.key]
        lo = start_ts - lead
        if fd.launch_days_before_end is not None:
            lo = start_ts + (spec.days - 1 - fd.launch_days_before_end) * _DAY_S
        rate = 0.05 + 0.3 * fd.share  # issues a day
        for _ in range(int(rng.poisson(rate * (end_ts - lo) / _DAY_S))):
            created = int(rng.integers(lo, end_ts - 3600))
            is_bug = rng.random() < 0.8
            sev = str(rng.choice(_SEVERITIES, p=[0.01, 0.07, 0.52, 0.40])) if is_bug else None
            # Severe bugs get fixed fast; minor ones linger, some forever.
            mean_days, p_close = {"critical": (1.5, 1.0), "high": (4, 1.0), "medium": (14, 0.85),
                                  "low": (20, 0.7), None: (30, 0.5)}[sev]  # fmt: skip
            closed = None
            if rng.random() < p_close:
                closed = created + 3600 + int(rng.exponential(mean_days * _DAY_S))
            phrase = _BUG_PHRASES[int(rng.integers(len(_BUG_PHRASES)))]
            title = f"{a.label}: {phrase}" if is_bug else f"Feature request: {a.label} {phrase}"
            labels = (["bug", f"area:{fd.key}", f"severity:{sev}"] if is_bug
                      else ["enhancement", f"area:{fd.key}"])  # fmt: skip
            items.append({"created": created, "closed": closed, "labels": labels, "title": title})
    for _ in range(int(rng.poisson(0.05 * (spec.days + BUG_LEAD_DAYS)))):
        created = int(rng.integers(start_ts - lead, end_ts - 3600))
        kind = str(rng.choice(["documentation", "chore", "dependencies"]))
        closed = created + 3600 + int(rng.exponential(10 * _DAY_S)) if rng.random() < 0.7 else None
        items.append({"created": created, "closed": closed, "labels": [kind],
                      "title": f"{kind.capitalize()}: housekeeping"})  # fmt: skip
    for b in spec.bugs:
        created = start_ts + b.day * _DAY_S + int(rng.integers(9 * 3600, 17 * 3600))
        items.append(
            {
                "created": created,
                "closed": None,
                "labels": ["bug", f"area:{b.feature}", f"severity:{b.severity}"],
                "title": b.title,
                "planted": True,
            }
        )
    items.sort(key=lambda it: (it["created"], it["title"]))

    versions: list[dict[str, Any]] = []
    for n, it in enumerate(items, start=300):
        node = f"I_kwDOEval{b62(zlib.crc32(spec.name.encode()) * 10_000 + n, 8)}"
        created, closed = it["created"], it["closed"]
        if closed is not None and closed > end_ts:
            closed = None
        # One version when opened, one per activity bump (comments), one when closed.
        stamps = [(created + int(rng.integers(0, 2 * 3600)), "open")]
        if it.get("planted"):
            stamps += [(created + k * _DAY_S + 3600, "open") for k in (1, 3)]
        elif rng.random() < 0.3:
            stamps.append((created + int(rng.exponential(3 * _DAY_S)) + 600, "open"))
        if closed is not None:
            stamps = [s for s in stamps if s[0] < closed]
            stamps.append((closed, "closed"))
        stamps = sorted({s for s in stamps if s[0] <= end_ts})
        comments = 0
        for ts, state in stamps:
            comments += 1 if ts != stamps[0][0] else 0
            versions.append(
                {
                    "url": f"https://api.github.com/repos/{_GH_REPO}/issues/{n}",
                    "repository_url": f"https://api.github.com/repos/{_GH_REPO}",
                    "html_url": f"https://github.com/{_GH_REPO}/issues/{n}",
                    "id": 2_500_000_000 + n * 7919,
                    "node_id": node,
                    "number": n,
                    "title": it["title"],
                    "user": {
                        "login": _LOGINS[n % len(_LOGINS)],
                        "id": 70_000_000 + n,
                        "type": "User",
                    },
                    "labels": [_label(x) for x in it["labels"]],
                    "state": state,
                    "locked": False,
                    "assignee": None,
                    "assignees": [],
                    "milestone": None,
                    "comments": comments + (4 if it.get("planted") else 0),
                    "created_at": _zts(created),
                    "updated_at": _zts(ts),
                    "closed_at": _zts(closed) if state == "closed" else None,
                    "author_association": "MEMBER",
                    "active_lock_reason": None,
                    "body": f"{it['title']}.\n\n### Steps to reproduce\n1. Open the page\n",
                    "reactions": {"total_count": 0, "+1": 0, "-1": 0},
                    "state_reason": "completed" if state == "closed" else None,
                }
            )
    return versions


def _write_github(out: Path, versions: list[dict[str, Any]]) -> int:
    """Issue-list pages per day: the issues changed that day, each as it was that day."""
    (out / "github").mkdir(parents=True, exist_ok=True)
    by_day = _by_update_day(versions, ("updated_at", "number"))
    n_pages = 0
    for day, items in sorted(by_day.items()):
        for p, i in enumerate(range(0, len(items), 100), start=1):
            path = out / "github" / f"issues-{day}-p{p:02d}.json"
            path.write_text(json.dumps(items[i : i + 100]) + "\n", encoding="utf-8")
            n_pages += 1
    return n_pages


# --------------------------------------------------------------------------------------------
# Catalog and entry point
# --------------------------------------------------------------------------------------------


def _catalog(spec: WorldSpec, start: date) -> dict[str, Any]:
    features = []
    for fd in spec.features:
        a = ARCHETYPES[fd.key]
        entry: dict[str, Any] = {
            "key": fd.key,
            "name": a.name,
            "owner": a.owner,
            "events": [f"{a.stem}_*"],
            "paths": [f"{a.path}*"],
            "ticket_tags": [a.tag],
            "ticket_keywords": list(a.keywords),
            "bug_labels": [f"area:{fd.key}"],
            "bug_components": [a.name],
        }
        if fd.launch_days_before_end is not None:
            launched = start + timedelta(days=spec.days - 1 - fd.launch_days_before_end)
            entry["launched_on"] = launched.isoformat()
        features.append(entry)
    return {"version": 1, "product": f"Eval world {spec.name}", "features": features}


def generate_world(
    name: str,
    out_dir: Path,
    *,
    users: int = DEFAULT_USERS,
    seed: int = DEFAULT_SEED,
    end_date: date = DEFAULT_END,
    days: int = HISTORY_DAYS,
) -> dict[str, Any]:
    """Write one world under out_dir and return its truth manifest (also truth.json)."""
    if days < 8 * 7 + REPLAY_NIGHTS + 14:
        raise ValueError(f"days must leave an 8-week baseline before the {REPLAY_NIGHTS} nights")
    spec = world_spec(name, days)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = end_date - timedelta(days=days - 1)
    pop = _Population(spec, users, seed, start)
    keys = [fd.key for fd in spec.features]
    kinds = _Kinds(keys)
    width = max(5, len(str(users)))
    user_ids = pl.Series([f"user-{i + 1:0{width}d}" for i in range(users)], dtype=pl.String)
    accounts = pl.Series([f"acct-{a + 1:05d}" for a in pop.account], dtype=pl.String)
    (out / "posthog").mkdir(parents=True, exist_ok=True)
    daily_users = np.zeros((days, len(keys)), dtype=np.int64)
    dau = np.zeros(days, dtype=np.int64)
    expected_users = np.zeros((len(keys), days))
    expected_dau = np.zeros(days)
    n_events = 0
    for day in range(days):
        rng = _rng(seed, name, _S_DAY, 1000 + day)
        lines, per_feature, n_active = _events_day(pop, kinds, rng, day, user_ids, accounts)
        daily_users[day], dau[day] = per_feature, n_active
        p = pop.p_active(day)
        expected_users[:, day] = p @ pop.q_day(day, planted=False)
        expected_dau[day] = p.sum()
        d = (start + timedelta(days=day)).isoformat()
        pl.DataFrame({"line": lines}).write_csv(
            out / "posthog" / f"events-{d}.jsonl", include_header=False, quote_style="never"
        )
        n_events += len(lines)
    versions, ticket_stats, tickets_per_day = _tickets(
        spec, pop, seed, expected_users, expected_dau
    )
    z_pages = _write_zendesk(out, versions)
    issues = _issues(spec, pop, seed)
    g_pages = _write_github(out, issues)
    catalog = _catalog(spec, start)
    (out / "features.yaml").write_text(
        "# Feature catalog of the evaluation world " + name + "\n"
        + yaml.safe_dump(catalog, sort_keys=False), encoding="utf-8"
    )  # fmt: skip
    truth = _truth(spec, seed, users, start, end_date, daily_users, dau, tickets_per_day)
    truth["rows"] = {
        "posthog_events": n_events,
        "posthog_files": days,
        "zendesk_pages": z_pages,
        "github_pages": g_pages,
        "github_issue_versions": len(issues),
        "github_issues": len({v["node_id"] for v in issues}),
        **ticket_stats,
    }
    (out / "truth.json").write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
    return truth


def _truth(
    spec: WorldSpec, seed: int, users: int, start: date, end: date,
    daily_users: np.ndarray, dau: np.ndarray, tickets_per_day: np.ndarray,
) -> dict[str, Any]:  # fmt: skip
    days = spec.days
    replay_start = days - REPLAY_NIGHTS
    keys = [fd.key for fd in spec.features]

    def mean_users(j: int, lo: int, hi: int) -> float:
        return round(float(daily_users[max(lo, 0) : hi, j].mean()), 1)

    base_lo, base_hi = replay_start - 28, replay_start
    features = []
    for j, fd in enumerate(spec.features):
        launched = None
        if fd.launch_days_before_end is not None:
            launched = (start + timedelta(days=days - 1 - fd.launch_days_before_end)).isoformat()
        features.append(
            {
                "key": fd.key,
                "name": ARCHETYPES[fd.key].name,
                "target_share": fd.share,
                "daily_users_before_replay": mean_users(j, base_lo, base_hi),
                "share_of_daily_actives_before_replay": round(
                    float(daily_users[base_lo:base_hi, j].sum() / dau[base_lo:base_hi].sum()), 4
                ),
                "tickets_per_day_before_replay": round(
                    float(tickets_per_day[base_lo:base_hi, j].mean()), 2
                ),
                "launched_on": launched,
            }
        )
    problems = []
    for p in spec.problems:
        j = keys.index(p.feature_key)
        ref = p.onset_day if p.onset_day >= 28 else replay_start
        onset_date = start + timedelta(days=p.onset_day)
        row = {
            "feature_key": p.feature_key,
            "family": p.family,
            "expected_kind": p.expected_kind,
            "onset": onset_date.isoformat(),
            "relative_drop": p.relative_drop,
            "baseline_daily_users": mean_users(j, ref - 28, ref),
            "description": p.description,
        }
        if p.relative_drop is not None and p.onset_day < days:
            after = daily_users[max(p.onset_day, days - 7) :, j].mean()
            before = daily_users[ref - 28 : ref, j].mean()
            row["realised_drop_last_days"] = round(float(1 - after / max(before, 1e-9)), 3)
        problems.append(row)
    return {
        "generator": "feedback-loop evaluation worlds",
        "generator_version": GENERATOR_VERSION,
        "world": spec.name,
        "challenge": spec.challenge,
        "expected": spec.expected,
        "silent": spec.silent,
        "seed": seed,
        "users": users,
        "start_date": start.isoformat(),
        "end_date": end.isoformat(),
        "replay_start": (start + timedelta(days=replay_start)).isoformat(),
        "replay_nights": REPLAY_NIGHTS,
        "history_days": days,
        "daily_active_users_before_replay": round(float(dau[base_lo:base_hi].mean()), 1),
        "problems": problems,
        "features": features,
        "planted_bugs": [
            {
                "feature_key": b.feature,
                "severity": b.severity,
                "title": b.title,
                "created_on": (start + timedelta(days=b.day)).isoformat(),
            }
            for b in spec.bugs
        ],  # fmt: skip
        "daily_users": {k: daily_users[:, j].tolist() for j, k in enumerate(keys)},
        "daily_active_users": dau.tolist(),
        "tickets_created_per_day": {
            k: tickets_per_day[:, j].astype(int).tolist()
            for j, k in enumerate([*keys, "__unmapped__"])
        },
    }


def file_day(path: Path) -> date | None:
    """The day a world file belongs to (events of, or changes made on, that day)."""
    parts = path.stem.split("-")
    try:
        return date(int(parts[1]), int(parts[2]), int(parts[3]))
    except (IndexError, ValueError):
        return None


def pipeline_catalog(src: Path, dest: Path) -> list[str]:
    """Put the world's catalog where the pipeline reads it (the pipeline validates it: an
    unknown key is an error there, not something to drop silently). Returns notes (none)."""
    shutil.copyfile(src, dest)
    return []
