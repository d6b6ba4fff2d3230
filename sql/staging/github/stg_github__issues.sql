-- grain: one row per GitHub issue (pull requests were dropped at load); key: issue_id
-- ('github:<node_id>', stable across transfers, unlike the issue number).
-- Severity is normalised from labels to s1 (critical) .. s4 (low); s3 when unlabelled.
with

source as (
    select * from raw.github__issues
),

renamed as (
    select
        'github:' || node_id as issue_id,
        'github' as source,
        payload ->> 'html_url' as url,
        payload ->> 'title' as title,
        lower(trim(payload ->> 'state')) as state,
        lower(payload ->> 'state_reason') as state_reason,
        coalesce(
            list_transform(
                try_cast(json_extract_string(payload, '$.labels[*].name') as varchar[]),
                lambda label: lower(trim(label))
            ),
            []
        ) as labels,
        case
            when json_type(payload, '$.created_at') = 'VARCHAR'
                then try_cast(payload ->> 'created_at' as timestamptz)
        end as created_at,
        case
            when json_type(payload, '$.updated_at') = 'VARCHAR'
                then try_cast(payload ->> 'updated_at' as timestamptz)
        end as updated_at,
        try_cast(payload ->> 'closed_at' as timestamptz) as closed_at,
        coalesce(try_cast(payload ->> '$.reactions."+1"' as integer), 0) as votes,
        false as is_deleted,
        nullif(concat_ws(
            ',',
            type_check(payload, '$.html_url', ['VARCHAR'], 'html_url'),
            type_check(payload, '$.title', ['VARCHAR'], 'title'),
            type_check(payload, '$.state', ['VARCHAR'], 'state'),
            type_check(payload, '$.state_reason', ['VARCHAR'], 'state_reason'),
            type_check(payload, '$.labels', ['ARRAY'], 'labels'),
            type_check_ts(payload, '$.created_at', 'created_at'),
            type_check_ts(payload, '$.updated_at', 'updated_at'),
            type_check_ts(payload, '$.closed_at', 'closed_at'),
            type_check(payload, '$.reactions', ['OBJECT'], 'reactions')
        ), '') as type_error
    from source
),

normalised as (
    select
        issue_id,
        source,
        url,
        title,
        state,
        case
            when list_has_any(labels, ['severity:critical', 'sev:1', 's1', 'p0', 'priority:critical'])
                then 's1'
            when list_has_any(labels, ['severity:high', 'sev:2', 's2', 'p1', 'priority:high'])
                then 's2'
            when list_has_any(labels, ['severity:low', 'sev:4', 's4', 'p3', 'priority:low'])
                then 's4'
            else 's3'
        end as severity,
        labels,
        list_transform(
            list_filter(labels, lambda label: label like 'component:%'),
            lambda label: substr(label, 11)
        ) as components,
        created_at,
        updated_at,
        closed_at,
        votes,
        is_deleted,
        state_reason,
        type_error
    from renamed
)

select * from normalised
