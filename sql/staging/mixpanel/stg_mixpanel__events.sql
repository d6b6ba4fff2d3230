-- grain: one row per Mixpanel event; key: event_id ('mixpanel:' || raw event_id).
-- Renames, casts and normalises raw.mixpanel__events to the stg_usage_events columns. `time` is
-- epoch seconds (UTC for projects created since 2023; older projects export project-local
-- time). The account is the `company_id` group key; the page path is the SDK's
-- current_url_path, else the path of $current_url.
with

source as (
    select * from raw.mixpanel__events_all
),

typed as (
    -- one parse of the payload for all its type checks (the high-volume path)
    select
        *,
        json_type(
            payload,
            [
                '$.event', '$.properties', '$.properties.time', '$.properties.distinct_id',
                '$.properties.company_id'
            ]
        ) as payload_types
    from source
),

renamed as (
    select
        'mixpanel:' || event_id as event_id,
        'mixpanel' as source,
        case
            when json_type(payload, '$.properties.time') in ('UBIGINT', 'BIGINT', 'DOUBLE')
                -- epoch_ts: an out-of-range epoch becomes null instead of failing the build
                then epoch_ts(try_cast(json_extract(payload, '$.properties.time') as double))
        end as occurred_at,
        _loaded_at as ingested_at,
        nullif(trim(json_extract_string(payload, '$.properties.distinct_id')), '') as user_key,
        nullif(trim(json_extract_string(payload, '$.properties.company_id')), '') as account_key,
        nullif(trim(payload ->> 'event'), '') as event_name,
        nullif(
            coalesce(
                json_extract_string(payload, '$.properties.current_url_path'),
                regexp_extract(
                    json_extract_string(payload, '$.properties."$current_url"'),
                    '^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*([^?#]*)',
                    1
                )
            ),
            ''
        ) as url_path,
        payload -> 'properties' as properties,
        1::bigint as n_events,
        nullif(concat_ws(
            ',',
            type_is(payload_types[1], ['VARCHAR'], 'event'),
            type_is(payload_types[2], ['OBJECT'], 'properties'),
            case
                when
                    not list_contains(['BIGINT', 'UBIGINT', 'DOUBLE', 'NULL'], payload_types[3])
                    or (
                        payload_types[3] <> 'NULL'
                        and epoch_ts(
                            try_cast(json_extract(payload, '$.properties.time') as double)
                        ) is null
                    )
                    then 'wrong_type:properties.time'
            end,
            type_is(payload_types[4], ['VARCHAR', 'BIGINT', 'UBIGINT'], 'properties.distinct_id'),
            type_is(payload_types[5], ['VARCHAR', 'BIGINT', 'UBIGINT'], 'properties.company_id')
        ), '') as type_error
    from typed
)

select * from renamed
