-- Written by `make generated` (tasks/unions.py): a CTE per usage vendor of tasks/sources.py,
-- the rest from sql/staging/unions/stg_usage_events.sql. Edit those, not this file.
-- grain: one row per usage event from every analytics vendor, before validation; key: event_id ('<vendor>:<id>').
-- The canonical shape every vendor maps onto, so scores work whichever vendor a team uses.
-- n_events: events the row stands for (1 for a single event; a PostHog daily group's count in
-- daily_aggregates mode), so rollups sum it instead of counting rows.
with

posthog as (
    select
        event_id,
        source,
        occurred_at,
        ingested_at,
        user_key,
        account_key,
        event_name,
        url_path,
        properties,
        n_events,
        type_error
    from staging.stg_posthog__events
),

amplitude as (
    select
        event_id,
        source,
        occurred_at,
        ingested_at,
        user_key,
        account_key,
        event_name,
        url_path,
        properties,
        n_events,
        type_error
    from staging.stg_amplitude__events
),

mixpanel as (
    select
        event_id,
        source,
        occurred_at,
        ingested_at,
        user_key,
        account_key,
        event_name,
        url_path,
        properties,
        n_events,
        type_error
    from staging.stg_mixpanel__events
),

unioned as (
    select * from posthog
    union all
    select * from amplitude
    union all
    select * from mixpanel
)

select * from unioned
