"""Deterministic demo data in vendor formats: PostHog events, Zendesk tickets, GitHub issues,
plus an accounts file (ARR, plan, segment per account_key)."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 1
ROLES = {"regressing": "exports", "popular_healthy": "dashboards", "weak_adoption": "ai_assistant"}
REGRESSION_DAYS = 14  # the regression covers the last 14 days of the window, end_date included

FEATURES = (
    "dashboards",
    "exports",
    "alerts",
    "sharing",
    "search",
    "integrations",
    "billing",
    "ai_assistant",
)
_F = {key: i for i, key in enumerate(FEATURES)}
_GENERIC = len(FEATURES)  # pseudo-feature index for unmapped events

# Independent random streams, so changing one source's logic leaves the others' bytes unchanged.
_S_USERS, _S_DAYS, _S_POSTHOG, _S_ZENDESK, _S_GITHUB = 1, 2, 3, 4, 5
_S_ACCOUNTS = 6

_ZENDESK_HOST = "https://acme-demo.zendesk.com"
_GH_REPO = "acme/analytics"
_DAY_S = 86_400
_DAY_MS = 86_400_000


@dataclass
class DemoConfig:
    """Parameters of one demo data set; equal parameters give byte-identical files."""

    out_dir: Path
    end_date: date
    days: int = 90
    users: int = 5000
    accounts: int = 500
    events: int | None = None
    seed: int = 42


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *stream]))


# --------------------------------------------------------------------------------------------
# PostHog: usage model
# --------------------------------------------------------------------------------------------

# Kind = (event name, $pathname prefix, id appended to path, extra property variants).
# Extra variants are JSON fragments appended inside "properties"; weights sum to 1.
_Kind = tuple[str, str, bool, tuple[tuple[str, float], ...]]
_FMT = ((',"format":"csv"', 0.7), (',"format":"xlsx"', 0.2), (',"format":"parquet"', 0.1))
_FAIL = (
    (',"format":"csv","error":"timeout"', 0.5),
    (',"format":"csv","error":"row_limit_exceeded"', 0.3),
    (',"format":"xlsx","error":"internal_error"', 0.2),
)
_NONE: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class _Usage:
    adopt: float  # share of users who use the feature at all
    use: float  # chance that an adopter uses it on a day they are active
    per_use: float  # mean events per use (first one is the page view)
    first: tuple[tuple[_Kind, float], ...]
    rest: tuple[tuple[_Kind, float], ...]
    rest_regressed: tuple[tuple[_Kind, float], ...] | None = None


# fmt: off
_USAGE: dict[str, _Usage] = {
    "dashboards": _Usage(
        0.85, 0.62, 7.0,
        first=((("$pageview", "/dashboards/", True, _NONE), 1.0),),
        rest=(
            (("dashboard_viewed", "/dashboards/", True, _NONE), 0.86),
            (("dashboard_created", "/dashboards/new", False, _NONE), 0.14),
        ),
    ),
    "exports": _Usage(
        0.48, 0.36, 3.2,
        first=(
            (("$pageview", "/exports/new", False, _NONE), 0.7),
            (("$pageview", "/exports", False, _NONE), 0.3),
        ),
        rest=(
            (("export_started", "/exports/new", False, _FMT), 0.50),
            (("export_completed", "/exports/", True, _FMT), 0.47),
            (("export_failed", "/exports/", True, _FAIL), 0.03),
        ),
        # The regression: a third of the exports that still run now fail.
        rest_regressed=(
            (("export_started", "/exports/new", False, _FMT), 0.52),
            (("export_completed", "/exports/", True, _FMT), 0.30),
            (("export_failed", "/exports/", True, _FAIL), 0.18),
        ),
    ),
    "alerts": _Usage(
        0.38, 0.30, 3.0,
        first=((("$pageview", "/alerts", False, _NONE), 1.0),),
        rest=(
            (("alert_created", "/alerts/new", False, _NONE), 0.3),
            (("alert_triggered", "/alerts/", True,
              ((',"channel":"email"', 0.6), (',"channel":"slack"', 0.4))), 0.7),
        ),
    ),
    "sharing": _Usage(
        0.40, 0.22, 2.5,
        first=(
            (("$pageview", "/share/", True, _NONE), 0.6),
            (("$pageview", "/team/invite", False, _NONE), 0.4),
        ),
        rest=(
            (("share_link_created", "/share/", True, _NONE), 0.6),
            (("invite_sent", "/team/invite", False, _NONE), 0.4),
        ),
    ),
    "search": _Usage(
        0.55, 0.35, 4.0,
        first=((("$pageview", "/search", False, _NONE), 1.0),),
        rest=(
            (("search_performed", "/search", False, (
                (',"results_count":0', 0.15), (',"results_count":4', 0.35),
                (',"results_count":12', 0.3), (',"results_count":50', 0.2),
            )), 0.6),
            (("search_result_clicked", "/search", False, _NONE), 0.4),
        ),
    ),
    "integrations": _Usage(
        0.30, 0.30, 3.0,
        first=(
            (("$pageview", "/integrations/slack", False, _NONE), 0.5),
            (("$pageview", "/integrations/salesforce", False, _NONE), 0.3),
            (("$pageview", "/integrations", False, _NONE), 0.2),
        ),
        rest=(
            (("integration_connected", "/integrations/slack", False,
              ((',"provider":"slack"', 1.0),)), 0.06),
            (("integration_connected", "/integrations/salesforce", False,
              ((',"provider":"salesforce"', 1.0),)), 0.04),
            (("sync_completed", "/integrations/slack", False,
              ((',"provider":"slack"', 1.0),)), 0.5),
            (("sync_completed", "/integrations/salesforce", False,
              ((',"provider":"salesforce"', 1.0),)), 0.4),
        ),
    ),
    "billing": _Usage(
        0.42, 0.14, 2.0,
        first=((("$pageview", "/billing", False, _NONE), 1.0),),
        rest=(
            (("plan_viewed", "/billing/plans", False, (
                (',"plan":"starter"', 0.3), (',"plan":"pro"', 0.5), (',"plan":"enterprise"', 0.2),
            )), 0.6),
            (("invoice_downloaded", "/billing/invoices", False, _NONE), 0.4),
        ),
    ),
    # Weak adoption: a minority ever tries it and few come back (low per-day use).
    "ai_assistant": _Usage(
        0.30, 0.045, 2.0,
        first=((("$pageview", "/assistant", False, _NONE), 1.0),),
        rest=(
            (("assistant_prompt_sent", "/assistant", False, _NONE), 0.7),
            (("assistant_answer_rated", "/assistant", False,
              ((',"rating":"up"', 0.35), (',"rating":"down"', 0.65))), 0.3),
        ),
    ),
}
_REGRESSED_USERS = 0.53  # share of exports adopters who give up during the regression
_REGRESSED_USE = 0.12  # their remaining use, relative to normal
_UNAFFECTED_USE = 0.95

# Unmapped events: no catalog glob matches the name and the path is outside every feature.
_GENERIC_KINDS: tuple[tuple[_Kind, float], ...] = (
    (("$pageview", "/home", False, _NONE), 0.36),
    (("$pageview", "/settings", False, _NONE), 0.10),
    (("$pageview", "/login", False, _NONE), 0.06),
    (("$autocapture", "/home", False, (
        (',"$event_type":"click"', 0.8), (',"$event_type":"submit"', 0.2),
    )), 0.26),
    (("user_logged_in", "/login", False, _NONE), 0.22),
)
_GENERIC_MEAN = 0.9  # unmapped events per active user-day at scale 1
_BASE_ACTIVE = 0.34  # daily chance a median-ish user is active on a weekday
_WEEKDAY = np.array([1.0, 1.02, 1.03, 1.0, 0.93, 0.42, 0.36])  # Monday first
# UTC hour-of-day weights for session starts (EU afternoon + US morning peak).
_HOURS = np.array([
    1, 1, 1, 1, 1, 2, 3, 5, 7, 9, 10, 10, 10, 11, 12, 12, 11, 10, 8, 6, 4, 3, 2, 1,
], dtype=float)
_HOURS /= _HOURS.sum()

_BROWSERS = (("Chrome", 0.62), ("Safari", 0.18), ("Firefox", 0.10), ("Microsoft Edge", 0.10))
_OSES = (
    ("Mac OS X", "Desktop", 0.44), ("Windows", "Desktop", 0.40), ("Linux", "Desktop", 0.08),
    ("iOS", "Mobile", 0.05), ("Android", "Mobile", 0.03),
)
# fmt: on


class _KindTable:
    """Flattened event kinds with per-feature sampling tables."""

    def __init__(self) -> None:
        self.kinds: list[_Kind] = []
        self.extras: list[str] = [""]
        self.extra_start: list[int] = []
        self.extra_cum: list[np.ndarray] = []
        self.first: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.rest: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.rest_regressed: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for key, usage in _USAGE.items():
            f = _F[key]
            self.first[f] = self._table(usage.first)
            self.rest[f] = self._table(usage.rest)
            self.rest_regressed[f] = self._table(usage.rest_regressed or usage.rest)
        self.rest[_GENERIC] = self.rest_regressed[_GENERIC] = self._table(_GENERIC_KINDS)
        self.event = pl.Series([k[0] for k in self.kinds], dtype=pl.String)
        self.prefix = pl.Series([k[1] for k in self.kinds], dtype=pl.String)
        self.has_id = np.array([k[2] for k in self.kinds], dtype=bool)
        self.extra = pl.Series(self.extras, dtype=pl.String)

    def _index(self, kind: _Kind) -> int:
        if kind in self.kinds:
            return self.kinds.index(kind)
        self.kinds.append(kind)
        self.extra_start.append(len(self.extras))
        self.extras.extend(frag for frag, _ in kind[3])
        self.extra_cum.append(np.cumsum([w for _, w in kind[3]]))
        return len(self.kinds) - 1

    def _table(self, items: tuple[tuple[_Kind, float], ...]) -> tuple[np.ndarray, np.ndarray]:
        idx = np.array([self._index(k) for k, _ in items], dtype=np.int64)
        cum = np.cumsum([w for _, w in items])
        return idx, cum / cum[-1]


def _pick(table: tuple[np.ndarray, np.ndarray], u: np.ndarray) -> np.ndarray:
    idx, cum = table
    return idx[np.minimum(np.searchsorted(cum, u, side="right"), len(idx) - 1)]


def _uuid4(rng: np.random.Generator, n: int) -> pl.Series:
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80
    nib = np.empty((n, 32), dtype=np.uint8)
    nib[:, 0::2] = raw >> 4
    nib[:, 1::2] = raw & 0x0F
    out = np.empty((n, 36), dtype=np.uint8)
    out[:, [8, 13, 18, 23]] = ord("-")
    out[:, _UUID_POS] = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)[nib]
    return pl.Series("uuid", out.view("S36").ravel()).cast(pl.String)


_UUID_POS = [i for i in range(36) if i not in (8, 13, 18, 23)]


class _Population:
    """Static users and accounts, plus the per-day usage probabilities derived from them."""

    def __init__(self, cfg: DemoConfig, n_users: int, n_accounts: int) -> None:
        rng = _rng(cfg.seed, _S_USERS)
        self.n_users, self.n_accounts, self.days = n_users, n_accounts, cfg.days
        self.start = cfg.end_date - timedelta(days=cfg.days - 1)
        self.reg_start = cfg.days - REGRESSION_DAYS
        acct_weight = rng.lognormal(0.0, 1.0, n_accounts)
        self.account = rng.choice(n_accounts, size=n_users, p=acct_weight / acct_weight.sum())
        acct_mult = rng.lognormal(-0.02, 0.2, n_accounts)
        activity = rng.lognormal(-0.5 * 0.9**2, 0.9, n_users)
        self.p_base = _BASE_ACTIVE * activity * acct_mult[self.account]
        late = rng.random(n_users) < 0.10
        self.signup = np.where(late, rng.integers(1, max(cfg.days, 2), n_users), 0)
        leaves = rng.random(n_users) < 0.07
        self.churn = np.where(
            leaves,
            np.maximum(rng.integers(1, max(cfg.days, 2), n_users), self.signup + 7),
            cfg.days,
        )
        n_f = len(FEATURES)
        adopt = rng.random((n_users, n_f)) < np.array([_USAGE[f].adopt for f in FEATURES])
        intensity = rng.lognormal(-0.5 * 0.5**2, 0.5, (n_users, n_f))
        use = np.array([_USAGE[f].use for f in FEATURES])
        self.q = np.where(adopt, np.minimum(use * intensity, 0.95), 0.0)
        # An exact share (not a coin flip per user) keeps the planted drop steady at small sizes.
        exporters = np.flatnonzero(adopt[:, _F["exports"]])
        self.regressed = np.zeros(n_users, dtype=bool)
        chosen = rng.permutation(exporters)[: round(len(exporters) * _REGRESSED_USERS)]
        self.regressed[chosen] = True
        self.q_reg = self.q.copy()
        self.q_reg[:, _F["exports"]] *= np.where(self.regressed, _REGRESSED_USE, _UNAFFECTED_USE)
        browser = rng.choice(len(_BROWSERS), n_users, p=[w for _, w in _BROWSERS])
        os_ = rng.choice(len(_OSES), n_users, p=[w for *_, w in _OSES])
        # Safari only ships on Apple systems
        browser = np.where((browser == 1) & ~np.isin(os_, [0, 3]), 0, browser)
        day_rng = _rng(cfg.seed, _S_DAYS)
        self.day_mult = np.clip(day_rng.normal(1.0, 0.04, cfg.days), 0.85, 1.15)
        self.weekday = np.array(
            [_WEEKDAY[(self.start + timedelta(days=i)).weekday()] for i in range(cfg.days)]
        )
        width_u = max(5, len(str(n_users)))
        self.width_a = max(4, len(str(n_accounts)))
        self.user_ids = pl.Series(
            [f"user-{i + 1:0{width_u}d}" for i in range(n_users)], dtype=pl.String
        )
        self.frag = pl.DataFrame(
            {
                "b": pl.Series([b for b, _ in _BROWSERS]).gather(browser),
                "o": pl.Series([o for o, *_ in _OSES]).gather(os_),
                "d": pl.Series([d for _, d, _ in _OSES]).gather(os_),
                "a": pl.Series(self.account + 1).cast(pl.String).str.zfill(self.width_a),
            }
        ).select(
            pl.concat_str(
                [
                    pl.lit('"$browser":"'),
                    pl.col("b"),
                    pl.lit('","$os":"'),
                    pl.col("o"),
                    pl.lit('","$device_type":"'),
                    pl.col("d"),
                    pl.lit('","$lib":"web","$groups":{"company":"acct-'),
                    pl.col("a"),
                    pl.lit('"}'),
                ]
            )
        )[:, 0]

    def extend(self, seed: int, n_days: int) -> None:
        """Let the day arrays run to day n_days - 1, past the window (appended days): the new
        days' noise comes from per-day streams, and users still there at the window's end stay."""
        if n_days <= len(self.day_mult):
            return
        new = range(len(self.day_mult), n_days)
        mult = [float(np.clip(_rng(seed, _S_DAYS, d).normal(1.0, 0.04), 0.85, 1.15)) for d in new]
        wd = [_WEEKDAY[(self.start + timedelta(days=d)).weekday()] for d in new]
        self.day_mult = np.concatenate([self.day_mult, mult])
        self.weekday = np.concatenate([self.weekday, wd])
        self.churn = np.where(self.churn >= self.days, n_days, self.churn)

    def account_key(self, acct: int) -> str:
        return f"acct-{acct + 1:0{self.width_a}d}"

    def p_active(self, day: int, r: float = 1.0) -> np.ndarray:
        alive = (self.signup <= day) & (day < self.churn)
        p = np.minimum(self.p_base * (self.weekday[day] * self.day_mult[day] * r), 0.95)
        return np.where(alive, p, 0.0)

    def q_day(self, day: int) -> np.ndarray:
        return self.q_reg if day >= self.reg_start else self.q


def _calibrate(pop: _Population, target: int | None) -> tuple[float, float]:
    """Return (s, r): extra-events scale and activity scale that hit the target event count."""
    if target is None:
        return 1.0, 1.0
    m1 = np.array([_USAGE[f].per_use - 1.0 for f in FEATURES])
    uses_base, uses_reg = pop.q.sum(axis=1), pop.q_reg.sum(axis=1)
    extra_base, extra_reg = pop.q @ m1 + _GENERIC_MEAN, pop.q_reg @ m1 + _GENERIC_MEAN

    def expected(r: float) -> tuple[float, float]:
        a = b = 0.0
        for d in range(pop.days):
            p = pop.p_active(d, r)
            reg = d >= pop.reg_start
            a += float(p @ (uses_reg if reg else uses_base))
            b += float(p @ (extra_reg if reg else extra_base))
        return a, b

    a, b = expected(1.0)
    if target >= a:
        return (target - a) / b, 1.0
    lo, hi = 0.0, 1.0  # even one event per use is too many: thin out activity instead
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if expected(mid)[0] < target else (lo, mid)
    return 0.0, (lo + hi) / 2


def _posthog_day(
    pop: _Population, kinds: _KindTable, seed: int, day: int, s: float, r: float
) -> pl.Series:
    """All events of one day as JSON lines, ordered by timestamp."""
    rng = _rng(seed, _S_POSTHOG, day)
    active = np.flatnonzero(rng.random(pop.n_users) < pop.p_active(day, r))
    n_a = len(active)
    use = rng.random((n_a, len(FEATURES))) < pop.q_day(day)[active]
    ua, fa = np.nonzero(use)
    extra = np.array([(_USAGE[f].per_use - 1.0) * s for f in FEATURES])
    g_user = np.concatenate([active[ua], active])
    g_feat = np.concatenate([fa, np.full(n_a, _GENERIC)])
    g_n = np.concatenate([1 + rng.poisson(extra[fa]), rng.poisson(_GENERIC_MEAN * s, n_a)])
    n_groups = len(g_n)
    sess = np.zeros(pop.n_users, dtype=np.int64)
    hour = rng.choice(24, n_a, p=_HOURS)
    sess[active] = hour * 3_600_000 + rng.integers(0, 3_600_000, n_a)
    g_off = np.where(g_feat == _GENERIC, 0, rng.integers(0, 45 * 60_000, n_groups))

    ev_group = np.repeat(np.arange(n_groups), g_n)
    n = len(ev_group)
    starts = np.cumsum(g_n) - g_n
    pos = np.arange(n) - starts[ev_group]
    feat = g_feat[ev_group]
    user = g_user[ev_group]
    gaps = rng.exponential(30_000.0, n)
    cs = np.cumsum(gaps)
    # cumulative gaps restarted per group: each use starts at its offset, events follow in order
    in_use = cs - cs[np.minimum(starts, max(n - 1, 0))][ev_group] if n else cs
    ms = np.minimum(sess[user] + g_off[ev_group] + in_use.astype(np.int64), _DAY_MS - 1)

    u = rng.random(n)
    kind = np.empty(n, dtype=np.int64)
    rest = kinds.rest_regressed if day >= pop.reg_start else kinds.rest
    for f in range(len(FEATURES) + 1):
        m = feat == f
        if f == _GENERIC:
            kind[m] = _pick(rest[f], u[m])
            continue
        m_first = m & (pos == 0)
        m_rest = m & (pos > 0)
        kind[m_first] = _pick(kinds.first[f], u[m_first])
        kind[m_rest] = _pick(rest[f], u[m_rest])

    order = np.argsort(ms, kind="stable")
    ms, kind, user = ms[order], kind[order], user[order]
    extra_idx = np.zeros(n, dtype=np.int64)
    u2 = rng.random(n)
    for k, cum in enumerate(kinds.extra_cum):
        if len(cum):
            m = kind == k
            pick = np.minimum(np.searchsorted(cum, u2[m], side="right"), len(cum) - 1)
            extra_idx[m] = kinds.extra_start[k] + pick
    path_id = rng.integers(1, 10_000, n)
    day_ms = int(datetime.combine(pop.start, datetime.min.time(), UTC).timestamp()) * 1000
    day_ms += day * _DAY_MS
    df = pl.DataFrame(
        {
            "uuid": _uuid4(rng, n),
            "event": kinds.event.gather(kind),
            "did": pop.user_ids.gather(user),
            "ts": pl.Series(ms + day_ms)
            .cast(pl.Datetime("ms"))
            .dt.strftime("%Y-%m-%dT%H:%M:%S%.6f+00:00"),
            "prefix": kinds.prefix.gather(kind),
            "has_id": kinds.has_id[kind],
            "pid": path_id,
            "frag": pop.frag.gather(user),
            "extra": kinds.extra.gather(extra_idx),
        }
    )
    path = (
        pl.when(pl.col("has_id"))
        .then(pl.concat_str([pl.col("prefix"), pl.col("pid").cast(pl.String)]))
        .otherwise(pl.col("prefix"))
    )
    # Values come from fixed vocabularies (no quotes/backslashes), so plain concatenation is
    # valid JSON and several times faster than a struct-to-JSON writer.
    return df.select(
        pl.concat_str(
            [
                pl.lit('{"uuid":"'),
                pl.col("uuid"),
                pl.lit('","event":"'),
                pl.col("event"),
                pl.lit('","distinct_id":"'),
                pl.col("did"),
                pl.lit('","timestamp":"'),
                pl.col("ts"),
                pl.lit('","properties":{"$pathname":"'),
                path,
                pl.lit('",'),
                pl.col("frag"),
                pl.col("extra"),
                pl.lit("}}"),
            ]
        ).alias("line")
    )["line"]


def _plant_posthog(lines: list[str], rel: str) -> tuple[list[str], list[dict[str, Any]]]:
    """Corrupt four lines and add one duplicate; returns the new lines and their manifest rows."""
    k = max(1, len(lines) // 10)
    i_bad, i_noid, i_type, i_dup = k, 2 * k, 3 * k, 4 * k
    out = list(lines)
    bad_uuid = json.loads(out[i_bad])["uuid"]
    # Cut well past the uuid so the broken line is still traceable to its event.
    out[i_bad] = out[i_bad][: max(60, int(len(out[i_bad]) * 0.6))]
    obj = json.loads(out[i_noid])
    del obj["uuid"]
    out[i_noid] = json.dumps(obj, separators=(",", ":"))
    obj = json.loads(out[i_type])
    obj["timestamp"] = 1234
    out[i_type] = json.dumps(obj, separators=(",", ":"))
    out.insert(5 * k, out[i_dup])
    dup_uuid = json.loads(out[i_dup])["uuid"]
    rows = [
        {"line": i_bad + 1, "kind": "invalid_json", "record_id": bad_uuid, "field": None},
        {"line": i_noid + 1, "kind": "missing_id", "record_id": None, "field": "uuid"},
        {
            "line": i_type + 1,
            "kind": "wrong_type",
            "record_id": json.loads(out[i_type])["uuid"],
            "field": "timestamp",
        },
        {
            "line": 5 * k + 1,
            "kind": "duplicate",
            "record_id": dup_uuid,
            "field": "uuid",
            "duplicate_of_line": i_dup + 1,
        },
    ]
    return out, [{"source": "posthog", "file": rel, **row} for row in rows]


# --------------------------------------------------------------------------------------------
# Zendesk
# --------------------------------------------------------------------------------------------

# Daily ticket rates at the default size. Dashboards: most tickets overall, steady.
_TICKET_RATE = {
    "dashboards": 5.0,
    "exports": 1.3,
    "alerts": 1.6,
    "sharing": 1.3,
    "search": 1.4,
    "integrations": 1.8,
    "billing": 1.7,
    "ai_assistant": 0.25,
    None: 1.75,
}
_TICKET_SPIKE = 5.0  # exports ticket rate multiplier during the regression
_TAGS = {
    "dashboards": (["dashboards"],),
    "exports": (["exports"], ["csv"], ["exports", "csv"]),
    "alerts": (["alerts"], ["notifications"], ["alerts", "notifications"]),
    "sharing": (["sharing"], ["invites"]),
    "search": (["search"],),
    "integrations": (["integrations"], ["integrations", "slack"], ["salesforce"]),
    "billing": (["billing"], ["billing", "invoices"]),
    "ai_assistant": (["ai-assistant"],),
    None: (["login"], ["sso"], ["account"], ["2fa", "login"], []),
}
_EXTRA_TAGS = ("enterprise", "pro_plan", "starter_plan", "vip", "first_reply_sla", "eu_region")
# Subjects contain only their own feature's catalog keywords (substring-safe), so an untagged
# ticket maps by keyword to the intended feature and an unmapped one matches nothing.
_SUBJECTS: dict[str | None, tuple[str, ...]] = {
    "dashboards": (
        "Dashboard loads slowly with many tiles",
        "Chart colors reset after refresh",
        "Widget shows wrong totals",
        "Cannot resize a widget on the dashboard",
        "Dashboard filters are not applied",
        "Line chart missing last week",
        "How do I duplicate a dashboard?",
        "Pie chart labels overlap",
    ),
    "exports": (
        "CSV export stuck at 0%",
        "Export fails with a timeout error",
        "CSV download is empty",
        "Scheduled export did not arrive",
        "Export to Excel cuts off rows",
        "Export button greyed out",
    ),
    "alerts": (
        "Alert fired twice for the same threshold",
        "Not receiving alert emails",
        "Notification settings keep resetting",
        "How to mute an alert for the weekend?",
        "Alert threshold ignores decimals",
        "Too many notification emails",
    ),
    "sharing": (
        "Share link asks for login",
        "Invite email never arrived",
        "Cannot change permission for a teammate",
        "Invite link expired",
        "Can we share with external guests?",
        "Permission denied on a team folder",
    ),
    "search": (
        "Search returns no results for exact names",
        "Search is slow",
        "Search misses recent items",
        "How to search by owner?",
        "Search ignores quotes",
    ),
    "integrations": (
        "Slack integration disconnected",
        "Salesforce sync missing fields",
        "Sync stuck for two days",
        "Integration token expired",
        "Slack messages arrive late",
        "Salesforce integration shows 403",
    ),
    "billing": (
        "Invoice shows wrong VAT number",
        "Refund for duplicate charge",
        "Billing address update",
        "Unexpected charge this month",
        "Need a copy of last invoice",
        "Question about billing cycle",
    ),
    "ai_assistant": (
        "Assistant gives wrong numbers",
        "AI answer ignores my filters",
        "Assistant not available on our plan",
        "Assistant is very slow to respond",
    ),
    None: (
        "Cannot log in",
        "SSO question",
        "Password reset link not working",
        "Two-factor code not accepted",
        "Please delete my account data",
        "Change account owner",
        "Locked out after SSO migration",
        "Question about data retention",
        "API rate limit question",
        "Feature request: dark mode",
    ),
}
_SPIKE_SUBJECTS = (
    "Export failing since the last release",
    "CSV export times out for large tables",
    "Export returns a 500 error",
    "Every export fails now",
    "CSV download corrupted",
    "Export stuck in queued state",
)
_PROBLEMS: dict[str | None, tuple[str, ...]] = {
    "dashboards": (
        "Our main revenue dashboard takes almost a minute to load since we added more tiles.",
        "One of the widgets shows totals that do not match the underlying report.",
        "The chart colors go back to the default palette every time the page is refreshed.",
    ),
    "exports": (
        "The CSV export of our orders table never finishes; the progress bar stays at 0%.",
        "Our scheduled weekly export did not arrive this Monday.",
        "Exported files are missing the last few hundred rows.",
    ),
    "alerts": (
        "We got the same alert twice within a minute for a single threshold breach.",
        "Alert emails stopped arriving for our on-call channel.",
    ),
    "sharing": (
        "Colleagues who open a shared link are asked to log in again.",
        "The invite email never reached our new analyst.",
    ),
    "search": (
        "Searching for an exact report name returns nothing although the report exists.",
        "Search takes several seconds to return results.",
    ),
    "integrations": (
        "The Slack connection dropped overnight and reports are no longer posted.",
        "Salesforce sync stopped importing custom fields.",
    ),
    "billing": (
        "This month's invoice lists the wrong VAT number for our company.",
        "We were charged twice for the annual plan and need a refund.",
    ),
    "ai_assistant": (
        "The assistant answered with numbers that do not match our dashboards.",
        "The assistant ignores the filters I mention in my question.",
    ),
    None: (
        "I cannot log in since this morning, the page just reloads.",
        "We are moving to Okta and have questions about the SSO setup.",
        "The password reset link says it has expired immediately.",
    ),
}
_SPIKE_PROBLEMS = (
    "Since the last release every CSV export of our larger tables fails after a few minutes "
    "with 'Export failed: timeout'. Smaller exports still work.",
    "Exports that worked for months now fail with an internal error. Our finance team depends "
    "on the daily CSV file.",
    "The export job stays queued and then fails. We retried five times today.",
)
_FIRST = (
    "Jane",
    "John",
    "Maria",
    "Ahmed",
    "Wei",
    "Priya",
    "Lucas",
    "Sofia",
    "Noah",
    "Emma",
    "Liam",
    "Olivia",
    "Mateo",
    "Aisha",
    "Kenji",
    "Chloe",
    "Daniel",
    "Fatima",
    "Oliver",
    "Hannah",
)
_LAST = (
    "Cooper",
    "Smith",
    "Garcia",
    "Khan",
    "Chen",
    "Patel",
    "Silva",
    "Rossi",
    "Johnson",
    "Nguyen",
    "Kowalski",
    "Okafor",
    "Tanaka",
    "Dubois",
    "Andersen",
    "Novak",
    "Haddad",
    "Murphy",
    "Schmidt",
    "Larsen",
)
_COMPANY_A = (
    "Northwind",
    "Bluebird",
    "Redwood",
    "Silverline",
    "Greenfield",
    "Brightpath",
    "Ironbridge",
    "Clearwater",
    "Summit",
    "Harbor",
)
_COMPANY_B = (
    "Logistics",
    "Health",
    "Retail",
    "Capital",
    "Foods",
    "Media",
    "Energy",
    "Labs",
    "Travel",
    "Insurance",
)
_REQUESTER_BASE = 9_100_000_000  # requester_id = base + user number (user-00042 -> ...042)


def _sideloaded_users(page: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Zendesk's `include=users` side-load for the requesters on one export page."""
    ids = sorted({v["requester_id"] for v in page if isinstance(v.get("requester_id"), int)})
    users = []
    for rid in ids:
        user = rid - _REQUESTER_BASE - 1
        first = _FIRST[(user * 7 + 3) % len(_FIRST)]
        last = _LAST[(user * 13 + 5) % len(_LAST)]
        users.append(
            {
                "id": rid,
                "name": f"{first} {last}",
                "email": f"{first.lower()}.{last.lower()}@example.com",
                "role": "end-user",
            }
        )
    return users


