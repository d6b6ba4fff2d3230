"""Source registry: which vendor feeds which canonical staging table, via which raw table."""

from __future__ import annotations

from dataclasses import dataclass

CANONICAL = {
    "usage": "stg_usage_events",
    "tickets": "stg_support_tickets",
    "bugs": "stg_bug_issues",
    "errors": "stg_error_signals",
    "accounts": "stg_accounts",
}


@dataclass(frozen=True)
class Vendor:
    source: str
    stream: str
    kind: str  # usage | tickets | bugs | errors | accounts
    raw_key: str  # key column of the raw table
    # SQL template turning a canonical staging id {k} (e.g. 'zendesk:123') into the raw key.
    raw_key_from_id: str
    # Canonical ids carry the vendor ('zendesk:123'); account keys do not: they must equal the
    # account_key the usage events carry.
    id_prefix: bool = True

    @property
    def raw_table(self) -> str:
        return f"raw.{self.source}__{self.stream}"

    @property
    def staging_model(self) -> str:
        return f"stg_{self.source}__{self.stream}"

    @property
    def canonical(self) -> str:
        return CANONICAL[self.kind]


def _after_prefix(cast: str = "varchar") -> str:
    return "try_cast(substr({k}, strpos({k}, ':') + 1) as " + cast + ")"


VENDORS = (
    Vendor("posthog", "events", "usage", "event_id", _after_prefix()),
    Vendor("amplitude", "events", "usage", "event_id", _after_prefix()),
    Vendor("mixpanel", "events", "usage", "event_id", _after_prefix()),
    Vendor("zendesk", "tickets", "tickets", "ticket_id", _after_prefix("bigint")),
    Vendor("intercom", "conversations", "tickets", "conversation_id", _after_prefix()),
    Vendor("freshdesk", "tickets", "tickets", "ticket_id", _after_prefix("bigint")),
    Vendor("github", "issues", "bugs", "node_id", _after_prefix()),
    Vendor("jira", "issues", "bugs", "issue_id", _after_prefix()),
    Vendor("linear", "issues", "bugs", "issue_id", _after_prefix()),
    Vendor("sentry", "issues", "errors", "issue_id", _after_prefix()),
    # Optional revenue and segments per account (CSV/Parquet files, tasks/contracts.py ACCOUNTS).
    Vendor("accounts", "accounts", "accounts", "account_key", "{k}", id_prefix=False),
)
BY_SOURCE = {v.source: v for v in VENDORS}


def vendors_of(kind: str) -> list[Vendor]:
    return [v for v in VENDORS if v.kind == kind]
