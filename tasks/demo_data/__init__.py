"""Deterministic demo data in vendor formats: PostHog events, Zendesk tickets, GitHub issues,
plus an accounts file (ARR, plan, segment per account_key). One module per vendor; `generate`
holds the entry points."""

from tasks.demo_data.accounts import ACCOUNTS_FILE
from tasks.demo_data.common import FEATURES, GENERATOR_VERSION, ROLES, DemoConfig
from tasks.demo_data.generate import append_day, generate_demo_data
from tasks.demo_data.github import b62

__all__ = [
    "ACCOUNTS_FILE",
    "FEATURES",
    "GENERATOR_VERSION",
    "ROLES",
    "DemoConfig",
    "append_day",
    "b62",
    "generate_demo_data",
]
