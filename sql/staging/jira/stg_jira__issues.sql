-- grain: one row per Jira issue; key: issue_id ('jira:<id>', the numeric id: the issue key
-- changes when an issue moves project). Same columns as the GitHub model, for the union into
-- stg_bug_issues. Severity from the priority name; state from the status category.
with

source as (
    select * from raw.jira__issues
),

renamed as (
    select
        'jira:' || issue_id as issue_id,
        'jira' as source,
        regexp_replace(payload ->> 'self', '/rest/api/.*$', '')
        || '/browse/'
        || (payload ->> 'key') as url,
        payload -> 'fields' ->> 'summary' as title,
        lower(trim(payload -> 'fields' -> 'status' -> 'statusCategory' ->> 'key')) as status_category,
        lower(trim(payload -> 'fields' -> 'priority' ->> 'name')) as priority_name,
        lower(trim(payload -> 'fields' -> 'resolution' ->> 'name')) as resolution_name,
        coalesce(
            list_transform(
                try_cast(json_extract_string(payload, '$.fields.labels[*]') as varchar[]),
                lambda label: lower(trim(label))
            ),
            []
        ) as labels,
        coalesce(
            list_transform(
                try_cast(json_extract_string(payload, '$.fields.components[*].name') as varchar[]),
                lambda component: trim(component)
            ),
            []
        ) as components,
        case
            when json_type(payload, '$.fields.created') = 'VARCHAR'
                then try_cast(payload -> 'fields' ->> 'created' as timestamptz)
        end as created_at,
        case
            when json_type(payload, '$.fields.updated') = 'VARCHAR'
                then try_cast(payload -> 'fields' ->> 'updated' as timestamptz)
        end as updated_at,
        try_cast(payload -> 'fields' ->> 'resolutiondate' as timestamptz) as resolved_at,
        coalesce(try_cast(payload -> 'fields' -> 'votes' ->> 'votes' as integer), 0) as votes,
        nullif(concat_ws(
            ',',
            type_check(payload, '$.self', ['VARCHAR'], 'self'),
            type_check(payload, '$.key', ['VARCHAR'], 'key'),
            type_check(payload, '$.fields', ['OBJECT'], 'fields'),
            type_check(payload, '$.fields.summary', ['VARCHAR'], 'fields.summary'),
            type_check(payload, '$.fields.status', ['OBJECT'], 'fields.status'),
            type_check(payload, '$.fields.priority', ['OBJECT'], 'fields.priority'),
            type_check(payload, '$.fields.resolution', ['OBJECT'], 'fields.resolution'),
            type_check(payload, '$.fields.labels', ['ARRAY'], 'fields.labels'),
            type_check(payload, '$.fields.components', ['ARRAY'], 'fields.components'),
            type_check_ts(payload, '$.fields.created', 'fields.created'),
            type_check_ts(payload, '$.fields.updated', 'fields.updated'),
            type_check_ts(payload, '$.fields.resolutiondate', 'fields.resolutiondate')
        ), '') as type_error
    from source
),

normalised as (
    select
        issue_id,
        source,
        url,
        title,
        -- statusCategory is the only workflow-independent notion of "done" in Jira.
        case when status_category = 'done' then 'closed' else 'open' end as state,
        case
            when priority_name in ('highest', 'blocker', 'critical') then 's1'
            when priority_name in ('high', 'major') then 's2'
            when priority_name in ('low', 'lowest', 'minor', 'trivial') then 's4'
            else 's3'
        end as severity,
        labels,
        components,
        created_at,
        updated_at,
        case when status_category = 'done' then coalesce(resolved_at, updated_at) end as closed_at,
        votes,
        false as is_deleted,
        case
            when status_category <> 'done' then null
            when resolution_name in (
                'won''t do', 'won''t fix', 'declined', 'rejected', 'cannot reproduce',
                'incomplete', 'obsolete'
            ) then 'not_planned'
            when resolution_name = 'duplicate' then 'duplicate'
            else 'completed'
        end as state_reason,
        type_error
    from renamed
)

select * from normalised
