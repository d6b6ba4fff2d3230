"""Shared by the demo generators: the configuration, features and roles, seeded random streams."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np

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
