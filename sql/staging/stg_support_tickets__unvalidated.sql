-- grain: one row per support ticket or conversation from every help desk, before validation; key: ticket_id ('<vendor>:<id>').
-- The canonical shape every vendor maps onto, so scores work whichever vendor a team uses.
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
        url
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
        url
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
        url
    from staging.stg_freshdesk__tickets
),

unioned as (
    select * from zendesk
    union all
    select * from intercom
    union all
    select * from freshdesk
)

select * from unioned
