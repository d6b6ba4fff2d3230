-- grain: one row per PostHog event; key: event_id ('posthog:' || the event uuid).
-- Renames, casts and normalises raw.posthog__events (file exports and the query API land the
-- same record shape there) to the stg_usage_events columns; a wrongly typed value becomes null
-- here and is quarantined by the stg_usage_events suite.
with

source as (
    select * from raw.posthog__events
),

renamed as (
    select
        'posthog:' || event_id as event_id,
        'posthog' as source,
        case
            when json_type(event_time) = 'VARCHAR'
                then try_cast(event_time ->> '$' as timestamptz)
        end as occurred_at,
        _loaded_at as ingested_at,
        nullif(trim(distinct_id), '') as user_key,
        json_extract_string(properties, '$."$groups".company') as account_key,
        nullif(trim(event), '') as event_name,
        json_extract_string(properties, '$."$pathname"') as url_path,
        properties
    from source
)

select * from renamed
