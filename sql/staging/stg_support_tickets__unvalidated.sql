-- Written by `make generated` (tasks/unions.py): a CTE per tickets vendor of tasks/sources.py,
-- the rest from sql/staging/unions/stg_support_tickets.sql. Edit those, not this file.
-- grain: one row per support ticket or conversation from every help desk, before validation; key: ticket_id ('<vendor>:<id>').
-- The canonical shape every vendor maps onto, so scores work whichever vendor a team uses.
-- type_error names the fields of a wrong JSON type (the suite quarantines those rows). A status or
-- priority outside the canonical sets becomes 'unknown' (the row is kept); the vendor's value,
-- redacted and cut short, stays in status_unknown / priority_unknown for the suite's warning.
with

zendesk as (
    select
        ticket_id,
        source,
        created_at,
        updated_at,
        status,
        priority,
        channel,
        subject,
        body,
        tags,
        requester_key,
        account_key,
        is_deleted,
        url,
        type_error
    from staging.stg_zendesk__tickets
),

intercom as (
    select
        ticket_id,
        source,
        created_at,
        updated_at,
        status,
        priority,
        channel,
        subject,
        body,
        tags,
        requester_key,
        account_key,
        is_deleted,
        url,
        type_error
    from staging.stg_intercom__conversations
),

freshdesk as (
    select
        ticket_id,
        source,
        created_at,
        updated_at,
        status,
        priority,
        channel,
        subject,
        body,
        tags,
        requester_key,
        account_key,
        is_deleted,
        url,
        type_error
    from staging.stg_freshdesk__tickets
),

unioned as (
    select * from zendesk
    union all
    select * from intercom
    union all
    select * from freshdesk
),

normalised as (
    select
        * replace (
            case
                when status is null or status in (
                    'new', 'open', 'pending', 'hold', 'solved', 'closed', 'deleted'
                ) then status
                else 'unknown'
            end as status,
            case
                when priority is null or priority in ('urgent', 'high', 'normal', 'low')
                    then priority
                else 'unknown'
            end as priority
        ),
        case
            when status not in ('new', 'open', 'pending', 'hold', 'solved', 'closed', 'deleted')
                then enum_example(status)
        end as status_unknown,
        case
            when priority not in ('urgent', 'high', 'normal', 'low') then enum_example(priority)
        end as priority_unknown
    from unioned
)

select * from normalised
