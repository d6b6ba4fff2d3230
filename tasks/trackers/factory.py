"""The write-back target named in the settings: markdown (default), github, jira or linear."""

from __future__ import annotations

from pydantic import ValidationError

from tasks.settings import ConfigError, Settings
from tasks.trackers.base import Tracker
from tasks.trackers.limits import TimeBudget
from tasks.trackers.markdown import MarkdownTracker


def build_tracker(settings: Settings) -> Tracker:
    """The tracker, with a fresh write-back time budget (`writeback.time_budget_seconds`,
    counted from now): rate-limit waits that would overrun it stop write-back as partial."""
    wb = settings.writeback
    if wb.tracker == "markdown":
        return MarkdownTracker(wb.tracker_dir)  # files: no rate limits, nothing to wait for
    options = getattr(wb, wb.tracker) or {}
    budget = TimeBudget(wb.time_budget_seconds, source=wb.tracker)
    try:
        if wb.tracker == "github":
            from tasks.clients.github import GitHubSettings
            from tasks.trackers.github import GitHubTracker

            return GitHubTracker(GitHubSettings.model_validate(options), time_budget=budget)
        if wb.tracker == "jira":
            from tasks.trackers.jira import JiraTracker, JiraTrackerSettings

            return JiraTracker(JiraTrackerSettings.model_validate(options), time_budget=budget)
        from tasks.trackers.linear import LinearTracker, LinearTrackerSettings

        return LinearTracker(LinearTrackerSettings.model_validate(options), time_budget=budget)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"writeback.{wb.tracker}: {problems}") from None
