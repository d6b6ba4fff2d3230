"""Accounts: revenue and segments per account_key (a CRM or billing export)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl

from tasks.demo_data.common import _S_ACCOUNTS, DemoConfig, _rng
from tasks.demo_data.posthog import _Population

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
