-- grain: one row per Amplitude event; key: event_id ('amplitude:' || raw event_id).
-- Renames, casts and normalises raw.amplitude__events to the stg_usage_events columns. Export
-- times are UTC without an offset. The account is the `company` group (as PostHog's
-- $groups.company); the page path is the Browser SDK's page-view property, else a custom one.
with

source as (
    select * from raw.amplitude__events_all
),

fields as (
    select
        event_id,
        payload,
        _loaded_at,
        -- one parse of the payload for all its type checks (the high-volume path)
        json_type(
            payload,
            [
                '$.event_type', '$.user_id', '$.device_id', '$.event_time',
                '$.event_properties', '$.groups', '$.groups.company'
            ]
        ) as payload_types,
        case
            when json_type(payload, '$.event_time') = 'VARCHAR' then payload ->> 'event_time'
        end as event_time_text,
        case json_type(payload, '$.groups.company')
            when 'ARRAY' then json_extract_string(payload, '$.groups.company[0]')
            when 'VARCHAR' then json_extract_string(payload, '$.groups.company')
        end as company,
        coalesce(
            json_extract_string(payload, '$.event_properties."[Amplitude] Page Path"'),
            json_extract_string(payload, '$.event_properties.path'),
            regexp_extract(
                coalesce(
                    json_extract_string(payload, '$.event_properties."[Amplitude] Page URL"'),
                    json_extract_string(payload, '$.event_properties.url')
                ),
                '^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*([^?#]*)',
                1
            )
        ) as page_path,
        nullif(concat_ws(
            ',',
            type_is(payload_types[1], ['VARCHAR'], 'event_type'),
            type_is(payload_types[2], ['VARCHAR', 'BIGINT', 'UBIGINT'], 'user_id'),
            type_is(payload_types[3], ['VARCHAR'], 'device_id'),
            type_is(payload_types[4], ['VARCHAR'], 'event_time'),
            case
                when
                    payload_types[4] = 'VARCHAR'
                    and nullif(trim(event_time_text), '') is not null
                    and try_cast(event_time_text as timestamptz) is null
                    then 'wrong_type:event_time'
            end,
            type_is(payload_types[5], ['OBJECT'], 'event_properties'),
            type_is(payload_types[6], ['OBJECT'], 'groups'),
            type_is(payload_types[7], ['VARCHAR', 'BIGINT', 'UBIGINT', 'ARRAY'], 'groups.company')
        ), '') as type_error
    from source
),

renamed as (
    select
        'amplitude:' || event_id as event_id,
        'amplitude' as source,
        case
            when regexp_matches(event_time_text, '(Z|[+-]\d{2}(:?\d{2})?)$')
                then try_cast(event_time_text as timestamptz)
            else timezone('UTC', try_cast(event_time_text as timestamp))
        end as occurred_at,
        _loaded_at as ingested_at,
        coalesce(
            nullif(trim(payload ->> 'user_id'), ''),
            nullif(trim(payload ->> 'device_id'), '')
        ) as user_key,
        nullif(trim(company), '') as account_key,
        nullif(trim(payload ->> 'event_type'), '') as event_name,
        nullif(page_path, '') as url_path,
        payload -> 'event_properties' as properties,
        1::bigint as n_events,
        type_error
    from fields
)

select * from renamed
