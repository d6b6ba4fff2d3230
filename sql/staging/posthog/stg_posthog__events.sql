-- grain: one row per PostHog event; key: event_id ('posthog:' || the event uuid).
-- Renames, casts and normalises raw.posthog__events (file exports and the query API land the
-- same record shape there) to the stg_usage_events columns. A wrongly typed value (an object as
-- the event name, text as properties, a number or unparseable text as the time) is named in
-- type_error, and the stg_usage_events suite quarantines the row with that reason.
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
        properties,
        nullif(concat_ws(
            ',',
            type_check_text(event, 'event'),
            type_check_text(distinct_id, 'distinct_id'),
            type_check_ts(event_time, '$', 'timestamp'),
            type_check(properties, '$', ['OBJECT'], 'properties'),
            type_check(properties, '$."$groups"', ['OBJECT'], '$groups'),
            type_check(properties, '$."$groups".company', ['VARCHAR', 'BIGINT', 'UBIGINT'], '$groups.company'),
            type_check(properties, '$."$pathname"', ['VARCHAR'], '$pathname')
        ), '') as type_error
    from source
)

select * from renamed
