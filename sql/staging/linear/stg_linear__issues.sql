-- grain: one row per Linear issue (archived included, flagged is_deleted); key: issue_id
-- ('linear:<uuid>': the identifier such as ENG-7 changes when an issue changes team).
-- Same columns as the GitHub model, for the union into stg_bug_issues. Severity from Linear's
-- priority (1 urgent .. 4 low; 0 = no priority -> s3); state from the workflow state type.
with

source as (
    select * from raw.linear__issues
),

renamed as (
    select
        'linear:' || issue_id as issue_id,
        'linear' as source,
        payload ->> 'url' as url,
        payload ->> 'title' as title,
        lower(trim(payload -> 'state' ->> 'type')) as state_type,
        lower(trim(payload -> 'state' ->> 'name')) as state_name,
        try_cast(payload ->> 'priority' as integer) as priority,
        coalesce(
            list_transform(
                try_cast(json_extract_string(payload, '$.labels.nodes[*].name') as varchar[]),
                lambda label: lower(trim(label))
            ),
            []
        ) as labels,
        -- Grouped labels ("Component" > "Exports") name the component; so does component:<x>.
        coalesce(
            list_transform(
                list_filter(
                    try_cast(json_extract(payload, '$.labels.nodes[*]') as json[]),
                    lambda node: lower(node -> 'parent' ->> 'name') in ('component', 'components')
                ),
                lambda node: trim(node ->> 'name')
            ),
            []
        ) as group_components,
        case
            when json_type(payload, '$.createdAt') = 'VARCHAR'
                then try_cast(payload ->> 'createdAt' as timestamptz)
        end as created_at,
        case
            when json_type(payload, '$.updatedAt') = 'VARCHAR'
                then try_cast(payload ->> 'updatedAt' as timestamptz)
        end as updated_at,
        try_cast(coalesce(payload ->> 'completedAt', payload ->> 'canceledAt') as timestamptz)
            as finished_at,
        try_cast(payload ->> 'archivedAt' as timestamptz) as archived_at,
        nullif(concat_ws(
            ',',
            type_check(payload, '$.url', ['VARCHAR'], 'url'),
            type_check(payload, '$.title', ['VARCHAR'], 'title'),
            type_check(payload, '$.state', ['OBJECT'], 'state'),
            type_check(payload, '$.priority', ['BIGINT', 'UBIGINT', 'DOUBLE'], 'priority'),
            type_check(payload, '$.labels', ['OBJECT'], 'labels'),
            type_check_ts(payload, '$.createdAt', 'createdAt'),
            type_check_ts(payload, '$.updatedAt', 'updatedAt'),
            type_check_ts(payload, '$.completedAt', 'completedAt'),
            type_check_ts(payload, '$.canceledAt', 'canceledAt'),
            type_check_ts(payload, '$.archivedAt', 'archivedAt')
        ), '') as type_error
    from source
),

normalised as (
    select
        issue_id,
        source,
        url,
        title,
        case
            when state_type in ('completed', 'canceled', 'duplicate') then 'closed'
            else 'open'
        end as state,
        case priority
            when 1 then 's1'
            when 2 then 's2'
            when 4 then 's4'
            else 's3'
        end as severity,
        labels,
        list_distinct(
            list_concat(
                group_components,
                list_transform(
                    list_filter(labels, lambda label: label like 'component:%'),
                    lambda label: substr(label, 11)
                )
            )
        ) as components,
        created_at,
        updated_at,
        case
            when state_type in ('completed', 'canceled', 'duplicate')
                then coalesce(finished_at, updated_at)
        end as closed_at,
        -- Linear has no votes on issues.
        0 as votes,
        archived_at is not null as is_deleted,
        case
            when state_type = 'duplicate' or state_name = 'duplicate' then 'duplicate'
            when state_type = 'completed' then 'completed'
            when state_type = 'canceled' then 'not_planned'
        end as state_reason,
        type_error
    from renamed
)

select * from normalised
