-- grain: one row per PostHog event; key: event_id ('posthog:' || the event uuid).
-- Renames, casts and normalises raw.posthog__events (file exports and the query API land the
-- same record shape there) to the stg_usage_events columns. A wrongly typed value (an object as
-- the event name, text as properties, a number or unparseable text as the time) is named in
-- type_error, and the stg_usage_events suite quarantines the row with that reason.
with

source as (
    select * from raw.posthog__events
),

typed as (
    -- one parse of properties for all its type checks (the high-volume path)
    select
        *,
        json_type(
            properties, ['$', '$."$groups"', '$."$groups".company', '$."$pathname"']
        ) as property_types
    from source
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
            type_is(property_types[1], ['OBJECT'], 'properties'),
            type_is(property_types[2], ['OBJECT'], '$groups'),
            type_is(property_types[3], ['VARCHAR', 'BIGINT', 'UBIGINT'], '$groups.company'),
            type_is(property_types[4], ['VARCHAR'], '$pathname')
        ), '') as type_error
    from typed
)

select * from renamed
