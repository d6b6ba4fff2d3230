"""PostHog usage: the population of users and accounts, their daily events, planted bad lines."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from tasks.demo_data.common import (
    _DAY_MS,
    _F,
    _GENERIC,
    _S_DAYS,
    _S_POSTHOG,
    _S_USERS,
    FEATURES,
    REGRESSION_DAYS,
    DemoConfig,
    _rng,
)

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
