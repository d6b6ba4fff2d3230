-- grain: one row per feature x user x UTC day with activity; key: (feature_key, user_key, activity_date).
-- feature_key '__product__' holds every active user (the denominator for adoption).
-- n_events sums the staging weight (1 per event, a PostHog daily group's count), so it is the
-- same whether PostHog delivered single events or daily aggregates.
-- Maintained incrementally (tasks/transform.py build_usage_rollups): with the variable
-- rollup_days set to a list of dates, only those days are computed; NULL computes every day.
-- rollup_loads (when set) lists the load times (ingested_at) holding events of those days, so
-- the scan skips every other load's rows.
with

events as (
    select
        user_key,
        account_key,
        occurred_at::date as activity_date,
        coalesce(event_name, '') as event_name,
        coalesce(url_path, '') as url_path,
        n_events
    from staging.stg_usage_events
    where
        user_key is not null
        and in_rollup_scope(occurred_at::date, ingested_at)
),

feature_map as (
    select * from intermediate.int_event_feature_map
),

mapped as (
    select
        feature_map.feature_key,
        events.user_key,
        events.account_key,
        events.activity_date,
        events.n_events
    from events
    inner join feature_map
        on events.event_name = feature_map.event_name and events.url_path = feature_map.url_path
),

per_feature as (
    select
        feature_key,
        user_key,
        activity_date,
        any_value(account_key) as account_key,
        sum(n_events)::bigint as n_events
    from mapped
    where feature_key is not null
    group by all
),

per_product as (
    select
        '__product__' as feature_key,
        user_key,
        activity_date,
        any_value(account_key) as account_key,
        sum(n_events)::bigint as n_events
    from mapped
    group by all
),

final as (
    select * from per_feature
    union all
    select * from per_product
)

select * from final