_ORG_BASE = 9_200_000_000  # organization_id = base + account number (acct-0007 -> ...007)
_AGENTS = (9_000_000_101, 9_000_000_102, 9_000_000_103, 9_000_000_104)
_GROUPS = (9_000_000_201, 9_000_000_202)


def _zts(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _phone(rng: np.random.Generator) -> str:
    form = int(rng.integers(0, 3))
    area = int(rng.choice([212, 312, 415, 617, 646, 720]))
    tail = int(rng.integers(100, 200))
    if form == 0:
        return f"+1 {area} 555 0{tail}"
    if form == 1:
        return f"({area}) 555-0{tail}"
    return f"+44 20 7946 0{int(rng.integers(100, 1000))}"


def _description(
    rng: np.random.Generator,
    feature: str | None,
    spike: bool,
    first: str,
    last: str,
    company: str,
) -> str:
    problems = _SPIKE_PROBLEMS if spike else _PROBLEMS[feature]
    parts = []
    named = rng.random() < 0.7
    parts.append(f"Hi, this is {first} {last} from {company}." if named else "Hello team,")
    parts.append(problems[int(rng.integers(len(problems)))])
    card = rng.random() < (0.12 if feature == "billing" else 0.01)
    if card:
        parts.append("We tried updating the card 4111 1111 1111 1111 but the form rejected it.")
    email = f"{first.lower()}.{last.lower()}@example.com"
    contact = rng.random()
    if contact < 0.35:
        parts.append(f"You can reach me at {email}.")
    elif contact < 0.55:
        parts.append(f"Please call me on {_phone(rng)} if that is easier.")
    elif contact < 0.7:
        parts.append(f"Reach me at {email} or {_phone(rng)}.")
    parts.append(f"Thanks,\n{first}" if named else "Thanks")
    return "\n\n".join(parts)


def _cursor(ts: int, ticket_id: int) -> str:
    return base64.urlsafe_b64encode(f"{ts}.{ticket_id}".encode()).decode().rstrip("=")


_TICKET_HOURS = np.array(
    [0.2, 0.2, 0.2, 0.2, 0.3, 0.5, 1, 2, 4, 6, 7, 7, 7, 8, 9, 9, 8, 7, 5, 3, 2, 1, 0.5, 0.3]
)
_TICKET_HOURS /= _TICKET_HOURS.sum()  # UTC hour-of-day weights of ticket creation


def _ticket_candidates(pop: _Population) -> dict[str | None, tuple[np.ndarray, np.ndarray]]:
    """Per ticket topic (feature, None = unmapped, "spike" = the regression): the users who may
    file it and their cumulative weights (active users write more tickets)."""
    weights = pop.p_base
    candidates: dict[str | None, tuple[np.ndarray, np.ndarray]] = {}
    for key in (*FEATURES, None, "spike"):
        if key is None:
            mask = np.ones(pop.n_users, dtype=bool)
        elif key == "spike":
            mask = pop.regressed
        else:
            mask = pop.q[:, _F[key]] > 0
        if not mask.any():
            mask = np.ones(pop.n_users, dtype=bool)
        idx = np.flatnonzero(mask)
        candidates[key] = (idx, np.cumsum(weights[idx]))
    return candidates


def _ticket_chain(
    rng: np.random.Generator,
    pop: _Population,
    candidates: dict[str | None, tuple[np.ndarray, np.ndarray]],
    t: dict[str, Any],
    ticket_id: int,
    end_ts: int,
) -> list[dict[str, Any]]:
    """The versions of one ticket created at t["created"] (one, or two when it changed again
    before end_ts), drawing from rng in a fixed order."""
    feature, spike = t["feature"], t["spike"]
    idx, cum = candidates["spike" if spike else feature]
    user = int(idx[min(np.searchsorted(cum, rng.random() * cum[-1]), len(idx) - 1)])
    acct = int(pop.account[user])
    first = _FIRST[(user * 7 + 3) % len(_FIRST)]
    last = _LAST[(user * 13 + 5) % len(_LAST)]
    company = (
        f"{_COMPANY_A[acct % len(_COMPANY_A)]} "
        f"{_COMPANY_B[(acct // len(_COMPANY_A)) % len(_COMPANY_B)]}"
    )
    if feature is None:
        tags = list(_TAGS[None][int(rng.integers(len(_TAGS[None])))])
    elif rng.random() < (0.9 if spike else 0.78):
        opts = _TAGS[feature]
        tags = list(opts[int(rng.integers(len(opts)))])
    else:
        tags = []
    if rng.random() < 0.4:
        tags.append(_EXTRA_TAGS[int(rng.integers(len(_EXTRA_TAGS)))])
    subjects = _SPIKE_SUBJECTS if spike else _SUBJECTS[feature]
    subject = subjects[int(rng.integers(len(subjects)))]
    pr = rng.random()
    if spike:
        priority: str | None = "urgent" if pr < 0.25 else "high" if pr < 0.75 else "normal"
    else:
        priority = (
            "urgent"
            if pr < 0.04
            else "high"
            if pr < 0.22
            else "normal"
            if pr < 0.68
            else "low"
            if pr < 0.85
            else None
        )
    ch = rng.random()
    channel = "email" if ch < 0.5 else "web" if ch < 0.8 else "chat" if ch < 0.92 else "api"
    ty = rng.random()
    ttype = (
        "question"
        if ty < 0.4
        else "incident"
        if ty < 0.65
        else "problem"
        if ty < 0.8
        else "task"
        if ty < 0.85
        else None
    )
    created = t["created"]
    second = rng.random() < 0.30
    deleted = rng.random() < 0.02
    gap2 = 3600 + int(rng.exponential(2.0 * _DAY_S))
    age = end_ts - created
    base: dict[str, Any] = {
        "url": f"{_ZENDESK_HOST}/api/v2/tickets/{ticket_id}.json",
        "id": ticket_id,
        "external_id": None,
        "via": {"channel": channel, "source": {"from": {}, "to": {}, "rel": None}},
        "created_at": _zts(created),
        "updated_at": None,
        "generated_timestamp": None,
        "type": ttype,
        "subject": subject,
        "raw_subject": subject,
        "description": _description(rng, feature, spike, first, last, company),
        "priority": priority,
        "status": None,
        "recipient": None,
        "requester_id": _REQUESTER_BASE + user + 1,
        "submitter_id": _REQUESTER_BASE + user + 1,
        "assignee_id": None,
        "organization_id": _ORG_BASE + acct + 1,
        "group_id": _GROUPS[int(rng.integers(len(_GROUPS)))],
        "collaborator_ids": [],
        "follower_ids": [],
        "has_incidents": False,
        "is_public": True,
        "due_at": None,
        "tags": tags,
        "custom_fields": [],
        "satisfaction_rating": None,
    }
    agent = _AGENTS[int(rng.integers(len(_AGENTS)))]
    st = rng.random()
    has_v2 = second and created + gap2 + 900 <= end_ts
    if has_v2 or age < 5 * _DAY_S:
        status1 = "new" if st < 0.4 else "open" if st < 0.85 else "pending" if st < 0.95 else "hold"
        upd1 = created + int(rng.integers(0, 900))
    else:
        status1 = (
            "solved"
            if st < 0.55
            else "closed"
            if st < 0.85
            else "pending"
            if st < 0.9
            else "open"
            if st < 0.97
            else "hold"
        )
        upd1 = min(created + int(rng.exponential(1.5 * _DAY_S)), end_ts)
    v1 = dict(
        base,
        updated_at=_zts(upd1),
        generated_timestamp=upd1,
        status=status1,
        assignee_id=None if status1 == "new" else agent,
    )
    chain = [v1]
    if has_v2:
        upd2 = upd1 + gap2
        st2 = rng.random()
        status2 = (
            "solved"
            if st2 < 0.5
            else "closed"
            if st2 < 0.65
            else "pending"
            if st2 < 0.8
            else "open"
            if st2 < 0.95
            else "hold"
        )
        if status2 == status1:
            status2 = "solved"  # a repeated version always carries a change
        prio2 = "high" if priority == "normal" and rng.random() < 0.1 else priority
        chain.append(
            dict(
                base,
                updated_at=_zts(upd2),
                generated_timestamp=upd2,
                status=status2,
                priority=prio2,
                assignee_id=agent,
            )
        )
    if deleted:
        chain[-1]["status"] = "deleted"
    return chain


def _zendesk(
    cfg: DemoConfig, pop: _Population, out: Path
) -> tuple[int, int, int, list[dict[str, Any]]]:
    """Write ticket pages; returns (pages, versions, tickets, malformed rows)."""
    rng = _rng(cfg.seed, _S_ZENDESK)
    scale = max(1.0, pop.n_users / 5000)
    start_ts = int(datetime.combine(pop.start, datetime.min.time(), UTC).timestamp())
    end_ts = start_ts + cfg.days * _DAY_S - 1
    candidates = _ticket_candidates(pop)
    hours = _TICKET_HOURS

    raw: list[dict[str, Any]] = []
    for day in range(cfg.days):
        wd = (pop.start + timedelta(days=day)).weekday()
        wk = 1.2 if wd < 5 else 0.5
        for feature, base in _TICKET_RATE.items():
            spike = feature == "exports" and day >= pop.reg_start
            lam = base * scale * wk * (_TICKET_SPIKE if spike else 1.0)
            for _ in range(int(rng.poisson(lam))):
                created = (
                    start_ts
                    + day * _DAY_S
                    + int(rng.choice(24, p=hours)) * 3600
                    + int(rng.integers(0, 3600))
                )
                raw.append(
                    {
                        "feature": feature,
                        "spike": spike,
                        "created": created,
                        "u": float(rng.random()),
                    }
                )
    raw.sort(key=lambda t: (t["created"], t["u"]))

    versions: list[dict[str, Any]] = []
    tickets: list[list[dict[str, Any]]] = []
    for n, t in enumerate(raw):
        chain = _ticket_chain(rng, pop, candidates, t, 18_001 + n, end_ts)
        tickets.append(chain)
        versions.extend(chain)

    _plant_zendesk(tickets, pop, start_ts)
    versions.sort(key=lambda v: (v["generated_timestamp"], v.get("id") or 0, v["subject"]))
    (out / "zendesk").mkdir(parents=True, exist_ok=True)
    pages = [versions[i : i + 100] for i in range(0, len(versions), 100)] or [[]]
    rows: list[dict[str, Any]] = []
    prev_cursor: str | None = None
    for p, page in enumerate(pages, start=1):
        rel = f"zendesk/tickets-page-{p:04d}.json"
        for i, v in enumerate(page):
            if "_planted" in v:
                rows.append({"source": "zendesk", "file": rel, "index": i, **v.pop("_planted")})
        last = page[-1] if page else {"generated_timestamp": start_ts, "url": "/0.json"}
        # the planted ticket without "id" may end a page, so take the id from its url
        last_id = int(last["url"].rsplit("/", 1)[1].split(".")[0])
        after = _cursor(last["generated_timestamp"], last_id)
        doc = {
            "tickets": page,
            # include=users: the requesters' names and emails, which redaction needs to know
            "users": _sideloaded_users(page),
            "after_cursor": after,
            "before_cursor": prev_cursor,
            "after_url": f"{_ZENDESK_HOST}/api/v2/incremental/tickets/cursor.json?cursor={after}",
            "before_url": (
                f"{_ZENDESK_HOST}/api/v2/incremental/tickets/cursor.json?cursor={prev_cursor}"
                if prev_cursor
                else None
            ),
            "end_of_stream": p == len(pages),
        }
        prev_cursor = after
        (out / rel).write_text(json.dumps(doc, ensure_ascii=False) + "\n", encoding="utf-8")
    return len(pages), len(versions), len(tickets), rows


def _plant_zendesk(tickets: list[list[dict[str, Any]]], pop: _Population, start_ts: int) -> None:
    """Corrupt three single-version tickets of minor features in the middle of the window."""
    lo = start_ts + (pop.days // 3) * _DAY_S
    hi = start_ts + (pop.reg_start - 3) * _DAY_S
    pool = [
        c[0]
        for c in tickets
        if len(c) == 1
        and c[0]["status"] != "deleted"
        and any(
            s == c[0]["subject"]
            for f in ("alerts", "search", "sharing", "integrations")
            for s in _SUBJECTS[f]
        )
        and lo <= c[0]["generated_timestamp"] <= hi
    ]
    if len(pool) < 3:
        pool = [c[0] for c in tickets if len(c) == 1][: max(3, len(pool))]
    step = max(1, len(pool) // 4)
    a, b, c = pool[step], pool[2 * step], pool[min(3 * step, len(pool) - 1)]
    a["_planted"] = {"kind": "missing_id", "record_id": None, "field": "id"}
    del a["id"]
    b["_planted"] = {
        "kind": "unknown_enum",
        "record_id": b["id"],
        "field": "priority",
        "value": "critical",
    }
    b["priority"] = "critical"
    c["_planted"] = {
        "kind": "wrong_type",
        "record_id": c["id"],
        "field": "created_at",
        "value": "yesterday",
    }
    c["created_at"] = "yesterday"


# --------------------------------------------------------------------------------------------
# GitHub
# --------------------------------------------------------------------------------------------

_SEVERITIES = ("critical", "high", "medium", "low")
_LABEL_COLORS = {
    "bug": "d73a4a",
    "enhancement": "a2eeef",
    "documentation": "0075ca",
    "question": "d876e3",
    "chore": "ededed",
    "dependencies": "0366d6",
    "severity:critical": "b60205",
    "severity:high": "d93f0b",
    "severity:medium": "fbca04",
    "severity:low": "0e8a16",
}
_AREA = {f: f"area:{f}" for f in FEATURES if f != "ai_assistant"}
_AREA["ai_assistant"] = "area:assistant"
# Issues per feature over 90 days at the default size (bugs + enhancements).
_ISSUE_COUNTS = {
    "dashboards": 44,
    "exports": 19,
    "alerts": 23,
    "sharing": 18,
    "search": 23,
    "integrations": 26,
    "billing": 15,
    "ai_assistant": 11,
    "area:auth": 9,
    "area:api": 8,
    None: 13,
}
_BUG_TITLES = {
    "dashboards": (
        "Dashboard tile overflows on small screens",
        "Chart legend overlaps axis",
        "Widget totals ignore timezone",
        "Dashboard filter resets on tab switch",
        "Drag and drop of tiles jitters in Safari",
    ),
    "exports": (
        "Excel export loses leading zeros",
        "Export file name contains spaces",
        "Export progress bar stuck after completion",
    ),
    "alerts": (
        "Alert fires twice on threshold crossing",
        "Alert email footer broken",
        "Muted alerts still notify Slack",
    ),
    "sharing": ("Share link expiry not respected", "Invite resend button does nothing"),
    "search": ("Search ignores quoted phrases", "Search results paginate incorrectly"),
    "integrations": ("Slack sync retries forever on 429", "Salesforce custom fields not synced"),
    "billing": ("Invoice PDF shows wrong VAT id", "Plan page shows stale price"),
    "ai_assistant": ("Assistant answer cites wrong dashboard", "Assistant ignores date filter"),
    "area:auth": ("SSO redirect loop with Okta", "Session expires too early"),
    "area:api": ("API returns 500 on empty body", "Rate limit header missing"),
    None: ("Update contributor guide", "Bump dependencies", "Clarify retention docs"),
}
_PLANTED_BUGS = (
    ("CSV export times out for tables over 100k rows", "critical"),
    ("Export worker crashes with OOM since streaming writer change", "critical"),
    ("Scheduled exports silently dropped after retry", "high"),
    ("export_failed: internal error on xlsx exports with >50 columns", "high"),
)
_LOGINS = (
    "mara-dev",
    "tkowalski",
    "jchen-acme",
    "priya-eng",
    "lucas-sre",
    "okafor",
    "nhaddad",
    "ebot",
    "sofia-qa",
    "kenji-t",
)


def b62(n: int, width: int = 6) -> str:
    """n in base 62, zero-padded to `width` digits (GitHub-like node ids)."""
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    chars = []
    for _ in range(width):
        n, rem = divmod(n, 62)
        chars.append(alphabet[rem])
    return "".join(reversed(chars))


def _label(name: str) -> dict[str, Any]:
    lid = 5_000_000_000 + sum(ord(c) * 31**i for i, c in enumerate(name)) % 900_000_000
    color = _LABEL_COLORS.get(name, "c5def5")
    return {
        "id": lid,
        "node_id": f"LA_kwDOH7qZ{b62(lid, 8)}",
        "url": f"https://api.github.com/repos/{_GH_REPO}/labels/{name.replace(':', '%3A')}",
        "name": name,
        "color": color,
        "default": name in ("bug", "enhancement"),
        "description": None,
    }


def _gh_obj(
    rng: np.random.Generator, n: int, it: dict[str, Any], start_ts: int, end_ts: int
) -> dict[str, Any]:
    """The GitHub issue (or pull request) object numbered n for item `it`, drawing from rng in
    a fixed order."""
    created, closed = it["created"], it["closed"]
    lo = max(created, start_ts)
    if closed is not None:
        updated = min(closed + int(rng.integers(0, 7200)), end_ts)
    else:
        updated = min(lo + int(rng.integers(0, max(1, end_ts - lo))), end_ts)
    updated = max(updated, created)
    state = "closed" if closed is not None else "open"
    reason = None
    if state == "closed":
        reason = "completed" if it["pr"] or rng.random() < 0.85 else "not_planned"
    elif not it["pr"] and rng.random() < 0.08:
        reason = "reopened"
    plus = int(rng.integers(5, 25)) if it["planted"] else int(rng.poisson(1.5))
    kind = "pull" if it["pr"] else "issues"
    obj: dict[str, Any] = {
        "url": f"https://api.github.com/repos/{_GH_REPO}/issues/{n}",
        "repository_url": f"https://api.github.com/repos/{_GH_REPO}",
        "html_url": f"https://github.com/{_GH_REPO}/{kind}/{n}",
        "id": 2_400_000_000 + n * 7919,
        "node_id": f"{'PR' if it['pr'] else 'I'}_kwDOH7qZ{b62(n * 7919 + 1_000_003)}",
        "number": n,
        "title": it["title"],
        "user": {
            "login": _LOGINS[int(rng.integers(len(_LOGINS)))],
            "id": 70_000_000 + int(rng.integers(0, 9_999_999)),
            "type": "User",
        },
        "labels": [_label(name) for name in it["labels"]],
        "state": state,
        "locked": False,
        "assignee": None,
        "assignees": [],
        "milestone": None,
        "comments": int(rng.poisson(6 if it["planted"] else 2)),
        "created_at": _zts(created),
        "updated_at": _zts(updated),
        "closed_at": _zts(closed) if closed is not None else None,
        "author_association": "MEMBER",
        "active_lock_reason": None,
        "body": it["body"],
        "reactions": {
            "url": f"https://api.github.com/repos/{_GH_REPO}/issues/{n}/reactions",
            "total_count": plus,
            "+1": plus,
            "-1": 0,
            "laugh": 0,
            "hooray": 0,
            "confused": 0,
            "heart": 0,
            "rocket": 0,
            "eyes": 0,
        },
        "state_reason": reason,
    }
    if it["pr"]:
        obj["draft"] = False
        obj["pull_request"] = {
            "url": f"https://api.github.com/repos/{_GH_REPO}/pulls/{n}",
            "html_url": f"https://github.com/{_GH_REPO}/pull/{n}",
            "diff_url": f"https://github.com/{_GH_REPO}/pull/{n}.diff",
            "patch_url": f"https://github.com/{_GH_REPO}/pull/{n}.patch",
            "merged_at": _zts(closed) if closed is not None else None,
        }
    return obj


def _github(
    cfg: DemoConfig, pop: _Population, out: Path
) -> tuple[int, int, int, list[int], list[dict[str, Any]]]:
    """Write issue pages; returns (pages, items, pull requests, planted bug numbers, malformed)."""
    rng = _rng(cfg.seed, _S_GITHUB)
    scale = max(1.0, (pop.n_users / 5000) ** 0.5) * cfg.days / 90
    start_ts = int(datetime.combine(pop.start, datetime.min.time(), UTC).timestamp())
    end_ts = start_ts + cfg.days * _DAY_S - 1
    reg_ts = start_ts + pop.reg_start * _DAY_S
    items: list[dict[str, Any]] = []

    def sev_for(feature: str | None, created: int) -> str:
        if feature == "dashboards":
            return str(rng.choice(["medium", "low"], p=[0.5, 0.5]))
        sev = str(rng.choice(_SEVERITIES, p=[0.08, 0.22, 0.45, 0.25]))
        if created >= reg_ts - 2 * _DAY_S and sev in ("critical", "high"):
            sev = "medium"  # keep fresh high-severity bugs unique to the planted regression
        return sev

    for key, base_count in _ISSUE_COUNTS.items():
        feature = key if key in _F else None
        for _ in range(max(1, round(base_count * scale))):
            created = int(rng.integers(start_ts - 45 * _DAY_S, end_ts - 3600))
            is_bug = key is not None and rng.random() < 0.8
            labels: list[str] = []
            if key is None:
                labels.append(str(rng.choice(["documentation", "chore", "question"])))
            elif feature is not None:
                labels.append(_AREA[feature])
            else:
                labels.append(key)
            sev = None
            if is_bug:
                sev = sev_for(feature, created)
                labels = ["bug", *labels, f"severity:{sev}"]
            elif key is not None:
                labels.insert(0, "enhancement")
            age = end_ts - created
            p_closed = 0.9 if age > 30 * _DAY_S else 0.6 if age > 14 * _DAY_S else 0.3
            # Open high-severity or export bugs would blur the planted signal: always closed.
            forced = feature == "exports" or (sev in ("critical", "high") and feature is not None)
            if forced:
                p_closed = 1.0
            if feature == "dashboards":
                p_closed = max(p_closed, 0.8)
            closed_at: int | None = None
            if rng.random() < p_closed:
                closed_at = created + 3600 + int(rng.exponential(8 * _DAY_S))
                closed_at = max(closed_at, start_ts + int(rng.integers(0, 3 * _DAY_S)))
                if closed_at > end_ts:
                    closed_at = end_ts - int(rng.integers(600, 6 * 3600)) if forced else None
                if closed_at is not None:
                    closed_at = max(closed_at, created + 600)
            titles = _BUG_TITLES[key]
            title = titles[int(rng.integers(len(titles)))]
            if not is_bug and key is not None:
                title = f"Feature request: {title[0].lower()}{title[1:]}"
            items.append(
                {
                    "created": created,
                    "closed": closed_at,
                    "labels": labels,
                    "title": title,
                    "pr": False,
                    "feature": feature,
                    "planted": False,
                    "body": f"{title}.\n\n### Steps to reproduce\n1. Open the page\n"
                    f"2. Repeat the action\n\n### Expected\nIt works.\n\n"
                    f"### Actual\nIt does not ({int(rng.integers(1, 6))} reports).",
                }
            )
    n_prs = round(len(items) * 0.18)
    for _ in range(n_prs):
        src = items[int(rng.integers(len(items)))]
        created = min((src["closed"] or end_ts) - 1800, end_ts - 3600)
        created = max(created, start_ts - 30 * _DAY_S)
        merged = created + int(rng.integers(600, 2 * _DAY_S))
        closed = merged if merged <= end_ts and rng.random() < 0.85 else None
        items.append(
            {
                "created": created,
                "closed": closed,
                "labels": [x for x in src["labels"] if x.startswith("area:")],
                "title": f"Fix: {src['title'][0].lower()}{src['title'][1:]}",
                "pr": True,
                "feature": src["feature"],
                "planted": False,
                "body": "Fixes the issue described in the linked ticket.\n\n- [x] tests",
            }
        )
    n_planted = 4
    for k in range(n_planted):
        title, sev = _PLANTED_BUGS[k % len(_PLANTED_BUGS)]
        lo = reg_ts + _DAY_S
        created = int(rng.integers(lo, max(lo + 1, end_ts - 2 * _DAY_S)))
        items.append(
            {
                "created": created,
                "closed": None,
                "pr": False,
                "feature": "exports",
                "labels": ["bug", "area:exports", f"severity:{sev}"],
                "title": title,
                "planted": True,
                "body": "Since the streaming writer change, exports of large tables fail."
                "\n\nCustomer reports are piling up in support.",
            }
        )

    items.sort(key=lambda it: (it["created"], it["title"]))
    objs: list[dict[str, Any]] = []
    planted_numbers: list[int] = []
    for n, it in enumerate(items, start=1200):
        obj = _gh_obj(rng, n, it, start_ts, end_ts)
        if it["planted"]:
            planted_numbers.append(n)
        objs.append(obj)

    # Plant on closed, older issues of minor features so no health signal depends on them.
    pool = [
        o
        for o, it in zip(objs, items, strict=True)
        if not it["pr"]
        and o["state"] == "closed"
        and it["feature"] in ("alerts", "search", "sharing", "integrations")
        and it["created"] < reg_ts - 7 * _DAY_S
    ]
    no_node = pool[len(pool) // 3]
    archived = pool[(2 * len(pool)) // 3]
    del no_node["node_id"]
    archived["state"] = "archived"

    objs.sort(key=lambda o: (o["updated_at"], o["number"]))
    (out / "github").mkdir(parents=True, exist_ok=True)
    pages = [objs[i : i + 100] for i in range(0, len(objs), 100)] or [[]]
    malformed: list[dict[str, Any]] = []
    for p, page in enumerate(pages, start=1):
        rel = f"github/issues-page-{p:03d}.json"
        (out / rel).write_text(json.dumps(page, ensure_ascii=False) + "\n", encoding="utf-8")
        for i, o in enumerate(page):
            if o is no_node:
                malformed.append(
                    {
                        "source": "github",
                        "file": rel,
                        "index": i,
                        "kind": "missing_id",
                        "record_id": None,
                        "field": "node_id",
                        "number": o["number"],
                    }
                )
            elif o is archived:
                malformed.append(
                    {
                        "source": "github",
                        "file": rel,
                        "index": i,
                        "kind": "unknown_enum",
                        "record_id": o["node_id"],
                        "field": "state",
                        "value": "archived",
                        "number": o["number"],
                    }
                )
    return len(pages), len(objs), sum(1 for it in items if it["pr"]), planted_numbers, malformed


# --------------------------------------------------------------------------------------------
# Accounts: revenue and segments per account_key (a CRM or billing export)
# --------------------------------------------------------------------------------------------

ACCOUNTS_FILE = "accounts/accounts.csv"
# Yearly list price per seat by plan; an account's ARR is seats x price x a discount/uplift.
_PLAN_PRICE = {"starter": 240.0, "pro": 720.0, "enterprise": 1800.0}
_ENTERPRISE_FLOOR = 25_000.0
_NAME_A = (
    "Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Soylent", "Wonka", "Stark",
    "Tyrell", "Cyberdyne", "Gringotts", "Oscorp", "Massive", "Aperture", "Monarch",
)  # fmt: skip
_NAME_B = (
    "Labs", "Systems", "Analytics", "Holdings", "Logistics", "Foods", "Health", "Media",
    "Partners", "Robotics", "Retail", "Energy",
)  # fmt: skip


def _accounts(cfg: DemoConfig, pop: _Population, out: Path) -> int:
    """Write ACCOUNTS_FILE: one row per account (every account_key the events can carry), ARR
    skewed like real revenue (few large accounts, many small), from its own random stream."""
    rng = _rng(cfg.seed, _S_ACCOUNTS)
    n = pop.n_accounts
    seats = np.bincount(pop.account, minlength=n)
    # Segment by size: the top decile of seats is enterprise, the next 30% mid-market.
    rank = np.argsort(np.argsort(-seats - rng.random(n) * 0.5, kind="stable"), kind="stable")
    segment = np.where(rank < n * 0.1, 2, np.where(rank < n * 0.4, 1, 0))
    u = rng.random(n)
    plan = np.select(
        [segment == 2, segment == 1],
        [np.where(u < 0.85, 2, 1), np.where(u < 0.15, 0, np.where(u < 0.85, 1, 2))],
        np.where(u < 0.7, 0, 1),
    )
    plans = list(_PLAN_PRICE)
    price = np.array([_PLAN_PRICE[p] for p in plans])[plan]
    arr = np.maximum(seats, 1) * price * rng.lognormal(0.0, 0.35, n)
    arr = np.where(plan == 2, np.maximum(arr, _ENTERPRISE_FLOOR), arr)
    names = [
        f"{_NAME_A[a]} {_NAME_B[b]}"
        for a, b in zip(
            rng.integers(0, len(_NAME_A), n), rng.integers(0, len(_NAME_B), n), strict=True
        )
    ]
    updated = rng.integers(0, cfg.days, n)
    (out / "accounts").mkdir(parents=True, exist_ok=True)
    pl.DataFrame(
        {
            "account_key": [pop.account_key(i) for i in range(n)],
            "name": names,
            "arr": np.round(arr, 2),
            "plan": [plans[i] for i in plan],
            "segment": [("smb", "mid_market", "enterprise")[i] for i in segment],
            "updated_at": [
                f"{(pop.start + timedelta(days=int(d))).isoformat()}T00:00:00Z" for d in updated
            ],
        }
    ).write_csv(out / ACCOUNTS_FILE)
    return n


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def generate_demo_data(
    cfg: DemoConfig, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Write the demo data set under cfg.out_dir and return its manifest (also _manifest.json)."""
    if cfg.days < REGRESSION_DAYS + 28:
        raise ValueError(f"days must be >= {REGRESSION_DAYS + 28} to hold the planted regression")
    say = progress or (lambda msg: logger.info(msg))
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_users = max(cfg.users, cfg.events // 150) if cfg.events else cfg.users
    n_accounts = max(cfg.accounts, n_users // 10) if cfg.events else cfg.accounts
    pop = _Population(cfg, n_users, n_accounts)
    s, r = _calibrate(pop, cfg.events)
    kinds = _KindTable()
    (out / "posthog").mkdir(parents=True, exist_ok=True)
    plant_day = cfg.days // 2
    n_lines = 0
    malformed: list[dict[str, Any]] = []
    for day in range(cfg.days):
        d = pop.start + timedelta(days=day)
        rel = f"posthog/events-{d.isoformat()}.jsonl"
        lines = _posthog_day(pop, kinds, cfg.seed, day, s, r)
        if day == plant_day:
            planted, rows = _plant_posthog(lines.to_list(), rel)
            malformed.extend(rows)
            (out / rel).write_text("\n".join(planted) + "\n", encoding="utf-8")
            n_lines += len(planted)
        else:
            pl.DataFrame({"line": lines}).write_csv(
                out / rel, include_header=False, quote_style="never"
            )
            n_lines += len(lines)
        say(f"posthog {d.isoformat()}: {len(lines)} events")
    z_pages, z_versions, z_tickets, z_bad = _zendesk(cfg, pop, out)
    say(f"zendesk: {z_versions} ticket versions on {z_pages} pages")
    g_pages, g_items, g_prs, planted_bugs, g_bad = _github(cfg, pop, out)
    say(f"github: {g_items} items on {g_pages} pages")
    # Not in the manifest, whose bytes (like every other file's) stay as they were.
    say(f"accounts: {_accounts(cfg, pop, out)} accounts in {ACCOUNTS_FILE}")
    manifest: dict[str, Any] = {
        "generator": "feedback-loop demo_data",
        "generator_version": GENERATOR_VERSION,
        "params": {
            "seed": cfg.seed,
            "end_date": cfg.end_date.isoformat(),
            "start_date": pop.start.isoformat(),
            "days": cfg.days,
            "users_requested": cfg.users,
            "accounts_requested": cfg.accounts,
            "events_target": cfg.events,
            "users": n_users,
            "accounts": n_accounts,
            "event_scale": round(s, 6),
            "activity_scale": round(r, 6),
        },
        "files": {"posthog": cfg.days, "zendesk": z_pages, "github": g_pages},
        "rows": {
            "posthog_lines": n_lines,
            "zendesk_ticket_versions": z_versions,
            "zendesk_tickets": z_tickets,
            "github_items": g_items,
            "github_pull_requests": g_prs,
            "github_issues": g_items - g_prs,
        },
        "planted": {
            **ROLES,
            "regression_start": (pop.start + timedelta(days=pop.reg_start)).isoformat(),
            "regression_bug_numbers": planted_bugs,
        },
        "id_mapping": {
            "zendesk_requester_id": f"{_REQUESTER_BASE} + user number (user-00042 -> "
            f"{_REQUESTER_BASE + 42})",
            "zendesk_organization_id": f"{_ORG_BASE} + account number (acct-0007 -> "
            f"{_ORG_BASE + 7})",
        },
        "malformed": malformed + z_bad + g_bad,
    }
    (out / "_manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


# --------------------------------------------------------------------------------------------
# One more day after the window (a night with new data, for benchmarks and tests)
# --------------------------------------------------------------------------------------------

# Ids of appended records come from their own ranges (per day), so appending days in any order
# or skipping one never collides with the window's records or with another appended day.
_APPEND_TICKET_BASE = 50_000_000  # ticket id = base + day index * 10_000 + k
_APPEND_ISSUE_BASE = 100_000  # issue number = base + day index * 100 + k


def _config_from_manifest(out: Path) -> tuple[DemoConfig, dict[str, Any]]:
    path = out / "_manifest.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: generate the demo data set first")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("generator_version") != GENERATOR_VERSION:
        raise ValueError(
            f"{path} was written by generator version {manifest.get('generator_version')}, "
            f"this is version {GENERATOR_VERSION}: regenerate the data set"
        )
    p = manifest["params"]
    cfg = DemoConfig(
        out_dir=out,
        end_date=date.fromisoformat(p["end_date"]),
        days=p["days"],
        users=p["users_requested"],
        accounts=p["accounts_requested"],
        events=p["events_target"],
        seed=p["seed"],
    )
    return cfg, p


def append_day(
    out_dir: Path, day: date, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Add the data of one day after the window of the data set in out_dir, in the same formats,
    as new files only (events-<day>.jsonl, zendesk/tickets-<day>-page-NNNN.json,
    github/issues-<day>.json, _appended-<day>.json); no existing file is touched.

    The same users, accounts and event scale as the window (read from _manifest.json), the
    regression still on; new tickets and new bug-tracker issues created that day (no updates of
    older ones). Deterministic: the day's bytes depend only on the data set's parameters and the
    day, so any order of appended days gives the same files. Returns the day's manifest."""
    say = progress or (lambda msg: logger.info(msg))
    out = Path(out_dir)
    cfg, params = _config_from_manifest(out)
    if day <= cfg.end_date:
        raise ValueError(f"{day} is inside the window (last day {cfg.end_date}); append later days")
    iso = day.isoformat()
    marker = out / f"_appended-{iso}.json"
    ev_rel = f"posthog/events-{iso}.jsonl"
    if marker.exists() or (out / ev_rel).exists():
        raise FileExistsError(f"{iso} is already in {out}")
    pop = _Population(cfg, params["users"], params["accounts"])
    s, r = _calibrate(pop, cfg.events)
    idx = (day - pop.start).days
    pop.extend(cfg.seed, idx + 1)
    day_start = int(datetime.combine(day, datetime.min.time(), UTC).timestamp())
    day_end = day_start + _DAY_S - 1

    lines = _posthog_day(pop, _KindTable(), cfg.seed, idx, s, r)
    pl.DataFrame({"line": lines}).write_csv(out / ev_rel, include_header=False, quote_style="never")
    say(f"posthog {iso}: {len(lines)} events")

    # Tickets created that day, at the window's rates (the regression's spike included).
    rng = _rng(cfg.seed, _S_ZENDESK, idx)
    scale = max(1.0, pop.n_users / 5000)
    wk = 1.2 if day.weekday() < 5 else 0.5
    raw: list[dict[str, Any]] = []
    for feature, base in _TICKET_RATE.items():
        spike = feature == "exports" and idx >= pop.reg_start
        for _ in range(int(rng.poisson(base * scale * wk * (_TICKET_SPIKE if spike else 1.0)))):
            created = (
                day_start + int(rng.choice(24, p=_TICKET_HOURS)) * 3600 + int(rng.integers(0, 3600))
            )
            raw.append({"feature": feature, "spike": spike, "created": created})
    raw.sort(key=lambda t: (t["created"], str(t["feature"])))
    if len(raw) >= 10_000:
        raise ValueError(f"{len(raw)} tickets on {iso}: more than an appended day's id range")
    candidates = _ticket_candidates(pop)
    versions: list[dict[str, Any]] = []
    for k, t in enumerate(raw):
        ticket_id = _APPEND_TICKET_BASE + idx * 10_000 + k
        versions.extend(_ticket_chain(rng, pop, candidates, t, ticket_id, day_end))
    versions.sort(key=lambda v: (v["generated_timestamp"], v["id"]))
    pages = [versions[i : i + 100] for i in range(0, len(versions), 100)] or [[]]
    files = [ev_rel]
    prev: str | None = None
    for n, page in enumerate(pages, start=1):
        rel = f"zendesk/tickets-{iso}-page-{n:04d}.json"
        last = page[-1] if page else {"generated_timestamp": day_start, "id": 0}
        after = _cursor(last["generated_timestamp"], last["id"])
        url = f"{_ZENDESK_HOST}/api/v2/incremental/tickets/cursor.json?cursor="
        doc = {
            "tickets": page,
            "users": _sideloaded_users(page),
            "after_cursor": after,
            "before_cursor": prev,
            "after_url": url + after,
            "before_url": url + prev if prev else None,
            "end_of_stream": n == len(pages),
        }
        prev = after
        (out / rel).write_text(json.dumps(doc, ensure_ascii=False) + "\n", encoding="utf-8")
        files.append(rel)
    say(f"zendesk {iso}: {len(raw)} new tickets, {len(versions)} versions")

    # Bug-tracker issues opened that day: the window's mix of areas, still open at its end.
    rng = _rng(cfg.seed, _S_GITHUB, idx)
    keys = list(_ISSUE_COUNTS)
    counts = np.array([_ISSUE_COUNTS[k] for k in keys], dtype=float)
    rate = counts.sum() * max(1.0, (pop.n_users / 5000) ** 0.5) / 90
    n_issues = min(int(rng.poisson(rate)), 99)
    objs: list[dict[str, Any]] = []
    for k in range(n_issues):
        key = keys[int(rng.choice(len(keys), p=counts / counts.sum()))]
        feature = key if key in _F else None
        created = day_start + int(rng.integers(0, _DAY_S - 3600))
        is_bug = key is not None and rng.random() < 0.8
        labels = [
            str(rng.choice(["documentation", "chore", "question"]))
            if key is None
            else _AREA[feature]
            if feature is not None
            else key
        ]
        if is_bug:
            # fresh critical/high bugs stay unique to the planted regression, as in the window
            sev = "low" if feature == "dashboards" else str(rng.choice(["medium", "low"]))
            labels = ["bug", *labels, f"severity:{sev}"]
        elif key is not None:
            labels.insert(0, "enhancement")
        titles = _BUG_TITLES[key]
        title = titles[int(rng.integers(len(titles)))]
        if not is_bug and key is not None:
            title = f"Feature request: {title[0].lower()}{title[1:]}"
        item = {
            "created": created,
            "closed": None,
            "labels": labels,
            "title": title,
            "pr": False,
            "feature": feature,
            "planted": False,
            "body": f"{title}.\n\n### Steps to reproduce\n1. Open the page\n"
            f"2. Repeat the action\n\n### Expected\nIt works.\n\n"
            f"### Actual\nIt does not ({int(rng.integers(1, 6))} reports).",
        }
        number = _APPEND_ISSUE_BASE + idx * 100 + k
        objs.append(_gh_obj(rng, number, item, day_start, day_end))
    objs.sort(key=lambda o: (o["updated_at"], o["number"]))
    gh_rel = f"github/issues-{iso}.json"
    (out / gh_rel).write_text(json.dumps(objs, ensure_ascii=False) + "\n", encoding="utf-8")
    files.append(gh_rel)
    say(f"github {iso}: {len(objs)} new issues")

    manifest: dict[str, Any] = {
        "generator": "feedback-loop demo_data append_day",
        "generator_version": GENERATOR_VERSION,
        "day": iso,
        "day_index": idx,
        "files": files,
        "rows": {
            "posthog_lines": len(lines),
            "zendesk_ticket_versions": len(versions),
            "zendesk_tickets": len(raw),
            "github_issues": len(objs),
        },
    }
    marker.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest
