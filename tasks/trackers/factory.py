"""The write-back target named in the settings: markdown (default), github, jira or linear."""

from __future__ import annotations

from pydantic import ValidationError

from tasks.settings import ConfigError, Settings
from tasks.trackers.base import Tracker
from tasks.trackers.markdown import MarkdownTracker


def build_tracker(settings: Settings) -> Tracker:
    wb = settings.writeback
    if wb.tracker == "markdown":
        return MarkdownTracker(wb.tracker_dir)
    options = getattr(wb, wb.tracker) or {}
    try:
        if wb.tracker == "github":
            from tasks.clients.github import GitHubSettings
            from tasks.trackers.github import GitHubTracker

            return GitHubTracker(GitHubSettings.model_validate(options))
        if wb.tracker == "jira":
            from tasks.trackers.jira import JiraTracker, JiraTrackerSettings

            return JiraTracker(JiraTrackerSettings.model_validate(options))
        from tasks.trackers.linear import LinearTracker, LinearTrackerSettings

        return LinearTracker(LinearTrackerSettings.model_validate(options))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"writeback.{wb.tracker}: {problems}") from None
