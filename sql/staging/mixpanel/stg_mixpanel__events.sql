-- grain: one row per Mixpanel event; key: event_id ('mixpanel:' || raw event_id).
-- Renames, casts and normalises raw.mixpanel__events to the stg_usage_events columns. `time` is
-- epoch seconds (UTC for projects created since 2023; older projects export project-local
-- time). The account is the `company_id` group key; the page path is the SDK's
-- current_url_path, else the path of $current_url.
with

source as (
    select * from raw.mixpanel__events
),

renamed as (
    select
        'mixpanel:' || event_id as event_id,
        'mixpanel' as source,
        case
            when json_type(payload, '$.properties.time') in ('UBIGINT', 'BIGINT', 'DOUBLE')
                -- try(): an out-of-range epoch becomes null instead of failing the build
                then try(to_timestamp(json_extract(payload, '$.properties.time')::double))
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
        nullif(concat_ws(
            ',',
            type_check(payload, '$.event', ['VARCHAR'], 'event'),
            type_check(payload, '$.properties', ['OBJECT'], 'properties'),
            type_check_epoch(payload, '$.properties.time', ['BIGINT', 'UBIGINT', 'DOUBLE'], 'properties.time'),
            type_check(payload, '$.properties.distinct_id', ['VARCHAR', 'BIGINT', 'UBIGINT'], 'properties.distinct_id'),
            type_check(payload, '$.properties.company_id', ['VARCHAR', 'BIGINT', 'UBIGINT'], 'properties.company_id')
        ), '') as type_error
    from source
)

select * from renamed
