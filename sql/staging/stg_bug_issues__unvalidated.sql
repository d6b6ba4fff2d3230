-- Written by `make generated` (tasks/unions.py): a CTE per bugs vendor of tasks/sources.py,
-- the rest from sql/staging/unions/stg_bug_issues.sql. Edit those, not this file.
-- grain: one row per bug-tracker issue from every tracker, before validation; key: issue_id ('<vendor>:<id>').
-- The canonical shape every vendor maps onto, so scores work whichever vendor a team uses.
-- type_error names the fields of a wrong JSON type (the suite quarantines those rows). A state or
-- severity outside the canonical sets becomes 'unknown' (the row is kept); the vendor's value,
-- redacted and cut short, stays in state_unknown / severity_unknown for the suite's warning.
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
        is_deleted,
        type_error
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
        is_deleted,
        type_error
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
        is_deleted,
        type_error
    from staging.stg_linear__issues
),

unioned as (
    select * from github
    union all
    select * from jira
    union all
    select * from linear
),

normalised as (
    select
        * replace (
            case
                when state is null or state in ('open', 'closed') then state
                else 'unknown'
            end as state,
            case
                when severity is null or severity in ('s1', 's2', 's3', 's4') then severity
                else 'unknown'
            end as severity
        ),
        case when state not in ('open', 'closed') then enum_example(state) end as state_unknown,
        case
            when severity not in ('s1', 's2', 's3', 's4') then enum_example(severity)
        end as severity_unknown
    from unioned
)

select * from normalised
