"""The Prefect automation that announces trouble: a nightly or backfill run that ends Failed,
Crashed, TimedOut or Degraded sends a notification through a notification block.

`install_alerts` creates (or updates, by name) the block and the automation on the configured
Prefect server, so running it again is harmless. The default channel is a generic webhook
(Prefect's `CustomWebhookNotificationBlock`, a JSON POST with `subject`, `body` and `text`);
Slack (`SlackWebhook`) is built in, and any other notification block — e-mail (`SendgridEmail`,
or `prefect-email`), Microsoft Teams, PagerDuty — can be named instead.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

AUTOMATION_NAME = "feedback-loop: run failed, crashed or degraded"
DEFAULT_BLOCK = "feedback-loop-alerts"
FLOWS = ("nightly", "backfill")
# State names of a flow run that need a person: Degraded is this project's FAILED-type state
# (flows/nightly.py); TimedOut is Prefect's for a run that hit its timeout.
ALERT_STATES = ("Failed", "Crashed", "TimedOut", "Degraded")

SUBJECT = "feedback-loop: {{ flow.name }} run {{ flow_run.name }} is {{ flow_run.state.name }}"
BODY = (
    "{{ flow.name }} run {{ flow_run.name }} ended {{ flow_run.state.name }}"
    "{% if flow_run.state.message %}: {{ flow_run.state.message }}{% endif %}\n"
    "Parameters: {{ flow_run.parameters }}\n"
    "{{ flow_run|ui_url }}"
)


def install_alerts(
    *,
    webhook_url: str | None = None,
    slack_webhook_url: str | None = None,
    block: str | None = None,
    flows: tuple[str, ...] = FLOWS,
) -> dict[str, Any]:
    """Create or update the notification block and the automation; returns what was set up
    ({"automation", "automation_id", "block", "block_type", "events", "flows"}).

    Exactly one of `webhook_url` (generic webhook block, saved as `feedback-loop-alerts`),
    `slack_webhook_url` (Slack block, same name) or `block` (an existing notification block
    as `<block-type-slug>/<name>`)."""
    chosen = [x for x in (webhook_url, slack_webhook_url, block) if x]
    if len(chosen) != 1:
        raise ValueError("give exactly one of a webhook URL, a Slack webhook URL or a block name")
    if webhook_url:
        notifier = _save_webhook_block(webhook_url)
    elif slack_webhook_url:
        from prefect.blocks.notifications import SlackWebhook

        notifier = SlackWebhook(url=slack_webhook_url)
        notifier.save(DEFAULT_BLOCK, overwrite=True)
    else:
        notifier = _load_block(block)
    block_id = notifier._block_document_id
    block_type = notifier.get_block_type_slug()
    automation_id = _upsert_automation(block_id, flows)
    return {
        "automation": AUTOMATION_NAME,
        "automation_id": str(automation_id),
        "block": notifier._block_document_name,
        "block_type": block_type,
        "events": [f"prefect.flow-run.{s}" for s in ALERT_STATES],
        "flows": list(flows),
    }


def _save_webhook_block(url: str):
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    notifier = CustomWebhookNotificationBlock(
        name=DEFAULT_BLOCK,
        url=url,
        method="POST",
        json_data={"subject": "{{subject}}", "body": "{{body}}", "text": "{{subject}}\n{{body}}"},
        timeout=10,
    )
    notifier.save(DEFAULT_BLOCK, overwrite=True)
    return notifier


def _load_block(name: str):
    """An existing notification block by `<block-type-slug>/<name>` (Prefect's notation, e.g.
    `sendgrid-email/oncall`)."""
    from prefect.blocks.core import Block

    if "/" not in name:
        raise ValueError(f"name the block as <type>/<name>, e.g. sendgrid-email/{name}")
    notifier = Block.load(name)
    if not callable(getattr(notifier, "notify", None)):
        raise ValueError(f"{name} is not a notification block")
    return notifier


def _upsert_automation(block_id, flows: tuple[str, ...]):
    from prefect.automations import Automation, EventTrigger, Posture, SendNotification

    automation = Automation(
        name=AUTOMATION_NAME,
        description="Announces nightly/backfill runs that need a person (installed by "
        "`feedback-loop alerts`).",
        enabled=True,
        trigger=EventTrigger(
            expect={f"prefect.flow-run.{s}" for s in ALERT_STATES},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.role": "flow", "prefect.resource.name": list(flows)},
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[SendNotification(block_document_id=block_id, subject=SUBJECT, body=BODY)],
    )
    try:
        existing = Automation.read(name=AUTOMATION_NAME)
    except ValueError:
        return automation.create().id
    automation.id = existing.id
    automation.update()
    return existing.id
