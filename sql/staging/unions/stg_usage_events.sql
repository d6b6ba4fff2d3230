-- grain: one row per usage event from every analytics vendor, before validation; key: event_id ('<vendor>:<id>').
-- The canonical shape every vendor maps onto, so scores work whichever vendor a team uses.
-- n_events: events the row stands for (1 for a single event; a PostHog daily group's count in
-- daily_aggregates mode), so rollups sum it instead of counting rows.

select * from unioned
