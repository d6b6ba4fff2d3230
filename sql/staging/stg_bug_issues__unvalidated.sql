-- grain: one row per bug-tracker issue from every tracker, before validation; key: issue_id ('<vendor>:<id>').
-- The canonical shape every vendor maps onto, so scores work whichever vendor a team uses.
with

github as (
    select
        issue_id,
        source,
        url,
        title,
        state,
        state_reason,
        severity,
        labels,
        components,
        created_at,
        updated_at,
        closed_at,
        votes,
        is_deleted
    from staging.stg_github__issues
),

jira as (
    select
        issue_id,
        source,
        url,
        title,
        state,
        state_reason,
        severity,
        labels,
        components,
        created_at,
        updated_at,
        closed_at,
        votes,
        is_deleted
    from staging.stg_jira__issues
),

linear as (
    select
        issue_id,
        source,
        url,
        title,
        state,
        state_reason,
        severity,
        labels,
        components,
        created_at,
        updated_at,
        closed_at,
        votes,
        is_deleted
    from staging.stg_linear__issues
),

unioned as (
    select * from github
    union all
    select * from jira
    union all
    select * from linear
)

select * from unioned
