-- grain: one row per PostHog event, or per daily group pulled in daily_aggregates mode; key:
-- event_id ('posthog:' || the event uuid, or 'posthog:daily:<UTC day>:<md5 of the group>').
-- Renames, casts and normalises raw.posthog__events (file exports and the query API land the
-- same record shape there) to the stg_usage_events columns. A wrongly typed value (an object as
-- the event name, text as properties, a number or unparseable text as the time) is named in
-- type_error, and the stg_usage_events suite quarantines the row with that reason.
-- Daily groups (tasks/clients/posthog.py, mode daily_aggregates): one row per UTC day x event x
-- distinct_id x $pathname x $groups.company, occurred_at = the group's first event, n_events =
-- its count (1 for an event). A UTC day that has daily groups is represented by them alone: its
-- single events (from an earlier events mode or export files) are left out, never added twice.
with

source as (
    select
        *,
        starts_with(event_id, 'daily:') as is_daily
    from raw.posthog__events_all
),

daily_days as (
    -- read from raw itself: a second reference to `source` would materialise every event
    select distinct try_cast(properties ->> '$._daily.day' as date) as day
    from raw.posthog__events_all
    where
        starts_with(event_id, 'daily:')
        and try_cast(properties ->> '$._daily.day' as date) is not null
),

typed as (
    -- one parse of properties for all its type checks and one for both texts (the
    -- high-volume path)
    select
        *,
        json_type(
            properties, ['$', '$."$groups"', '$."$groups".company', '$."$pathname"']
        ) as property_types,
        json_extract_string(
            properties, ['$."$groups".company', '$."$pathname"']
        ) as property_texts
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
        property_texts[1] as account_key,
        nullif(trim(event), '') as event_name,
        property_texts[2] as url_path,
        properties,
        is_daily,
        case
            when is_daily then try_cast(properties ->> '$._daily.n_events' as bigint) else 1
        end as n_events,
        nullif(concat_ws(
            ',',
            type_check_text(event, 'event'),
            type_check_text(distinct_id, 'distinct_id'),
            type_check_ts(event_time, '$', 'timestamp'),
            type_is(property_types[1], ['OBJECT'], 'properties'),
            type_is(property_types[2], ['OBJECT'], '$groups'),
            type_is(property_types[3], ['VARCHAR', 'BIGINT', 'UBIGINT'], '$groups.company'),
            type_is(property_types[4], ['VARCHAR'], '$pathname'),
            case
                when
                    is_daily
                    and coalesce(try_cast(properties ->> '$._daily.n_events' as bigint) < 1, true)
                    then 'wrong_type:n_events'
            end
        ), '') as type_error
    from typed
),

final as (
    -- single events of a day held as daily groups are left out (no extra parse: occurred_at)
    select renamed.* exclude (is_daily)  -- noqa: RF03
    from renamed
    where
        renamed.is_daily
        -- an IN list, not a correlated NOT EXISTS: about free when there are no daily groups
        or not coalesce(renamed.occurred_at::date in (select daily_days.day from daily_days), false)
)

select * from final
