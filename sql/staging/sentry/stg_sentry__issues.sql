-- grain: one row per Sentry issue (error group); key: issue_id ('sentry:<id>').
-- Canonical shape for error signals. n_events / n_users are Sentry's count / userCount over the
-- connector's stats period, as of counted_at (the last read of the issue). url_path is a path
-- found in the culprit (transaction or route), a hint for the catalog's path globs.
with

source as (
    select * from raw.sentry__issues
),

renamed as (
    select
        'sentry:' || issue_id as issue_id,
        'sentry' as source,
        payload ->> 'permalink' as url,
        payload ->> 'shortId' as short_id,
        payload ->> 'title' as title,
        payload ->> 'culprit' as culprit,
        lower(trim(payload ->> 'level')) as level,
        lower(trim(payload ->> 'status')) as status,
        lower(trim(payload ->> 'substatus')) as substatus,
        try_cast(payload ->> 'count' as bigint) as n_events,
        try_cast(payload ->> 'userCount' as bigint) as n_users,
        case
            when json_type(payload, '$.firstSeen') = 'VARCHAR'
                then try_cast(payload ->> 'firstSeen' as timestamptz)
        end as first_seen_at,
        case
            when json_type(payload, '$.lastSeen') = 'VARCHAR'
                then try_cast(payload ->> 'lastSeen' as timestamptz)
        end as last_seen_at,
        payload -> 'project' ->> 'slug' as project,
        lower(payload ->> 'platform') as platform,
        lower(coalesce(payload ->> 'issueCategory', payload ->> 'type')) as issue_category,
        try_cast(payload ->> 'isUnhandled' as boolean) as is_unhandled,
        _loaded_at as counted_at,
        nullif(concat_ws(
            ',',
            type_check(payload, '$.permalink', ['VARCHAR'], 'permalink'),
            type_check(payload, '$.title', ['VARCHAR'], 'title'),
            type_check(payload, '$.culprit', ['VARCHAR'], 'culprit'),
            type_check(payload, '$.level', ['VARCHAR'], 'level'),
            type_check(payload, '$.status', ['VARCHAR'], 'status'),
            type_check(payload, '$.count', ['VARCHAR', 'BIGINT', 'UBIGINT'], 'count'),
            type_check(payload, '$.userCount', ['VARCHAR', 'BIGINT', 'UBIGINT'], 'userCount'),
            type_check_ts(payload, '$.firstSeen', 'firstSeen'),
            type_check_ts(payload, '$.lastSeen', 'lastSeen'),
            type_check(payload, '$.project', ['OBJECT'], 'project')
        ), '') as type_error
    from source
),

normalised as (
    select
        issue_id,
        source,
        url,
        short_id,
        title,
        culprit,
        level,
        status,
        substatus,
        n_events,
        n_users,
        first_seen_at,
        last_seen_at,
        project,
        platform,
        issue_category,
        is_unhandled,
        nullif(regexp_extract(culprit, '(/[^\s?#]*)', 1), '') as url_path,
        case when project is not null then [lower(project)] else [] end as components,
        counted_at,
        false as is_deleted,
        type_error
    from renamed
)

select * from normalised
