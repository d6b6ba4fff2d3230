-- grain: one row per UTC day x event name x URL path root x feature with validated events;
-- key: (activity_date, event_name, path_root, feature_key) (feature_key null = unmapped).
-- What marts.catalog_coverage counts, rolled up per day so coverage reads this small table
-- instead of every event each night. n_events sums the staging weight (1 per event, a PostHog
-- daily group's count). Events without a user are counted too (coverage is about events).
-- Maintained incrementally with int_feature_user_days (tasks/transform.py build_usage_rollups):
-- with the variable rollup_days set to a list of dates, only those days are computed; NULL
-- computes every day.
-- rollup_loads (when set) lists the load times (ingested_at) holding events of those days, so
-- the scan skips every other load's rows.
with

events as (
    select
        occurred_at::date as activity_date,
        coalesce(event_name, '') as event_name,
        coalesce(url_path, '') as url_path,
        n_events
    from staging.stg_usage_events
    where in_rollup_scope(occurred_at::date, ingested_at)
),

feature_map as (
    select * from intermediate.int_event_feature_map
),

mapped as (
    select
        events.activity_date,
        events.event_name,
        regexp_extract(events.url_path, '^/[^/]*') as path_root,
        feature_map.feature_key,
        events.n_events
    from events
    left join feature_map
        on events.event_name = feature_map.event_name and events.url_path = feature_map.url_path
),

final as (
    select
        activity_date,
        event_name,
        path_root,
        feature_key,
        sum(n_events)::bigint as n_events
    from mapped
    group by all
)

select * from final
